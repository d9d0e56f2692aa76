"""The rules engine as tables: every rule (uk-domain.md §4.7, DESIGN.md "The rules") against every purpose and
role group, with the defaults, expired and inactive consents, newest-wins, reviews of objections, and
break-glass with and without a reason under both settings of the policy switch. Then properties that must
hold for any mix of consents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.consent import codes
from services.consent.codes import READ_V2
from services.consent.facts import ConsentFacts
from services.consent.rules import ADMIN_TYPES, SOCIAL_CARE_TYPES, Policy, decide, ends_objection, stance_at
from shared.labels import CATEGORIES, WITHHELD_BY_DEFAULT
from tests.unit.consent.builders import (
    ACTOR_ODS,
    NOW,
    ROLES,
    citizen,
    days_ago,
    denied_organisation_nested,
    dissent,
    professional,
    professional_body,
    professional_consent,
    request,
    review,
    review_body,
)

ON, OFF = Policy(True), Policy(False)
LABELS = ("HIV", "PSY", "SOC", "V", "R")
REASON = "Unconscious in the emergency department; needs current medication"

SCENARIOS = {
    "nothing recorded": [],
    "citizen shares": [citizen("share")],
    "citizen objects": [citizen("object")],
    "GP-recorded dissent (SNOMED 416409005)": [dissent()],
    "GP-recorded dissent (Read 9Nd1.)": [professional(professional_body("deny", code="9Nd1.", system=READ_V2),
                                                      consent_id="dissent-1")],
    "objection reviewed and upheld": [dissent(stated=days_ago(10)), review(codes.UPHELD, stated=days_ago(3))],
    "objection declined by safety override": [dissent(stated=days_ago(10)), review(stated=days_ago(3))],
    "new objection after a declined one": [dissent(stated=days_ago(10)), review(stated=days_ago(5)),
                                           citizen("object", since=days_ago(1))],
    "review with no objection to act on": [review(stated=days_ago(3))],
    "expired objection": [dissent(ends=days_ago(1))],
    "inactive objection": [dissent(status="inactive")],
    "objection entered in error": [dissent(status="entered-in-error")],
    "objection not yet in force": [dissent(stated=days_ago(-1))],
    "newer citizen share beats older dissent": [dissent(stated=days_ago(10)), citizen("share", since=days_ago(2))],
    "newer dissent beats older citizen share": [citizen("share", since=days_ago(20)), dissent(stated=days_ago(10))],
    "newer professional consent beats older objection": [citizen("object", since=days_ago(20)),
                                                         professional_consent(stated=days_ago(5))],
    "citizen withholds mental health": [citizen("share", withheld=("PSY",))],
    "citizen denies the asking organisation": [citizen("share", denied=(ACTOR_ODS,))],
    "citizen denies another organisation": [citizen("share", denied=("RH8",))],
    "National Data Opt-out": [citizen("share", ndoo=True)],
}

# Direct care by a clinician with a legitimate relationship, labels HIV PSY SOC V R, break-glass allowed by policy.
# scenario: (decision, rule, own_organisation_only, withhold_labels, deciding consent, break_glass_available)
TREAT_TABLE = {
    "nothing recorded": ("permit", "default-share", False, ["HIV", "V"], None, False),
    "citizen shares": ("permit", "share", False, ["HIV", "V"], "pref-1", False),
    "citizen objects": ("permit", "objection", True, ["HIV", "V"], "pref-1", True),
    "GP-recorded dissent (SNOMED 416409005)": ("permit", "objection", True, ["HIV", "V"], "dissent-1", True),
    "GP-recorded dissent (Read 9Nd1.)": ("permit", "objection", True, ["HIV", "V"], "dissent-1", True),
    "objection reviewed and upheld": ("permit", "objection", True, ["HIV", "V"], "review-1", True),
    "objection declined by safety override": ("permit", "safety-override", False, ["HIV", "V"], "review-1", False),
    "new objection after a declined one": ("permit", "objection", True, ["HIV", "V"], "pref-1", True),
    "review with no objection to act on": ("permit", "default-share", False, ["HIV", "V"], None, False),
    "expired objection": ("permit", "default-share", False, ["HIV", "V"], None, False),
    "inactive objection": ("permit", "default-share", False, ["HIV", "V"], None, False),
    "objection entered in error": ("permit", "default-share", False, ["HIV", "V"], None, False),
    "objection not yet in force": ("permit", "default-share", False, ["HIV", "V"], None, False),
    "newer citizen share beats older dissent": ("permit", "share", False, ["HIV", "V"], "pref-1", False),
    "newer dissent beats older citizen share": ("permit", "objection", True, ["HIV", "V"], "dissent-1", True),
    "newer professional consent beats older objection": ("permit", "share", False, ["HIV", "V"], "consent-1",
                                                         False),
    "citizen withholds mental health": ("permit", "share", False, ["HIV", "PSY", "V"], "pref-1", False),
    "citizen denies the asking organisation": ("deny", "denied-organisation", False, [], "pref-1", False),
    "citizen denies another organisation": ("permit", "share", False, ["HIV", "V"], "pref-1", False),
    "National Data Opt-out": ("permit", "share", False, ["HIV", "V"], "pref-1", False),
}


@pytest.mark.parametrize("scenario", list(TREAT_TABLE))
def test_direct_care_by_a_clinician_with_a_relationship(scenario: str) -> None:
    decision_, rule, own_only, withhold, consent, available = TREAT_TABLE[scenario]
    decision = decide(request("TREAT", labels=LABELS), SCENARIOS[scenario], ON, now=NOW)
    assert (decision.decision, decision.rule, decision.own_organisation_only) == (decision_, rule, own_only)
    assert list(decision.withhold_labels) == withhold
    assert (decision.consent.id if decision.consent else None) == consent
    assert decision.break_glass_available is available
    assert decision.break_glass is False
    assert decision.obligations == (("redact-location",) if decision.permits else ())
    assert decision.reason


# Break-glass (ETREAT with a reason) by a clinician with NO legitimate relationship.
# scenario: {policy: (decision, rule, own_organisation_only, break_glass)}
ETREAT_TABLE = {
    "nothing recorded": {ON: ("permit", "break-glass", False, True), OFF: ("permit", "break-glass", False, True)},
    "citizen objects": {ON: ("permit", "break-glass", False, True), OFF: ("permit", "objection", True, True)},
    "GP-recorded dissent (SNOMED 416409005)": {ON: ("permit", "break-glass", False, True),
                                               OFF: ("permit", "objection", True, True)},
    "objection reviewed and upheld": {ON: ("permit", "break-glass", False, True),
                                      OFF: ("permit", "objection", True, True)},
    "objection declined by safety override": {ON: ("permit", "break-glass", False, True),
                                              OFF: ("permit", "break-glass", False, True)},
    "expired objection": {ON: ("permit", "break-glass", False, True), OFF: ("permit", "break-glass", False, True)},
    "citizen withholds mental health": {ON: ("permit", "break-glass", False, True),
                                        OFF: ("permit", "break-glass", False, True)},
    "citizen denies the asking organisation": {ON: ("deny", "denied-organisation", False, False),
                                               OFF: ("deny", "denied-organisation", False, False)},
    "National Data Opt-out": {ON: ("permit", "break-glass", False, True),
                              OFF: ("permit", "break-glass", False, True)},
}


@pytest.mark.parametrize("policy", [ON, OFF], ids=["policy-on", "policy-off"])
@pytest.mark.parametrize("scenario", list(ETREAT_TABLE))
def test_break_glass_with_a_reason_and_no_relationship(scenario: str, policy: Policy) -> None:
    expected = ETREAT_TABLE[scenario][policy]
    decision = decide(request("ETREAT", relationship="none", labels=LABELS, reason=REASON), SCENARIOS[scenario],
                      policy, now=NOW)
    assert (decision.decision, decision.rule, decision.own_organisation_only, decision.break_glass) == expected
    if decision.permits:
        # Break-glass lifts an objection and a missing relationship, never a sensitivity restriction.
        plain = decide(request("TREAT", labels=LABELS), SCENARIOS[scenario], policy, now=NOW)
        assert decision.withhold_labels == plain.withhold_labels
        assert set(decision.withhold_labels) >= {"HIV", "V"}


@pytest.mark.parametrize(("scenario", "policy", "expected"), [
    ("nothing recorded", ON, ("permit", "default-share", False, False)),
    ("citizen objects", ON, ("permit", "break-glass", False, True)),
    ("citizen objects", OFF, ("permit", "objection", True, False)),
])
def test_break_glass_when_a_relationship_exists_is_only_break_glass_if_it_changes_the_answer(
        scenario: str, policy: Policy, expected: tuple) -> None:
    decision = decide(request("ETREAT", labels=LABELS, reason=REASON), SCENARIOS[scenario], policy, now=NOW)
    assert (decision.decision, decision.rule, decision.own_organisation_only, decision.break_glass) == expected


@pytest.mark.parametrize("reason", [None, "", "   \t", "\u200b", "\u2800", "\u00a0\u3000", "\u200b\u200d\ufeff"],
                         ids=["none", "empty", "blank", "zero-width-space", "braille-blank", "nbsp-ideographic-space",
                              "zero-width-mix"])
@pytest.mark.parametrize("scenario", ["nothing recorded", "citizen objects"])
def test_break_glass_without_a_reason_is_denied(reason: str | None, scenario: str) -> None:
    decision = decide(request("ETREAT", relationship="none", reason=reason), SCENARIOS[scenario], ON, now=NOW)
    assert (decision.decision, decision.rule, decision.break_glass) == ("deny", "break-glass-no-reason", False)
    assert "reason" in decision.reason


@pytest.mark.parametrize("reason", ["x", "999", "\u200b骨折\u200b", "Collapsed in A&E"])
def test_any_letter_or_digit_makes_a_reason(reason: str) -> None:
    decision = decide(request("ETREAT", relationship="none", reason=reason), SCENARIOS["citizen objects"], ON, now=NOW)
    assert (decision.decision, decision.rule, decision.break_glass) == ("permit", "break-glass", True)


@pytest.mark.parametrize("group", ["social-care", "admin", "privacy-officer", "caldicott-guardian", "unknown"])
def test_break_glass_from_a_non_clinical_role_is_denied(group: str) -> None:
    decision = decide(request("ETREAT", role=ROLES[group], relationship="none", reason=REASON),
                      SCENARIOS["citizen objects"], ON, now=NOW)
    assert (decision.decision, decision.rule) == ("deny", "break-glass-not-clinical")


# Secondary use, asked by a system caller (the export job): the same answer for research and for planning.
SECONDARY_TABLE = {
    "nothing recorded": ("permit", "secondary-use", None),
    "citizen shares": ("permit", "secondary-use", None),
    "citizen objects": ("deny", "objection-secondary-use", "pref-1"),
    "GP-recorded dissent (SNOMED 416409005)": ("deny", "objection-secondary-use", "dissent-1"),
    "objection reviewed and upheld": ("deny", "objection-secondary-use", "review-1"),
    "objection declined by safety override": ("deny", "objection-secondary-use", "review-1"),
    "review with no objection to act on": ("permit", "secondary-use", None),
    "expired objection": ("permit", "secondary-use", None),
    "inactive objection": ("permit", "secondary-use", None),
    "newer citizen share beats older dissent": ("permit", "secondary-use", None),
    "newer dissent beats older citizen share": ("deny", "objection-secondary-use", "dissent-1"),
    "citizen withholds mental health": ("permit", "secondary-use", "pref-1"),
    "citizen denies the asking organisation": ("deny", "denied-organisation", "pref-1"),
    "National Data Opt-out": ("deny", "national-data-opt-out", "pref-1"),
}


@pytest.mark.parametrize("purpose", ["HRESCH", "HOPERAT"])
@pytest.mark.parametrize("scenario", list(SECONDARY_TABLE))
def test_secondary_use(scenario: str, purpose: str) -> None:
    decision_, rule, consent = SECONDARY_TABLE[scenario]
    decision = decide(request(purpose, kind="system", role=None, relationship="none", labels=LABELS),
                      SCENARIOS[scenario], ON, now=NOW)
    assert (decision.decision, decision.rule) == (decision_, rule)
    assert (decision.consent.id if decision.consent else None) == consent
    assert not decision.break_glass and not decision.break_glass_available
    if decision.permits:
        assert set(decision.withhold_labels) >= {"HIV", "V"}


# Role groups x purposes with nothing recorded, a relationship, and a reason for ETREAT.
# group: {purpose: (decision, rule, allowed_types)}
ROLE_TABLE = {
    "clinical": {"TREAT": ("permit", "default-share", None), "ETREAT": ("permit", "default-share", None),
                 "HRESCH": ("permit", "secondary-use", None), "HOPERAT": ("permit", "secondary-use", None)},
    "gp": {"TREAT": ("permit", "default-share", None), "ETREAT": ("permit", "default-share", None),
           "HRESCH": ("permit", "secondary-use", None), "HOPERAT": ("permit", "secondary-use", None)},
    "social-care": {"TREAT": ("permit", "default-share", SOCIAL_CARE_TYPES),
                    "ETREAT": ("deny", "break-glass-not-clinical", None),
                    "HRESCH": ("permit", "secondary-use", None), "HOPERAT": ("permit", "secondary-use", None)},
    "admin": {"TREAT": ("permit", "default-share", ADMIN_TYPES), "ETREAT": ("deny", "break-glass-not-clinical", None),
              "HRESCH": ("permit", "secondary-use", None), "HOPERAT": ("permit", "secondary-use", None)},
    "privacy-officer": {"TREAT": ("deny", "role-not-permitted", None),
                        "ETREAT": ("deny", "break-glass-not-clinical", None),
                        "HRESCH": ("permit", "secondary-use", None), "HOPERAT": ("permit", "secondary-use", None)},
    "caldicott-guardian": {"TREAT": ("deny", "role-not-permitted", None),
                           "ETREAT": ("deny", "break-glass-not-clinical", None),
                           "HRESCH": ("permit", "secondary-use", None), "HOPERAT": ("permit", "secondary-use", None)},
    "unknown": {"TREAT": ("deny", "role-not-permitted", None), "ETREAT": ("deny", "break-glass-not-clinical", None),
                "HRESCH": ("permit", "secondary-use", None), "HOPERAT": ("permit", "secondary-use", None)},
    "system": {"TREAT": ("deny", "actor-not-permitted", None), "ETREAT": ("deny", "break-glass-not-clinical", None),
               "HRESCH": ("permit", "secondary-use", None), "HOPERAT": ("permit", "secondary-use", None)},
}


@pytest.mark.parametrize("purpose", ["TREAT", "ETREAT", "HRESCH", "HOPERAT"])
@pytest.mark.parametrize("group", list(ROLE_TABLE))
def test_role_views_for_every_purpose(group: str, purpose: str) -> None:
    kind, role = ("system", None) if group == "system" else ("clinician", ROLES[group])
    decision = decide(request(purpose, kind=kind, role=role, reason=REASON if purpose == "ETREAT" else None),
                      [], ON, now=NOW)
    assert (decision.decision, decision.rule, decision.allowed_types) == ROLE_TABLE[group][purpose]


@pytest.mark.parametrize(("group", "allowed"), [("social-care", SOCIAL_CARE_TYPES), ("admin", ADMIN_TYPES)])
def test_limited_roles_under_an_objection_see_only_their_own_organisations_items_and_cannot_break_glass(
        group: str, allowed: tuple[str, ...]) -> None:
    decision = decide(request(role=ROLES[group]), SCENARIOS["citizen objects"], ON, now=NOW)
    assert (decision.decision, decision.rule, decision.own_organisation_only) == ("permit", "objection", True)
    assert decision.allowed_types == allowed
    assert decision.break_glass_available is False


# Legitimate relationship x role group x policy, direct care: (decision, rule, break_glass_available).
@pytest.mark.parametrize(("relationship", "group", "scenario", "policy", "expected"), [
    ("registered", "clinical", "nothing recorded", ON, ("permit", "default-share", False)),
    ("care", "clinical", "nothing recorded", ON, ("permit", "default-share", False)),
    ("self-claimed", "clinical", "nothing recorded", ON, ("permit", "default-share", False)),
    ("none", "clinical", "nothing recorded", ON, ("deny", "no-legitimate-relationship", True)),
    ("none", "clinical", "nothing recorded", OFF, ("deny", "no-legitimate-relationship", True)),
    ("none", "clinical", "citizen objects", ON, ("deny", "no-legitimate-relationship", True)),
    ("none", "clinical", "citizen objects", OFF, ("deny", "no-legitimate-relationship", False)),
    ("none", "social-care", "nothing recorded", ON, ("deny", "no-legitimate-relationship", False)),
    ("none", "admin", "nothing recorded", ON, ("deny", "no-legitimate-relationship", False)),
    ("registered", "clinical", "citizen objects", OFF, ("permit", "objection", False)),
    ("none", "clinical", "citizen denies the asking organisation", ON, ("deny", "denied-organisation", False)),
])
def test_legitimate_relationship(relationship: str, group: str, scenario: str, policy: Policy,
                                 expected: tuple) -> None:
    decision = decide(request(role=ROLES[group], relationship=relationship), SCENARIOS[scenario], policy, now=NOW)
    assert (decision.decision, decision.rule, decision.break_glass_available) == expected


def test_s_flag_obliges_location_redaction_only_when_the_person_is_restricted() -> None:
    assert decide(request(labels=("R",)), [], ON, now=NOW).obligations == ("redact-location",)
    assert decide(request(labels=("HIV",)), [], ON, now=NOW).obligations == ()
    assert decide(request("HRESCH", kind="system", role=None, labels=("R",)), [], ON, now=NOW).obligations == \
        ("redact-location",)


def test_only_labels_present_are_listed_as_withheld() -> None:
    assert decide(request(labels=("SOC",)), [], ON, now=NOW).withhold_labels == ()
    assert decide(request(labels=("SOC", "TBOO", "SEX", "STD")), [], ON, now=NOW).withhold_labels == \
        ("SEX", "STD", "TBOO")


def test_two_consents_stated_at_the_same_moment_are_ordered_by_when_recorded_not_by_listing() -> None:
    moment = days_ago(4)
    a = citizen("share", since=moment, consent_id="a-share")  # recorded at `moment`
    b = dissent(stated=moment, consent_id="b-dissent")  # recorded a day ago: the later statement
    assert decide(request(), [a, b], ON, now=NOW).rule == decide(request(), [b, a], ON, now=NOW).rule == "objection"


# ---------------------------------------------------------------- ODS codes, however they are written


@pytest.mark.parametrize("purpose", ["TREAT", "ETREAT", "HRESCH"])
@pytest.mark.parametrize("asking", ["RH8", "rh8", " RH8", "RH8 ", "Rh8"])
def test_a_denied_organisation_is_denied_however_its_code_is_written(asking: str, purpose: str) -> None:
    glass = purpose == "ETREAT"
    req = request(purpose, ods=asking, relationship="none" if glass else "registered", reason=REASON if glass else None)
    decision = decide(req, [citizen("share", denied=("RH8",))], ON, now=NOW)
    assert (decision.decision, decision.rule) == ("deny", "denied-organisation")


def test_an_organisation_denied_in_lower_case_at_source_is_denied() -> None:
    imported = professional(professional_body("permit", code=None, nested=[denied_organisation_nested("rh8 ")]))
    assert decide(request(ods="RH8"), [imported], ON, now=NOW).rule == "denied-organisation"


# ---------------------------------------------------------------- newest wins: which statement is newest
# Times are stated by the sender (dateTime, period.start) but received by us (recorded): a statement is never
# newer than when we received it, a date alone means "some time that day", and equal times go to the later-recorded.

TODAY = NOW.date().isoformat()  # 2026-06-01; NOW is 12:00 UTC


def _dated(body: dict, when: str) -> dict:
    return body | {"dateTime": when}


def _dissent_on(when: str, recorded, consent_id: str = "dissent-1"):
    return professional(_dated(professional_body("deny", code="9Nd1.", system=READ_V2), when), recorded=recorded,
                        consent_id=consent_id)


def _consent_on(when: str, recorded, consent_id: str = "consent-1"):
    return professional(_dated(professional_body("permit", code="9Nd7.", system=READ_V2), when), recorded=recorded,
                        consent_id=consent_id)


ORDERING = {
    # A receptionist records a consent dated 3 s ahead; the citizen objects 1 s after it was recorded.
    "future-dated consent, then the citizen objects": (
        [_consent_on((days_ago(1 / 24) + timedelta(seconds=3)).isoformat(), days_ago(1 / 24)),
         citizen("object", since=days_ago(1 / 24) + timedelta(seconds=1))], "objection"),
    "GP dissent dated today, recorded after the citizen's share today": (
        [citizen("share", since=NOW - timedelta(hours=2)), _dissent_on(TODAY, NOW - timedelta(hours=1))],
        "objection"),
    "GP dissent dated today, recorded before the citizen's share today": (
        [_dissent_on(TODAY, NOW - timedelta(hours=2)), citizen("share", since=NOW - timedelta(hours=1))], "share"),
    "GP dissent dated yesterday (recorded today), citizen shared this morning": (
        [citizen("share", since=NOW - timedelta(hours=3)),
         _dissent_on((NOW - timedelta(days=1)).date().isoformat(), NOW - timedelta(hours=1))], "share"),
    "same day: dissent recorded, then consent recorded": (
        [_dissent_on(TODAY, NOW - timedelta(hours=2), "b-dissent"), _consent_on(TODAY, NOW - timedelta(hours=1),
                                                                                "a-consent")], "share"),
    "same day: dissent recorded, then consent recorded (ids the other way)": (
        [_dissent_on(TODAY, NOW - timedelta(hours=2), "a-dissent"), _consent_on(TODAY, NOW - timedelta(hours=1),
                                                                                "b-consent")], "share"),
    "same day: consent recorded, then dissent recorded": (
        [_consent_on(TODAY, NOW - timedelta(hours=2), "b-consent"), _dissent_on(TODAY, NOW - timedelta(hours=1),
                                                                                "a-dissent")], "objection"),
    "same moment stated, the later-recorded wins": (
        [_dissent_on(days_ago(2).isoformat(), days_ago(1), "a-dissent"),
         _consent_on(days_ago(2).isoformat(), days_ago(0.5), "z-consent")], "share"),
}


@pytest.mark.parametrize("scenario", list(ORDERING))
def test_the_newest_statement_wins(scenario: str) -> None:
    consents, rule = ORDERING[scenario]
    for listing in (consents, consents[::-1]):
        assert decide(request(), listing, ON, now=NOW).rule == rule


def test_a_date_alone_is_a_day_in_england_when_ordering() -> None:
    # 00:10 BST on 2 June the citizen shares; at 00:20 BST a GP dissent dated 1 June is recorded. 1 June in England
    # ended at 23:00 UTC, before the citizen's share, so the share is the newer statement (read as a UTC day, the
    # dissent would have been placed at 00:20 BST and won).
    share, dated = citizen("share", since=datetime(2026, 6, 1, 23, 10, tzinfo=UTC)), _dissent_on(
        TODAY, datetime(2026, 6, 1, 23, 20, tzinfo=UTC))
    for listing in ([share, dated], [dated, share]):
        assert decide(request(), listing, ON, now=datetime(2026, 6, 1, 23, 30, tzinfo=UTC)).rule == "share"
    # In winter a day in England is the UTC day: a dissent dated 15 January and recorded at 00:20 on the 16th
    # was made before a share at 00:10 on the 16th, and one dated the 16th is the newer.
    share = citizen("share", since=datetime(2027, 1, 16, 0, 10, tzinfo=UTC))
    at = datetime(2027, 1, 16, 0, 30, tzinfo=UTC)
    for day, rule in (("2027-01-15", "share"), ("2027-01-16", "objection")):
        assert decide(request(), [share, _dissent_on(day, at - timedelta(minutes=10))], ON, now=at).rule == rule


def test_a_future_dated_consent_is_not_in_force_before_its_date() -> None:
    ahead = _consent_on((NOW + timedelta(days=1)).isoformat(), NOW - timedelta(hours=1))
    assert decide(request(), [dissent(), ahead], ON, now=NOW).rule == "objection"
    assert decide(request(), [dissent(), ahead], ON, now=NOW + timedelta(days=2)).rule == "share"


# ---------------------------------------------------------------- periods: FHIR partial dates are ranges


def _dissent_for(period: dict) -> list:
    body = professional_body("deny", stated=days_ago(400))
    body["provision"]["period"] = period
    return [professional(body, recorded=days_ago(400))]


@pytest.mark.parametrize(("period", "at", "rule"), [
    ({"start": "2019-01-01", "end": "2020"}, NOW, "default-share"),  # ended with 2020
    ({"end": "2026"}, NOW, "objection"),  # the whole of 2026
    ({"end": "2026"}, datetime(2027, 1, 1, tzinfo=UTC), "default-share"),
    ({"start": "2099-01"}, NOW, "default-share"),  # not in force until January 2099
    ({"start": "2026-07"}, NOW, "default-share"),
    ({"start": "2026-06"}, NOW, "objection"),
    # A partial date is a period in England: June ends at midnight BST, 23:00 UTC on 30 June.
    ({"end": "2026-06"}, datetime(2026, 6, 30, 22, 59, tzinfo=UTC), "objection"),
    ({"end": "2026-06"}, datetime(2026, 6, 30, 23, tzinfo=UTC), "default-share"),
    ({"end": TODAY}, NOW, "objection"),  # an end date includes that whole day
    ({"end": TODAY}, datetime(2026, 6, 1, 22, 59, 59, tzinfo=UTC), "objection"),
    ({"end": TODAY}, datetime(2026, 6, 1, 23, tzinfo=UTC), "default-share"),  # midnight in London
    ({"start": "2026-07-01"}, datetime(2026, 6, 30, 22, 59, 59, tzinfo=UTC), "default-share"),
    ({"start": "2026-07-01"}, datetime(2026, 6, 30, 23, tzinfo=UTC), "objection"),  # 00:00 BST on 1 July
    # Around the clock changes (29 March and 25 October 2026) and in winter, when London is on UTC.
    ({"end": "2026-03-29"}, datetime(2026, 3, 29, 22, 59, tzinfo=UTC), "objection"),
    ({"end": "2026-03-29"}, datetime(2026, 3, 29, 23, tzinfo=UTC), "default-share"),
    ({"end": "2026-10-25"}, datetime(2026, 10, 25, 23, 59, tzinfo=UTC), "objection"),
    ({"end": "2026-10-25"}, datetime(2026, 10, 26, tzinfo=UTC), "default-share"),
    ({"end": "2027-01-15"}, datetime(2027, 1, 15, 23, 59, tzinfo=UTC), "objection"),
    ({"end": "2027-01-15"}, datetime(2027, 1, 16, tzinfo=UTC), "default-share"),
    ({"end": "2026-06-01T11:00:00Z"}, NOW, "default-share"),
])
def test_periods_written_as_partial_dates_cover_the_whole_period(period: dict, at: datetime, rule: str) -> None:
    assert decide(request(), _dissent_for(period), ON, now=at).rule == rule


# ---------------------------------------------------------------- only sharing choices count


def _scoped(scope: str, provision_type: str, code: str | None, stated: datetime) -> ConsentFacts:
    body = professional_body(provision_type, code=code, stated=stated)
    body["scope"] = {"coding": [{"system": codes.CONSENT_SCOPE_SYSTEM, "code": scope}]}
    return professional(body, kind="dissent" if provision_type == "deny" else "consent", consent_id=f"src-{scope}")


@pytest.mark.parametrize("purpose", ["TREAT", "HRESCH"])
def test_a_treatment_refusal_is_not_an_objection_to_sharing(purpose: str) -> None:
    refused = _scoped("treatment", "deny", "182890002", days_ago(1))
    kind, role = ("system", None) if purpose == "HRESCH" else ("clinician", ROLES["clinical"])
    decision = decide(request(purpose, kind=kind, role=role), [refused], ON, now=NOW)
    assert decision.rule == ("default-share" if purpose == "TREAT" else "secondary-use")


def test_a_research_consent_does_not_lift_an_objection() -> None:
    research = _scoped("research", "permit", "723004006", days_ago(1))
    assert decide(request(), [citizen("object", since=days_ago(20)), research], ON, now=NOW).rule == "objection"


def test_the_json_shape_is_the_contract() -> None:
    body = decide(request(labels=("HIV", "R", "SOC")), [citizen("object")], ON, now=NOW).as_json()
    assert set(body) == {"decision", "own_organisation_only", "withhold_labels", "allowed_types", "obligations",
                         "break_glass", "break_glass_available", "rule", "consent", "reason"}
    assert body["consent"] == {"id": "pref-1", "version_id": 1, "provision": "Consent.provision"}
    assert body["withhold_labels"] == ["HIV"] and body["obligations"] == ["redact-location"]


# ---------------------------------------------------------------- ending an objection (checked when recorded)


def _candidate(body: dict, *, start: datetime | None = None, end: datetime | None = None,
               date: str | None = None) -> ConsentFacts:
    """A consent a professional is about to record now (the service records it at NOW)."""
    if start or end:
        body["provision"]["period"] = {k: v.isoformat() for k, v in (("start", start), ("end", end)) if v}
    if date:
        body["dateTime"] = date
    return professional(body, consent_id="new-1", recorded=NOW, ods=ACTOR_ODS, role=ROLES["clinical"])


def _share(**kwargs) -> ConsentFacts:
    return _candidate(professional_body("permit", code=None, stated=NOW), **kwargs)


CANDIDATES = {
    "share (permit, no code)": _share(),
    "consent code, type permit": _candidate(professional_body("permit", code="425691002", stated=NOW)),
    "consent code, type deny": _candidate(professional_body("deny", code="9Nd7.", system=READ_V2, stated=NOW)),
    "permit with nested restrictions": _candidate(professional_body(
        "permit", code=None, stated=NOW, nested=[denied_organisation_nested("RH8")])),
    "share from tomorrow (future-dated)": _share(start=days_ago(-1)),
    "share dated next year (leapfrog)": _share(date=days_ago(-365).isoformat()),
    "share for a period covering now": _share(start=days_ago(2), end=days_ago(-365)),
    "share dated today, no time": _share(date=NOW.date().isoformat()),
    "share back-dated to 2015": _share(date="2015-03-01"),
    "dissent": _candidate(professional_body("deny", stated=NOW)),
    "review declined": _candidate(review_body(codes.DECLINED, stated=NOW)),
}

# Would recording the candidate end an objection (now or later)? Only those with standing may record one that does.
# scenario: the candidates that end an objection there (every other candidate does not)
SHARES_AFTER = set(CANDIDATES) - {"share back-dated to 2015", "dissent", "review declined"}
ENDS_OBJECTION = {
    "nothing recorded": set(),
    "citizen shares": set(),
    "citizen objects": SHARES_AFTER,
    "GP-recorded dissent (SNOMED 416409005)": SHARES_AFTER,
    "objection reviewed and upheld": SHARES_AFTER,
    "objection declined by safety override": SHARES_AFTER,  # still keeps the person out of secondary use
    # The citizen objected again yesterday: a share stated two days ago is older and changes nothing.
    "new objection after a declined one": SHARES_AFTER - {"share for a period covering now"},
    "expired objection": set(),
    "inactive objection": set(),
    # Recorded yesterday, in force from tomorrow: a share stated after yesterday would outrank it once it starts.
    "objection not yet in force": SHARES_AFTER - {"share for a period covering now"},
    "newer citizen share beats older dissent": set(),
    "newer professional consent beats older objection": set(),
}


@pytest.mark.parametrize("candidate", list(CANDIDATES))
@pytest.mark.parametrize("scenario", list(ENDS_OBJECTION))
def test_which_consents_would_end_an_objection(scenario: str, candidate: str) -> None:
    ends = ends_objection(SCENARIOS[scenario], CANDIDATES[candidate], NOW)
    assert ends is (candidate in ENDS_OBJECTION[scenario])


def test_a_share_dated_between_an_objection_and_its_review_ends_the_objection() -> None:
    # The declined objection still keeps the person out of research; a share placed before the review would end
    # it, and the review would then have nothing to act on.
    reviewed = SCENARIOS["objection declined by safety override"]  # dissent 10 days ago, declined 3 days ago
    assert ends_objection(reviewed, _share(date=days_ago(5).isoformat()), NOW)
    assert not ends_objection(reviewed, _share(date=days_ago(11).isoformat()), NOW)


def test_a_new_version_of_a_consent_replaces_the_old_one_when_judging_whether_it_ends_an_objection() -> None:
    # An imported dissent the source withdraws (deleted: inactive) or turns into a consent ends the objection it
    # was, unless another objection still stands; judged with the old version kept, neither would.
    at_source = dissent(consent_id="src-1")
    withdrawn = dissent(consent_id="src-1", status="inactive")
    turned = professional(professional_body("permit", code="425691002", stated=days_ago(20)), consent_id="src-1")
    assert ends_objection([at_source], withdrawn, NOW)
    assert ends_objection([at_source], turned, NOW)  # dated before the dissent, yet the dissent is gone
    own = citizen("object", since=days_ago(2), consent_id="citizen-1")
    assert not ends_objection([at_source, own], withdrawn, NOW)
    assert not ends_objection([at_source], dissent(consent_id="src-1", stated=days_ago(1)), NOW)


# ---------------------------------------------------------------- properties over any mix of consents

POOL = [c for consents in SCENARIOS.values() for c in consents]
consent_sets = st.lists(st.sampled_from(POOL), max_size=5, unique_by=lambda c: (c.id, c.version_id, c.stated_at))
label_sets = st.sets(st.sampled_from([*CATEGORIES, "R", "V", "N"]))
requests = st.builds(
    request,
    purpose=st.sampled_from(["TREAT", "ETREAT", "HRESCH", "HOPERAT"]),
    role=st.sampled_from(list(ROLES.values())),
    ods=st.sampled_from([ACTOR_ODS, "RH8", "Y12345"]),
    relationship=st.sampled_from(["registered", "care", "self-claimed", "none"]),
    labels=label_sets.map(tuple),
    reason=st.sampled_from([None, REASON]),
)


@given(consent_sets, requests, st.booleans(), st.randoms())
def test_the_answer_never_depends_on_the_order_consents_are_listed(consents, req, switch, rng) -> None:
    shuffled = list(consents)
    rng.shuffle(shuffled)
    assert decide(req, consents, Policy(switch), now=NOW) == decide(req, shuffled, Policy(switch), now=NOW)


@given(consent_sets, requests, st.booleans())
def test_default_sensitive_and_source_confidential_labels_are_withheld_from_every_permit(consents, req,
                                                                                          switch) -> None:
    decision = decide(req, consents, Policy(switch), now=NOW)
    if decision.permits:
        must = (WITHHELD_BY_DEFAULT | {"V"}) & req.labels
        assert must <= set(decision.withhold_labels)


@given(consent_sets, requests)
def test_the_national_data_opt_out_never_changes_a_direct_care_decision(consents, req) -> None:
    if req.purpose not in codes.DIRECT_CARE:
        return
    with_opt_out = [*consents, citizen("share", ndoo=True, since=days_ago(400), consent_id="zz-ndoo")]
    without = [*consents, citizen("share", since=days_ago(400), consent_id="zz-ndoo")]
    a, b = decide(req, with_opt_out, ON, now=NOW), decide(req, without, ON, now=NOW)
    assert (a.decision, a.rule, a.own_organisation_only, a.withhold_labels, a.break_glass) == \
        (b.decision, b.rule, b.own_organisation_only, b.withhold_labels, b.break_glass)


@given(consent_sets, requests)
def test_a_denied_organisation_is_denied_for_every_purpose_even_with_break_glass(consents, req) -> None:
    denying = [*consents, citizen("share", denied=(req.ods_code,), consent_id="zz-deny")]
    decision = decide(req, denying, ON, now=NOW)
    if req.purpose == "ETREAT" and (not req.break_glass_reason or req.role not in ("R8000", "R0260")):
        assert decision.rule.startswith("break-glass-")  # refused earlier, for its own reason
    elif req.purpose == "TREAT" and req.role not in ("R8000", "R0260", "R8014", "R8009"):
        assert decision.rule == "role-not-permitted"
    else:
        assert (decision.decision, decision.rule) == ("deny", "denied-organisation")


@given(consent_sets, requests, st.booleans())
def test_objectors_are_never_used_for_secondary_purposes(consents, req, switch) -> None:
    objecting = [*consents, citizen("object", since=NOW, consent_id="zz-object")]
    if req.purpose in codes.SECONDARY_USE:
        assert decide(req, objecting, Policy(switch), now=NOW).decision == "deny"


@given(consent_sets, st.sampled_from(list(CANDIDATES.values())), st.floats(min_value=0, max_value=800))
def test_a_consent_accepted_without_standing_never_ends_an_objection_at_any_moment(consents, candidate,
                                                                                   days) -> None:
    # The write-time check looks only where consents start and end; probe any moment up to two years ahead.
    moment = NOW + timedelta(days=days)
    if not ends_objection(consents, candidate, NOW) and stance_at(consents, moment).objection is not None:
        assert stance_at([*consents, candidate], moment).objection is not None
