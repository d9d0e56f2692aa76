"""The three services in-process against one real PostgreSQL database, seeded the way ingest writes it: ingest and
the record API through TestClient, consent served over real HTTP (uvicorn in a thread) because the record API
asks it for every decision, exactly as in production."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from services.consent.app import create_app as consent_app
from services.consent.settings import ConsentSettings
from services.ingest.app import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.record_api.app import create_app as record_app
from services.record_api.settings import RecordApiSettings
from shared.db import create_db_engine, make_session_factory, migrate
from tests.support import data
from tests.support.record_store import RecordStore, Scenario
from tests.support.services import settings_for
from tests.support.tokens import TokenFactory
from tools.peers.ports import free_port

pytestmark = pytest.mark.integration
# Tables whose row counts prove a refused request wrote nothing.
WRITE_TABLES = ("resource", "resource_version", "search_param", "person", "person_link", "consent",
                "consent_version")


class ThreadedServer:
    """An ASGI app served by uvicorn on a free loopback port, in a daemon thread (lifespan included)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None,
                                                     access_log=False))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the consent service did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)


@dataclass
class Platform:
    """The running services, the seeded person, and ways to look at the store."""

    url: str
    tokens: TokenFactory
    ingest: TestClient
    record: TestClient
    consent: TestClient
    scenario: Scenario
    ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = create_db_engine(self.url, pool_size=2)
        self.sessions = make_session_factory(self.engine)

    def client(self, service: str) -> TestClient:
        return {"ingest": self.ingest, "record_api": self.record, "consent": self.consent}[service]

    def footprint(self) -> dict[str, int]:
        """Row counts of every table a write would touch."""
        with self.sessions() as session:
            return {table: session.scalar(text(f"SELECT count(*) FROM {table}")) or 0 for table in WRITE_TABLES}

    def count(self, model: Any, *where: Any) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="package")
def platform(postgres: Any, tokens: TokenFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    url = postgres.create_database(f"sec_{uuid.uuid4().hex[:10]}")
    migrate(url)
    store = RecordStore(url)
    scenario = Scenario.build(store)
    Scenario.build(store, data.NHS_NUMBERS[1])  # another person, whom nobody below has any claim to see
    store.close()
    token_file: Path = tmp_path_factory.mktemp("security") / "record-api.token"
    token_file.write_text(tokens.system())
    common: dict[str, Any] = {"api_docs": False}
    consent_settings = settings_for(ConsentSettings, tokens, url, consumers_enabled=False, **common)
    server = ThreadedServer(consent_app(consent_settings)).start()  # the replica the record API asks
    consent = consent_app(consent_settings)  # another replica, driven directly by the tests
    ingest = ingest_app(settings_for(IngestSettings, tokens, url, mllp_enabled=False, consumers_enabled=False,
                                     **common))
    if "export_pseudonym_key" in RecordApiSettings.model_fields:  # population health exports need their secret
        common["export_pseudonym_key"] = "matrix-test-pseudonymisation-secret-0123456789"
    record = record_app(settings_for(RecordApiSettings, tokens, url, consent_url=server.url,
                                     consent_token_file=str(token_file), **common))
    try:
        with TestClient(ingest, raise_server_exceptions=False) as ingest_client, \
                TestClient(record, raise_server_exceptions=False) as record_client, \
                TestClient(consent, raise_server_exceptions=False) as consent_client:
            platform = Platform(url, tokens, ingest_client, record_client, consent_client, scenario)
            yield platform
            platform.engine.dispose()
    finally:
        server.stop()
