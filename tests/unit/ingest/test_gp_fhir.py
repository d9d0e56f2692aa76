"""The GP/community FHIR adapter: batch, transaction and collection Bundles, checks the models do not make,
and references resolved within the Bundle."""

import copy

import pytest

from services.ingest.feeds import gp_fhir
from services.ingest.feeds.model import AdapterError
from tests.fixtures.ingest import messages
from tests.support import data


def test_a_gp_record_bundle_maps_every_entry_with_references_made_local() -> None:
    bundle = messages.load_json("gp_record_bundle.json")
    mapped = gp_fhir.map_bundle(bundle, max_entries=100)
    assert not mapped.rejected and mapped.atomic
    assert len(mapped.items) == len(bundle["entry"])
    types = {item.resource_type for item in mapped.items}
    assert {"Patient", "Encounter", "Condition", "Observation", "AllergyIntolerance", "MedicationStatement",
            "MedicationRequest", "Immunization", "Procedure", "CarePlan", "Flag", "DocumentReference",
            "EpisodeOfCare", "Consent", "Organization"} == types
    observation = next(i for i in mapped.items if i.resource_type == "Observation")
    assert observation.patient_ref == "urn:scr:entry:0"
    assert observation.resource["subject"] == {"reference": "urn:scr:entry:0"}
    assert observation.resource["encounter"] == {"reference": "urn:scr:entry:2"}
    assert observation.source_key == "https://fhir.y12345.nhs.uk/Id/observation|OBS-77"
    assert observation.source_updated.isoformat() == "2024-02-12T10:30:00+00:00"  # Bundle.meta.lastUpdated
    patient = mapped.patients[0]
    assert patient.source_key == "https://fhir.y12345.nhs.uk/Id/local-patient|EMIS-10001"
    assert "id" not in patient.resource and patient.resource["meta"] == {
        "profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]}


def test_a_transaction_with_one_bad_entry_is_refused_whole_naming_each_fault() -> None:
    bundle = messages.bundle([messages.patient(nhs=data.INVALID_NHS_NUMBER),
                              messages.condition("44054006", "Diabetes", ident="P1"),
                              {"resourceType": "Observation", "status": "done", "code": {"text": "BP"},
                               "subject": {"reference": "urn:uuid:patient-1"}}])
    with pytest.raises(AdapterError) as caught:
        gp_fhir.map_bundle(bundle, max_entries=100)
    where = [i.expression for i in caught.value.issues]
    assert "Bundle.entry[0].resource.identifier[0].value" in where
    assert "Bundle.entry[2].resource.status" in where


def test_a_batch_keeps_its_good_entries_and_lists_the_bad() -> None:
    good_patient = messages.patient()
    bundle = messages.bundle([good_patient, messages.condition("44054006", "Diabetes", ident="P1"),
                              {"resourceType": "Condition", "subject": {"reference": "urn:uuid:patient-1"},
                               "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                              "condition-clinical", "code": "sleeping"}]}}],
                             kind="batch")
    mapped = gp_fhir.map_bundle(bundle, max_entries=100)
    assert [i.entry for i in mapped.items] == [0, 1]
    assert [r.index for r in mapped.rejected] == [2]
    assert mapped.rejected[0].issues[0].expression == "Bundle.entry[2].resource.clinicalStatus"


def test_entries_of_a_refused_patient_are_refused_with_it_in_a_batch() -> None:
    bundle = messages.bundle([messages.patient(gender="man"), messages.condition("1", "x", ident="P1")],
                             kind="batch")
    mapped = gp_fhir.map_bundle(bundle, max_entries=100)
    assert not mapped.items and sorted(r.index for r in mapped.rejected) == [0, 1]


def test_in_a_batch_entries_referring_to_a_refused_entry_are_refused_with_it_and_the_rest_kept() -> None:
    encounter = {"resourceType": "Encounter", "status": "done", "subject": {"reference": "urn:uuid:patient-1"},
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    condition = messages.condition("1", "x", ident="P1") | {"encounter": {"reference": "urn:uuid:encounter-2"}}
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "urn:uuid:patient-1"},
                   "hasMember": [{"reference": "urn:uuid:condition-3"}]}
    bundle = messages.bundle([messages.patient(), encounter, condition, observation,
                              messages.condition("2", "y", ident="P2")], kind="batch")
    bundle["entry"][1]["fullUrl"], bundle["entry"][2]["fullUrl"] = "urn:uuid:encounter-2", "urn:uuid:condition-3"
    mapped = gp_fhir.map_bundle(bundle, max_entries=100)
    assert [i.entry for i in mapped.items] == [0, 4]
    assert [r.index for r in mapped.rejected] == [1, 2, 3]
    assert mapped.rejected[0].issues[0].expression == "Bundle.entry[1].resource.status"
    assert "refers to Bundle.entry[1], which was refused" in mapped.rejected[1].issues[0].diagnostics
    assert "refers to Bundle.entry[2], which was refused" in mapped.rejected[2].issues[0].diagnostics


@pytest.mark.parametrize("kind", ["batch", "transaction"])
@pytest.mark.parametrize("reference", ["urn:scr:entry:99", "urn:scr:entry:x", "urn:scr:hl7:patient",
                                       "urn:scr:entry:0"])
def test_references_in_the_platforms_own_namespace_are_refused(kind: str, reference: str) -> None:
    condition = messages.condition("1", "x", ident="P1") | {"asserter": {"reference": reference}}
    bundle = messages.bundle([messages.patient(), condition], kind=kind)
    if kind == "transaction":
        with pytest.raises(AdapterError) as caught:
            gp_fhir.map_bundle(bundle, max_entries=100)
        issues = caught.value.issues
    else:
        mapped = gp_fhir.map_bundle(bundle, max_entries=100)
        assert [i.entry for i in mapped.items] == [0]
        issues = mapped.rejected[0].issues
    assert reference in issues[0].diagnostics and "reserved" in issues[0].diagnostics


def test_nhs_numbers_are_stored_as_ten_digits_under_the_current_system() -> None:
    patient = messages.patient()
    patient["identifier"] = [{"system": "http://fhir.nhs.net/Id/nhs-number", "value": "999 000 0026"}]
    mapped = gp_fhir.map_bundle(messages.bundle([patient]), max_entries=100)
    assert mapped.items[0].resource["identifier"] == [{"system": "https://fhir.nhs.uk/Id/nhs-number",
                                                        "value": "9990000026"}]


def test_a_collection_bundle_is_accepted_as_a_batch() -> None:
    bundle = messages.bundle([messages.patient(), messages.condition("44054006", "Diabetes", ident="P1")],
                             kind="collection")
    mapped = gp_fhir.map_bundle(bundle, max_entries=100)
    assert len(mapped.items) == 2 and not mapped.atomic


@pytest.mark.parametrize("reference, expected, where", [
    ("urn:uuid:nowhere", "resolves to no entry of the Bundle", "Bundle.entry[1].resource"),
    ("Observation/abc", "resolves neither", "Bundle.entry[1].resource.subject.reference"),
])
def test_a_patient_reference_must_resolve(reference: str, expected: str, where: str) -> None:
    bundle = messages.bundle([messages.patient(), messages.condition("1", "x", ident="P1", patient_ref=reference)])
    with pytest.raises(AdapterError) as caught:
        gp_fhir.map_bundle(bundle, max_entries=100)
    assert expected in caught.value.issues[0].diagnostics
    assert caught.value.issues[0].expression == where


def test_any_uuid_reference_must_name_an_entry_of_the_bundle() -> None:
    condition = messages.condition("1", "x", ident="P1") | {"encounter": {"reference": "urn:uuid:lost-encounter"}}
    with pytest.raises(AdapterError) as caught:
        gp_fhir.map_bundle(messages.bundle([messages.patient(), condition]), max_entries=100)
    assert "urn:uuid:lost-encounter" in caught.value.issues[0].diagnostics


def test_a_reference_to_a_stored_patient_is_left_for_the_pipeline_to_check() -> None:
    bundle = messages.bundle([messages.condition("1", "x", ident="P1", patient_ref="Patient/0b8e2c1a-1111")])
    mapped = gp_fhir.map_bundle(bundle, max_entries=100)
    assert mapped.items[0].patient_ref == "Patient/0b8e2c1a-1111"


def test_a_clinical_resource_pointing_at_a_non_patient_entry_is_refused() -> None:
    bundle = messages.bundle([messages.patient(), messages.condition("1", "x", ident="P1",
                                                                     patient_ref="urn:uuid:entry-2"),
                              {"resourceType": "Organization", "name": "Practice"}])
    with pytest.raises(AdapterError) as caught:
        gp_fhir.map_bundle(bundle, max_entries=100)
    assert "not a Patient" in caught.value.issues[0].diagnostics


@pytest.mark.parametrize("body, expression", [
    ({"resourceType": "Patient"}, "Bundle.resourceType"),
    ({"resourceType": "Bundle", "type": "searchset", "entry": [{}]}, "Bundle.type"),
    ({"resourceType": "Bundle", "type": "batch", "entry": []}, "Bundle.entry"),
    ([1, 2], "Bundle.resourceType"),
])
def test_bundles_that_are_not_usable_are_refused_whole(body, expression: str) -> None:
    with pytest.raises(AdapterError) as caught:
        gp_fhir.map_bundle(body, max_entries=100)
    assert caught.value.issues[0].expression == expression


def test_too_many_entries_are_refused() -> None:
    bundle = messages.bundle([messages.patient()] * 3)
    with pytest.raises(AdapterError) as caught:
        gp_fhir.map_bundle(bundle, max_entries=2)
    assert caught.value.issues[0].code == "too-costly"


def test_unsupported_types_and_methods_are_named() -> None:
    bundle = messages.bundle([messages.patient(), {"resourceType": "Basic", "code": {"text": "x"}}], kind="batch")
    deleted = copy.deepcopy(bundle)
    deleted["entry"][0]["request"]["method"] = "DELETE"
    mapped = gp_fhir.map_bundle(deleted, max_entries=10)
    issues = {r.index: r.issues[0] for r in mapped.rejected}
    assert issues[0].expression == "Bundle.entry[0].request.method"
    assert issues[1].code == "not-supported"


def test_sender_security_labels_are_kept_for_labelling() -> None:
    confidential = [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}]
    bundle = messages.bundle([messages.patient(), messages.condition("1", "x", ident="P1", security=confidential)])
    item = gp_fhir.map_bundle(bundle, max_entries=10).items[1]
    assert item.resource["meta"]["security"] == confidential
