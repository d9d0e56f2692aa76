"""record.changed in real mode goes through the transactional outbox (shared/outbox.py): written in the
transaction of the change it announces, relayed to a real Kafka broker after the commit, deleted once the broker
acknowledged it. Consent's relay shares the table and moves only consent.changed."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from sqlalchemy import func, select

from services.ingest.service import Pipeline
from shared.db import create_db_engine, make_session_factory
from shared.events import CONSENT_CHANGED, RECORD_CHANGED, KafkaEventBus
from shared.outbox import OutboxRelay, pending, stage
from shared.schema import OutboxEvent, RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import ingest_settings
from tests.support import data

pytestmark = pytest.mark.integration


def _announced(bus: KafkaEventBus, ids: set[str]) -> list[dict]:
    """record.changed events about `ids`, read from the topic's start by a new group."""
    consumer = bus.consumer(f"reader-{uuid.uuid4().hex[:8]}", [RECORD_CHANGED])
    got: list[dict] = []
    try:
        for _ in range(30):
            got += [e.payload for e in consumer.poll(timeout=1) if e.payload and e.payload.get("id") in ids]
            if {p["id"] for p in got} >= ids:
                break
    finally:
        consumer.close()
    return got


@pytest.fixture
def parts(kafka, pg_url, tokens):
    engine = create_db_engine(pg_url)
    sessions = make_session_factory(engine)
    bus = KafkaEventBus(kafka.bootstrap, f"test-outbox-{uuid.uuid4().hex[:6]}")
    settings = ingest_settings(tokens, pg_url, kafka_bootstrap_servers=kafka.bootstrap)
    yield sessions, bus, Pipeline(sessions, bus, settings)
    bus.close()
    engine.dispose()


def _receive_gp_record(pipeline: Pipeline) -> None:
    content = json.dumps(messages.load_json("gp_record_bundle.json")).encode()
    outcome = pipeline.receive("fhir", content, content_type="application/fhir+json", sender_org=data.GP_ODS,
                               sender_system="EMIS")
    assert outcome.status == "processed", outcome.issues


def test_a_change_commits_with_its_events_and_the_relay_delivers_then_deletes_them(parts) -> None:
    sessions, bus, pipeline = parts
    _receive_gp_record(pipeline)  # no relay runs yet: the events wait in the outbox, committed with the change
    with sessions() as session:
        ids = set(session.scalars(select(Resource.id).where(Resource.resource_type != "Provenance")))
        waiting = list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))
    assert ids and {e.payload["id"] for e in waiting} == ids
    assert all(e.topic == RECORD_CHANGED and e.key == e.payload["person_id"] for e in waiting)

    relay = OutboxRelay(sessions, bus, RECORD_CHANGED)
    assert relay.relay_once() == len(waiting)
    assert relay.relay_once() == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
    announced = _announced(bus, ids)
    assert {p["id"] for p in announced} == ids and all(p["change"] == "create" for p in announced)


def test_a_refused_message_leaves_no_event_and_a_resend_announces_nothing_new(parts) -> None:
    sessions, _bus, pipeline = parts
    outcome = pipeline.receive("fhir", b'{"resourceType": "Bundle", "type": "transaction", "entry": [{}]}',
                               content_type="application/fhir+json", sender_org=data.GP_ODS, sender_system="EMIS")
    assert outcome.status == "rejected"
    _receive_gp_record(pipeline)
    with sessions() as session:
        first = session.scalar(select(func.count()).select_from(OutboxEvent))
    _receive_gp_record(pipeline)  # the same record again: no new version, so nothing to announce
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == first
        assert session.scalar(select(func.count()).select_from(RawMessage)) == 3  # every input archived


