"""Driving each feed into the running ingest service and timing it end to end: a feed's clock stops when its
last input has been answered (HTTP, MLLP ACK) or consumed and committed (Kafka), by which point every
resource is committed, linked to a person, labelled and has its search rows (one transaction per message).

Throughput is counted from the database, not from what was sent: resource versions written (a new resource
or a new version of one; one Provenance per message included) per second of wall-clock time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from shared.events import SOCIALCARE_EVENTS
from tools.bench.environment import Environment
from tools.synth import community, ics

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
HTTP_CLIENTS = 4  # concurrent senders per HTTP feed: a GP system and a trust engine each send in parallel
MLLP_CONNECTIONS = 4


@dataclass
class FeedResult:
    feed: str
    messages: int
    versions: int
    seconds: float
    refused: int = 0

    @property
    def rate(self) -> float:
        return self.versions / self.seconds if self.seconds else 0.0


def count_versions(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM resource_version").fetchone()[0])  # type: ignore[index]


def _timed(env: Environment, feed: str, run: Callable[[], tuple[int, int]]) -> FeedResult:
    before = count_versions(env.dsn)
    started = time.perf_counter()
    messages, refused = run()
    seconds = time.perf_counter() - started
    return FeedResult(feed, messages, count_versions(env.dsn) - before, seconds, refused)


def _parallel(items: Iterable[Any], send: Callable[[Any], bool], workers: int) -> tuple[int, int]:
    """Send every item from `workers` threads, each taking the next item when it is free (the items are
    generated as they are taken, never all held at once); (sent, refused)."""
    source = iter(items)
    lock = threading.Lock()
    counts = {"sent": 0, "refused": 0}

    def drain() -> None:
        while True:
            with lock:
                item = next(source, None)
            if item is None:
                return
            ok = send(item)
            with lock:
                counts["sent"] += 1
                counts["refused"] += 0 if ok else 1

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(drain) for _ in range(workers)]:
            future.result()
    return counts["sent"], counts["refused"]


class _Clients(threading.local):
    client: httpx.Client | None = None


def _poster(url: str, headers_for: Callable[[Any], dict[str, str]], body_of: Callable[[Any], bytes],
            content_type: str) -> Callable[[Any], bool]:
    local = _Clients()

    def send(item: Any) -> bool:
        if local.client is None:
            local.client = httpx.Client(timeout=300)
        response = local.client.post(url, content=body_of(item),
                                     headers={"Content-Type": content_type} | headers_for(item))
        return response.status_code < 300

    return send


def gp_fhir(env: Environment, people: list[ics.Planned]) -> FeedResult:
    """One transaction Bundle per person, POSTed by the person's GP practice."""
    tokens = {p.person.gp_ods: env.tokens.feed(p.person.gp_ods) for p in people}
    bundles = zip(people, ics.gp_bundles(people), strict=True)
    send = _poster(f"{env.url('ingest')}/ingest/fhir",
                   lambda item: {"Authorization": f"Bearer {tokens[item[0].person.gp_ods]}",
                                 "X-Source-System": "EMIS"},
                   lambda item: json.dumps(item[1]).encode(), "application/fhir+json")
    return _timed(env, "GP FHIR Bundles (HTTP)", lambda: _parallel(bundles, send, HTTP_CLIENTS))


def community_csv(env: Environment, people: list[ics.Planned]) -> FeedResult:
    token = env.tokens.feed(community.COMMUNITY_ODS)
    send = _poster(f"{env.url('ingest')}/ingest/community",
                   lambda _item: {"Authorization": f"Bearer {token}", "X-Source-System": "RiO"},
                   lambda item: item, "text/csv")
    return _timed(env, "community CSV (HTTP)", lambda: _parallel(ics.community_files(people), send, 2))


def hl7_mllp(env: Environment, people: list[ics.Planned]) -> FeedResult:
    """Each person's ADT messages in order on one connection; people spread over several connections."""
    def run() -> tuple[int, int]:
        lanes: list[list[str]] = [[] for _ in range(MLLP_CONNECTIONS)]
        for index, messages in enumerate(ics.adt_messages(people)):
            lanes[index % MLLP_CONNECTIONS].extend(messages)
        results = _parallel(lanes, lambda lane: _mllp_lane(env.mllp_port, lane), MLLP_CONNECTIONS)
        return sum(len(lane) for lane in lanes), results[1]

    return _timed(env, "acute HL7 v2 ADT (MLLP)", run)


def _mllp_lane(port: int, messages: list[str]) -> bool:
    """Send one message at a time and wait for its ACK, as an integration engine does."""
    ok = True
    with socket.create_connection(("127.0.0.1", port), timeout=300) as conn:
        buffer = b""
        for message in messages:
            conn.sendall(VT + message.encode("utf-8") + FS + CR)
            while FS + CR not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    raise ConnectionError("MLLP connection closed")
                buffer += chunk
            ack, buffer = buffer.split(FS + CR, 1)
            ok = ok and b"MSA|AA" in ack
    return ok


def social_care(env: Environment, people: list[ics.Planned], group: str = "ingest") -> FeedResult:
    """Publish every event to socialcare.events and wait until consumer group `group` has committed them."""
    def run() -> tuple[int, int]:
        sent = publish_events(env, ics.social_events(people))
        wait_consumed(env, group)
        return sent, 0

    return _timed(env, "social-care events (Kafka)", run)


def publish_events(env: Environment, events: Iterable[tuple[str, dict[str, Any]]]) -> int:
    producer = KafkaProducer(bootstrap_servers=env.kafka.bootstrap, linger_ms=5, acks="all")
    sent = 0
    for key, event in events:
        producer.send(SOCIALCARE_EVENTS, key=key.encode(), value=json.dumps(event).encode())
        sent += 1
    producer.flush()
    producer.close()
    return sent


def wait_consumed(env: Environment, group: str, timeout: float = 7200) -> None:
    """Until the group's committed offsets reach the end of every partition of socialcare.events."""
    admin = KafkaAdminClient(bootstrap_servers=env.kafka.bootstrap)
    probe = KafkaConsumer(bootstrap_servers=env.kafka.bootstrap)
    try:
        partitions = [TopicPartition(SOCIALCARE_EVENTS, p) for p in probe.partitions_for_topic(SOCIALCARE_EVENTS)]
        ends = probe.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = admin.list_group_offsets(group).get(group, {})
            if all((committed[tp].offset if tp in committed else 0) >= ends[tp] for tp in partitions):
                return
            time.sleep(0.2)
        raise TimeoutError(f"consumer group {group} did not catch up within {timeout}s")
    finally:
        probe.close()
        admin.close()


def record_preferences(env: Environment, people: list[ics.Planned]) -> int:
    """Objections and National Data Opt-outs, as citizens set them (PUT /consent/me)."""
    url = f"{env.url('consent')}/consent/me"
    count = 0
    with httpx.Client(timeout=60) as client:
        for nhs_number, document in ics.preference_changes(people):
            response = client.put(url, json=document,
                                  headers={"Authorization": f"Bearer {env.tokens.citizen(nhs_number)}"})
            response.raise_for_status()
            count += 1
    return count
