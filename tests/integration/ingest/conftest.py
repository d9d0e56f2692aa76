"""The ingest service on a real PostgreSQL database, driven through its HTTP API (TestClient, lifespan run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.db import create_db_engine, make_session_factory
from shared.schema import EventLogEntry, Resource, ResourceVersion
from tests.support import data
from tests.support.services import settings_for
from tests.support.tokens import TokenFactory

ADMIN_SCOPE = "system/IngestAdmin.*"


@dataclass
class Ingest:
    """A running ingest app and a way to look at what it stored."""

    client: TestClient
    tokens: TokenFactory
    sessions: sessionmaker[Session]

    def feed(self, ods: str = data.GP_ODS, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.feed(ods=ods)}"} | headers

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.feed(scope=ADMIN_SCOPE)}"}

    def post_fhir(self, bundle: Any, ods: str = data.GP_ODS):
        return self.client.post("/ingest/fhir", json=bundle, headers=self.feed(ods))

    def post_hl7(self, message: str, ods: str = data.ACUTE_ODS):
        return self.client.post("/ingest/hl7v2", content=message.encode(), headers=self.feed(ods))

    def rows(self, resource_type: str) -> list[Resource]:
        with self.sessions() as session:
            return list(session.scalars(select(Resource).where(Resource.resource_type == resource_type)
                                        .order_by(Resource.last_updated)))

    def count(self, model: Any, *where: Any) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(model).where(*where)) or 0

    def versions(self, resource_type: str, resource_id: str) -> list[ResourceVersion]:
        with self.sessions() as session:
            return list(session.scalars(select(ResourceVersion).where(
                ResourceVersion.resource_type == resource_type, ResourceVersion.id == resource_id)
                .order_by(ResourceVersion.version_id)))

    def events(self, topic: str = "record.changed") -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [row.payload for row in session.scalars(select(EventLogEntry).where(EventLogEntry.topic == topic)
                                                           .order_by(EventLogEntry.id))]

    def get(self, model: Any, *where: Any) -> Any:
        with self.sessions() as session:
            return session.scalar(select(model).where(*where))


def ingest_settings(tokens: TokenFactory, url: str, **overrides: Any) -> IngestSettings:
    return settings_for(IngestSettings, tokens, url, **({"mllp_port": 0, "consumers_enabled": False} | overrides))


@contextmanager
def running_ingest(pg_url: str, tokens: TokenFactory, **overrides: Any) -> Iterator[Ingest]:
    """The ingest app on PostgreSQL, with settings overridden as a test needs."""
    app = create_app(ingest_settings(tokens, pg_url, **overrides))
    engine = create_db_engine(pg_url)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Ingest(client, tokens, make_session_factory(engine))
    finally:
        engine.dispose()


@pytest.fixture
def ingest(pg_url: str, tokens: TokenFactory) -> Iterator[Ingest]:
    with running_ingest(pg_url, tokens) as running:
        yield running