def test_the_service_relays_as_it_goes_and_leaves_nothing_behind_when_it_stops(kafka, pg_url, tokens) -> None:
    from fastapi.testclient import TestClient

    from services.ingest.app import create_app

    settings = ingest_settings(tokens, pg_url, kafka_bootstrap_servers=kafka.bootstrap)
    with TestClient(create_app(settings)) as client:
        response = client.post("/ingest/fhir", json=messages.load_json("gp_record_bundle.json"),
                               headers={"Authorization": f"Bearer {tokens.feed(ods=data.GP_ODS)}"})
        assert response.status_code == 200, response.text
    engine = create_db_engine(pg_url)
    with make_session_factory(engine)() as session:
        ids = set(session.scalars(select(Resource.id).where(Resource.resource_type != "Provenance")))
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
    engine.dispose()
    bus = KafkaEventBus(kafka.bootstrap, "test-outbox-reader")
    try:
        assert {p["id"] for p in _announced(bus, ids)} == ids
    finally:
        bus.close()


def test_each_relay_moves_only_its_own_topic_and_a_rolled_back_change_stages_nothing(parts) -> None:
    sessions, bus, _pipeline = parts
    nhs = f"key-{uuid.uuid4().hex[:8]}"  # keys no other test's events on the shared broker
    with sessions() as session, session.begin():
        stage(session, bus, CONSENT_CHANGED, [(nhs, {"nhs_number": nhs, "version_id": 1})])
        stage(session, bus, RECORD_CHANGED, [("p-outbox", {"id": "r-outbox", "person_id": "p-outbox"})])
    with sessions() as session:
        session.begin()
        stage(session, bus, CONSENT_CHANGED, [(nhs, {"nhs_number": nhs, "version_id": 2})])
        session.rollback()  # the change failed: its event goes with it
    with sessions() as session:
        assert (pending(session, CONSENT_CHANGED), pending(session, RECORD_CHANGED)) == (1, 1)

    assert OutboxRelay(sessions, bus, CONSENT_CHANGED).relay_once() == 1
    with sessions() as session:
        assert (pending(session, CONSENT_CHANGED), pending(session, RECORD_CHANGED)) == (0, 1)
    assert OutboxRelay(sessions, bus, RECORD_CHANGED).relay_once() == 1
    reader = bus.consumer(f"reader-{uuid.uuid4().hex[:8]}", [CONSENT_CHANGED])
    seen: list[dict] = []
    try:
        for _ in range(30):
            seen += [e.payload for e in reader.poll(timeout=1) if e.key == nhs]
            if seen:
                break
        seen += [e.payload for e in reader.poll(timeout=1) if e.key == nhs]  # nothing more should follow
    finally:
        reader.close()
    assert seen == [{"nhs_number": nhs, "version_id": 1}]


def test_a_lingering_relay_sends_a_lone_change_at_once_and_gathers_a_stream(parts) -> None:
    sessions, bus, _pipeline = parts
    batches: list[list[str]] = []
    first_sent = threading.Event()
    deliver = bus.deliver

    def recorded(events, timeout=30):  # the real delivery to the broker, with a note of each batch's contents
        deliver(events, timeout)
        batches.append([payload["id"] for _topic, _key, payload in events])
        first_sent.set()

    bus.deliver = recorded  # type: ignore[method-assign]
    linger = 3.0
    relay = OutboxRelay(sessions, bus, RECORD_CHANGED, linger_seconds=linger).start()
    tag = uuid.uuid4().hex[:8]

    def change(n: int) -> None:
        with sessions() as session, session.begin():
            stage(session, bus, RECORD_CHANGED, [(f"p-{tag}", {"id": f"{tag}-{n}", "person_id": f"p-{tag}"})])
        relay.wake()

    try:
        change(0)
        assert first_sent.wait(linger - 0.5), "a lone change waited for the linger"
        for n in (1, 2, 3):  # a stream arriving while the relay lingers after the first batch
            change(n)
    finally:
        relay.stop()  # relays what is committed, then stops
    assert batches == [[f"{tag}-0"], [f"{tag}-1", f"{tag}-2", f"{tag}-3"]]
    assert {p["id"] for p in _announced(bus, {f"{tag}-{n}" for n in range(4)})} == {f"{tag}-{n}" for n in range(4)}
