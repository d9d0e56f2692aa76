"""One publish/consume interface over three transports: Apache Kafka (real mode), an event log table in the
database (the embedded default, shared by separate service processes), and memory (unit tests).

Payloads are JSON objects; keys are person keys so one person's events stay ordered on one partition.
Consumers commit explicitly, after the work an event caused is committed: delivery is at least once.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from shared.schema import EventLogEntry, EventOffset

log = structlog.get_logger("scr.events")

SOCIALCARE_EVENTS = "socialcare.events"
SOCIALCARE_DLQ = "socialcare.events.dlq"
CONSENT_CHANGED = "consent.changed"
RECORD_CHANGED = "record.changed"
ALL_TOPICS = (SOCIALCARE_EVENTS, SOCIALCARE_DLQ, CONSENT_CHANGED, RECORD_CHANGED)


@dataclass(frozen=True)
class Event:
    """A consumed event. `payload` is None when the bytes were not a JSON object; `raw` always holds them."""

    topic: str
    key: str | None
    payload: dict[str, Any] | None
    raw: bytes
    partition: int = 0
    offset: int = -1
    decode_error: str | None = None


def decode(topic: str, key: bytes | str | None, raw: bytes, partition: int, offset: int) -> Event:
    key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Event(topic, key_text, None, raw, partition, offset, f"not valid JSON: {exc}")
    if not isinstance(payload, dict):
        return Event(topic, key_text, None, raw, partition, offset, "event must be a JSON object")
    return Event(topic, key_text, payload, raw, partition, offset)


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


class EventConsumer(ABC):
    @abstractmethod
    def poll(self, timeout: float = 1.0, max_records: int = 100) -> list[Event]:
        """Events not yet handed out to this consumer, waiting up to `timeout` seconds for some."""

    @abstractmethod
    def commit(self, event: Event) -> None:
        """Record that `event` (and every earlier one on its partition) is fully processed."""

    @abstractmethod
    def close(self) -> None: ...

    def commit_latest(self, events: Iterable[Event]) -> None:
        """Commit the latest of `events` on each of their partitions: every one of them (and everything before them)
        is fully processed. Transports that can commit several partitions in one request override this."""
        for event in _latest_per_partition(events):
            self.commit(event)

    def commit_latest_or_log(self, events: Iterable[Event], consumer: str) -> bool:
        """`commit_latest` where a failed commit must not stop the caller (the broker away is often why the caller is
        failing too): logged instead, and the events are delivered again, so handlers must be idempotent. True if
        committed."""
        try:
            self.commit_latest(events)
        except Exception as exc:
            log.error("offsets not committed; those events will be delivered again", consumer=consumer,
                      error_type=type(exc).__name__)
            return False
        return True

    def lag(self) -> dict[tuple[str, int], int]:
        """Events published but not yet handed to this consumer, per (topic, partition), where known."""
        return {}


class EventBus(ABC):
    @abstractmethod
    def publish(self, topic: str, key: str | None, payload: dict[str, Any]) -> None: ...

    @abstractmethod
    def publish_raw(self, topic: str, key: str | None, raw: bytes) -> None:
        """Publish bytes as they are (dead-letter copies of events that were not valid JSON)."""

    def flush(self, timeout: float = 10) -> None:  # noqa: B027 - transports that buffer override this
        """Block until everything published so far is durably accepted."""

    def deliver(self, events: list[tuple[str, str | None, dict[str, Any]]], timeout: float = 30) -> None:
        """Publish (topic, key, payload) events in order and return once every one is acknowledged; raise if any
        was not (the caller keeps them to try again)."""
        for topic, key, payload in events:
            self.publish(topic, key, payload)
        self.flush(timeout)

    @abstractmethod
    def consumer(self, group_id: str, topics: list[str], *, from_latest: bool = False) -> EventConsumer: ...

    @abstractmethod
    def check(self) -> None:
        """Raise if the transport cannot be reached (readiness and start-up checks)."""

    def close(self) -> None:  # noqa: B027
        """Release connections."""


# ---------------------------------------------------------------- memory (unit tests, single process)


class MemoryEventBus(EventBus):
    def __init__(self) -> None:
        self.topics: dict[str, list[tuple[str | None, bytes]]] = defaultdict(list)
        self.committed: dict[tuple[str, str], int] = {}
        self._cond = threading.Condition()

    def publish(self, topic: str, key: str | None, payload: dict[str, Any]) -> None:
        self.publish_raw(topic, key, encode(payload))

    def publish_raw(self, topic: str, key: str | None, raw: bytes) -> None:
        with self._cond:
            self.topics[topic].append((key, raw))
            self._cond.notify_all()

    def events(self, topic: str) -> list[Event]:
        return [decode(topic, k, r, 0, i) for i, (k, r) in enumerate(self.topics[topic])]

    def consumer(self, group_id: str, topics: list[str], *, from_latest: bool = False) -> EventConsumer:
        return _MemoryConsumer(self, group_id, topics, from_latest)

    def check(self) -> None:
        return None


class _MemoryConsumer(EventConsumer):
    def __init__(self, bus: MemoryEventBus, group: str, topics: list[str], from_latest: bool) -> None:
        self.bus, self.group, self.topics = bus, group, topics
        self.position = {
            t: bus.committed.get((group, t), len(bus.topics[t]) if from_latest else 0) for t in topics
        }

    def poll(self, timeout: float = 1.0, max_records: int = 100) -> list[Event]:
        deadline = time.monotonic() + timeout
        with self.bus._cond:
            while True:
                batch = self._take(max_records)
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0:
                    return batch
                self.bus._cond.wait(remaining)

    def _take(self, max_records: int) -> list[Event]:
        batch: list[Event] = []
        for topic in self.topics:
            log = self.bus.topics[topic]
            while self.position[topic] < len(log) and len(batch) < max_records:
                key, raw = log[self.position[topic]]
                batch.append(decode(topic, key, raw, 0, self.position[topic]))
                self.position[topic] += 1
        return batch

    def commit(self, event: Event) -> None:
        self.bus.committed[(self.group, event.topic)] = event.offset + 1

    def close(self) -> None:
        return None


# ---------------------------------------------------------------- database event log (embedded default)


_RAW_BYTES = "scr.event_log.raw_bytes_base64"  # the one key of a row holding bytes that were not a JSON object


class DatabaseEventLog(EventBus):
    """Kafka's role in the embedded default: an append-only table with per-group committed positions."""

    def __init__(self, engine: Engine, poll_interval: float = 0.2) -> None:
        self.engine = engine
        self.sessions = sessionmaker(bind=engine)
        self.poll_interval = poll_interval

    def publish(self, topic: str, key: str | None, payload: dict[str, Any]) -> None:
        with self.sessions.begin() as session:
            self.publish_in(session, topic, key, payload)

    def publish_raw(self, topic: str, key: str | None, raw: bytes) -> None:
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if not isinstance(payload, dict):
            # The table holds JSON objects: other bytes are kept exactly, and consumers get them back as they
            # would from Kafka (payload None, the bytes in `raw`), not as an event that happens to be an object.
            payload = {_RAW_BYTES: base64.b64encode(raw).decode("ascii")}
        self.publish(topic, key, payload)

    @staticmethod
    def publish_in(session: Session, topic: str, key: str | None, payload: dict[str, Any]) -> None:
        """Append within the caller's transaction, so the event exists exactly when the change does."""
        session.execute(insert(EventLogEntry).values(topic=topic, key=key, payload=json.loads(encode(payload)),
                                                      created=datetime.now(UTC)))

    @staticmethod
    def publish_many_in(session: Session, topic: str, events: list[tuple[str | None, dict[str, Any]]]) -> None:
        """`publish_in` for many events in one statement (ingest announces every resource of a message)."""
        if events:
            now = datetime.now(UTC)
            session.execute(EventLogEntry.__table__.insert(), [
                {"topic": topic, "key": key, "payload": json.loads(encode(payload)), "created": now}
                for key, payload in events])

    def consumer(self, group_id: str, topics: list[str], *, from_latest: bool = False) -> EventConsumer:
        return _DatabaseConsumer(self, group_id, topics, from_latest)

    def check(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(func.count()).select_from(EventOffset).limit(1))


