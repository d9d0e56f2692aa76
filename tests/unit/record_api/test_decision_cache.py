"""The per-person decision cache: hits, invalidation by NHS number or person, the TTL, and the race where a
consent change arrives while a decision is being fetched."""

import json

from services.record_api.consent_client import parse_decision
from services.record_api.decision_cache import CacheKey, DecisionCache
from tests.unit.record_api.test_consent_client import PERMIT

DECISION = parse_decision(json.dumps(PERMIT).encode())


def _key(person: str = "p1", nhs: str | None = "9990000018", **changes) -> CacheKey:
    values = dict(person_id=person, nhs_number=nhs, ods_code="RR8", role="R8000", user="u1", purpose="TREAT",
                  relationship="care", break_glass=False, labels=frozenset({"HIV"})) | changes
    return CacheKey(**values)


class Fetcher:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return DECISION


def test_hits_are_per_key() -> None:
    cache, fetch = DecisionCache(60, 100), Fetcher()
    cache.get_or_fetch(_key(), fetch)
    cache.get_or_fetch(_key(), fetch)
    assert fetch.calls == 1
    cache.get_or_fetch(_key(break_glass=True), fetch)
    cache.get_or_fetch(_key(ods_code="Y12345"), fetch)
    cache.get_or_fetch(_key(labels=frozenset()), fetch)
    assert fetch.calls == 4


def test_invalidation_by_nhs_number_or_person_drops_only_that_person() -> None:
    cache, fetch = DecisionCache(60, 100), Fetcher()
    for key in (_key(), _key(purpose="ETREAT"), _key("p2", "9990000026")):
        cache.get_or_fetch(key, fetch)
    assert cache.invalidate(nhs_number="9990000018") == 2
    cache.get_or_fetch(_key("p2", "9990000026"), fetch)
    assert fetch.calls == 3
    assert cache.invalidate(person_id="p2") == 1


def test_entries_expire_after_the_ttl() -> None:
    now = [0.0]
    cache, fetch = DecisionCache(30, 100, clock=lambda: now[0]), Fetcher()
    cache.get_or_fetch(_key(), fetch)
    now[0] = 29
    cache.get_or_fetch(_key(), fetch)
    now[0] = 31
    cache.get_or_fetch(_key(), fetch)
    assert fetch.calls == 2


def test_a_decision_fetched_across_a_consent_change_is_not_kept() -> None:
    cache = DecisionCache(60, 100)

    def fetch_while_consent_changes():
        cache.invalidate(nhs_number="9990000018")  # consent.changed lands mid-fetch
        return DECISION

    cache.get_or_fetch(_key(), fetch_while_consent_changes)
    fetch = Fetcher()
    cache.get_or_fetch(_key(), fetch)
    assert fetch.calls == 1  # the stale answer was not cached


def test_the_cache_is_bounded() -> None:
    cache, fetch = DecisionCache(60, 2), Fetcher()
    for person in ("a", "b", "c"):
        cache.get_or_fetch(_key(person, None), fetch)
    cache.get_or_fetch(_key("a", None), fetch)
    assert fetch.calls == 4
