"""A sender's time as ordering believes it: never later than the message's receipt, beyond a tolerated skew."""

from datetime import UTC, datetime, timedelta

from shared.sender_clock import believed

RECEIVED = datetime(2026, 12, 1, 10, tzinfo=UTC)
SKEW = timedelta(seconds=300)


def test_a_time_before_the_receipt_is_believed() -> None:
    sent = RECEIVED - timedelta(days=3)
    assert believed(sent, RECEIVED, skew=SKEW) == sent


def test_a_clock_slightly_ahead_is_tolerated_so_its_messages_keep_their_order() -> None:
    assert believed(RECEIVED + SKEW, RECEIVED, skew=SKEW) == RECEIVED + SKEW


def test_a_time_ahead_of_the_receipt_beyond_the_skew_counts_as_the_receipt() -> None:
    assert believed(RECEIVED + SKEW + timedelta(seconds=1), RECEIVED, skew=SKEW) == RECEIVED
    assert believed(datetime(2099, 1, 1, tzinfo=UTC), RECEIVED, skew=SKEW) == RECEIVED


def test_the_receipt_counts_to_the_second_so_an_update_sent_in_that_second_is_not_older() -> None:
    received = RECEIVED + timedelta(microseconds=400_000)
    assert believed(datetime(2099, 1, 1, tzinfo=UTC), received, skew=SKEW) == RECEIVED


def test_without_a_skew_it_is_the_earlier_of_the_two() -> None:
    assert believed(RECEIVED + timedelta(seconds=1), RECEIVED) == RECEIVED
    assert believed(RECEIVED - timedelta(seconds=1), RECEIVED) == RECEIVED - timedelta(seconds=1)


def test_nothing_sent_is_nothing_believed_and_naive_times_are_utc() -> None:
    assert believed(None, RECEIVED, skew=SKEW) is None
    naive_2099 = datetime(2099, 1, 1)  # as SQLite hands back a stored time
    assert believed(naive_2099, RECEIVED.replace(tzinfo=None)) == RECEIVED