def _stored_bytes(payload: dict[str, Any]) -> bytes:
    """An event log row as the bytes that were published."""
    if list(payload) == [_RAW_BYTES]:
        return base64.b64decode(payload[_RAW_BYTES])
    return encode(payload)


class _DatabaseConsumer(EventConsumer):
    def __init__(self, log: DatabaseEventLog, group: str, topics: list[str], from_latest: bool) -> None:
        self.log, self.group, self.topics = log, group, topics
        with log.sessions() as session:
            committed = dict(session.execute(
                select(EventOffset.topic, EventOffset.position).where(EventOffset.group_id == group)
            ).all())
            newest = session.scalar(select(func.max(EventLogEntry.id))) or 0
        self.position = {t: committed.get(t, newest if from_latest else 0) for t in topics}

    def poll(self, timeout: float = 1.0, max_records: int = 100) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            batch = self._fetch(max_records)
            if batch or time.monotonic() >= deadline:
                return batch
            time.sleep(min(self.log.poll_interval, max(0.0, deadline - time.monotonic())))

    def _fetch(self, max_records: int) -> list[Event]:
        batch: list[Event] = []
        with self.log.sessions() as session:
            for topic in self.topics:
                rows = session.execute(
                    select(EventLogEntry.id, EventLogEntry.key, EventLogEntry.payload)
                    .where(EventLogEntry.topic == topic, EventLogEntry.id > self.position[topic])
                    .order_by(EventLogEntry.id).limit(max_records - len(batch))
                ).all()
                for row_id, key, payload in rows:
                    batch.append(decode(topic, key, _stored_bytes(payload), 0, row_id))
                    self.position[topic] = row_id
                if len(batch) >= max_records:
                    break
        return batch

    def commit(self, event: Event) -> None:
        now = datetime.now(UTC)
        with self.log.sessions.begin() as session:
            row = session.get(EventOffset, (self.group, event.topic))
            if row is None:
                session.add(EventOffset(group_id=self.group, topic=event.topic, position=event.offset, updated=now))
            elif event.offset > row.position:
                row.position, row.updated = event.offset, now

    def lag(self) -> dict[tuple[str, int], int]:
        """The embedded log has one partition per topic: the events after this consumer's position."""
        with self.log.sessions() as session:
            return {(topic, 0): session.scalar(select(func.count()).select_from(EventLogEntry).where(
                EventLogEntry.topic == topic, EventLogEntry.id > self.position[topic])) or 0 for topic in self.topics}

    def close(self) -> None:
        return None


