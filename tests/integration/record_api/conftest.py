"""Fixtures for the record API against the real PostgreSQL (and, where a test asks, Kafka): a store seeded the
way ingest writes it, a decision-service double over HTTP, and the app under test with its lifespan running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.record_api.app import create_app
from services.record_api.settings import RecordApiSettings
from tests.integration.record_api.pdp import DecisionDouble
from tests.support import data
from tests.support.record_store import RecordStore, Scenario
from tests.support.services import settings_for
from tests.support.tokens import TokenFactory


@pytest.fixture(scope="session")
def pdp_token(tokens: TokenFactory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("record-api") / "record-api.token"
    path.write_text(tokens.system())
    return path


@pytest.fixture(scope="session")
def pdp_server(pdp_token: Path) -> Iterator[DecisionDouble]:
    server = DecisionDouble(pdp_token.read_text()).start()
    yield server
    server.stop()


@pytest.fixture
def pdp(pdp_server: DecisionDouble) -> DecisionDouble:
    pdp_server.reset()
    return pdp_server


@pytest.fixture
def record_store(pg_url: str) -> Iterator[RecordStore]:
    store = RecordStore(pg_url)
    yield store
    store.close()


@pytest.fixture
def scenario(record_store: RecordStore) -> Scenario:
    return Scenario.build(record_store)


def record_settings(tokens: TokenFactory, url: str, pdp: DecisionDouble, token_file: Path,
                    **overrides: Any) -> RecordApiSettings:
    return settings_for(RecordApiSettings, tokens, url, consent_url=pdp.url, consent_token_file=str(token_file),
                        **overrides)


@pytest.fixture
def api(tokens: TokenFactory, pg_url: str, pdp: DecisionDouble, pdp_token: Path) -> Iterator[TestClient]:
    app = create_app(record_settings(tokens, pg_url, pdp, pdp_token))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


class Callers:
    """Bearer headers for the people who call the record API in these tests."""

    def __init__(self, tokens: TokenFactory) -> None:
        self.tokens = tokens

    def acute(self, **extra: Any) -> dict[str, str]:
        return self._bearer(self.tokens.clinician(ods=data.ACUTE_ODS, **extra))

    def gp(self, **extra: Any) -> dict[str, str]:
        return self._bearer(self.tokens.clinician(ods=data.GP_ODS, role="S8000:G8000:R0260", **extra))

    def stranger(self, **extra: Any) -> dict[str, str]:
        """A clinician at a trust with no relationship with the scenario's patient."""
        return self._bearer(self.tokens.clinician(ods=data.OTHER_TRUST_ODS, **extra))

    def privacy_officer(self) -> dict[str, str]:
        return self._bearer(self.tokens.clinician(ods=data.ACUTE_ODS, role="S8002:G8003:R5100",
                                                  scope="user/AuditEvent.rs", sub="555000000009"))

    @staticmethod
    def _bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def callers(tokens: TokenFactory) -> Callers:
    return Callers(tokens)
