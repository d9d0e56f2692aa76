"""A sender's own time (FHIR meta.lastUpdated, HL7 MSH-7, a social-care occurred_at) as ordering believes it: one
rule for ingest's "an older message never overwrites a newer state" and for every ranking of stored records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

NO_SKEW = timedelta(0)


def believed(sent: datetime | None, received: datetime, *, skew: timedelta = NO_SKEW) -> datetime | None:
    """`sent`, unless it is later than `received` by more than `skew`: then `received`, to the whole second. None when
    nothing was sent.

    A sender's clock is its own. A record dated ahead of its arrival (a PAS clock set wrong, 2099 typed for 2024)
    would otherwise stay the newest whatever the sender sends after it: every correction ignored as older, and its
    details preferred for ever. Nothing can have happened later than we were told of it, so the receipt (or, for a
    stored record, when it was stored) is the latest it can count for. To the second, the precision senders' times
    mostly have (MSH-7): an update sent in the second the bad one arrived is not older than it. `skew` tolerates a
    clock slightly ahead, so its messages keep the order it sent them in (two seconds apart, arriving together)."""
    if sent is None:
        return None
    sent, received = utc(sent), utc(received)
    return received.replace(microsecond=0) if sent > received + skew else sent


def utc(moment: datetime) -> datetime:
    """An aware datetime; SQLite hands timestamps back without their zone, and they were stored as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
