"""The socialcare.events consumer against a real Kafka broker (and the embedded event log): consumer group,
commit only after the store commit, redelivery without duplicates, and poison events dead-lettered without
blocking their partition."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaAdminClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from services.ingest.app import create_app
from services.ingest.consumer import SocialCareConsumer
from services.ingest.service import Pipeline
from shared.db import create_db_engine, make_session_factory
from shared.events import RECORD_CHANGED, DatabaseEventLog, KafkaEventBus
from shared.schema import RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import ingest_settings

pytestmark = pytest.mark.integration


def _event(n: int, key_person: str = "MOS-1") -> dict:
    return messages.event("contact.recorded", {"contact": {"id": f"CON-{n}", "relationship": "neighbour"}},
                          event_id=f"evt-{n}", person={"local_id": key_person, "family_name": "Begum"})


def _wait_for(check, timeout: float = 90, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _drain(bus: KafkaEventBus, topic: str, enough) -> list:
    """Read `topic` from the start with a new group until `enough(events)` holds (or a minute passes)."""
    consumer = bus.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic])
    got: list = []
    try:
        for _ in range(60):
            got += consumer.poll(timeout=1)
            if enough(got):
                break
    finally:
        consumer.close()
    return got


@pytest.fixture
def topics(kafka):
    suffix = uuid.uuid4().hex[:8]
    names = (f"socialcare.events.{suffix}", f"socialcare.events.{suffix}.dlq")
    kafka.create_topics([names[0]], partitions=3)
    kafka.create_topics([names[1]], partitions=1)
    return names


def test_poison_events_are_dead_lettered_and_the_partition_keeps_flowing(kafka, topics, pg_url, tokens) -> None:
    topic, dlq = topics
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    not_json_before = REGISTRY.get_sample_value("scr_ingest_dlq_total", {"reason": "not-json"}) or 0.0
    bus = KafkaEventBus(kafka.bootstrap, "test-producer")
    bus.publish_raw(topic, "same-person", b"{this is not json")
    bus.publish(topic, "same-person", _event(1))
    bus.publish(topic, "same-person", {"event_type": "care_package.started", "event_id": "broken"})
    bus.publish(topic, "another-person", _event(2, key_person="MOS-2"))
    bus.flush()

    settings = ingest_settings(tokens, pg_url, kafka_bootstrap_servers=kafka.bootstrap, consumers_enabled=True,
                               consumer_group=group, socialcare_topic=topic, socialcare_dlq_topic=dlq,
                               consumer_poll_seconds=0.5, mllp_enabled=False)
    sessions = make_session_factory(create_db_engine(pg_url))

    def stored() -> int:
        with sessions() as session:
            return session.scalar(select(func.count()).select_from(Resource)
                                  .where(Resource.resource_type == "RelatedPerson")) or 0

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)

    def committed() -> int:
        offsets = admin.list_group_offsets(group).get(group, {})
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)

    with TestClient(create_app(settings)) as client:
        _wait_for(lambda: stored() == 2, what="both good events stored")
        _wait_for(lambda: committed() == 4, what="all four offsets committed")
        metrics = client.get("/metrics").text
    admin.close()
    # The counter is per process: other tests dead-letter events too.
    assert f'scr_ingest_dlq_total{{reason="not-json"}} {not_json_before + 1}' in metrics
    assert 'scr_ingest_consumer_lag{partition="' in metrics and f'topic="{topic}"' in metrics

    letters = sorted((e.payload for e in _drain(bus, dlq, lambda got: len(got) >= 2)), key=lambda p: p["offset"])
    assert [p["reason"] for p in letters] == ["not-json", "invalid-event"]
    assert letters[0]["original"] == "{this is not json" and letters[0]["original_topic"] == topic
    assert letters[1]["original"]["event_id"] == "broken" and "care_package" in letters[1]["detail"]
    assert letters[0]["partition"] == letters[1]["partition"]
    with sessions() as session:
        raws = list(session.scalars(select(RawMessage).where(RawMessage.channel == "socialcare")))
        assert sorted(r.status for r in raws) == ["processed", "processed", "rejected", "rejected"]
        assert all(r.detail["topic"] == topic for r in raws)
        ids = {r.id for r in session.scalars(select(Resource).where(Resource.resource_type == "RelatedPerson"))}
    def mine(events: list) -> list[dict]:
        return [e.payload for e in events if e.payload and e.payload.get("id") in ids]

    changed = mine(_drain(bus, RECORD_CHANGED, lambda got: {p["id"] for p in mine(got)} == ids))
    assert {p["id"] for p in changed} == ids and all(p["change"] == "create" for p in changed)
    bus.close()


def test_an_event_redelivered_after_a_crash_before_commit_is_stored_once(kafka, topics, pg_url, tokens) -> None:
    topic, dlq = topics
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    settings = ingest_settings(tokens, pg_url, kafka_bootstrap_servers=kafka.bootstrap, consumer_group=group,
                               socialcare_topic=topic, socialcare_dlq_topic=dlq)
    bus = KafkaEventBus(kafka.bootstrap, "test-ingest")
    bus.publish(topic, "person-1", _event(7))
    bus.flush()
    sessions = make_session_factory(create_db_engine(pg_url))
    runner = SocialCareConsumer(bus, Pipeline(sessions, bus, settings), settings)

    def first_event(consumer):
        return _wait_for(lambda: consumer.poll(timeout=1), what="the event")[0]

    crashed = runner.open()
    event = first_event(crashed)
    assert runner.handle(event)  # stored and committed to the database...
    crashed.close()  # ...then the process dies before committing the offset

    restarted = runner.open()
    again = first_event(restarted)
    assert (again.partition, again.offset) == (event.partition, event.offset)  # redelivered, not lost
    assert runner.handle(again)
    restarted.commit(again)
    restarted.close()

    with sessions() as session:
        rows = list(session.scalars(select(Resource).where(Resource.resource_type.in_(["Patient", "RelatedPerson"]))))
        assert sorted(r.resource_type for r in rows) == ["Patient", "RelatedPerson"]
        assert all(r.version_id == 1 for r in rows)
        assert session.scalar(select(func.count()).select_from(RawMessage)) == 2  # both deliveries archived

    after_commit = runner.open()
    assert after_commit.poll(timeout=3) == []  # committed: not delivered again
    after_commit.close()
    bus.close()


def test_the_consumer_reads_the_embedded_event_log_when_there_is_no_kafka(pg_url, tokens) -> None:
    settings = ingest_settings(tokens, pg_url, consumers_enabled=True, consumer_poll_seconds=0.2,
                               mllp_enabled=False)
    engine = create_db_engine(pg_url)
    log = DatabaseEventLog(engine)
    log.publish(settings.socialcare_topic, "MOS-1", _event(3))
    log.publish(settings.socialcare_topic, "MOS-1", {"not": "an event"})
    sessions = make_session_factory(engine)

    def count(resource_type: str) -> int:
        with sessions() as session:
            return session.scalar(select(func.count()).select_from(Resource)
                                  .where(Resource.resource_type == resource_type)) or 0

    with TestClient(create_app(settings)) as client:
        _wait_for(lambda: count("RelatedPerson") == 1, what="the event stored")
        _wait_for(lambda: any(e["reason"] == "invalid-event" for e in _log(sessions, settings.socialcare_dlq_topic)),
                  what="the dead letter")
        _wait_for(lambda: f'scr_ingest_consumer_lag{{partition="0",topic="{settings.socialcare_topic}"}} 0.0'
                  in client.get("/metrics").text, what="the lag gauge at zero")
    engine.dispose()


def _log(sessions, topic: str) -> list[dict]:
    from shared.schema import EventLogEntry

    with sessions() as session:
        return [json.loads(json.dumps(row.payload)) for row in
                session.scalars(select(EventLogEntry).where(EventLogEntry.topic == topic))]


def _embedded_consumer_app(pg_url, tokens, **overrides):
    settings = ingest_settings(tokens, pg_url, consumers_enabled=True, consumer_poll_seconds=0.2,
                               mllp_enabled=False, **overrides)
    engine = create_db_engine(pg_url)
    return settings, engine, make_session_factory(engine), DatabaseEventLog(engine)


def _count(sessions, resource_type: str) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Resource)
                              .where(Resource.resource_type == resource_type)) or 0


def test_an_event_that_cannot_be_archived_waits_uncommitted_until_it_can(pg_url, tokens, caplog) -> None:
    from sqlalchemy import text

    from shared.schema import EventOffset

    settings, engine, sessions, log = _embedded_consumer_app(pg_url, tokens)
    with sessions.begin() as session:  # the archive is unreachable
        session.execute(text("ALTER TABLE raw_message RENAME TO raw_message_away"))
    log.publish(settings.socialcare_topic, "MOS-1", _event(4))
    app = create_app(settings)
    logging.getLogger().addHandler(caplog.handler)  # the app's logging set-up replaced pytest's handlers
    caplog.set_level("INFO")
    with TestClient(app):
        _wait_for(lambda: any(isinstance(r.msg, dict) and r.msg.get("event") == "event could not be archived"
                              for r in caplog.records), what="the consumer to have tried")
        with sessions() as session:  # tried, and neither stored nor committed anything
            assert session.scalar(select(EventOffset.position).where(EventOffset.group_id == "ingest")) is None
        with sessions.begin() as session:
            session.execute(text("ALTER TABLE raw_message_away RENAME TO raw_message"))
        _wait_for(lambda: _count(sessions, "RelatedPerson") == 1, what="the event stored once the archive is back")
        _wait_for(lambda: _committed(sessions) > 0, what="the offset committed")
    engine.dispose()


def _committed(sessions) -> int:
    from shared.schema import EventOffset

    with sessions() as session:
        return session.scalar(select(EventOffset.position).where(EventOffset.group_id == "ingest")) or 0


def test_an_event_whose_processing_keeps_failing_is_dead_lettered_and_stays_retryable(pg_url, tokens) -> None:
    from sqlalchemy import text

    settings, engine, sessions, log = _embedded_consumer_app(pg_url, tokens, consumer_max_attempts=2)
    with sessions.begin() as session:  # processing fails (the search table is gone); archiving still works
        session.execute(text("ALTER TABLE search_param RENAME TO search_param_away"))
    log.publish(settings.socialcare_topic, "MOS-1", _event(5))
    log.publish(settings.socialcare_topic, "MOS-2", _event(6, key_person="MOS-2"))
    with TestClient(create_app(settings)) as client:
        letters = _wait_for(lambda: len(found := _log(sessions, settings.socialcare_dlq_topic)) >= 2 and found,
                            what="both events dead-lettered")
        assert {p["reason"] for p in letters} == {"processing-failed"}
        with sessions.begin() as session:
            session.execute(text("ALTER TABLE search_param_away RENAME TO search_param"))
        admin = {"Authorization": f"Bearer {tokens.feed(scope='system/IngestAdmin.*')}"}
        for letter in letters:
            assert client.post(f"/ingest/raw/{letter['raw_message_id']}/retry", headers=admin).status_code == 200
    assert _count(sessions, "RelatedPerson") == 2
    engine.dispose()


def test_an_event_id_reused_for_a_different_event_is_dead_lettered(pg_url, tokens) -> None:
    settings, engine, sessions, log = _embedded_consumer_app(pg_url, tokens)
    first = _event(5)
    log.publish(settings.socialcare_topic, "MOS-1", first)
    log.publish(settings.socialcare_topic, "MOS-1", first)  # a re-send: harmless
    log.publish(settings.socialcare_topic, "MOS-1", first | {"contact": {"id": "CON-6", "relationship": "son"}})
    with TestClient(create_app(settings)):
        (letter,) = _wait_for(lambda: _log(sessions, settings.socialcare_dlq_topic), what="the dead letter")
    assert letter["reason"] == "invalid-event" and letter["original"]["contact"]["id"] == "CON-6"
    assert letter["detail"].startswith("event_id: event_id already used for a different event")
    assert _count(sessions, "RelatedPerson") == 1
    engine.dispose()


def test_forms_providers_send_are_stored_and_a_bad_value_is_dead_lettered_with_its_reason(pg_url, tokens) -> None:
    settings, engine, sessions, log = _embedded_consumer_app(pg_url, tokens)
    person = {"local_id": "MOS-1", "family_name": "Begum", "nhs_number": "999-000-0034"}
    log.publish(settings.socialcare_topic, "MOS-1", _event(7) | {"occurred_at": "2026-03-01T10:15+00:00",
                                                                 "person": person})
    log.publish(settings.socialcare_topic, "MOS-1", _event(8) | {"occurred_at": "2026-03-01T10:15"})
    with TestClient(create_app(settings)):
        (letter,) = _wait_for(lambda: _log(sessions, settings.socialcare_dlq_topic), what="the dead letter")
        _wait_for(lambda: _count(sessions, "RelatedPerson") == 1, what="the good event stored")
    assert letter["reason"] == "invalid-event" and letter["original"]["event_id"] == "evt-8"
    assert letter["detail"] == ("occurred_at: Value error, has no UTC offset: add Z or the offset in force "
                                "(+01:00 in British Summer Time)")
    with sessions() as session:
        patient = session.scalar(select(Resource).where(Resource.resource_type == "Patient"))
    assert patient.body["identifier"][0]["value"] == "9990000034"
    engine.dispose()
