"""Population health on the embedded default's SQLite store (what `make run` uses): an export and the aggregates
leave out the person who opted out, and without a pseudonymisation key nothing is queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.consent.app import create_app as consent_app
from services.consent.settings import ConsentSettings
from services.record_api.app import create_app as record_app
from services.record_api.population.models import ExportJob
from services.record_api.settings import RecordApiSettings
from shared.schema import AuditEventRow
from tests.integration.population.conftest import (
    Consents,
    ServedApp,
    bearer,
    kick_off_headers,
    recipient_token,
    run_export,
)
from tests.support import data
from tests.support.record_store import RecordStore, Scenario
from tests.support.services import settings_for
from tests.support.tokens import TokenFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def embedded(sqlite_url: str, tokens: TokenFactory) -> Iterator[tuple[ServedApp, RecordStore]]:
    consent = ServedApp(consent_app(settings_for(ConsentSettings, tokens, sqlite_url,
                                                 consumers_enabled=False))).start()
    store = RecordStore(sqlite_url)
    yield consent, store
    store.close()
    consent.stop()


def _api(tokens: TokenFactory, url: str, consent: ServedApp, token_file: Path, **overrides: object) -> TestClient:
    settings = settings_for(RecordApiSettings, tokens, url, consent_url=consent.url,
                            consent_token_file=str(token_file), export_poll_seconds=0.2,
                            population_suppression_threshold=1, **overrides)
    return TestClient(record_app(settings), raise_server_exceptions=False)


def test_export_and_aggregates_work_on_sqlite(embedded, sqlite_url, tokens, consent_token_file, key_file) -> None:
    consent, store = embedded
    kept = Scenario.build(store, data.NHS_NUMBERS[0])
    Scenario.build(store, data.NHS_NUMBERS[1])
    Consents(consent.app.state.consent_service).preferences(data.NHS_NUMBERS[1], opt_out=True)
    with _api(tokens, sqlite_url, consent, consent_token_file, export_pseudonym_key_file=str(key_file)) as api:
        token = recipient_token(tokens)
        manifest, files = run_export(api, token)
        everything = "\n".join(files.values())
        assert {o["type"]: o["count"] for o in manifest["output"]}["Patient"] == 1
        assert data.NHS_NUMBERS[1] not in everything and data.NHS_NUMBERS[0] not in everything
        assert len([line for line in everything.splitlines() if '"resourceType":"EpisodeOfCare"' in line]) == 1
        body = api.get("/population/aggregates?dimension=sex", headers=bearer(token)).json()
        persons = {c["sex"]: c["count"] for c in body["measures"]["persons"]["cells"]}
        assert persons == {"female": 1, "male": 0, "other": 0, "unknown": 0}
        assert {c["sex"]: c["count"] for c in body["measures"]["encounters"]["cells"]}["female"] == 2
        assert body["measures"]["open_social_care_episodes"]["total"] == 1
    assert kept.person not in everything


def test_without_a_pseudonymisation_key_nothing_is_queued(embedded, sqlite_url, tokens, consent_token_file) -> None:
    consent, _store = embedded
    with _api(tokens, sqlite_url, consent, consent_token_file) as api:
        response = api.get("/fhir/$export", headers=kick_off_headers(recipient_token(tokens)))
        assert response.status_code == 503
        assert "no pseudonymisation key" in response.json()["issue"][0]["diagnostics"]
        with api.app.state.population.sessions() as session:
            assert session.scalars(select(ExportJob)).first() is None
            audit = session.scalars(select(AuditEventRow).where(AuditEventRow.action == "export")).one()
        assert audit.outcome == "error" and "refused" in audit.body["outcomeDesc"]
