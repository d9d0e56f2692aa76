"""Listens on `consent.changed` and drops the cached decisions of the person it names.

Each record API process consumes in its own group, from the latest event (docs/CONTRACTS.md §2), because
each process keeps its own cache; what happened before it started is not in its cache anyway.
"""

from __future__ import annotations

import os
import socket
import threading

import structlog

from services.record_api.decision_cache import DecisionCache
from shared.events import CONSENT_CHANGED, Event, EventBus, EventConsumer

log = structlog.get_logger("scr.record_api.consent_listener")


def group_id() -> str:
    return f"record-api-{socket.gethostname()}-{os.getpid()}"


class ConsentChangeListener:
    """A background thread applying consent.changed events to the decision cache."""

    def __init__(self, bus: EventBus, cache: DecisionCache, group: str | None = None) -> None:
        self._bus, self._cache = bus, cache
        self._group = group or group_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: EventConsumer | None = None
        self.events_applied = 0  # read by tests and readiness; only this thread writes it
        self.started = threading.Event()

    def start(self) -> None:
        self._consumer = self._bus.consumer(self._group, [CONSENT_CHANGED], from_latest=True)
        self._thread = threading.Thread(target=self._run, name="consent-changed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        if self._consumer:
            self._consumer.close()

    def _run(self) -> None:
        assert self._consumer is not None
        while not self._stop.is_set():
            try:
                events = self._consumer.poll(timeout=0.5)
                self.started.set()
                for event in events:
                    self.apply(event)
                self._consumer.commit_latest(events)
            except Exception as exc:  # keep listening: the TTL covers what a broken poll misses
                log.warning("consent.changed poll failed", error_type=type(exc).__name__)
                self._cache.clear()  # we may have missed a change: forget everything rather than serve stale
                self._stop.wait(1.0)

    def apply(self, event: Event) -> None:
        payload = event.payload or {}
        nhs_number, person_id = payload.get("nhs_number"), payload.get("person_id")
        if not isinstance(nhs_number, str) and not isinstance(person_id, str):
            # An event we cannot attribute may still be a change: drop everything rather than risk a stale permit.
            self._cache.clear()
        else:
            self._cache.invalidate(nhs_number=nhs_number if isinstance(nhs_number, str) else event.key,
                                   person_id=person_id if isinstance(person_id, str) else None)
        self.events_applied += 1
