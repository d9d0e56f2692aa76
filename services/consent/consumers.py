"""Background consumers, started in the app's lifespan: the import of Consents ingest stored from source systems
(`record.changed`, group "consent") and this replica's cache invalidation (`consent.changed`, its own group, so
every replica hears every change)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import structlog

from services.consent.decisions import DecisionPoint
from services.consent.service import ConsentService
from shared.events import CONSENT_CHANGED, RECORD_CHANGED, Event, EventBus, EventConsumer

log = structlog.get_logger("scr.consent.consumers")
IMPORT_GROUP = "consent"


class ConsumerThread:
    """Polls one consumer and hands each event to `handle`; commits a poll's events once every one is handled.
    One commit per poll, not per event: ingest announces every resource it stores, and a broker round trip for
    each cost this service and Kafka more CPU than the import itself. Redelivery after a crash is harmless:
    both handlers are idempotent."""

    def __init__(self, name: str, make_consumer: Callable[[], EventConsumer], handle: Callable[[Event], None],
                 poll_seconds: float = 0.5) -> None:
        self.name = name
        self._make = make_consumer
        self._handle = handle
        self._poll = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> ConsumerThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        consumer = self._make()
        try:
            while not self._stop.is_set():
                try:
                    events = consumer.poll(timeout=self._poll)
                except Exception as exc:  # the broker away (restart, network): keep the thread, poll again
                    log.error("event poll failed; retrying", consumer=self.name, error_type=type(exc).__name__)
                    self._stop.wait(1.0)
                    continue
                handled = []
                for event in events:
                    if not self._process(event):
                        break  # stopping: what was handled is committed, the rest is delivered again
                    handled.append(event)
                consumer.commit_latest_or_log(handled, self.name)
        finally:
            consumer.close()

    def _process(self, event: Event) -> bool:
        """Handle `event`, retrying until it succeeds (True) or the thread is stopping (False)."""
        while not self._stop.is_set():
            try:
                self._handle(event)
                return True
            except Exception as exc:  # keep consuming; the event is retried, never skipped
                log.error("event handling failed; retrying", consumer=self.name, topic=event.topic,
                          error_type=type(exc).__name__)
                self._stop.wait(1.0)
        return False



def import_handler(service: ConsentService) -> Callable[[Event], None]:
    def handle(event: Event) -> None:
        payload = event.payload or {}
        if payload.get("resource_type") != "Consent" or not isinstance(payload.get("id"), str):
            return
        outcome = service.import_source_consent(payload["id"])
        log.info("source consent imported", outcome=outcome)

    return handle


def invalidation_handler(decisions: DecisionPoint) -> Callable[[Event], None]:
    def handle(event: Event) -> None:
        number = (event.payload or {}).get("nhs_number") or event.key
        if isinstance(number, str) and number:
            decisions.invalidate(number)

    return handle


def start_consumers(bus: EventBus, service: ConsentService, decisions: DecisionPoint) -> list[ConsumerThread]:
    replica = f"consent-cache-{socket.gethostname()}-{os.getpid()}"
    return [
        ConsumerThread("consent-import", lambda: bus.consumer(IMPORT_GROUP, [RECORD_CHANGED]),
                       import_handler(service)).start(),
        ConsumerThread("consent-cache", lambda: bus.consumer(replica, [CONSENT_CHANGED], from_latest=True),
                       invalidation_handler(decisions)).start(),
    ]
