"""De-identification for secondary use: what is excluded, what is removed, what is kept, and how every id and
reference becomes a per-recipient pseudonym."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.record_api.population.deidentify import (
    EXCLUDED_LABELS,
    Deidentifier,
    is_excluded,
    nhs_number_residue,
    person_pseudonym,
    postcode_district,
    recipient_of,
    resource_pseudonym,
)
from services.record_api.population.demographics import PersonRow, ethnic_code, gp_practice, home_postcode
from services.record_api.population.deprivation import SYNTHETIC_TABLE, DeprivationLookup
from services.record_api.population.pseudonym import Pseudonymiser
from shared.fhir import ETHNIC_CATEGORY_ENGLAND, ETHNIC_CATEGORY_EXT, ODS_ORG_SYSTEM
from shared.labels import CATEGORIES, WITHHELD_BY_DEFAULT

SECRET = b"s" * 40
PERSON, NHS = "7c1f0000-0000-4000-8000-000000000001", "9990000018"


@pytest.fixture
def deidentifier() -> Deidentifier:
    return Deidentifier(Pseudonymiser(SECRET, recipient_of("ics-planning", "QWO")),
                        DeprivationLookup.from_csv(SYNTHETIC_TABLE))


def _row(**changes: object) -> PersonRow:
    values = dict(person_id=PERSON, nhs_number=NHS, gender="female", birth_date="1980-05-01", ethnic_code="H",
                  postcode="LS1 4AP", gp_practice="Y12345", deceased=False, restricted=False,
                  changed=datetime(2026, 1, 5, tzinfo=UTC))
    return PersonRow(**(values | changes))  # type: ignore[arg-type]


def test_every_sensitive_category_but_social_care_and_sealed_items_are_excluded() -> None:
    assert WITHHELD_BY_DEFAULT < EXCLUDED_LABELS and "V" in EXCLUDED_LABELS and "SOC" not in EXCLUDED_LABELS
    assert set(EXCLUDED_LABELS) == (set(CATEGORIES) - {"SOC"}) | {"V"}
    assert is_excluded(["PSY"]) and is_excluded(["SOC", "V"]) and not is_excluded(["SOC"]) and not is_excluded(None)
    assert is_excluded(["SOC"], withheld=frozenset({"SOC"}))  # a person who withheld social care
    assert not is_excluded(["R"])  # the S-flag removes location data, not the item


def test_the_patient_keeps_what_planning_needs_and_nothing_that_identifies(deidentifier) -> None:
    patient = deidentifier.patient(_row())
    assert patient["id"] == person_pseudonym(deidentifier.pseudonymiser, PERSON, NHS) != NHS
    assert patient["birthDate"] == "1980" and patient["gender"] == "female"
    assert patient["address"] == [{"use": "home", "postalCode": "LS1"}]
    assert patient["generalPractitioner"] == [{"identifier": {"system": ODS_ORG_SYSTEM, "value": "Y12345"}}]
    assert {e["url"].rsplit(":", 1)[-1]: e for e in patient["extension"]}["imd-decile"]["valueInteger"] == 6
    assert NHS not in json.dumps(patient) and PERSON not in json.dumps(patient) and "4AP" not in json.dumps(patient)


def test_an_s_flagged_patient_has_no_place_at_all(deidentifier) -> None:
    patient = deidentifier.patient(_row(restricted=True))
    assert {"address", "generalPractitioner"}.isdisjoint(patient)
    assert [e["url"] for e in patient["extension"]] == [ETHNIC_CATEGORY_EXT]


def test_resources_lose_identifiers_and_narrative_and_every_patient_data_id_is_pseudonymised(deidentifier) -> None:
    body = {"resourceType": "Encounter", "id": "enc-1", "status": "finished",
            "meta": {"versionId": "3", "lastUpdated": "2026-01-05T09:00:00Z", "source": "urn:scr:ods:RR8:PAS",
                     "tag": [{"system": ODS_ORG_SYSTEM, "code": "RR8"}, {"system": "urn:scr:source-system",
                                                                          "code": "PAS"}],
                     "security": [{"code": "SOC"}]},
            "identifier": [{"system": "https://fhir.rr8.nhs.uk/Id/visit", "value": "V123"}],
            "text": {"status": "generated", "div": "<div>Olivia Smith admitted</div>"},
            "note": [{"text": "Lives with daughter at 1 Park Row"}],
            "subject": {"reference": f"Patient/{PERSON}", "display": "Olivia Smith",
                        "identifier": {"value": NHS}},
            "episodeOfCare": [{"reference": "EpisodeOfCare/eoc-9"}],
            "participant": [{"individual": {"reference": "Practitioner/prac-1", "display": "Dr Jones"}}],
            "serviceProvider": {"reference": "Organization/RR8"},
            "location": [{"location": {"reference": "Location/ward-12", "display": "Ward 12"}}],
            "contained": [{"resourceType": "Patient", "id": "p", "name": [{"family": "Smith"}]}],
            "reasonReference": [{"reference": "#p"}, {"reference": "urn:scr:raw:abc"}],
            "presentedForm": [{"contentType": "text/plain", "data": "T2xpdmlhIFNtaXRo"}],
            "comment": "Daughter Jane Smith to collect"}
    out = deidentifier.resource(body, person_id=PERSON, person_nhs=NHS, restricted=False)
    assert {"presentedForm", "comment", "note", "text", "identifier", "contained"}.isdisjoint(out)
    pseudonyms = deidentifier.pseudonymiser
    assert out["id"] == resource_pseudonym(pseudonyms, "Encounter", "enc-1")
    assert out["subject"] == {"reference": f"Patient/{person_pseudonym(pseudonyms, PERSON, NHS)}"}
    episode = resource_pseudonym(pseudonyms, "EpisodeOfCare", "eoc-9")
    assert out["episodeOfCare"] == [{"reference": f"EpisodeOfCare/{episode}"}]
    assert out["participant"][0]["individual"]["reference"] == "Practitioner/prac-1"  # a directory, not a patient
    assert out["reasonReference"] == [{}, {}]  # nothing outside the export resolves these
    assert out["meta"] == {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                                         "code": "PSEUDED", "display": "pseudonymized"}],
                           "lastUpdated": "2026-01-05T09:00:00Z", "tag": [{"system": ODS_ORG_SYSTEM, "code": "RR8"}]}
    text = json.dumps(out)
    for gone in ("V123", "Olivia", "Smith", "Park Row", NHS, PERSON, "enc-1", "eoc-9"):
        assert gone not in text, gone
    # Not restricted: where care happened stays, as a reference; its display is free text and goes.
    assert out["location"][0]["location"] == {"reference": "Location/ward-12"}


OTHER_NHS = "9990000026"


@pytest.mark.parametrize("body", [
    {"resourceType": "Observation", "status": "final",
     "performer": [{"type": "RelatedPerson", "display": "Jane MOTHERNAME (mother)",
                    "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": OTHER_NHS}}]},
    {"resourceType": "CarePlan", "status": "active", "intent": "plan",
     "activity": [{"detail": {"status": "in-progress", "kind": "Task",
                              "description": "Visit at 12 Acacia Avenue LS1 4AP, key safe 1234"},
                   "progress": [{"authorString": "Nurse Bloggs", "text": "Spoke to daughter Mary Smith"}]}]},
    {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
     "medicationCodeableConcept": {"text": "Olivia's own supply"},
     "dosageInstruction": [{"text": "Olivia to take 2 at night", "patientInstruction": "Olivia, ring 07700 900123"}],
     "extension": [{"url": "urn:x:free", "valueString": "Carer: Olivia's neighbour Bob Brown"}]},
    {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CT head"},
     "conclusion": "Olivia Smith (DOB 01/05/1980) of 1 Park Row: no bleed"},
    {"resourceType": "AllergyIntolerance", "type": "allergy",
     "reaction": [{"severity": "mild", "description": "Rash after dose given by husband Tom Smith",
                   "note": [{"text": "tel 0113 555 0101"}]}]},
], ids=["identifier-only-reference", "careplan-activity", "dosage-and-extension", "conclusion", "reaction"])
def test_free_text_and_identifiers_are_removed_at_every_depth(deidentifier, body) -> None:
    out = deidentifier.resource({**body, "id": "r-1"}, person_id=PERSON, person_nhs=NHS, restricted=False)
    text = json.dumps(out)
    for gone in (OTHER_NHS, "MOTHERNAME", "Acacia", "Bloggs", "Mary", "Olivia", "07700", "Bob Brown", "Park Row",
                 "Tom Smith", "0113", "CT head"):
        assert gone not in text, gone
    assert out["status" if "status" in body else "type"] == body.get("status", body.get("type"))  # codes stay


def test_coded_data_dates_and_values_are_kept_at_every_depth(deidentifier) -> None:
    coding = {"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}
    body = {"resourceType": "Observation", "id": "o-1", "status": "final", "code": {"coding": [coding]},
            "effectiveDateTime": "2025-02-01T10:00:00Z", "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
            "component": [{"code": {"coding": [coding]}, "valueQuantity": {"value": 80, "comparator": "<"}}],
            "extension": [{"url": "urn:x:coded", "valueCode": "a1"}, {"url": "urn:x:when", "valueTime": "10:30"}]}
    out = deidentifier.resource(body, person_id=PERSON, person_nhs=NHS, restricted=False)
    assert out["code"] == {"coding": [coding]} and out["component"][0]["code"] == {"coding": [coding]}
    assert out["effectiveDateTime"] == "2025-02-01T10:00:00Z" and out["valueQuantity"] == body["valueQuantity"]
    assert out["extension"] == body["extension"]


def test_a_related_persons_birth_date_leaves_as_the_year_only(deidentifier) -> None:
    body = {"resourceType": "RelatedPerson", "id": "rp-1", "birthDate": "1955-03-14", "gender": "female",
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                          "code": "MTH"}]}], "name": [{"family": "Smith"}]}
    out = deidentifier.resource(body, person_id=PERSON, person_nhs=NHS, restricted=False)
    assert out["birthDate"] == "1955" and "1955-03-14" not in json.dumps(out) and "name" not in out


class _Targets:
    """B (person "p-b", NHS OTHER_NHS) is included; "p-out" is refused; Condition/hiv is left out."""

    def person(self, person_id: str) -> tuple[str, str | None] | None:
        return {"p-b": ("p-b", OTHER_NHS)}.get(person_id)

    def item_excluded(self, resource_type: str, resource_id: str) -> bool:
        return (resource_type, resource_id) == ("Condition", "hiv")


def test_references_to_what_was_left_out_are_dropped_and_others_link_to_the_exported_patient() -> None:
    pseudonyms = Pseudonymiser(SECRET, recipient_of("ics-planning", "QWO"))
    deidentifier = Deidentifier(pseudonyms, DeprivationLookup.from_csv(SYNTHETIC_TABLE), _Targets())
    body = {"resourceType": "Encounter", "id": "e-1", "status": "finished",
            "subject": {"reference": f"Patient/{PERSON}"},
            "diagnosis": [{"condition": {"reference": "Condition/hiv"}}, {"condition": {"reference": "Condition/ok"}}],
            "extension": [{"url": "urn:x:focus", "valueReference": {"reference": "Patient/p-out"}},
                          {"url": "urn:x:focus", "valueReference": {"reference": "Patient/p-b"}}]}
    out = deidentifier.resource(body, person_id=PERSON, person_nhs=NHS, restricted=False)
    assert out["diagnosis"] == [{"condition": {}}, {"condition": {
        "reference": f"Condition/{resource_pseudonym(pseudonyms, 'Condition', 'ok')}"}}]
    assert out["extension"][0]["valueReference"] == {}  # a refused person: not even a pseudonym
    # Another included person: the very id their exported Patient has (keyed by their NHS number).
    b_patient_id = person_pseudonym(pseudonyms, "p-b", OTHER_NHS)
    assert out["extension"][1]["valueReference"] == {"reference": f"Patient/{b_patient_id}"}
    assert resource_pseudonym(pseudonyms, "Condition", "hiv") not in json.dumps(out)


def test_any_valid_nhs_number_left_in_a_line_is_residue() -> None:
    assert nhs_number_residue('{"x":"9990000026"}') and nhs_number_residue('{"x":"999 000 0026"}')
    assert not nhs_number_residue('{"x":"9990000027","y":1234567890123,"z":"2026-01-05T09:00:00Z"}')


def test_for_an_s_flagged_person_location_and_where_they_were_seen_are_removed(deidentifier) -> None:
    body = {"resourceType": "Encounter", "id": "enc-2", "status": "finished",
            "meta": {"tag": [{"system": ODS_ORG_SYSTEM, "code": "RR8"}]},
            "subject": {"reference": f"Patient/{PERSON}"}, "serviceProvider": {"reference": "Organization/RR8"},
            "location": [{"location": {"display": "Ward 12"}}], "hospitalization": {"origin": {"display": "Home"}},
            "participant": [{"individual": {"reference": "Location/clinic-3"}}]}
    out = deidentifier.resource(body, person_id=PERSON, person_nhs=NHS, restricted=True)
    assert {"location", "serviceProvider", "hospitalization"}.isdisjoint(out)
    assert "tag" not in out["meta"] and out["participant"] == [{"individual": {}}]


def test_demographic_fields_are_read_from_uk_core_shapes() -> None:
    patient = {"extension": [{"url": ETHNIC_CATEGORY_EXT, "valueCodeableConcept": {"coding": [
                   {"system": ETHNIC_CATEGORY_ENGLAND, "code": "M"}]}}],
               "address": [{"use": "old", "postalCode": "BD7 1AB"}, {"use": "work", "postalCode": "LS6 2QT"},
                           {"use": "home", "postalCode": "LS1 4AP"}],
               "generalPractitioner": [{"reference": "Organization/x"},
                                       {"identifier": {"system": ODS_ORG_SYSTEM, "value": "B86001"}}]}
    assert (ethnic_code(patient), home_postcode(patient), gp_practice(patient)) == ("M", "LS1 4AP", "B86001")
    assert (ethnic_code({}), home_postcode({"address": [{"use": "old", "postalCode": "X"}]}), gp_practice({})) == (
        None, None, None)
    assert [postcode_district(p) for p in ("LS1 4AP", "ls14ap", "EC1A 1BB", "LS1", None)] == [
        "LS1", "LS1", "EC1A", None, None]


def test_pseudonyms_use_the_nhs_number_when_there_is_one_and_differ_by_recipient() -> None:
    a = Pseudonymiser(SECRET, recipient_of("ics-planning", "QWO"))
    b = Pseudonymiser(SECRET, recipient_of("ics-planning", "X26"))
    assert person_pseudonym(a, "any-person-id", NHS) == person_pseudonym(a, "another-id-after-a-merge", NHS)
    assert person_pseudonym(a, PERSON, None) != person_pseudonym(a, PERSON, NHS)
    assert person_pseudonym(a, PERSON, NHS) != person_pseudonym(b, PERSON, NHS)
    assert resource_pseudonym(a, "Encounter", "x") != resource_pseudonym(a, "Condition", "x")
