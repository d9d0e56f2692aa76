"""The registered practice: named by the newest source Patient record that names one (shared.registration)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.fhir import ODS_ORG_SYSTEM
from shared.registration import registered_practice

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Record:
    id: str
    body: dict[str, Any]
    source_updated: datetime | None
    last_updated: datetime


def _record(record_id: str, practice: str | None, *, sent: datetime | None, stored: datetime = T0,
            **extra: Any) -> _Record:
    body: dict[str, Any] = dict(extra)
    if practice:
        body["generalPractitioner"] = [{"identifier": {"system": ODS_ORG_SYSTEM, "value": practice}}]
    return _Record(record_id, body, sent, stored)


def test_the_newest_record_naming_a_practice_names_it() -> None:
    old = _record("a", "B86001", sent=T0)
    new = _record("b", " y12345", sent=T0 + timedelta(days=1))
    silent = _record("c", None, sent=T0 + timedelta(days=2))  # names no one: the last one named stands
    assert registered_practice([old, new, silent]) == ({"Y12345"}, [])


def test_sender_time_first_then_stored_time_then_id_and_inactive_records_name_no_one() -> None:
    # No sender time: when it was stored stands in.
    unsent = _record("z", "A00001", sent=None, stored=T0 + timedelta(hours=1))
    assert registered_practice([_record("y", "A00002", sent=T0), unsent]) == ({"A00001"}, [])
    tie = [_record("m", "A00003", sent=T0), _record("k", "A00004", sent=T0)]
    assert registered_practice(tie) == ({"A00004"}, [])  # same moments: the lower id, whatever the order
    assert registered_practice(list(reversed(tie))) == ({"A00004"}, [])
    # The newest (naive UTC, as SQLite gives it) but inactive: it names no one.
    naive = _record("n", "A00005", sent=datetime(2027, 1, 1), active=False)
    assert registered_practice([*tie, naive]) == ({"A00004"}, [])
    assert registered_practice([]) == (set(), [])
