"""The per-person consent cache: hits, invalidation, eviction, and the load-during-change race."""

from __future__ import annotations

import threading

from services.consent.cache import ConsentCache
from tests.unit.consent.builders import citizen


def test_loads_once_then_serves_from_memory_until_invalidated() -> None:
    loads: list[str] = []
    cache = ConsentCache(lambda nhs: (loads.append(nhs), (citizen(),))[1])
    assert cache.get("9990000018") == cache.get("9990000018")
    assert loads == ["9990000018"]
    cache.invalidate("9990000018")
    cache.get("9990000018")
    assert loads == ["9990000018", "9990000018"]


def test_least_recently_used_people_are_dropped_first() -> None:
    cache = ConsentCache(lambda nhs: (), max_entries=2)
    for number in ("a", "b", "a", "c"):
        cache.get(number)
    assert len(cache) == 2
    loads: list[str] = []
    cache._load = lambda nhs: (loads.append(nhs), ())[1]
    cache.get("a")
    cache.get("b")
    assert loads == ["b"]  # "a" was used recently and kept; "b" was dropped


def test_a_load_that_started_before_a_change_is_not_kept() -> None:
    loading, release = threading.Event(), threading.Event()
    versions = iter([(citizen("share"),), (citizen("object"),)])

    def slow_load(_nhs: str):
        result = next(versions)
        loading.set()
        release.wait(5)
        return result

    cache = ConsentCache(slow_load)
    results = []
    reader = threading.Thread(target=lambda: results.append(cache.get("n")))
    reader.start()
    loading.wait(5)
    cache.invalidate("n")  # a change lands while the old state is being read
    release.set()
    reader.join(5)
    assert results[0][0].stance == "share"  # that reader gets what it read...
    assert cache.get("n")[0].stance == "object"  # ...but the next one loads afresh
