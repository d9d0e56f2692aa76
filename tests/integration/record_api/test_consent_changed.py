"""A citizen's objection takes effect on the very next read after `consent.changed` reaches the record API,
through the real event transports: Kafka (real mode) and the database event log (the embedded default)."""

from __future__ import annotations

import time
import uuid

import pytest
from fastapi.testclient import TestClient

from services.record_api.app import create_app
from shared.events import CONSENT_CHANGED, DatabaseEventLog, EventBus, KafkaEventBus
from tests.integration.record_api.conftest import record_settings
from tests.integration.record_api.helpers import ids
from tests.support import data
from tests.support.record_store import Scenario

pytestmark = pytest.mark.integration


def _changed(nhs_number: str, person_id: str | None) -> dict:
    return {"nhs_number": nhs_number, "person_id": person_id, "consent_id": str(uuid.uuid4()), "version_id": 2,
            "kind": "preferences", "changed_at": "2026-11-23T10:00:00Z"}


def _await_applied(listener, count: int, bus: EventBus, probe: bool = False, timeout: float = 60) -> None:
    """Wait until the listener has applied `count` events; with `probe`, keep publishing harmless events so a
    Kafka consumer that is still joining its group (it reads from the latest offset) is sure to see one."""
    deadline = time.monotonic() + timeout
    while listener.events_applied < count:
        assert time.monotonic() < deadline, "the record API never applied consent.changed"
        if probe:
            bus.publish(CONSENT_CHANGED, data.NHS_NUMBERS[11], _changed(data.NHS_NUMBERS[11], None))
            bus.flush()
        time.sleep(0.5)


def _objection_takes_effect_on_the_next_read(client: TestClient, bus: EventBus, scenario: Scenario, pdp,
                                             headers: dict[str, str]) -> None:
    listener = client.app.state.consent_listener
    _await_applied(listener, 1, bus, probe=True)
    everything = f"/fhir/Patient/{scenario.person}/$everything"
    assert scenario.ids["asthma"] in ids(client.get(everything, headers=headers).json())
    asked = len(pdp.requests)
    pdp.objections.add(scenario.nhs_number)  # the citizen objects: the consent service now answers differently
    assert scenario.ids["asthma"] in ids(client.get(everything, headers=headers).json())  # cached, as designed
    assert len(pdp.requests) == asked
    applied = listener.events_applied
    bus.publish(CONSENT_CHANGED, scenario.nhs_number, _changed(scenario.nhs_number, scenario.person))
    bus.flush()
    _await_applied(listener, applied + 1, bus)
    after = client.get(everything, headers=headers).json()  # the very next read
    assert scenario.ids["asthma"] not in ids(after)
    assert scenario.ids["allergy_acute"] in ids(after)  # the trust still sees what it recorded
    assert len(pdp.requests) == asked + 1


def test_over_kafka(kafka, tokens, pg_url, pdp, pdp_token, scenario, callers) -> None:
    settings = record_settings(tokens, pg_url, pdp, pdp_token, kafka_bootstrap_servers=kafka.bootstrap)
    publisher = KafkaEventBus(kafka.bootstrap, "consent-test")
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            _objection_takes_effect_on_the_next_read(client, publisher, scenario, pdp, callers.acute())
    finally:
        publisher.close()


def test_over_the_embedded_event_log(tokens, sqlite_url, pdp, pdp_token, callers) -> None:
    from tests.support.record_store import RecordStore

    store = RecordStore(sqlite_url)
    scenario = Scenario.build(store)
    publisher = DatabaseEventLog(store.engine)
    try:
        with TestClient(create_app(record_settings(tokens, sqlite_url, pdp, pdp_token)),
                        raise_server_exceptions=False) as client:
            _objection_takes_effect_on_the_next_read(client, publisher, scenario, pdp, callers.acute())
    finally:
        store.close()
