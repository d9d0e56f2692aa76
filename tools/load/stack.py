"""The platform as real processes on loopback: the three services (ingest, consent, record API) against a
PostgreSQL database and a Kafka broker, with a signing key whose public half the services trust.

Used by the fault tests (tests/reliability), the end-to-end log capture (tests/security) and the load run
(tools/load/run.py). The peers can be the test session's own or ones started here (`start_peers`).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import RSAKey

from tools.devkeys import mint
from tools.peers.ports import free_port
from tools.processes import SERVICES, ServiceProcess

ISSUER = "https://auth.load.scr.local"
AUDIENCE = "scr-load"
# Tokens last two hours, so a load run keeps its tokens; the services are told to accept that
# (SCR_MAX_TOKEN_LIFETIME_SECONDS; production keeps its one-hour default).
TOKEN_LIFETIME_SECONDS = 7200


class Signer:
    """A signing key (public half in `jwks_path`) and the callers DESIGN.md names, as bearer tokens."""

    def __init__(self, directory: Path, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.key = RSAKey.generate_key(2048, parameters={"kid": f"load-{uuid.uuid4().hex[:8]}", "alg": "RS256",
                                                         "use": "sig"})
        self.issuer, self.audience = issuer, audience
        self.jwks_path = directory / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [self.key.as_dict(private=False)]}))

    def token(self, claims: dict[str, Any], lifetime: int = TOKEN_LIFETIME_SECONDS) -> str:
        return mint(self.key, claims, issuer=self.issuer, audience=self.audience, lifetime=lifetime)

    def clinician(self, *, ods: str = "RR8", role: str = "S8000:G8000:R8000", sub: str = "555000000001",
                  scope: str = "user/*.read") -> str:
        return self.token({"sub": sub, "scope": scope, "ods_code": ods, "role_code": role})

    def citizen(self, nhs_number: str, level: str = "P9") -> str:
        return self.token({"sub": f"nhslogin-{nhs_number}", "nhs_number": nhs_number,
                           "identity_proofing_level": level})

    def feed(self, ods: str, scope: str = "system/*.write") -> str:
        return self.token({"sub": f"feed-{ods}", "scope": scope, "ods_code": ods})

    def system(self) -> str:
        return self.token({"sub": "scr-record-api", "scope": "system/Consent.rs system/*.read", "ods_code": "RR8"})


@dataclass
class Peers:
    """PostgreSQL and Kafka started for a run (the load run starts its own; tests pass the session's)."""

    postgres: Any
    kafka: Any
    database_url: str

    def stop(self) -> None:
        self.kafka.destroy()
        self.postgres.destroy()


def start_peers(directory: Path, partitions: int = 3) -> Peers:
    """A fresh PostgreSQL cluster (database `scr`, migrated) and a Kafka broker with every topic created."""
    from shared.db import migrate
    from shared.events import ALL_TOPICS
    from tools.peers.kafka import KafkaBroker
    from tools.peers.postgres import PostgresServer

    postgres = PostgresServer().start()  # its own directory: the server account must be able to reach it
    try:
        url = postgres.create_database("scr")
        migrate(url)
        kafka = KafkaBroker(str(directory / "kafka")).start()
    except BaseException:
        postgres.destroy()
        raise
    kafka.create_topics(list(ALL_TOPICS), partitions=partitions)
    return Peers(postgres, kafka, url)


@dataclass
class Stack:
    """The three services as processes, started in dependency order (consent, record API, ingest)."""

    database_url: str
    kafka_bootstrap: str
    signer_jwks: Path
    issuer: str
    audience: str
    log_dir: Path
    record_api_token: str
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in SERVICES} | {"mllp": free_port()}
        token_file = self.log_dir / "record-api.token"
        token_file.write_text(self.record_api_token)
        self.env = {
            "SCR_DATABASE_URL": self.database_url, "SCR_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SCR_JWKS": str(self.signer_jwks), "SCR_JWT_ISSUER": self.issuer, "SCR_JWT_AUDIENCE": self.audience,
            "SCR_CONSENT_URL": f"http://127.0.0.1:{self.ports['consent']}",
            "SCR_CONSENT_TOKEN_FILE": str(token_file), "SCR_MLLP_PORT": str(self.ports["mllp"]),
            "SCR_CONSUMER_POLL_SECONDS": "0.5", "SCR_MAX_TOKEN_LIFETIME_SECONDS": str(TOKEN_LIFETIME_SECONDS),
        } | self.extra_env

    def env_for_cli(self) -> dict[str, str]:
        """The environment an operator's command (e.g. `python -m services.ingest.cli`) runs with."""
        return dict(os.environ) | self.env

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, names: tuple[str, ...] = SERVICES) -> Stack:
        try:
            for name in names:
                self.start_one(name)
        except BaseException:
            self.stop()
            raise
        return self

    def start_one(self, name: str, timeout: float = 90) -> ServiceProcess:
        service = ServiceProcess(name, self.ports[name], self.env, self.log_dir / f"{name}.log").start()
        self.services[name] = service
        service.wait_ready(timeout)
        return service

    def kill(self, name: str) -> None:
        """SIGKILL: the process dies mid-whatever, as on an OOM kill or a node failure."""
        self.services[name].kill()

    def ready(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.url(name)}/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def pid(self, name: str) -> int:
        proc = self.services[name].proc
        assert proc is not None
        return proc.pid

    def stop(self) -> None:
        for name in reversed(list(self.services)):
            self.services[name].stop()

    def logs(self) -> dict[str, str]:
        return {name: path.read_text(errors="replace") for name in self.services
                if (path := self.log_dir / f"{name}.log").exists()}


def rss_kib(pid: int) -> int:
    """Resident set size of a process (Linux /proc), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")
