"""The preferences document: every kind of bad input gets a precise issue, and good documents round-trip
through a UK Core Consent that passes R4 validation."""

from __future__ import annotations

import pytest

from services.consent import preferences
from services.consent.facts import facts_from
from services.consent.preferences import Preferences, from_facts, parse, to_consent
from shared.errors import InvalidInput, ScrError, UnprocessableResource
from shared.fhir import validate_resource
from tests.unit.consent.builders import NHS, days_ago

GOOD = {"direct_care": "share", "withheld_categories": ["PSY"], "denied_organisations": ["RH8"],
        "national_data_opt_out": False}


def _problem(document) -> ScrError:
    with pytest.raises(ScrError) as caught:
        parse(document)
    return caught.value


def test_a_good_document_parses() -> None:
    assert parse(GOOD) == Preferences("share", ("PSY",), ("RH8",), False)


@pytest.mark.parametrize(("document", "status", "expression"), [
    ([], 400, None),
    ("share", 400, None),
    (GOOD | {"nhs_number": "9990000026"}, 400, "nhs_number"),
    (GOOD | {"patient": {"nhs_number": "9990000026"}}, 400, "patient"),
    ({k: v for k, v in GOOD.items() if k != "direct_care"}, 400, "direct_care"),
    (GOOD | {"direct_care": True}, 400, "direct_care"),
    (GOOD | {"withheld_categories": "PSY"}, 400, "withheld_categories"),
    (GOOD | {"withheld_categories": ["PSY", 7]}, 400, "withheld_categories[1]"),
    (GOOD | {"national_data_opt_out": "yes"}, 400, "national_data_opt_out"),
    (GOOD | {"direct_care": "maybe"}, 422, "direct_care"),
    (GOOD | {"withheld_categories": ["PSY", "XYZ"]}, 422, "withheld_categories[1]"),
    (GOOD | {"withheld_categories": ["V"]}, 422, "withheld_categories[0]"),
    (GOOD | {"withheld_categories": ["psy"]}, 422, "withheld_categories[0]"),
    (GOOD | {"withheld_categories": ["PSY", "PSY"]}, 422, "withheld_categories[1]"),
    (GOOD | {"denied_organisations": ["RR"]}, 422, "denied_organisations[0]"),
    (GOOD | {"denied_organisations": ["RR8", "ABCDEFGHI"]}, 422, "denied_organisations[1]"),
    (GOOD | {"denied_organisations": ["R R8"]}, 422, "denied_organisations[0]"),
    (GOOD | {"denied_organisations": ["RR8", "rr8 "]}, 422, "denied_organisations[1]"),
    (GOOD | {"denied_organisations": ["<script>"]}, 422, "denied_organisations[0]"),
    (GOOD | {"denied_organisations": ["RR8", "RR8"]}, 422, "denied_organisations[1]"),
    (GOOD | {"denied_organisations": [f"R{n:02d}" for n in range(51)]}, 422, "denied_organisations"),
])
def test_bad_documents_name_the_element_at_fault(document, status: int, expression: str | None) -> None:
    error = _problem(document)
    assert error.status == status
    assert isinstance(error, InvalidInput if status == 400 else UnprocessableResource)
    expressions = [e for issue in error.issues for e in issue.get("expression", [])]
    if expression:
        assert expression in expressions, error.issues
    assert all(issue["diagnostics"] for issue in error.issues)


@pytest.mark.parametrize("typed", ["rh8", " RH8", "RH8 ", "Rh8", "\trh8\n"])
def test_organisation_codes_are_stored_the_way_decisions_compare_them(typed: str) -> None:
    assert parse(GOOD | {"denied_organisations": [typed]}).denied_organisations == ("RH8",)


def test_a_malformed_organisation_code_is_quoted_as_the_citizen_typed_it() -> None:
    error = _problem(GOOD | {"denied_organisations": ["not-a-code"]})
    assert error.issues[0]["diagnostics"].startswith("'not-a-code' is not an ODS organisation code")


def test_every_problem_is_reported_at_once() -> None:
    error = _problem(GOOD | {"withheld_categories": ["XYZ"], "denied_organisations": ["b-d"],
                             "direct_care": "perhaps"})
    expressions = {e for issue in error.issues for e in issue["expression"]}
    assert expressions == {"direct_care", "withheld_categories[0]", "denied_organisations[0]"}


@pytest.mark.parametrize("document", [
    GOOD,
    {"direct_care": "object", "withheld_categories": [], "denied_organisations": [], "national_data_opt_out": True},
    {"direct_care": "share", "withheld_categories": ["PSY", "SOC", "HIV"], "denied_organisations": ["RH8", "Y12345"],
     "national_data_opt_out": True},
])
def test_preferences_round_trip_through_a_valid_uk_core_consent(document) -> None:
    wanted = parse(document)
    body = to_consent(wanted, consent_id="c1", nhs_number=NHS, recorded=days_ago(0), since=days_ago(3))
    assert validate_resource(body) == []
    assert body["meta"]["profile"] == ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Consent"]
    assert body["scope"]["coding"][0]["code"] == "patient-privacy"
    assert body["provision"]["type"] == ("deny" if wanted.direct_care == "object" else "permit")
    facts = facts_from(id="c1", version_id=1, kind="preferences", status="active", author_kind="citizen",
                       author_ods=None, author_role=None, recorded_at=days_ago(0), body=body)
    assert facts.stated_at == days_ago(3)
    assert from_facts(facts, wanted.direct_care) == wanted


def test_nothing_recorded_reads_as_the_defaults() -> None:
    assert from_facts(None, "share").as_json() == {"direct_care": "share", "withheld_categories": [],
                                                   "denied_organisations": [], "national_data_opt_out": False}


def test_ods_code_shapes() -> None:
    for good in ("RR8", "Y12345", "A1B2C", "8HA03", "RH802", "ABCDEFGH"):
        assert preferences.ODS_CODE.fullmatch(good)
    for bad in ("R8", "rr8", "RR-8", "ABCDEFGHI", " RR8", ""):
        assert not preferences.ODS_CODE.fullmatch(bad)
