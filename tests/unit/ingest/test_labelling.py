"""Sensitivity labels from the configurable code lists, from what the source marked, and the S-flag."""

import json

import pytest

from services.ingest.labelling import labels_for, load_code_lists
from services.ingest.settings import IngestSettings
from tests.fixtures.ingest import messages

LISTS = load_code_lists(IngestSettings().label_code_lists)
SNOMED, ICD10, READ = "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10", "http://read.info/readv2"


@pytest.mark.parametrize("system, code, label", [
    (SNOMED, "86406008", "HIV"), (ICD10, "B20.1", "HIV"), (READ, "A788.", "HIV"),
    (SNOMED, "105629000", "STD"), (ICD10, "A56.0", "STD"),
    (SNOMED, "52637005", "SEX"), (ICD10, "O04.9", "SEX"), (ICD10, "Z31.2", "SEX"),
    (SNOMED, "190905008", "GDIS"), (SNOMED, "58756001", "GDIS"), (ICD10, "Q90.9", "GDIS"), (ICD10, "E70.0", "GDIS"),
    (READ, "C370.", "GDIS"),
    (SNOMED, "93461009", "TBOO"), (ICD10, "F64.0", "TBOO"),
    (SNOMED, "35489007", "PSY"), (ICD10, "F32.9", "PSY"), (READ, "Eu32.", "PSY"),
    (SNOMED, "7200002", "ETH"), (ICD10, "F10.2", "ETH"), (READ, "E23..", "ETH"),
    (ICD10, "T74.1", "SDV"), ("urn:scr:socialcare:flag", "safeguarding-concern", "SDV"),
])
def test_each_category_is_found_from_its_code_lists(system: str, code: str, label: str) -> None:
    resource = messages.condition(code, "coded", ident="x", system=system)
    assert label in labels_for(resource, LISTS, channel="fhir")


def test_ordinary_clinical_codes_carry_no_label() -> None:
    assert labels_for(messages.condition("44054006", "Diabetes", ident="x"), LISTS, channel="fhir") == []
    # A prefix covers what it names only: E70.0 (phenylketonuria) is genetic, E70.1 is not listed.
    assert labels_for(messages.condition("E70.1", "coded", ident="x", system=ICD10), LISTS, channel="fhir") == []
    assert labels_for(messages.condition("J18.9", "Pneumonia", ident="x", system=ICD10), LISTS, channel="hl7v2") == []


def test_codes_anywhere_in_the_resource_count() -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "Result"},
                   "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "165816005"}]}}
    assert labels_for(observation, LISTS, channel="fhir") == ["HIV"]


def test_what_the_source_marks_confidential_is_labelled_v() -> None:
    sealed = messages.condition("44054006", "Diabetes", ident="x", security=[
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}])
    restricted = messages.condition("44054006", "Diabetes", ident="x", security=[
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}])
    plain = messages.condition("44054006", "Diabetes", ident="x")
    assert labels_for(sealed, LISTS, channel="fhir") == ["V"]
    assert labels_for(restricted, LISTS, channel="fhir") == ["V"]
    assert labels_for(plain, LISTS, channel="hl7v2", confidential=True) == ["V"]


def test_a_restricted_patient_carries_r_the_s_flag() -> None:
    flagged = messages.patient(security=[{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                          "code": "R"}])
    assert labels_for(flagged, LISTS, channel="fhir") == ["R"]
    assert labels_for(messages.patient(), LISTS, channel="hl7v2", restricted=True) == ["R"]
    assert labels_for(messages.patient(), LISTS, channel="hl7v2") == []


def test_everything_from_social_care_is_social_care_information() -> None:
    assert labels_for(messages.patient(), LISTS, channel="socialcare") == ["SOC"]


def test_sender_category_labels_are_kept() -> None:
    resource = messages.condition("44054006", "Diabetes", ident="x", security=[
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}])
    assert labels_for(resource, LISTS, channel="fhir") == ["PSY"]


def test_an_operator_can_supply_their_own_code_lists(tmp_path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"GDIS": {"snomed": ["205615000"]}}))
    lists = load_code_lists(str(path))
    assert labels_for(messages.condition("205615000", "Cystic fibrosis", ident="x"), lists, channel="fhir") == ["GDIS"]
    assert labels_for(messages.condition("86406008", "HIV", ident="x"), lists, channel="fhir") == []


def test_an_unknown_label_in_the_code_lists_is_a_configuration_error(tmp_path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"SECRET": {"snomed": ["1"]}}))
    with pytest.raises(ValueError, match="not a sensitivity category"):
        load_code_lists(str(path))
