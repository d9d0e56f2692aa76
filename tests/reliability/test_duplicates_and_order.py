"""Duplicate deliveries and out-of-order messages against the real ingest process: the same Kafka events twice on
the topic and then the whole topic again after a consumer-group rewind, and HL7 ADT for one stay in every order."""

from __future__ import annotations

import itertools
import json
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import KafkaAdminClient
from sqlalchemy import select

from shared.events import KafkaEventBus
from shared.schema import Resource
from tests.reliability.conftest import SCALE, Counts, committed, record_changed_for, wait_for
from tools.load import messages

pytestmark = pytest.mark.integration


def test_the_same_socialcare_events_delivered_twice_and_replayed_are_stored_once(
        pg_url, kafka, make_stack, unique, figures) -> None:
    topic, group = f"socialcare.events.dup-{unique}", f"ingest-dup-{unique}"
    kafka.create_topics([topic], partitions=3)
    persons = messages.people(20 * SCALE, start=999_360_000)
    events = [messages.socialcare_event(p, i) for p in persons for i in range(5)]
    bus = KafkaEventBus(kafka.bootstrap, "dup-test-provider")
    for event in events:  # every event published twice, byte for byte, as a provider's retry would
        raw = json.dumps(event).encode()
        bus.publish_raw(topic, event["person"]["nhs_number"], raw)
        bus.publish_raw(topic, event["person"]["nhs_number"], raw)
    bus.flush()
    bus.close()
    counts = Counts(pg_url)
    env = {"SCR_SOCIALCARE_TOPIC": topic, "SCR_SOCIALCARE_DLQ_TOPIC": f"{topic}.dlq", "SCR_CONSUMER_GROUP": group,
           "SCR_MLLP_ENABLED": "false"}
    stack = make_stack(pg_url, kafka.bootstrap, **env)
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    stack.start(("ingest",))
    wait_for(lambda: committed(admin, group, topic) == 2 * len(events), 180, "both copies consumed")
    first_pass = counts.resources("RelatedPerson")

    # The operator's replay (docs/OPERATIONS.md): stop ingest, rewind its group to the start, start it again.
    stack.services["ingest"].stop()
    from kafka.structs import TopicPartition

    rewind = admin.reset_group_offsets(group, {TopicPartition(topic, p): 0 for p in range(3)})
    assert all(result["error"] is None or result["error"].__name__ == "NoError" for result in rewind.values())
    stack.start_one("ingest")
    wait_for(lambda: counts.raw("socialcare") == 4 * len(events), 180, "the topic consumed again")
    wait_for(lambda: committed(admin, group, topic) == 2 * len(events), 60, "the replay committed")
    admin.close()

    with counts.sessions() as session:
        ids = set(session.scalars(select(Resource.id).where(Resource.resource_type == "RelatedPerson")))
    announced = record_changed_for(kafka.bootstrap, ids)
    figures.update(distinct_events=len(events), deliveries=4 * len(events), stored_after_first_pass=first_pass,
                   stored=counts.resources("RelatedPerson"), versions=counts.versions("RelatedPerson"),
                   raw_archived=counts.raw("socialcare"), record_changed_events=len(announced))
    assert first_pass == len(events)
    assert counts.resources("RelatedPerson") == len(events) == counts.versions("RelatedPerson")
    assert counts.resources("Patient") == len(persons) and counts.persons() == len(persons)
    assert counts.raw("socialcare", "processed") == 4 * len(events)
    assert sorted(p["change"] for p in announced) == ["create"] * len(events)  # one announcement each, no echo
    counts.close()


def _mllp(port: int, message: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"\x0b" + message.encode() + b"\x1c\r")
        reply = b""
        while b"\x1c\r" not in reply:
            chunk = conn.recv(65536)
            assert chunk, "connection closed before the ACK"
            reply += chunk
    return reply.decode()


def _state(body: dict[str, Any]) -> dict[str, Any]:
    """What a clinician sees of a stay: its status, class and period."""
    return {"status": body.get("status"), "class": body.get("class"), "period": body.get("period")}


def _wards(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The stay's location history (ward, status, period)."""
    return [(loc.get("location", {}).get("display"), loc.get("status"), loc.get("period"))
            for loc in body.get("location", [])]


def test_hl7_messages_for_one_stay_in_any_order_end_in_the_status_and_period_of_the_order_they_were_sent(
        pg_url, kafka, make_stack, figures) -> None:
    orders = list(itertools.permutations(range(3)))  # admit, transfer, discharge: all six orders
    orders.append((2, 2, 1, 0, 0, 1))  # and with duplicates, newest first
    persons = messages.people(len(orders) + 1, start=999_370_000)
    start = datetime(2024, 3, 1, 10, tzinfo=UTC)
    counts = Counts(pg_url)
    stack = make_stack(pg_url, kafka.bootstrap, SCR_CONSUMERS_ENABLED="false").start(("ingest",))
    port = stack.ports["mllp"]

    def deliver(person: messages.Person, order: tuple[int, ...]) -> list[str]:
        stay = messages.admission(person, f"V{person.n:05d}", start)
        return [_mllp(port, stay[i]).split("MSA|", 1)[1][:2] for i in order]

    assert deliver(persons[0], (0, 1, 2)) == ["AA"] * 3  # the order the PAS sent them
    acks = {order: deliver(person, order) for person, order in zip(persons[1:], orders, strict=True)}
    with counts.sessions() as session:
        stays = {row.source_key: row.body for row in session.scalars(
            select(Resource).where(Resource.resource_type == "Encounter"))}
    baseline = stays[f"visit:V{persons[0].n:05d}"]
    expected = _state(baseline)
    delivered = [(order, stays[f"visit:V{person.n:05d}"]) for person, order in zip(persons[1:], orders, strict=True)]
    differing = {str(order): _state(body) for order, body in delivered if _state(body) != expected}
    # A late event is replayed with the stay's archived messages in event-time order (docs/RELIABILITY.md §5),
    # so the ward history matches the in-order stay too.
    ward_history_differs = {str(order): _wards(body) for order, body in delivered if _wards(body) != _wards(baseline)}
    figures.update(orders=len(orders) + 1, messages=3 + sum(len(o) for o in orders), encounters=len(stays),
                   expected_state=expected, expected_wards=_wards(baseline),
                   orders_ending_in_another_state=differing, orders_with_another_ward_history=ward_history_differs)
    assert all(set(a) == {"AA"} for a in acks.values()), acks  # late messages are acknowledged, not refused
    assert len(stays) == len(orders) + 1  # one Encounter per stay, whatever the order
    assert counts.resources("Patient") == len(orders) + 1 and counts.persons() == len(orders) + 1
    assert expected["status"] == "finished" and expected["period"]["end"]
    assert differing == {}, differing  # every order ends discharged, with the admission and discharge times
    assert ward_history_differs == {}, ward_history_differs
    counts.close()
