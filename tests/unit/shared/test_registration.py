"""The registered practice: named by the newest source Patient record that names one, or for standing over an
objection the newest a practice's own record names (shared.registration)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.fhir import ODS_ORG_SYSTEM
from shared.registration import registered_for_access, registered_practice

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STORED = {"org-1": {"B86001"}}  # the stored Organizations' ODS codes, by id


@dataclass(frozen=True)
class _Record:
    id: str
    body: dict[str, Any]
    source_updated: datetime | None
    last_updated: datetime
    source_org: str = "RR8"


def _record(record_id: str, practice: str | None, *, sent: datetime | None, stored: datetime | None = None,
            source_org: str = "RR8", **extra: Any) -> _Record:
    """A record stored when it was sent, unless `stored` says otherwise."""
    body: dict[str, Any] = dict(extra)
    if practice:
        body["generalPractitioner"] = [{"identifier": {"system": ODS_ORG_SYSTEM, "value": practice}}]
    return _Record(record_id, body, sent, stored or sent or T0, source_org)


def _registered(records: list[_Record], *, own_record_only: bool = False) -> set[str]:
    return registered_practice(records, own_record_only=own_record_only,
                               organisation_codes=lambda ids: {code for i in ids for code in STORED.get(i, ())})


def test_the_newest_record_naming_a_practice_names_it() -> None:
    old = _record("a", "B86001", sent=T0)
    new = _record("b", " y12345", sent=T0 + timedelta(days=1))
    silent = _record("c", None, sent=T0 + timedelta(days=2))  # names no one: the last one named stands
    assert _registered([old, new, silent]) == {"Y12345"}


def test_sender_time_first_then_stored_time_then_id_and_inactive_records_name_no_one() -> None:
    # No sender time: when it was stored stands in.
    unsent = _record("z", "A00001", sent=None, stored=T0 + timedelta(hours=1))
    assert _registered([_record("y", "A00002", sent=T0), unsent]) == {"A00001"}
    tie = [_record("m", "A00003", sent=T0), _record("k", "A00004", sent=T0)]
    assert _registered(tie) == {"A00004"}  # same moments: the lower id, whatever the order
    assert _registered(list(reversed(tie))) == {"A00004"}
    # The newest (naive UTC, as SQLite gives it) but inactive: it names no one.
    naive = _record("n", "A00005", sent=datetime(2027, 1, 1), active=False)
    assert _registered([*tie, naive]) == {"A00004"}
    assert _registered([]) == set()


def test_a_senders_time_counts_no_later_than_when_the_record_was_stored() -> None:
    ahead = _record("a", "Y12345", sent=datetime(2099, 1, 1, tzinfo=UTC), stored=T0)
    since = _record("b", "A81001", sent=T0 + timedelta(days=1))
    assert _registered([ahead, since]) == {"A81001"}
    assert _registered([ahead, since], own_record_only=True) == set()  # neither is a practice's own record


def test_for_standing_only_a_practices_own_record_naming_it_counts() -> None:
    own = _record("gp", "Y12345", sent=T0, source_org="Y12345")
    later = T0 + timedelta(days=1)
    hospital_naming_itself = _record("pas", "RR8", sent=later)
    hospital_naming_another = _record("pas2", "A81001", sent=later + timedelta(hours=1))
    records = [own, hospital_naming_itself, hospital_naming_another]
    assert _registered(records) == {"A81001"}  # any feed's record: the newest names the practice
    assert _registered(records, own_record_only=True) == {"Y12345"}
    # A newer practice's own record that names another practice, not itself: no practice is known.
    elsewhere = _record("gp2", "B86001", sent=later, source_org="A81001")
    assert _registered([own, elsewhere], own_record_only=True) == set()


def test_a_practice_named_by_reference_is_its_stored_organizations_code() -> None:
    by_reference = _record("gp", None, sent=T0, source_org="B86001",
                           generalPractitioner=[{"reference": "Organization/org-1"}])
    assert _registered([by_reference], own_record_only=True) == {"B86001"}
    not_stored = _record("gp2", None, sent=T0 + timedelta(days=1), source_org="B86001",
                         generalPractitioner=[{"reference": "Organization/org-2"}])
    assert _registered([by_reference, not_stored]) == set()  # nothing older is trusted in its place


def test_registered_for_access_is_the_newest_claim_or_the_practices_own_vouched_record() -> None:
    asked: list[list[str]] = []

    def registered(records: list[_Record], ods: str, vouched: set[str]) -> bool:
        return registered_for_access(records, ods, vouched=lambda ids: asked.append(ids) or vouched & set(ids),
                                     organisation_codes=lambda ids: set())

    own = _record("gp", "Y12345", sent=T0, source_org="Y12345")
    stale = _record("pas", "B86001", sent=T0 + timedelta(days=1))  # a hospital's PD1-3, sent since
    assert registered([own, stale], "B86001", {"gp"}) and asked == []  # the newest claim: no vouching asked
    assert registered([own, stale], "Y12345", {"gp"}) and asked == [["gp"]]
    assert not registered([own, stale], "Y12345", set())  # its own record came without a feed token
    assert not registered([own, stale], "RR8", {"gp"}) and len(asked) == 2  # not a practice: nothing asked
    moved = _record("gp2", "A81001", sent=T0 + timedelta(hours=1), source_org="A81001")
    assert not registered([own, moved, stale], "Y12345", {"gp", "gp2"})  # registered elsewhere since
