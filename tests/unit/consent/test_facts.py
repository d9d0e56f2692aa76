"""FHIR dates as the rules read them: partial dates are ranges (a year, a month, a day), a statement is never
newer than when this service received it, and only patient-privacy Consents are sharing choices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.consent import codes
from services.consent.facts import facts_from, is_about_sharing, parse_datetime, range_end
from tests.unit.consent.builders import NOW, professional_body


@pytest.mark.parametrize(("value", "start", "end"), [
    ("2020", datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)),
    ("2099-01", datetime(2099, 1, 1, tzinfo=UTC), datetime(2099, 2, 1, tzinfo=UTC)),
    ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ("2026-06-01", datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC)),
    ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
    ("2026-06-01T00:30:00+01:00", datetime(2026, 5, 31, 23, 30, tzinfo=UTC), datetime(2026, 5, 31, 23, 30, tzinfo=UTC)),
    ("2026-06-01T10:00:00Z", datetime(2026, 6, 1, 10, tzinfo=UTC), datetime(2026, 6, 1, 10, tzinfo=UTC)),
    ("2026-06-01T10:00:00", datetime(2026, 6, 1, 10, tzinfo=UTC), datetime(2026, 6, 1, 10, tzinfo=UTC)),
])
def test_a_fhir_date_is_the_range_it_names(value: str, start: datetime, end: datetime) -> None:
    assert (parse_datetime(value), range_end(value)) == (start, end)


@pytest.mark.parametrize("value", [None, "", "soon", "2026-13", "2026-02-30", 2026])
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
    assert _facts(yesterday, NOW).stated_at == datetime(2026, 5, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert _facts(yesterday, NOW).starts_at == datetime(2026, 5, 31, tzinfo=UTC)


def test_the_author_organisation_is_normalised() -> None:
    assert _facts(professional_body(), NOW).author_ods == "Y12345"


@pytest.mark.parametrize(("scope", "about_sharing"), [
    (codes.PATIENT_PRIVACY, True), ("treatment", False), ("research", False), ("adr", False), (None, False)])
def test_only_patient_privacy_consents_are_sharing_choices(scope: str | None, about_sharing: bool) -> None:
    body = professional_body()
    body["scope"] = {"coding": [{"system": codes.CONSENT_SCOPE_SYSTEM, "code": scope}]} if scope else {}
    assert is_about_sharing(body) is about_sharing
    assert _facts(body, NOW).in_force(NOW) is about_sharing
