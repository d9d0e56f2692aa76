"""Each person's consents, parsed into facts, held in memory so a decision costs no database round trip.

Entries are dropped when this process changes a consent and when `consent.changed` says another replica did.
Generations close the race where a change lands while the same person's consents are being loaded: a load
that started before the change is never stored.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from services.consent.facts import ConsentFacts

Loader = Callable[[str], tuple[ConsentFacts, ...]]


class ConsentCache:
    def __init__(self, load: Loader, max_entries: int = 100_000) -> None:
        self._load = load
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[ConsentFacts, ...]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, nhs_number: str) -> tuple[ConsentFacts, ...]:
        with self._lock:
            facts = self._entries.get(nhs_number)
            if facts is not None:
                self._entries.move_to_end(nhs_number)
                return facts
            generation = self._generations.get(nhs_number, 0)
        facts = self._load(nhs_number)
        with self._lock:
            if self._generations.get(nhs_number, 0) == generation:
                self._entries[nhs_number] = facts
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return facts

    def invalidate(self, nhs_number: str) -> None:
        with self._lock:
            self._generations[nhs_number] = self._generations.get(nhs_number, 0) + 1
            self._entries.pop(nhs_number, None)

    def __len__(self) -> int:
        return len(self._entries)
