"""The event interface's semantics, on the transports that need no broker: memory and the database log."""

import pytest

from shared.db import create_db_engine
from shared.events import DatabaseEventLog, EventBus, MemoryEventBus


@pytest.fixture(params=["memory", "database"])
def bus(request, sqlite_url: str) -> EventBus:
    return MemoryEventBus() if request.param == "memory" else DatabaseEventLog(create_db_engine(sqlite_url), 0.05)


def test_published_events_arrive_with_key_and_payload(bus: EventBus) -> None:
    bus.publish("consent.changed", "9990000018", {"nhs_number": "9990000018", "version": 2})
    consumer = bus.consumer("record-api", ["consent.changed"])
    events = consumer.poll(timeout=2)
    assert [(e.key, e.payload) for e in events] == [("9990000018", {"nhs_number": "9990000018", "version": 2})]


def test_uncommitted_events_are_redelivered_to_the_next_consumer(bus: EventBus) -> None:
    for n in range(3):
        bus.publish("socialcare.events", f"p{n}", {"n": n})
    first = bus.consumer("ingest", ["socialcare.events"])
    got = first.poll(timeout=2)
    first.commit(got[0])  # processed only the first, then "crashed"
    first.close()
    second = bus.consumer("ingest", ["socialcare.events"])
    assert [e.payload["n"] for e in second.poll(timeout=2)] == [1, 2]


def test_groups_are_independent_and_from_latest_skips_history(bus: EventBus) -> None:
    bus.publish("record.changed", "p", {"n": 1})
    assert len(bus.consumer("a", ["record.changed"]).poll(timeout=1)) == 1
    late = bus.consumer("b", ["record.changed"], from_latest=True)
    assert late.poll(timeout=0.2) == []
    bus.publish("record.changed", "p", {"n": 2})
    assert [e.payload for e in late.poll(timeout=2)] == [{"n": 2}]


@pytest.mark.parametrize(("raw", "why"), [(b"\xff\xfenot json", "not valid JSON"),
                                          (b'[{"event_id": "in-an-array"}]', "must be a JSON object")])
def test_bytes_that_are_not_a_json_object_arrive_as_they_were_published(bus: EventBus, raw: bytes,
                                                                         why: str) -> None:
    bus.publish_raw("socialcare.events", "k", raw)
    (event,) = bus.consumer("ingest", ["socialcare.events"]).poll(timeout=2)
    assert (event.payload, event.raw, event.key) == (None, raw, "k")
    assert why in event.decode_error


def test_published_raw_json_objects_arrive_as_objects(bus: EventBus) -> None:
    bus.publish_raw("socialcare.events", "k", b'{"n": 1}')
    (event,) = bus.consumer("ingest", ["socialcare.events"]).poll(timeout=2)
    assert event.payload == {"n": 1} and event.decode_error is None
