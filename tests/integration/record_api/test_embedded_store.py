"""The record API on the embedded default's SQLite store (`make run`): the same searches answer the same."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.record_api.app import create_app
from tests.integration.record_api.conftest import record_settings
from tests.integration.record_api.helpers import ids, resources
from tests.support.record_store import RecordStore, Scenario

pytestmark = pytest.mark.integration


def test_searches_history_and_everything_on_sqlite(tokens, sqlite_url, pdp, pdp_token, callers) -> None:
    store = RecordStore(sqlite_url)
    s = Scenario.build(store)
    try:
        with TestClient(create_app(record_settings(tokens, sqlite_url, pdp, pdp_token)),
                        raise_server_exceptions=False) as api:
            def get(url: str) -> dict:
                response = api.get(url, headers=callers.acute())
                assert response.status_code == 200, (url, response.text)
                return response.json()

            assert ids(get("/fhir/Patient?identifier=https://fhir.rr8.nhs.uk/Id/mrn|MRN123")) == {s.person}
            assert ids(get("/fhir/Patient?birthdate=ge1980-01-01&family=smi")) == {s.person}
            assert ids(get(f"/fhir/Observation?patient={s.person}&date=lt2025-03-01")) == {s.ids["bp_1"]}
            assert ids(get(f"/fhir/Observation?patient={s.person}&_lastUpdated=gt2026-01-05T09:12:30Z")) == {
                s.ids["bp_2"]}
            ordered = get(f"/fhir/Observation?patient={s.person}&_sort=date")
            assert [r["id"] for r in resources(ordered)] == [s.ids["bp_1"], s.ids["bp_2"]]
            first = get(f"/fhir/Patient/{s.person}/$everything?_count=3")
            nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
            assert not ids(first) & ids(api.get(nxt, headers=callers.acute()).json())
            assert get(f"/fhir/Condition/_history?patient={s.person}")["total"] == 1
    finally:
        store.close()
