"""What a failed poll leaves behind: the events stored before the failure are committed, and the failure itself,
not a failed offset commit after it, is what reaches the consumer loop (and its log line)."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest.consumer import SocialCareConsumer
from services.ingest.settings import IngestSettings
from shared import events as shared_events
from shared.events import Event, EventConsumer


class _Member(EventConsumer):
    """A consumer-group member that hands out one poll of events and cannot commit (the broker has gone)."""

    def __init__(self, events: list[Event]) -> None:
        self.events, self.commits = events, []

    def poll(self, timeout: float = 1.0, max_records: int = 100) -> list[Event]:
        return self.events

    def commit(self, event: Event) -> None:
        self.commit_latest([event])

    def close(self) -> None:
        return None

    def commit_latest(self, handled: list[Event]) -> None:
        self.commits.append(list(handled))
        raise ConnectionError("the group coordinator is unreachable")


class _FailsAfterFirst(SocialCareConsumer):
    def _receive_all(self, events: list[Event]) -> list[Any]:
        return [None] * len(events)

    def handle(self, event: Event, outcome: Any = None) -> bool:
        if event.offset > 0:
            raise RuntimeError("the store went away mid-poll")
        return True


def test_a_failure_mid_poll_commits_what_was_stored_and_is_the_error_raised() -> None:
    events = [Event("socialcare.events", "k", {"n": n}, b"{}", offset=n) for n in range(3)]
    member = _Member(events)
    consumer = _FailsAfterFirst(bus=None, pipeline=None, settings=IngestSettings())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="mid-poll"):
        consumer.poll_once(member)  # type: ignore[arg-type]
    assert [[e.offset for e in handled] for handled in member.commits] == [[0]]


def test_an_event_from_the_topic_is_archived_under_its_provider_system_and_an_unreadable_one_under_none() -> None:
    readable = shared_events.decode("socialcare.events", "k", b'{"provider": {"system": " Mosaic "}}', 0, 7)
    unreadable = shared_events.decode("socialcare.events", "k", b"{not json", 0, 8)
    assert SocialCareConsumer._inbound(readable).sender_system == "Mosaic"
    assert SocialCareConsumer._inbound(unreadable).sender_system is None
    assert SocialCareConsumer._inbound(readable).detail == {"topic": "socialcare.events", "partition": 0, "offset": 7}
