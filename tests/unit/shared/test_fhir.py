from shared.fhir import (
    NHS_NUMBER_SYSTEM,
    Issue,
    canonical_system,
    nhs_number_of,
    operation_outcome,
    validate_resource,
)


def patient(**overrides):
    return {"resourceType": "Patient", "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9990000018"}],
            "name": [{"family": "Smith", "given": ["Jo"]}], "gender": "female", "birthDate": "1980-05-01"} | overrides


def test_a_valid_uk_core_patient_has_no_issues() -> None:
    assert validate_resource(patient()) == []


def test_gender_outside_the_required_value_set_is_reported_with_its_path() -> None:
    issues = validate_resource(patient(gender="F"))
    assert [(i.code, i.expression) for i in issues] == [("code-invalid", "Patient.gender")]


def test_nhs_number_check_digit_is_enforced() -> None:
    bad = patient(identifier=[{"system": NHS_NUMBER_SYSTEM, "value": "9990000019"}])
    issues = validate_resource(bad, where="Bundle.entry[3].resource")
    assert len(issues) == 1
    assert issues[0].expression == "Bundle.entry[3].resource.identifier[0].value"
    assert "Modulus 11" in issues[0].diagnostics


def test_legacy_nhs_number_system_is_recognised_and_checked() -> None:
    legacy = patient(identifier=[{"system": "http://fhir.nhs.net/Id/nhs-number", "value": "1234567890"}])
    assert any("NHS number" in i.diagnostics for i in validate_resource(legacy))
    assert canonical_system("http://fhir.nhs.net/Id/nhs-number") == NHS_NUMBER_SYSTEM


def test_structural_errors_come_from_the_r4_model() -> None:
    issues = validate_resource(patient(birthDate="1980-13-45"))
    assert issues and issues[0].expression == "Patient.birthDate"


def test_r4_only_elements_are_accepted_and_r5_only_are_not() -> None:
    # Encounter.class is a Coding in R4 (a CodeableConcept list in R5): the R4B model must be in use.
    encounter = {"resourceType": "Encounter", "status": "finished",
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}}
    assert validate_resource(encounter) == []


def test_status_and_codeable_concept_bindings() -> None:
    assert validate_resource({"resourceType": "Encounter", "status": "done",
                              "class": {"code": "IMP"}})[0].code == "code-invalid"
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                 "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                "code": "ongoing"}]}}
    assert [i.expression for i in validate_resource(condition)] == ["Condition.clinicalStatus"]


def test_unknown_and_non_object_resources() -> None:
    assert validate_resource({"resourceType": "Spaceship"})[0].code == "not-supported"
    assert validate_resource(["not", "a", "resource"])[0].code == "structure"


def test_operation_outcome_shape() -> None:
    outcome = operation_outcome([Issue("bad thing", "Patient.gender", code="code-invalid")])
    assert outcome == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "code-invalid", "diagnostics": "bad thing", "expression": ["Patient.gender"]}]}


def test_nhs_number_of_normalises() -> None:
    assert nhs_number_of(patient(identifier=[{"system": NHS_NUMBER_SYSTEM, "value": "999 000 0018"}])) == "9990000018"
    assert nhs_number_of({"resourceType": "Patient"}) is None
