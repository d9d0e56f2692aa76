"""Propagation over real Kafka and PostgreSQL: every change goes out on `consent.changed` after commit, dissent
recorded at source arrives through `record.changed` (idempotently), and a change made on one replica reaches
another replica's decisions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from shared.events import CONSENT_CHANGED, RECORD_CHANGED, KafkaEventBus
from shared.schema import ConsentRecord, EventLogEntry
from tests.integration.consent.conftest import (
    DOC,
    add_person,
    bearer,
    decide_body,
    register_with_practice,
    store_source_consent,
    version_count,
)
from tests.support import data
from tests.unit.consent.builders import professional_body

pytestmark = pytest.mark.integration
A, B = data.NHS_NUMBERS[2], data.NHS_NUMBERS[3]


def _wait_for(check: Callable[[], Any], timeout: float = 60, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def _decide(client, tokens, nhs: str) -> dict[str, Any]:
    return client.post("/consent/decide", json=decide_body(nhs), headers=bearer(tokens.system())).json()


def test_every_committed_change_is_published_once_on_consent_changed(make_client, pg_url, kafka, tokens, db) -> None:
    client = make_client(pg_url, kafka_bootstrap_servers=kafka.bootstrap)
    add_person(db, "person-prop", A)
    citizen = bearer(tokens.citizen(A))
    assert client.put("/consent/me", headers=citizen, json=DOC | {"direct_care": "object"}).status_code == 201
    assert client.put("/consent/me", headers=citizen | {"If-Match": 'W/"0"'}, json=DOC).status_code == 412
    assert client.put("/consent/me", headers=citizen | {"If-Match": 'W/"1"'},
                      json=DOC | {"withheld_categories": ["XYZ"]}).status_code == 422
    assert client.put("/consent/me", headers=citizen | {"If-Match": 'W/"1"'}, json=DOC).status_code == 200
    consent_id = client.get("/consent/me/history", headers=citizen).json()["entries"][0]["consent_id"]

    bus = KafkaEventBus(kafka.bootstrap, "consent-test")
    consumer = bus.consumer(f"test-{uuid.uuid4().hex[:8]}", [CONSENT_CHANGED])
    seen: list = []
    try:
        def two_events() -> bool:
            seen.extend(e for e in consumer.poll(timeout=1) if (e.payload or {}).get("consent_id") == consent_id)
            return len(seen) >= 2

        _wait_for(two_events)
        time.sleep(1)
        seen.extend(e for e in consumer.poll(timeout=1) if (e.payload or {}).get("consent_id") == consent_id)
    finally:
        consumer.close()
        bus.close()
    assert [e.payload["version_id"] for e in seen] == [1, 2]  # the refused writes published nothing
    first = seen[0]
    assert first.key == A
    assert set(first.payload) == {"nhs_number", "person_id", "consent_id", "version_id", "kind", "changed_at"}
    assert (first.payload["nhs_number"], first.payload["person_id"], first.payload["kind"]) == \
        (A, "person-prop", "preferences")


def test_the_embedded_event_log_gets_the_event_in_the_same_transaction_as_the_change(client, tokens, db) -> None:
    citizen = bearer(tokens.citizen(A))
    assert client.put("/consent/me", headers=citizen, json=DOC | {"direct_care": "object"}).status_code == 201
    assert client.put("/consent/me", headers=citizen, json=DOC).status_code == 428
    events = db.scalars(select(EventLogEntry).where(EventLogEntry.topic == CONSENT_CHANGED)).all()
    assert [(e.key, e.payload["version_id"], e.payload["person_id"]) for e in events] == [(A, 1, None)]


def _record_changed(bus: KafkaEventBus, resource_id: str, person_id: str, version: int, change: str) -> None:
    bus.publish(RECORD_CHANGED, person_id, {"person_id": person_id, "resource_type": "Consent", "id": resource_id,
                                            "version_id": version, "change": change, "source_org": data.GP_ODS})
    bus.flush()


def _imported(db, consent_id: str) -> ConsentRecord | None:
    db.expire_all()
    return db.scalars(select(ConsentRecord).where(ConsentRecord.id == consent_id)).first()


def test_dissent_recorded_at_source_is_imported_once_and_follows_the_source(make_client, pg_url, kafka, tokens,
                                                                            db) -> None:
    client = make_client(pg_url, kafka_bootstrap_servers=kafka.bootstrap, consumers_enabled=True)
    first, marker = str(uuid.uuid4()), str(uuid.uuid4())
    register_with_practice(db, "person-gp", A, data.GP_ODS)  # so its deletion at source may end the objection
    add_person(db, "person-marker", B)
    store_source_consent(db, first, "person-gp")
    bus = KafkaEventBus(kafka.bootstrap, "ingest-test")
    try:
        _record_changed(bus, first, "person-gp", 1, "create")
        row = _wait_for(lambda: _imported(db, f"src-{first}"))
        assert (row.kind, row.author_kind, row.author_ods, row.nhs_number) == ("dissent", "professional",
                                                                              data.GP_ODS, A)
        decision = _decide(client, tokens, A)
        assert (decision["rule"], decision["own_organisation_only"]) == ("objection", True)
        assert decision["consent"]["id"] == f"src-{first}"

        # Re-delivery, then a marker event behind it: once the marker is in, the re-delivery has been handled.
        _record_changed(bus, first, "person-gp", 1, "create")
        store_source_consent(db, marker, "person-marker")
        _record_changed(bus, marker, "person-marker", 1, "create")
        _wait_for(lambda: _imported(db, f"src-{marker}"))
        assert version_count(db, A) == 1

        store_source_consent(db, first, "person-gp", version=2, deleted=True, sender=data.GP_ODS)
        _record_changed(bus, first, "person-gp", 2, "delete")
        _wait_for(lambda: (r := _imported(db, f"src-{first}")) is not None and r.status == "inactive")
        assert _wait_for(lambda: _decide(client, tokens, A)["rule"] == "default-share")
    finally:
        bus.close()


def test_a_change_on_one_replica_reaches_another_replicas_decisions(make_client, pg_url, kafka, tokens) -> None:
    writer = make_client(pg_url, kafka_bootstrap_servers=kafka.bootstrap)
    reader = make_client(pg_url, kafka_bootstrap_servers=kafka.bootstrap, consumers_enabled=True)
    probe, subject = data.NHS_NUMBERS[4], data.NHS_NUMBERS[5]

    # The reader's invalidation consumer starts from the latest offset once it has joined; toggle a probe
    # person until the reader sees a change, so we know it is listening before the real change is made.
    state = {"version": 0, "direct_care": "share"}

    def reader_follows_probe() -> bool:
        _decide(reader, tokens, probe)  # cache the probe's current state on the reader
        state["direct_care"] = "object" if state["direct_care"] == "share" else "share"
        writer.put("/consent/me", headers=bearer(tokens.citizen(probe)) | {"If-Match": f'W/"{state["version"]}"'},
                   json=DOC | {"direct_care": state["direct_care"]})
        state["version"] += 1
        expected = "objection" if state["direct_care"] == "object" else "share"
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if _decide(reader, tokens, probe)["rule"] == expected:
                return True
            time.sleep(0.2)
        return False

    _wait_for(reader_follows_probe, timeout=90, interval=0)
    assert _decide(reader, tokens, subject)["rule"] == "default-share"  # now cached on the reader
    writer.put("/consent/me", headers=bearer(tokens.citizen(subject)), json=DOC | {"direct_care": "object"})
    assert _wait_for(lambda: _decide(reader, tokens, subject)["rule"] == "objection", timeout=30)


def _scoped(scope: str, provision_type: str, code: str) -> dict[str, Any]:
    body = professional_body(provision_type, code=code, stated=datetime.now(UTC))
    body["scope"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": scope}]}
    return body


def test_only_sharing_choices_recorded_at_source_are_imported(client, tokens, db) -> None:
    add_person(db, "person-gp", A)
    service = client.app.state.consent_service
    store_source_consent(db, "declined-procedure", "person-gp", body=_scoped("treatment", "deny", "182890002"))
    assert service.import_source_consent("declined-procedure") == "ignored"
    assert _decide(client, tokens, A)["rule"] == "default-share"

    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"direct_care": "object"})
    store_source_consent(db, "research", "person-gp", body=_scoped("research", "permit", "723004006"))
    assert service.import_source_consent("research") == "ignored"
    assert _decide(client, tokens, A)["rule"] == "objection"
    assert version_count(db, A) == 1

    # A sharing dissent the source later re-scopes as something else stops counting.
    store_source_consent(db, "dissent", "person-gp")
    assert service.import_source_consent("dissent") == "created"
    store_source_consent(db, "dissent", "person-gp", version=2, body=_scoped("treatment", "deny", "182890002"))
    assert service.import_source_consent("dissent") == "updated"
    assert _imported(db, "src-dissent").status == "inactive"
