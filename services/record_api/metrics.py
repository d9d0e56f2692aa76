"""The record API's Prometheus metrics (names fixed by docs/CONTRACTS.md §5)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter


def _counter(name: str, documentation: str, labels: list[str]) -> Counter:
    """The process-wide counter `name`: `scr_audit_write_failures_total` is shared with the consent service, and
    tests import both apps into one process, where registering a name twice would fail."""
    existing = REGISTRY._names_to_collectors.get(name)  # prometheus_client has no public lookup
    if isinstance(existing, Counter):
        return existing
    return Counter(name, documentation, labels)


BREAK_GLASS = _counter("scr_break_glass_total", "Requests that used break-glass, by RBAC job role", ["role"])
WITHHELD = _counter("scr_record_items_withheld_total", "Items withheld from a response, by why",
                    ["reason"])  # label | objection | role
CONSENT_CACHE = _counter("scr_consent_cache_total", "Consent decision cache lookups and invalidations",
                         ["result"])  # hit | miss | invalidated
AUDIT_FAILURES = _counter("scr_audit_write_failures_total", "Audit rows that could not be written", ["service"])
