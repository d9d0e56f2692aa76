"""FHIR dates as the rules read them: partial dates are ranges (a year, a month, a day in England), a statement is
never newer than when this service received it, and only patient-privacy Consents are sharing choices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.consent import codes
from services.consent.facts import facts_from, is_about_sharing, parse_datetime, range_end
from tests.unit.consent.builders import NOW, professional_body


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("value", "start", "end"), [
    # Winter: London is on GMT, so a day, month or year in England is the same period in UTC.
    ("2020", _utc(2020, 1, 1), _utc(2021, 1, 1)),
    ("2099-01", _utc(2099, 1, 1), _utc(2099, 2, 1)),
    ("2026-12", _utc(2026, 12, 1), _utc(2027, 1, 1)),
    ("2024-02-29", _utc(2024, 2, 29), _utc(2024, 3, 1)),
    ("2026-01-15", _utc(2026, 1, 15), _utc(2026, 1, 16)),
    # Summer (BST, UTC+1): a day runs from 23:00 UTC the evening before to 23:00 UTC that evening.
    ("2026-06-01", _utc(2026, 5, 31, 23), _utc(2026, 6, 1, 23)),
    ("2026-07-01", _utc(2026, 6, 30, 23), _utc(2026, 7, 1, 23)),
    ("2026-07", _utc(2026, 6, 30, 23), _utc(2026, 7, 31, 23)),
    # The clocks go forward at 01:00 UTC on the last Sunday of March (29 March 2026): a day of 23 hours.
    ("2026-03-28", _utc(2026, 3, 28), _utc(2026, 3, 29)),
    ("2026-03-29", _utc(2026, 3, 29), _utc(2026, 3, 29, 23)),
    ("2026-03-30", _utc(2026, 3, 29, 23), _utc(2026, 3, 30, 23)),
    ("2026-03", _utc(2026, 3, 1), _utc(2026, 3, 31, 23)),
    # ... and back at 01:00 UTC on the last Sunday of October (25 October 2026): a day of 25 hours.
    ("2026-10-24", _utc(2026, 10, 23, 23), _utc(2026, 10, 24, 23)),
    ("2026-10-25", _utc(2026, 10, 24, 23), _utc(2026, 10, 26)),
    ("2026-10-26", _utc(2026, 10, 26), _utc(2026, 10, 27)),
    ("2026-10", _utc(2026, 9, 30, 23), _utc(2026, 11, 1)),
    ("2026", _utc(2026, 1, 1), _utc(2027, 1, 1)),
    ("2026-06-01T00:30:00+01:00", datetime(2026, 5, 31, 23, 30, tzinfo=UTC), datetime(2026, 5, 31, 23, 30, tzinfo=UTC)),
    ("2026-06-01T10:00:00Z", datetime(2026, 6, 1, 10, tzinfo=UTC), datetime(2026, 6, 1, 10, tzinfo=UTC)),
    ("2026-06-01T10:00:00", datetime(2026, 6, 1, 10, tzinfo=UTC), datetime(2026, 6, 1, 10, tzinfo=UTC)),
])
def test_a_fhir_date_is_the_range_it_names(value: str, start: datetime, end: datetime) -> None:
    assert (parse_datetime(value), range_end(value)) == (start, end)


@pytest.mark.parametrize("value", [None, "", "soon", "2026-13", "2026-02-30", 2026, "9999", "9999-12-31"])
def test_what_is_not_a_date_is_none(value) -> None:
    assert parse_datetime(value) is None
    assert range_end(value) is None


def _facts(body: dict, recorded: datetime):
    return facts_from(id="c", version_id=1, kind="dissent", status="active", author_kind="professional",
                      author_ods="y12345 ", author_role="R0260", recorded_at=recorded, body=body)


def test_a_statement_is_never_newer_than_when_it_was_received() -> None:
    body = professional_body() | {"dateTime": (NOW + timedelta(seconds=3)).isoformat()}
    facts = _facts(body, NOW)
    assert (facts.stated_at, facts.starts_at) == (NOW, NOW + timedelta(seconds=3))


def test_a_date_alone_is_the_last_moment_of_that_day_or_when_received_if_earlier() -> None:
    today = professional_body() | {"dateTime": NOW.date().isoformat()}
    assert _facts(today, NOW).stated_at == NOW
    yesterday = professional_body() | {"dateTime": (NOW - timedelta(days=1)).date().isoformat()}
    # 31 May is a day in England: in summer its last moment is 23:59:59.999999 BST, 22:59:59.999999 UTC.
    assert _facts(yesterday, NOW).stated_at == datetime(2026, 5, 31, 22, 59, 59, 999999, tzinfo=UTC)
    assert _facts(yesterday, NOW).starts_at == datetime(2026, 5, 30, 23, tzinfo=UTC)


@pytest.mark.parametrize(("dated", "recorded", "stated"), [
    # Recorded at 00:30 BST on 2 July: a statement dated 1 July was made by 23:59:59 BST on 1 July at the latest.
    ("2026-07-01", datetime(2026, 7, 1, 23, 30, tzinfo=UTC), datetime(2026, 7, 1, 22, 59, 59, 999999, tzinfo=UTC)),
    # Winter: England's day is the UTC day.
    ("2026-01-15", datetime(2026, 1, 16, 0, 30, tzinfo=UTC), datetime(2026, 1, 15, 23, 59, 59, 999999, tzinfo=UTC)),
    # The clock-change days: 23 hours in March, 25 hours in October.
    ("2026-03-29", datetime(2026, 3, 30, tzinfo=UTC), datetime(2026, 3, 29, 22, 59, 59, 999999, tzinfo=UTC)),
    ("2026-10-25", datetime(2026, 10, 26, 1, tzinfo=UTC), datetime(2026, 10, 25, 23, 59, 59, 999999, tzinfo=UTC)),
])
def test_a_date_alone_is_placed_at_the_last_moment_of_that_day_in_england(dated: str, recorded: datetime,
                                                                         stated: datetime) -> None:
    assert _facts(professional_body() | {"dateTime": dated}, recorded).stated_at == stated


def test_the_author_organisation_is_normalised() -> None:
    assert _facts(professional_body(), NOW).author_ods == "Y12345"


@pytest.mark.parametrize(("scope", "about_sharing"), [
    (codes.PATIENT_PRIVACY, True), ("treatment", False), ("research", False), ("adr", False), (None, False)])
def test_only_patient_privacy_consents_are_sharing_choices(scope: str | None, about_sharing: bool) -> None:
    body = professional_body()
    body["scope"] = {"coding": [{"system": codes.CONSENT_SCOPE_SYSTEM, "code": scope}]} if scope else {}
    assert is_about_sharing(body) is about_sharing
    assert _facts(body, NOW).in_force(NOW) is about_sharing
