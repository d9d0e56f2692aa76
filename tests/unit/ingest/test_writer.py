"""The writer's ordering by a sender's time: a time ahead of the message's receipt is believed as the receipt, and a
stored record dated ahead of when it was stored (before that rule) no longer holds off the updates sent after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from services.ingest.feeds.model import Mapped, MappedMessage
from services.ingest.writer import _verdict, believe_sender_times

RECEIVED = datetime(2026, 12, 1, 10, tzinfo=UTC)
SKEW = timedelta(seconds=300)
Y2099 = datetime(2099, 1, 1, tzinfo=UTC)


def _item(sent: datetime | None) -> Mapped:
    return Mapped({"resourceType": "Patient"}, "local:1", sent)


def test_only_times_ahead_of_the_receipt_beyond_the_skew_are_replaced_and_counted() -> None:
    before, slightly_ahead = RECEIVED - timedelta(hours=1), RECEIVED + timedelta(seconds=60)
    message = MappedMessage(items=[_item(before), _item(slightly_ahead), _item(Y2099), _item(None)])
    body = dict(message.items[2].resource)
    assert believe_sender_times(message, RECEIVED, SKEW) == [message.items[2]]
    assert [i.source_updated for i in message.items] == [before, slightly_ahead, RECEIVED, None]
    assert message.items[2].resource == body  # what the sender sent stays in the body


def test_a_stored_time_ahead_of_when_it_was_stored_counts_as_stored() -> None:
    stored = SimpleNamespace(source_updated=Y2099, last_updated=RECEIVED, content_hash="old")
    update = _item(RECEIVED + timedelta(hours=1))
    assert _verdict(stored, update, "new", SKEW) is None  # written, not ignored as older than 2099
    assert _verdict(stored, _item(RECEIVED - timedelta(hours=1)), "new", SKEW) == "stale"


def test_a_stored_time_within_the_skew_keeps_its_order() -> None:
    """A clock a minute ahead: its stored time stands, so a message it sent before that one is still older."""
    ahead = RECEIVED + timedelta(seconds=60)
    stored = SimpleNamespace(source_updated=ahead, last_updated=RECEIVED, content_hash="old")
    assert _verdict(stored, _item(ahead - timedelta(seconds=30)), "new", SKEW) == "stale"
    naive = SimpleNamespace(source_updated=Y2099.replace(tzinfo=None), last_updated=RECEIVED.replace(tzinfo=None),
                            content_hash="old")  # as SQLite hands them back
    assert _verdict(naive, _item(RECEIVED + timedelta(seconds=1)), "new", SKEW) is None
