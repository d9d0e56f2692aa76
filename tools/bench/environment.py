"""What a benchmark run stands on: a throwaway PostgreSQL and Kafka (tools/peers), a signing key and tokens,
and the three services as real processes (tools/processes.py), all stopped at the end even on failure."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

from shared.db import migrate
from shared.events import ALL_TOPICS
from tools.devkeys import mint
from tools.peers.kafka import KafkaBroker
from tools.peers.ports import free_port
from tools.peers.postgres import PostgresServer
from tools.processes import ServiceProcess

ISSUER = "https://auth.bench.scr.local"
AUDIENCE = "scr-bench"
PARTITIONS = 4  # socialcare.events: room for several ingest workers in one consumer group
ACUTE_ODS = "RR8"
# A bench run can take hours and mints its tokens once; the services are told to accept tokens that long
# (SCR_MAX_TOKEN_LIFETIME_SECONDS; production keeps its one-hour default).
TOKEN_LIFETIME_SECONDS = 6 * 3600


class Tokens:
    """A bench-only signing key; the services trust its JWKS and nothing else."""

    def __init__(self, directory: Path) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "bench-1", "alg": "RS256", "use": "sig"})
        self.jwks_path = directory / "jwks.json"
        self.jwks_path.write_text(json.dumps({"keys": [self.key.as_dict(private=False)]}))

    def mint(self, claims: dict[str, Any]) -> str:
        return mint(self.key, claims, issuer=ISSUER, audience=AUDIENCE, lifetime=TOKEN_LIFETIME_SECONDS)

    def feed(self, ods: str) -> str:
        return self.mint({"sub": f"feed-{ods}", "scope": "system/*.write", "ods_code": ods})

    def clinician(self, ods: str = ACUTE_ODS) -> str:
        return self.mint({"sub": "555000000001", "scope": "user/*.read", "ods_code": ods,
                          "role_code": "S8000:G8000:R8000"})

    def citizen(self, nhs_number: str) -> str:
        return self.mint({"sub": f"nhslogin-{nhs_number}", "nhs_number": nhs_number,
                          "identity_proofing_level": "P9"})

    def system(self) -> str:
        return self.mint({"sub": "scr-record-api", "scope": "system/Consent.rs system/*.read",
                          "ods_code": ACUTE_ODS})


@dataclass
class Environment:
    """Peers, database, tokens and services of one run."""

    work: Path
    postgres: PostgresServer
    kafka: KafkaBroker
    database_url: str
    tokens: Tokens
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    mllp_port: int = 0

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.postgres.port} user=scr dbname=bench"

    def service_env(self, **extra: str) -> dict[str, str]:
        token_file = self.work / "record-api.token"
        if not token_file.exists():
            token_file.write_text(self.tokens.system())
        return {"SCR_DATABASE_URL": self.database_url, "SCR_JWKS": str(self.tokens.jwks_path),
                "SCR_JWT_ISSUER": ISSUER, "SCR_JWT_AUDIENCE": AUDIENCE,
                "SCR_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap, "SCR_LOG_LEVEL": "WARNING",
                "SCR_CONSENT_TOKEN_FILE": str(token_file),
                "SCR_MAX_TOKEN_LIFETIME_SECONDS": str(TOKEN_LIFETIME_SECONDS)} | extra

    def start_services(self) -> None:
        """consent, then the record API (which asks consent), then ingest; each ready before the next."""
        self.mllp_port = free_port()
        ports = {"consent": free_port(), "record_api": free_port(), "ingest": free_port()}
        key_file = self.work / "export-pseudonym.key"
        key_file.write_text(secrets.token_hex(32))
        extra = {"consent": {}, "record_api": {"SCR_CONSENT_URL": f"http://127.0.0.1:{ports['consent']}",
                                               "SCR_EXPORT_PSEUDONYM_KEY_FILE": str(key_file)},
                 "ingest": {"SCR_MLLP_PORT": str(self.mllp_port)}}
        for name in ("consent", "record_api", "ingest"):
            self.start_service(name, ports[name], extra[name])

    def start_service(self, name: str, port: int, extra: dict[str, str], key: str | None = None) -> ServiceProcess:
        process = ServiceProcess(name, port, self.service_env(**extra), self.work / f"{key or name}.log").start()
        self.services[key or name] = process
        process.wait_ready(120)
        return process

    def url(self, name: str) -> str:
        return self.services[name].url


@contextlib.contextmanager
def environment(work_dir: Path | None = None) -> Iterator[Environment]:
    """Start PostgreSQL and Kafka, migrate a database; stop everything on the way out (and remove a temporary
    work directory, unless the run failed: its service logs say why)."""
    work = work_dir or Path(tempfile.mkdtemp(prefix="scr-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # Durable (fsync, synchronous commit): ingest commits twice a message, and a non-durable server would flatter it.
    postgres = PostgresServer(durable=True).start()  # its own directory: the server runs as another user
    kafka: KafkaBroker | None = None
    env: Environment | None = None
    succeeded = False
    try:
        kafka = KafkaBroker(base_dir=str(work / "kafka"), heap="768m").start()
        kafka.create_topics(list(ALL_TOPICS), partitions=PARTITIONS)
        url = postgres.create_database("bench")
        migrate(url)
        env = Environment(work, postgres, kafka, url, Tokens(work))
        yield env
        succeeded = True
    finally:
        if env is not None:
            for process in reversed(list(env.services.values())):
                process.stop()
        if kafka is not None:
            kafka.destroy()
        postgres.destroy()
        if succeeded and work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
