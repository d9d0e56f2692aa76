"""Restart the real Kafka broker while a provider streams social-care events: every event the provider sent is
stored exactly once, and every service is ready again afterwards. The provider resends what the broker did not
acknowledge (at-least-once, as providers are told to), so the broker may hold duplicates; ingest must not. A citizen
who changes their preferences while the broker is away gets their answer at once, and the change is announced on
consent.changed when the broker is back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer
from sqlalchemy import select

from shared.events import ALL_TOPICS, CONSENT_CHANGED, SOCIALCARE_EVENTS
from shared.schema import Resource
from tests.reliability.conftest import SCALE, Counts, events_on, record_changed_for, wait_for
from tests.support import data
from tools.load import messages
from tools.peers.kafka import KafkaBroker

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, so restarting it disturbs no other test."""
    own = KafkaBroker(str(tmp_path / "kafka")).start()
    try:
        own.create_topics(list(ALL_TOPICS), partitions=3)
        yield own
    finally:
        own.destroy()


class Provider:
    """A social-care provider's publisher: waits for each acknowledgement and resends until it gets one, with a fresh
    connection after any failure (and after a send that hangs), as a careful provider would."""

    def __init__(self, bootstrap: str, events: list[dict]) -> None:
        self.bootstrap, self.events = bootstrap, events
        self.acked = 0
        self.failures = 0
        self.done = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4)

    def _producer(self) -> KafkaProducer:
        return KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", retries=3, request_timeout_ms=5000,
                             delivery_timeout_ms=15000, max_block_ms=5000, linger_ms=0)

    def run(self) -> None:
        producer = self._producer()
        for event in self.events:
            while True:
                try:
                    pending = self._pool.submit(lambda p=producer, e=event: p.send(
                        SOCIALCARE_EVENTS, key=e["person"]["nhs_number"].encode(),
                        value=json.dumps(e).encode()).get(timeout=20))
                    pending.result(timeout=30)
                    break
                except Exception:  # refused, timed out or hung: count it, reconnect, send the same event again
                    self.failures += 1
                    self._pool.submit(producer.close, 0)
                    time.sleep(0.5)
                    try:
                        producer = self._producer()
                    except Exception:
                        time.sleep(1)
            self.acked += 1
            time.sleep(0.02)
        producer.close(timeout=5)
        self.done.set()


CITIZEN = data.NHS_NUMBERS[6]


def _object_to_sharing(stack, signer) -> httpx.Response:
    """A citizen objects while the broker is away: the change commits and is answered without waiting for Kafka."""
    return httpx.put(f"{stack.url('consent')}/consent/me", timeout=30,
                     headers={"Authorization": f"Bearer {signer.citizen(CITIZEN)}"},
                     json={"direct_care": "object", "withheld_categories": [], "denied_organisations": [],
                           "national_data_opt_out": False})


def test_a_broker_restart_during_a_stream_of_socialcare_events_loses_and_duplicates_nothing(
        pg_url, broker, make_stack, signer, figures) -> None:
    persons = messages.people(25 * SCALE, start=999_340_000)
    events = [messages.socialcare_event(p, i) for p in persons for i in range(10)]
    counts = Counts(pg_url)
    stack = make_stack(pg_url, broker.bootstrap).start()
    provider = Provider(broker.bootstrap, events)
    threading.Thread(target=provider.run, daemon=True).start()
    wait_for(lambda: provider.acked >= 60, 120, "the stream to be under way", 0.05)
    stopped_at = provider.acked
    broker.stop()
    time.sleep(3)  # the broker is away for a while: producers and consumers see it gone
    objection = _object_to_sharing(stack, signer)
    broker.start()
    wait_for(provider.done.is_set, 240, "the provider to have every event acknowledged")
    wait_for(lambda: counts.resources("RelatedPerson") >= len(events), 240, "every event stored")
    for name in ("ingest", "consent", "record_api"):
        wait_for(lambda name=name: stack.ready(name), 120, f"{name} ready again")
    time.sleep(2)  # anything redelivered late would show up here
    metrics = httpx.get(f"{stack.url('ingest')}/metrics").text
    with counts.sessions() as session:
        ids = set(session.scalars(select(Resource.id).where(Resource.resource_type == "RelatedPerson")))
    # Every stored change is announced on record.changed, including those committed while the broker was away:
    # the events waited in the transactional outbox until the relay could deliver them.
    announced: set[str] = set()

    def all_announced() -> bool:
        announced.update(p["id"] for p in record_changed_for(broker.bootstrap, ids - announced))
        return announced == ids

    wait_for(all_announced, 180, "record.changed for every stored change", 1)
    # The citizen's change, committed while the broker was away, waited in the outbox too.
    wait_for(lambda: any(e.get("nhs_number") == CITIZEN and e.get("version_id") == 1
                         for e in events_on(broker.bootstrap, CONSENT_CHANGED)), 120, "consent.changed for it", 1)
    figures.update(sent=len(events), acked_before_restart=stopped_at, provider_send_failures=provider.failures,
                   record_changed_announced=len(announced),
                   stored=counts.resources("RelatedPerson"), versions=counts.versions("RelatedPerson"),
                   patients=counts.resources("Patient"), raw_archived=counts.raw("socialcare"),
                   duplicates_absorbed=counts.raw("socialcare") - len(events))
    assert objection.status_code == 201, objection.text
    assert counts.resources("RelatedPerson") == len(events)
    assert counts.versions("RelatedPerson") == len(events) and counts.max_version("RelatedPerson") == 1
    assert counts.resources("Patient") == len(persons) and counts.persons() == len(persons)
    assert counts.duplicate_source_keys() == 0
    assert counts.raw("socialcare", "failed") == 0
    assert "scr_ingest_dlq_total{" not in metrics
    for name, log in stack.logs().items():  # no background consumer died on the way
        assert "Exception in thread" not in log, name
    counts.close()
