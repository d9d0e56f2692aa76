"""Consents recorded by professionals: what kind each is, and precise refusals of the ones the rules do not allow."""

from __future__ import annotations

import copy

import pytest

from services.consent import codes
from services.consent.professional import check, for_storage, import_kind, kind_of
from shared.errors import InvalidInput, UnprocessableResource
from shared.fhir import validate_resource
from tests.support import data
from tests.unit.consent.builders import NHS, days_ago, denied_organisation_nested, professional_body, review_body


@pytest.mark.parametrize(("body", "kind"), [
    (professional_body("deny", code="416409005"), "dissent"),
    (professional_body("deny", code="9Nd1.", system=codes.READ_V2), "dissent"),
    (professional_body("deny", code=None), "dissent"),
    (professional_body("permit", code="425691002"), "consent"),
    (professional_body("permit", code=None), "consent"),
    (review_body(codes.DECLINED), "safety-override"),
    (review_body(codes.UPHELD), "safety-override"),
])
def test_kinds(body, kind: str) -> None:
    checked = check(body)
    assert (checked.kind, checked.nhs_number) == (kind, NHS)
    assert kind_of(body["provision"]) == kind


def _with(path: list, value) -> dict:
    body = copy.deepcopy(professional_body())
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


@pytest.mark.parametrize(("body", "error", "expression"), [
    ({"resourceType": "Patient"}, InvalidInput, "resourceType"),
    (_with(["status"], "nonsense"), InvalidInput, None),
    (_with(["status"], "inactive"), UnprocessableResource, "Consent.status"),
    (_with(["scope"], {"coding": [{"system": codes.CONSENT_SCOPE_SYSTEM, "code": "research"}]}),
     UnprocessableResource, "Consent.scope"),
    (_with(["patient"], {"reference": "Patient/123"}), UnprocessableResource, "Consent.patient.identifier"),
    (_with(["patient", "identifier", "value"], data.INVALID_NHS_NUMBER), UnprocessableResource,
     "Consent.patient.identifier.value"),
    (_with(["provision"], None), UnprocessableResource, "Consent.provision.type"),
    (_with(["provision", "period"], {"start": "2026-05-01", "end": "2026-04-01"}), UnprocessableResource,
     "Consent.provision.period.end"),
    (_with(["provision", "provision"], [{"type": "permit", "securityLabel": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}]),
     UnprocessableResource, "Consent.provision.provision[0].type"),
    (_with(["provision", "provision"], [{"type": "deny", "securityLabel": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "XYZ"}]}]),
     UnprocessableResource, "Consent.provision.provision[0].securityLabel[0]"),
    (_with(["provision", "provision"], [denied_organisation_nested("r-8")]), UnprocessableResource,
     "Consent.provision.provision[0].actor[0].reference.identifier"),
    (_with(["provision", "provision"], [denied_organisation_nested(" ")]), UnprocessableResource,
     "Consent.provision.provision[0].actor[0].reference.identifier"),
    (_with(["provision", "provision"], [{"type": "deny", "purpose": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]}]),
     UnprocessableResource, "Consent.provision.provision[0].purpose[0]"),
    (_with(["provision", "provision"], [{"type": "deny"}]), UnprocessableResource,
     "Consent.provision.provision[0]"),
])
def test_refusals_name_the_element(body, error, expression: str | None) -> None:
    with pytest.raises(error) as caught:
        check(body)
    if expression:
        assert expression in [e for i in caught.value.issues for e in i.get("expression", [])], caught.value.issues


@pytest.mark.parametrize("typed", ["rr8", " RR8", "RR8 ", "Rr8", "\trr8\n"])
def test_organisation_codes_are_normalised_as_a_citizens_are(typed: str) -> None:
    body = professional_body(nested=[denied_organisation_nested(typed)])
    checked = check(body)
    identifier = checked.resource["provision"]["provision"][0]["actor"][0]["reference"]["identifier"]
    assert identifier["value"] == "RR8"
    assert body["provision"]["provision"][0]["actor"][0]["reference"]["identifier"]["value"] == typed  # not mutated


def test_a_review_must_match_its_type_and_carry_no_nested_provisions() -> None:
    body = review_body(codes.DECLINED)
    body["provision"]["type"] = "deny"
    body["provision"]["provision"] = [denied_organisation_nested("RH8")]
    with pytest.raises(UnprocessableResource) as caught:
        check(body)
    assert {e for i in caught.value.issues for e in i["expression"]} == {"Consent.provision.type",
                                                                        "Consent.provision.provision"}


def test_an_unknown_review_outcome_is_refused() -> None:
    body = professional_body("permit", code="maybe", system=codes.REVIEW_SYSTEM)
    with pytest.raises(UnprocessableResource, match="not \"upheld\" or \"declined\""):
        check(body)


def test_stored_form_is_uk_core_with_our_id_kind_and_recorder() -> None:
    body = professional_body(nested=[denied_organisation_nested("RH8")])
    body["id"] = "client-chosen"
    stored = for_storage(body, consent_id="c-1", kind="dissent", nhs_number=NHS, recorded=days_ago(0),
                         author_ods=data.GP_ODS, person_id="person-1")
    assert validate_resource(stored) == []
    assert stored["id"] == "c-1"
    assert stored["meta"]["profile"][0].endswith("UKCore-Consent")
    assert {"system": codes.KIND_TAG_SYSTEM, "code": "dissent"} in stored["meta"]["tag"]
    assert stored["patient"] == {"reference": "Patient/person-1",
                                 "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS}}
    assert stored["organization"][0]["identifier"]["value"] == data.GP_ODS
    assert stored["dateTime"] == body["dateTime"]  # the sender's time is kept


def _source(body: dict, scope: str | None = codes.PATIENT_PRIVACY) -> dict:
    body = copy.deepcopy(body)
    body["scope"] = {"coding": [{"system": codes.CONSENT_SCOPE_SYSTEM, "code": scope}]} if scope else {}
    return body


@pytest.mark.parametrize(("body", "kind"), [
    (_source(professional_body("deny", code="416409005")), "dissent"),
    (_source(professional_body("permit", code="425691002")), "consent"),
    (_source(professional_body("deny", code="182890002"), "treatment"), None),  # declined a procedure
    (_source(professional_body("permit", code="723004006"), "research"), None),
    (_source(professional_body("deny"), None), None),
    (_source(review_body(codes.DECLINED)), None),  # reviews are made here, never imported from a feed
])
def test_only_sharing_choices_are_imported_from_source_records(body, kind: str | None) -> None:
    assert import_kind(body) == kind
