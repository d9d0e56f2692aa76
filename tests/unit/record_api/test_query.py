"""Parsing FHIR search parameters: values, modifiers, prefixes, result parameters, strict and lenient."""

from datetime import UTC, datetime

import pytest

from services.record_api.query import (
    DateValue,
    Include,
    Parser,
    Reference,
    Sort,
    Token,
    include_targets,
    param_defs,
    parse_count,
    parse_date,
    parse_reference,
    parse_token,
    revinclude_targets,
)
from shared.errors import InvalidInput

LENIENT = Parser(strict=False, default_count=50, max_count=1000)
STRICT = Parser(strict=True, default_count=50, max_count=1000)


def test_tokens() -> None:
    assert parse_token("code", "http://snomed.info/sct|195967001") == Token("http://snomed.info/sct", "195967001")
    assert parse_token("code", "195967001") == Token(None, "195967001")
    assert parse_token("code", "|195967001") == Token("", "195967001")
    assert parse_token("code", "http://snomed.info/sct|") == Token("http://snomed.info/sct", None)
    # Legacy NHS number URIs are searched under the current one, as ingest stores them.
    assert parse_token("identifier", "http://fhir.nhs.net/Id/nhs-number|9990000018").system == \
        "https://fhir.nhs.uk/Id/nhs-number"
    with pytest.raises(InvalidInput):
        parse_token("code", "|")