# ---------------------------------------------------------------- Apache Kafka (real mode)


class KafkaEventBus(EventBus):
    def __init__(self, bootstrap_servers: str, client_id: str, security: dict[str, Any] | None = None) -> None:
        from kafka import KafkaProducer

        self.bootstrap = bootstrap_servers
        self.client_id = client_id
        self.security = security or {}
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,  # a retried send is not written twice
            linger_ms=5,
            retries=2147483647,
            delivery_timeout_ms=120_000,
            **self.security,
        )

    def publish(self, topic: str, key: str | None, payload: dict[str, Any]) -> None:
        self.publish_raw(topic, key, encode(payload))

    def publish_raw(self, topic: str, key: str | None, raw: bytes) -> None:
        self._producer.send(topic, key=key.encode() if key is not None else None, value=raw)

    def flush(self, timeout: float = 10) -> None:
        self._producer.flush(timeout)

    def deliver(self, events: list[tuple[str, str | None, dict[str, Any]]], timeout: float = 30) -> None:
        futures = [self._producer.send(topic, key=key.encode() if key is not None else None, value=encode(payload))
                   for topic, key, payload in events]
        self._producer.flush(timeout)
        for future in futures:
            future.get(timeout=timeout)  # raises the delivery error (broker away, topic missing, timed out)

    def consumer(self, group_id: str, topics: list[str], *, from_latest: bool = False) -> EventConsumer:
        return _KafkaConsumer(self, group_id, topics, from_latest)

    def check(self) -> None:
        check_kafka(self.bootstrap, self.client_id, self.security)

    def close(self) -> None:
        self._producer.close(timeout=10)


class _KafkaConsumer(EventConsumer):
    def __init__(self, bus: KafkaEventBus, group: str, topics: list[str], from_latest: bool) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            *topics,
            bootstrap_servers=bus.bootstrap,
            client_id=f"{bus.client_id}-{group}",
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="latest" if from_latest else "earliest",
            max_poll_interval_ms=300_000,
            **bus.security,
        )

    def poll(self, timeout: float = 1.0, max_records: int = 100) -> list[Event]:
        records = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        return [
            decode(r.topic, r.key, r.value, r.partition, r.offset)
            for batch in records.values() for r in batch
        ]

    def commit(self, event: Event) -> None:
        self.commit_latest([event])

    def commit_latest(self, events: Iterable[Event]) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        offsets = {TopicPartition(e.topic, e.partition): OffsetAndMetadata(e.offset + 1, "", -1)
                   for e in _latest_per_partition(events)}
        if offsets:
            self._consumer.commit(offsets)  # one request to the group coordinator for the whole poll

    def close(self) -> None:
        self._consumer.close()

    def lag(self) -> dict[tuple[str, int], int]:
        lags = {}
        for partition in self._consumer.assignment():
            high = self._consumer.highwater(partition)  # known once a fetch for the partition has returned
            if high is not None:
                lags[(partition.topic, partition.partition)] = max(0, high - self._consumer.position(partition))
        return lags


def check_kafka(bootstrap: str, client_id: str, security: dict[str, Any], timeout_ms: int = 5000) -> None:
    """Raise unless the broker answers a metadata request within the timeout."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{client_id}-check", request_timeout_ms=timeout_ms,
                             bootstrap_timeout_ms=timeout_ms, **security)
    try:
        admin.list_topics()
    finally:
        admin.close()


def kafka_security(settings: Any) -> dict[str, Any]:
    """kafka-python connection options for SASL/TLS brokers, from SCR_KAFKA_* settings."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism:
        options |= {"sasl_mechanism": settings.kafka_sasl_mechanism,
                    "sasl_plain_username": settings.kafka_sasl_username,
                    "sasl_plain_password": settings.kafka_sasl_password}
    return options


def create_event_bus(settings: Any, engine: Engine) -> EventBus:
    """Kafka when SCR_KAFKA_BOOTSTRAP_SERVERS is set, else the embedded event log in the service's database."""
    if settings.kafka_bootstrap_servers:
        return KafkaEventBus(settings.kafka_bootstrap_servers, settings.service_name, kafka_security(settings))
    return DatabaseEventLog(engine)


def _latest_per_partition(events: Iterable[Event]) -> list[Event]:
    latest: dict[tuple[str, int], Event] = {}
    for event in events:
        key = (event.topic, event.partition)
        if key not in latest or event.offset > latest[key].offset:
            latest[key] = event
    return list(latest.values())
