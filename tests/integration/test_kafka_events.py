"""The Kafka transport against a real broker started by the test setup."""

import uuid

import pytest

from shared.events import KafkaEventBus

pytestmark = pytest.mark.integration


def _topic() -> str:
    return f"test.{uuid.uuid4().hex[:8]}"


def _poll_until(consumer, count: int, attempts: int = 30):
    got = []
    for _ in range(attempts):
        got += consumer.poll(timeout=1)
        if len(got) >= count:
            break
    return got


def test_event_reaches_a_consumer_group_member_with_key_and_payload_intact(kafka) -> None:
    topic = _topic()
    kafka.create_topics([topic], partitions=3)
    bus = KafkaEventBus(kafka.bootstrap, "test")
    payload = {"person": "9990000018", "text": "Ünïcödé", "nested": {"n": [1, 2.5, None, True]}}
    bus.publish(topic, "9990000018", payload)
    bus.flush()
    consumer = bus.consumer("group-a", [topic])
    (event,) = _poll_until(consumer, 1)
    assert (event.topic, event.key, event.payload) == (topic, "9990000018", payload)
    consumer.commit(event)
    consumer.close()
    bus.close()


def test_a_consumer_that_crashes_before_committing_sees_the_event_again(kafka) -> None:
    topic = _topic()
    kafka.create_topics([topic], partitions=1)
    bus = KafkaEventBus(kafka.bootstrap, "test")
    for n in range(3):
        bus.publish(topic, "same-person", {"n": n})
    bus.flush()
    first = bus.consumer("group-b", [topic])
    events = _poll_until(first, 3)
    assert [e.payload["n"] for e in events] == [0, 1, 2]  # one key, one partition: order kept
    first.commit(events[0])
    first.close()  # "crash": events 1 and 2 were never committed
    second = bus.consumer("group-b", [topic])
    assert [e.payload["n"] for e in _poll_until(second, 2)] == [1, 2]
    second.close()
    bus.close()


def test_one_commit_moves_every_partition_past_the_latest_event_handled_there(kafka) -> None:
    topic = _topic()
    kafka.create_topics([topic], partitions=3)
    bus = KafkaEventBus(kafka.bootstrap, "test")
    for n in range(12):
        bus.publish(topic, f"person-{n % 4}", {"n": n})
    bus.flush()
    first = bus.consumer("group-c", [topic])
    events = _poll_until(first, 12)
    assert len(events) == 12 and len({e.partition for e in events}) > 1
    handled = [e for e in events if e.payload["n"] < 8]  # the last four stay uncommitted, as if the worker crashed
    first.commit_latest(reversed(handled))  # in any order: the highest offset per partition is what is committed
    first.close()
    second = bus.consumer("group-c", [topic])
    assert sorted(e.payload["n"] for e in _poll_until(second, 4)) == [8, 9, 10, 11]
    second.close()
    bus.close()


def test_bytes_that_are_not_json_arrive_as_a_decode_error_not_an_exception(kafka) -> None:
    topic = _topic()
    kafka.create_topics([topic])
    bus = KafkaEventBus(kafka.bootstrap, "test")
    bus.publish_raw(topic, "k", b"\xff not json")
    bus.flush()
    consumer = bus.consumer("group-c", [topic])
    (event,) = _poll_until(consumer, 1)
    assert event.payload is None and "JSON" in event.decode_error and event.raw == b"\xff not json"
    consumer.close()
    bus.close()