def test_dates_with_prefixes() -> None:
    assert parse_date("date", "2024") == DateValue("eq", datetime(2024, 1, 1, tzinfo=UTC),
                                                   datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert parse_date("date", "ge2024-03-05").prefix == "ge"
    assert parse_date("date", "lt2024-03-05T10:00:00+01:00").low == datetime(2024, 3, 5, 9, tzinfo=UTC)
    for bad in ("2024-13", "ap2024", "yesterday", "eq", "20240305"):
        with pytest.raises(InvalidInput) as raised:
            parse_date("birthdate", bad)
        assert raised.value.expression == ["birthdate"]


def test_references() -> None:
    assert parse_reference("patient", "abc") == Reference(None, "abc")
    assert parse_reference("patient", "Patient/abc") == Reference("Patient", "abc")
    assert parse_reference("patient", "https://x.example/fhir/Patient/abc/_history/2") == Reference("Patient", "abc")
    with pytest.raises(InvalidInput):
        parse_reference("patient", "Patient/a b")


def test_count_bounds() -> None:
    assert parse_count("10", 1000) == 10
    assert parse_count("5000", 1000) == 1000
    for bad in ("-1", "ten", "1.5"):
        with pytest.raises(InvalidInput):
            parse_count(bad, 1000)


def test_a_search_parses_into_criteria_and_result_parameters() -> None:
    query = LENIENT.search("Observation", [
        ("patient", "Patient/p1"), ("code", "http://loinc.org|8480-6,http://loinc.org|8462-4"),
        ("date", "ge2024"), ("date", "le2025"), ("_count", "20"), ("_sort", "-date"),
        ("_include", "Observation:patient"), ("_revinclude", "Provenance:target"), ("_elements", "code,status"),
    ])
    assert [c.name for c in query.criteria] == ["patient", "code", "date", "date"]
    assert len(query.criteria[1].values) == 2  # comma: OR
    assert (query.count, query.sort) == (20, Sort("date", True))
    assert query.includes == [Include("Observation", "patient"), Include("Provenance", "target", reverse=True)]
    assert query.elements == ("code", "status")


def test_unknown_parameters_are_reported_when_lenient_and_refused_when_strict() -> None:
    assert LENIENT.search("Condition", [("colour", "blue"), ("_include", "Condition:nope")]).ignored == [
        "colour", "_include=Condition:nope"]
    with pytest.raises(InvalidInput) as raised:
        STRICT.search("Condition", [("colour", "blue")])
    assert raised.value.expression == ["colour"]
    with pytest.raises(InvalidInput):  # a parameter of another type is unknown here
        STRICT.search("Condition", [("vaccine-code", "x")])


def test_unsupported_modifiers_are_always_refused() -> None:
    for name in ("code:text", "family:phonetic", "date:missing"):
        with pytest.raises(InvalidInput):
            LENIENT.search("Patient" if name.startswith("family") else "Condition", [(name, "x")])
    exact = LENIENT.search("Patient", [("family:exact", "Smith")]).criteria[0]
    assert (exact.name, exact.values) == ("family", (Token(None, "Smith"),))  # as written: case and accents count
    assert LENIENT.search("Patient", [("address-postalcode", "LS1 4AP")]).criteria[0].values == ("ls14ap",)


def test_gender_with_its_implied_system_is_the_code_as_indexed() -> None:
    gender = "http://hl7.org/fhir/administrative-gender"
    assert LENIENT.search("Patient", [("gender", f"{gender}|female")]).criteria[0].values == (Token("", "female"),)
    assert LENIENT.search("Patient", [("gender", "female")]).criteria[0].values == (Token(None, "female"),)
    assert LENIENT.search("Patient", [("gender", "http://other|female")]).criteria[0].values == (
        Token("http://other", "female"),)


def test_sort_and_summary_values() -> None:
    for bad in ("colour", "date,_id", "date"):
        with pytest.raises(InvalidInput):
            LENIENT.search("Patient" if bad == "date" else "Observation", [("_sort", bad)])
    with pytest.raises(InvalidInput):
        LENIENT.search("Observation", [("_summary", "true")])
    assert LENIENT.search("Observation", [("_summary", "count")]).summary == "count"


@pytest.mark.parametrize("sort", ["_lastUpdated", "-_lastUpdated", "birthdate"])
def test_patient_searches_refuse_any_order_but_by_id(sort: str) -> None:
    """Patient searches walk persons in id order, either way: another order is refused, not silently ignored."""
    with pytest.raises(InvalidInput, match="parameter '_sort'"):
        LENIENT.search("Patient", [("family", "smith"), ("_sort", sort)])


def test_patient_searches_are_by_id_ascending_unless_asked_otherwise() -> None:
    assert LENIENT.search("Patient", [("family", "smith")]).sort == Sort("_id", False)
    assert LENIENT.search("Patient", [("family", "smith"), ("_sort", "_id")]).sort == Sort("_id", False)
    assert LENIENT.search("Patient", [("family", "smith"), ("_sort", "-_id")]).sort == Sort("_id", True)
    assert LENIENT.search("Observation", [("patient", "p")]).sort == Sort("_lastUpdated", True)


@pytest.mark.parametrize("resource_type,param,system,code", [
    ("Observation", "status", "http://hl7.org/fhir/observation-status", "final"),
    ("Encounter", "status", "http://hl7.org/fhir/encounter-status", "finished"),
    ("MedicationRequest", "intent", "http://hl7.org/fhir/CodeSystem/medicationrequest-intent", "order"),
    ("AllergyIntolerance", "category", "http://hl7.org/fhir/allergy-intolerance-category", "food"),
])
def test_a_code_element_with_its_implied_system_is_the_code_as_indexed(resource_type, param, system, code) -> None:
    def values(value: str) -> tuple:
        return LENIENT.search(resource_type, [(param, value)]).criteria[0].values

    assert values(f"{system}|{code}") == (Token("", code),) and values(f"{system}|") == (Token("", None),)
    assert values(f"http://other|{code}") == (Token("http://other", code),)  # matches nothing: indexed system-less


def test_codeable_concepts_keep_their_own_systems() -> None:
    clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    assert LENIENT.search("Condition", [("clinical-status", f"{clinical}|active")]).criteria[0].values == (
        Token(clinical, "active"),)


def test_the_include_tables_come_from_the_search_parameters() -> None:
    assert "Observation:encounter" in include_targets("Observation")
    assert "Patient:general-practitioner" not in include_targets("Patient")  # would undo S-flag redaction
    assert "AllergyIntolerance:patient" in revinclude_targets("Patient")
    assert revinclude_targets("Observation") == ["Provenance:target"]
    assert {"_id", "_lastUpdated", "identifier", "birthdate"} <= set(param_defs("Patient"))
