"""The consent service's consumer threads: each poll's events handled in order, committed together once all are
handled, a failing event retried rather than skipped, and nothing unhandled committed when stopping."""

from __future__ import annotations

import threading
import time

from services.consent.consumers import ConsumerThread
from shared.events import Event, MemoryEventBus

TOPIC = "record.changed"


def _wait(predicate, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _published(bus: MemoryEventBus, count: int) -> None:
    for n in range(count):
        bus.publish(TOPIC, f"k{n}", {"n": n})


def test_a_polls_events_are_handled_in_order_and_committed_once() -> None:
    bus = MemoryEventBus()
    _published(bus, 30)
    commits: list[int] = []
    seen: list[int] = []

    def consumer():
        inner = bus.consumer("g", [TOPIC])
        original = inner.commit

        def counted(event: Event) -> None:
            commits.append(event.offset)
            original(event)

        inner.commit = counted  # type: ignore[method-assign]
        return inner

    thread = ConsumerThread("t", consumer, lambda e: seen.append(e.payload["n"]), poll_seconds=0.05).start()
    try:
        assert _wait(lambda: bus.committed.get(("g", TOPIC)) == 30)
    finally:
        thread.stop()
    assert seen == list(range(30))
    assert commits == [29]  # one commit, at the last event of the poll


def test_a_failing_event_is_retried_and_nothing_after_it_is_committed_before_it_succeeds() -> None:
    bus = MemoryEventBus()
    _published(bus, 3)
    failures = {"left": 1}
    seen: list[int] = []

    def handle(event: Event) -> None:
        if event.payload["n"] == 1 and failures["left"]:
            failures["left"] -= 1
            assert bus.committed.get(("g", TOPIC)) is None  # event 0 not committed on its own either
            raise RuntimeError("database away")
        seen.append(event.payload["n"])

    thread = ConsumerThread("t", lambda: bus.consumer("g", [TOPIC]), handle, poll_seconds=0.05).start()
    try:
        assert _wait(lambda: bus.committed.get(("g", TOPIC)) == 3, seconds=5)
    finally:
        thread.stop()
    assert seen == [0, 1, 2]


def test_stopping_mid_poll_commits_only_what_was_handled() -> None:
    bus = MemoryEventBus()
    _published(bus, 5)
    started, release = threading.Event(), threading.Event()

    def handle(event: Event) -> None:
        if event.payload["n"] == 2:
            started.set()
            release.wait(5)
            raise RuntimeError("still failing when asked to stop")

    thread = ConsumerThread("t", lambda: bus.consumer("g", [TOPIC]), handle, poll_seconds=0.05).start()
    assert started.wait(5)
    stopper = threading.Thread(target=thread.stop)
    stopper.start()
    release.set()
    stopper.join(10)
    assert bus.committed.get(("g", TOPIC)) == 2  # events 0 and 1; event 2 and later are delivered again
