"""The transactional outbox: how ingest (record.changed) and consent (consent.changed) announce a change exactly
when it commits, whatever Kafka is doing at the time.

`stage` writes a change's events in the transaction of the change: to the embedded event log (a table) in the
embedded default, or in real mode to the `event_outbox` table. A relay thread per service moves that service's
committed events to Kafka, then deletes them, in one transaction per batch. Delivery is at least once: if the
process dies after Kafka acknowledged a batch but before the delete committed, the batch is sent again (both
events carry a version, so consumers can tell). A PostgreSQL advisory lock per topic lets one replica relay a
topic at a time, which keeps each key's events in the order they were written.
"""

from __future__ import annotations

import threading
import zlib
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Gauge
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.db import append_rows, transaction
from shared.events import DatabaseEventLog, EventBus
from shared.schema import OutboxEvent

log = structlog.get_logger("scr.outbox")

PENDING = Gauge("scr_outbox_pending", "Events committed with their change but not yet relayed to Kafka", ["topic"])

_RETRY_SECONDS = (0.5, 1, 2, 5, 10)

Events = list[tuple[str | None, dict[str, Any]]]  # (key, payload)


def stage(session: Session, bus: EventBus | None, topic: str, events: Events) -> None:
    """Write `events` in the transaction of the change they announce; nothing when the service has no bus."""
    if bus is None or not events:
        return
    if isinstance(bus, DatabaseEventLog):
        DatabaseEventLog.publish_many_in(session, topic, events)
    else:  # appended in one round trip: as a statement per event this was a tenth of a GP record's ingest
        now = datetime.now(UTC)
        append_rows(session, OutboxEvent.__table__, ("topic", "key", "payload", "created"),
                    [(topic, key, payload, now) for key, payload in events])


def relays(bus: EventBus | None) -> bool:
    """Whether events staged for `bus` wait in the outbox for a relay (real mode) rather than in the event log."""
    return bus is not None and not isinstance(bus, DatabaseEventLog)


class OutboxRelay:
    """A background thread relaying one topic's outbox; `wake()` after a commit makes it relay at once."""

    def __init__(self, sessions: sessionmaker[Session], bus: EventBus, topic: str, *, batch: int = 500,
                 idle_seconds: float = 1.0, delivery_timeout: float = 30, linger_seconds: float = 0.0) -> None:
        """`linger_seconds`: after relaying a batch, how long to let the next one gather (as Kafka's producers
        linger): under a stream of small commits, one transaction and one produce for many of them instead of one
        each. An event after a quiet spell goes at once; one that arrives just after a batch waits up to that long."""
        self.sessions, self.bus, self.topic = sessions, bus, topic
        self.batch, self.idle_seconds, self.delivery_timeout = batch, idle_seconds, delivery_timeout
        self.linger_seconds = linger_seconds
        self._lock_key = zlib.crc32(f"scr-outbox:{topic}".encode())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> OutboxRelay:
        self._thread = threading.Thread(target=self._run, name=f"outbox-relay-{self.topic}", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        """Relay what is already committed (so a clean shutdown leaves nothing waiting), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while True:
            stopping = self._stop.is_set()
            try:
                moved = self.relay_once()
                failures = 0
            except Exception as exc:  # Kafka or the database away: the events stay in the outbox until it is back
                log.error("outbox relay failed; will retry", topic=self.topic, error_type=type(exc).__name__)
                if stopping:
                    return
                self._stop.wait(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)])
                failures += 1
                continue
            if stopping and moved < self.batch:
                return
            if moved < self.batch:
                if moved and self.linger_seconds:
                    self._stop.wait(self.linger_seconds)
                self._wake.wait(self.idle_seconds)
                self._wake.clear()

    def relay_once(self) -> int:
        """Relay one batch; the number of events delivered (0 when empty or another replica holds the lock)."""
        with transaction(self.sessions) as session:
            if not self._claim(session):
                return 0
            rows = list(session.scalars(select(OutboxEvent).where(OutboxEvent.topic == self.topic)
                                        .order_by(OutboxEvent.id).limit(self.batch)))
            if rows:
                self.bus.deliver([(row.topic, row.key, row.payload) for row in rows], self.delivery_timeout)
                session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_([row.id for row in rows])))
            PENDING.labels(self.topic).set(pending(session, self.topic))
        return len(rows)

    def _claim(self, session: Session) -> bool:
        """True if this transaction may relay (PostgreSQL: the topic's advisory lock, held until commit), so
        replicas never publish the same events at the same time or a key's events out of order."""
        if session.get_bind().dialect.name != "postgresql":
            return True
        return bool(session.scalar(select(func.pg_try_advisory_xact_lock(self._lock_key))))


def pending(session: Session, topic: str) -> int:
    return session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.topic == topic)) or 0
