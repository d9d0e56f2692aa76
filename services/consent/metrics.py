"""The consent service's Prometheus metrics (names fixed by docs/CONTRACTS.md §5)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Histogram


def _counter(name: str, documentation: str, labels: list[str]) -> Counter:
    """The process-wide counter `name`: `scr_audit_write_failures_total` is shared with the record API, and tests
    import both apps into one process, where registering a name twice would fail."""
    existing = REGISTRY._names_to_collectors.get(name)  # prometheus_client has no public lookup
    if isinstance(existing, Counter):
        return existing
    return Counter(name, documentation, labels)


DECISIONS = _counter("scr_consent_decisions_total", "Consent decisions by outcome and deciding rule",
                     ["decision", "rule"])
DECISION_SECONDS = Histogram("scr_consent_decision_seconds", "Time to decide, consent lookup included",
                             buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1))
CHANGES = _counter("scr_consent_changes_total", "Consent changes by kind", ["kind"])
AUDIT_FAILURES = _counter("scr_audit_write_failures_total", "Audit rows that could not be written", ["service"])
