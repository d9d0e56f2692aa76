"""A gauge read at scrape time (metrics.read_at_scrape) never fails the scrape: it keeps its last value while the
read fails, and says so in the log once per outage."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from services.ingest import metrics


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    info = warning


def test_a_failing_read_keeps_the_last_value_and_is_logged_once_per_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _Log()
    monkeypatch.setattr(metrics, "log", log)
    registry = CollectorRegistry()
    gauge = Gauge("scr_test_backlog", "test", registry=registry)
    answers: list[Any] = [RuntimeError("down"), 3, RuntimeError("down"), RuntimeError("down"), 5]

    def read() -> float:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    metrics.read_at_scrape(gauge, read)

    def scrape() -> float:
        return registry.get_sample_value("scr_test_backlog")

    assert math.isnan(scrape())  # nothing read yet
    assert scrape() == 3
    assert scrape() == 3 and scrape() == 3  # the database away: the last value, and /metrics still answers
    assert b"scr_test_backlog 5.0" in generate_latest(registry)
    events = [event for event, _ in log.lines]
    assert events == ["gauge not read at scrape; reporting its last value", "gauge read again",
                      "gauge not read at scrape; reporting its last value", "gauge read again"]
    assert log.lines[0][1] == {"gauge": "scr_test_backlog", "error_type": "RuntimeError"}
