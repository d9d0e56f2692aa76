"""The raw archive's gauges (metrics.RawBacklog), counted at scrape time, never fail or hold up the scrape: they keep
their last values while the count fails or does not answer, say so in the log once per outage, and a scrape never
waits longer than it is allowed to, nor starts a second count while one is under way."""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from services.ingest import metrics, store

_FOR_EVER = 60.0  # a wait no count in these tests comes near, unless it is meant never to answer


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    info = warning


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> _Log:
    log = _Log()
    monkeypatch.setattr(metrics, "log", log)
    return log


def _watched(count: Any, wait_seconds: float) -> tuple[metrics.RawBacklog, CollectorRegistry]:
    backlog, registry = metrics.RawBacklog(), CollectorRegistry()
    registry.register(backlog)
    backlog.watch(count, wait_seconds)
    return backlog, registry


def _scrape(registry: CollectorRegistry) -> tuple[float, float]:
    """One scrape: both gauges, from one collection."""
    samples = {sample.name: sample.value for family in registry.collect() for sample in family.samples}
    return samples["scr_ingest_raw_failed"], samples["scr_ingest_raw_unfinished"]


def test_a_failing_count_keeps_the_last_values_and_is_logged_once_per_outage(log: _Log) -> None:
    answers: list[Any] = [RuntimeError("down"), (3, 1), RuntimeError("down"), RuntimeError("down"), (5, 0)]
    calls = 0

    def count() -> tuple[int, int]:
        nonlocal calls
        calls += 1
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    _, registry = _watched(count, _FOR_EVER)
    assert all(math.isnan(value) for value in _scrape(registry))  # nothing read yet
    assert _scrape(registry) == (3, 1)
    assert _scrape(registry) == (3, 1) and _scrape(registry) == (3, 1)  # the database away: the last values
    assert b"scr_ingest_raw_failed 5.0" in generate_latest(registry)
    assert calls == 5  # one count a scrape for both gauges
    assert [event for event, _ in log.lines] == [
        "raw archive gauges not read at scrape; reporting their last values", "raw archive gauges read again",
        "raw archive gauges not read at scrape; reporting their last values", "raw archive gauges read again"]
    assert log.lines[0][1] == {"error_type": "RuntimeError"}


def test_a_count_that_does_not_answer_holds_up_no_scrape_and_is_never_started_twice(log: _Log) -> None:
    answer, calls = threading.Event(), []

    def count() -> tuple[int, int]:
        calls.append(1)
        answer.wait(_FOR_EVER)  # a database dropping packets, or a pool with no connection free
        return 2, 0

    backlog, registry = _watched(count, 0.01)
    for _ in range(3):  # each scrape answers, with the last values, while the one count is still under way
        assert all(math.isnan(value) for value in _scrape(registry))
    assert len(calls) == 1
    assert [event for event, _ in log.lines] == ["raw archive gauges not read at scrape; reporting their last values"]
    answer.set()
    backlog.watch(count, _FOR_EVER)
    assert _scrape(registry) == (2, 0)
    assert log.lines[-1][0] == "raw archive gauges read again"


@pytest.fixture
def silent_database() -> Iterator[int]:
    """A port that takes connections and never answers: a database host that has stopped responding."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_the_scrape_does_not_wait_for_a_database_that_does_not_answer(log: _Log, silent_database: int) -> None:
    engine = create_engine(f"postgresql+psycopg://scr:scr@127.0.0.1:{silent_database}/scr",
                           connect_args={"connect_timeout": _FOR_EVER})
    started, finished = threading.Event(), threading.Event()

    def count() -> tuple[int, int]:
        started.set()
        try:
            with Session(engine) as session:
                return store.count_backlog(session, datetime.now(UTC))
        finally:
            finished.set()

    _, registry = _watched(count, 0.01)
    try:
        assert all(math.isnan(value) for value in _scrape(registry))
        assert started.wait(_FOR_EVER) and not finished.is_set()  # answered while the count is still connecting
        assert all(math.isnan(value) for value in _scrape(registry)) and not finished.is_set()
    finally:
        engine.dispose()
