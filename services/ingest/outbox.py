"""The outbox relay (real mode): moves committed record.changed events from the `event_outbox` table to Kafka,
then deletes them, in one transaction per batch.

Ingest writes each event in the transaction of the change it announces (service.Pipeline), so a committed change
always has its event waiting here, whatever Kafka was doing at the time. Delivery is at least once: if the
process dies after Kafka acknowledged a batch but before the delete committed, that batch is sent again
(record.changed carries the version, so consumers can tell). A PostgreSQL advisory lock lets one replica relay
at a time, which keeps each person's events in the order they were written.
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy.orm import Session, sessionmaker

from services.ingest import metrics, store
from shared.db import transaction
from shared.events import EventBus

log = structlog.get_logger("scr.ingest.outbox")

_RETRY_SECONDS = (0.5, 1, 2, 5, 10)


class OutboxRelay:
    """A background thread relaying the outbox; `wake()` after a commit makes it relay at once."""

    def __init__(self, sessions: sessionmaker[Session], bus: EventBus, *, batch: int = 500,
                 idle_seconds: float = 1.0, delivery_timeout: float = 30) -> None:
        self.sessions, self.bus = sessions, bus
        self.batch, self.idle_seconds, self.delivery_timeout = batch, idle_seconds, delivery_timeout
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> OutboxRelay:
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
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
                log.error("outbox relay failed; will retry", error_type=type(exc).__name__)
                if stopping:
                    return
                self._stop.wait(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)])
                failures += 1
                continue
            if stopping and moved < self.batch:
                return
            if moved < self.batch:
                self._wake.wait(self.idle_seconds)
                self._wake.clear()

    def relay_once(self) -> int:
        """Relay one batch; the number of events delivered (0 when empty or another replica holds the lock)."""
        with transaction(self.sessions) as session:
            if not store.claim_outbox_relay(session):
                return 0
            rows = store.outbox_batch(session, self.batch)
            if rows:
                self.bus.deliver([(row.topic, row.key, row.payload) for row in rows], self.delivery_timeout)
                store.delete_outbox(session, [row.id for row in rows])
            metrics.OUTBOX_PENDING.set(store.count_outbox(session))
        return len(rows)
