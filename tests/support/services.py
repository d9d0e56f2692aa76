"""Building service settings and apps for tests."""

from __future__ import annotations

from typing import Any, TypeVar

from shared.settings import ServiceSettings
from tests.support.tokens import AUDIENCE, ISSUER, TokenFactory

S = TypeVar("S", bound=ServiceSettings)


def settings_for(cls: type[S], tokens: TokenFactory, database_url: str, **overrides: Any) -> S:
    """Settings for a service under test: trusts the test key, talks to the given database (and Kafka)."""
    return cls(database_url=database_url, jwks=str(tokens.jwks_path), jwt_issuer=ISSUER,
               jwt_audience=AUDIENCE, **overrides)


def service_env(tokens: TokenFactory, database_url: str, **extra: str) -> dict[str, str]:
    """The SCR_ environment for running a service as a process in tests."""
    return {"SCR_DATABASE_URL": database_url, "SCR_JWKS": str(tokens.jwks_path), "SCR_JWT_ISSUER": ISSUER,
            "SCR_JWT_AUDIENCE": AUDIENCE} | extra
