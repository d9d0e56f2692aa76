"""Consent decisions cached per person, dropped when `consent.changed` says that person's consent changed.

A short TTL is only a safety net for a missed event. Generations close the race where an event arrives
while a decision for the same person is being fetched: an answer fetched before the event is never stored.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from services.record_api.metrics import CONSENT_CACHE
from services.record_api.schemas import Decision


@dataclass(frozen=True)
class CacheKey:
    person_id: str
    nhs_number: str | None
    ods_code: str
    role: str | None
    user: str
    purpose: str
    relationship: str
    break_glass: bool
    labels: frozenset[str]


class DecisionCache:
    def __init__(self, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._max, self._clock = ttl_seconds, max_entries, clock
        self._entries: OrderedDict[CacheKey, tuple[float, Decision]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    def get_or_fetch(self, key: CacheKey, fetch: Callable[[], Decision]) -> Decision:
        """The cached decision for `key`, or a fresh one from `fetch` (cached unless invalidated meanwhile)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit and hit[0] > self._clock():
                self._entries.move_to_end(key)
                CONSENT_CACHE.labels("hit").inc()
                return hit[1]
            generation = self._generation(key)
        CONSENT_CACHE.labels("miss").inc()
        decision = fetch()
        with self._lock:
            if self._generation(key) == generation:
                self._entries[key] = (self._clock() + self._ttl, decision)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return decision

    def invalidate(self, *, nhs_number: str | None = None, person_id: str | None = None) -> int:
        """Drop every decision about this NHS number or person; returns how many were dropped."""
        subjects = {s for s in (nhs_number, person_id) if s}
        with self._lock:
            for subject in subjects:
                self._generations[subject] = self._generations.get(subject, 0) + 1
            stale = [k for k in self._entries if k.person_id in subjects or k.nhs_number in subjects]
            for key in stale:
                del self._entries[key]
        CONSENT_CACHE.labels("invalidated").inc(len(stale))
        return len(stale)

    def clear(self) -> None:
        with self._lock:
            for key in self._entries:
                for subject in (key.person_id, key.nhs_number):
                    if subject:
                        self._generations[subject] = self._generations.get(subject, 0) + 1
            self._entries.clear()

    def _generation(self, key: CacheKey) -> tuple[int, int]:
        return self._generations.get(key.person_id, 0), self._generations.get(key.nhs_number or "", 0)
