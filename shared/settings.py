"""Settings every service reads from `SCR_` environment variables; each service subclasses them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_DIR = REPO_ROOT / "var" / "dev"


def _public_base_url(value: str | None) -> str | None:
    """An http(s) URL with a host and nothing after the path, kept without its trailing slash; empty is unset."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("must be an http(s) URL with a host and no query or fragment, e.g. https://scr.example.nhs.uk")
    return value.rstrip("/")


# The URL clients reach a service at through the gateway (SCR_PUBLIC_BASE_URL), for absolute URLs in answers; unset,
# they are built from the request's Host header, which any caller chooses.
PublicBaseUrl = Annotated[str | None, AfterValidator(_public_base_url)]


class ServiceSettings(BaseSettings):
    """What all three services need. Unset Kafka means the embedded event log in the database."""

    model_config = SettingsConfigDict(env_prefix="SCR_", extra="ignore")

    service_name: str = "scr"
    host: str = "127.0.0.1"
    port: int = 8000

    # SQLite file in the embedded default; PostgreSQL (postgresql+psycopg://...) in real mode.
    database_url: str = f"sqlite:///{DEV_DIR / 'scr.db'}"
    database_pool_size: int = 10
    # Server-side prepared statements (psycopg prepares a statement on its second run on a connection): each
    # read's queries are planned once per connection instead of every time. Turn off only behind a pooler that
    # cannot carry them (PgBouncer before 1.21 in transaction mode).
    database_prepared_statements: bool = True
    kafka_bootstrap_servers: str | None = None
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None

    # Tokens are validated, never minted: a JWKS file path or https URL, and the expected iss/aud.
    jwks: str = str(DEV_DIR / "jwks.json")
    jwt_issuer: str = "https://auth.dev.scr.local"
    jwt_audience: str = "scr"
    jwt_leeway_seconds: int = 30
    # The longest a token may live (exp - iat, and exp - now): CIS2, NHS login and client-credentials access tokens
    # last an hour or less, so a longer one is a mistake or a forgery worth refusing. Also how long to keep a
    # retired signing key in the JWKS (docs/OPERATIONS.md). The dev environments raise it for their 24-hour tokens.
    max_token_lifetime_seconds: int = Field(default=3600, ge=60)

    # Interactive API docs (/docs, /openapi.json) carry no patient data but are not in DESIGN.md's list of
    # token-free endpoints; unset means on in the embedded default and off in real mode.
    api_docs: bool | None = None

    log_level: str = "INFO"
    shutdown_grace_seconds: int = 10

    @property
    def real_mode(self) -> bool:
        return self.kafka_bootstrap_servers is not None

    @property
    def docs_enabled(self) -> bool:
        return self.api_docs if self.api_docs is not None else not self.real_mode

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
