"""GP-system FHIR: one UK Core transaction Bundle per person (Patient plus their primary-care record)."""

from __future__ import annotations

import random
import uuid
from datetime import date, timedelta
from typing import Any

from shared.fhir import (
    ETHNIC_CATEGORY_ENGLAND,
    ETHNIC_CATEGORY_EXT,
    NHS_NUMBER_SYSTEM,
    NHS_VERIFICATION_ENGLAND,
    NHS_VERIFICATION_EXT,
    ODS_ORG_SYSTEM,
    SNOMED,
)
from tools.synth.population import Person

CONDITIONS = [("38341003", "Hypertensive disorder"), ("44054006", "Diabetes mellitus type 2"),
              ("195967001", "Asthma"), ("13645005", "Chronic obstructive lung disease"),
              ("35489007", "Depressive disorder"), ("49436004", "Atrial fibrillation")]
SENSITIVE_CONDITIONS = [("86406008", "Human immunodeficiency virus infection"), ("105629000", "Chlamydial infection"),
                        ("93461009", "Gender dysphoria"), ("8619003", "Infertile")]
MEDICATIONS = [("318475005", "Amlodipine 5mg tablets"), ("325278005", "Metformin 500mg tablets"),
               ("320176004", "Salbutamol 100micrograms/dose inhaler"), ("318420003", "Ramipril 5mg capsules")]
ALLERGIES = [("91936005", "Allergy to penicillin"), ("300916003", "Latex allergy"), ("91935009", "Allergy to peanuts")]
VACCINES = [("1119349007", "COVID-19 mRNA vaccine"), ("871751006", "Influenza vaccine")]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def patient(person: Person) -> dict[str, Any]:
    identifiers: list[dict[str, Any]] = [{"system": f"https://fhir.{person.gp_ods.lower()}.nhs.uk/Id/local-patient",
                                          "value": person.key}]
    if person.nhs_number:
        status = "01" if person.verified else "02"
        identifiers.insert(0, {"system": NHS_NUMBER_SYSTEM, "value": person.nhs_number, "extension": [
            {"url": NHS_VERIFICATION_EXT, "valueCodeableConcept": {"coding": [
                {"system": NHS_VERIFICATION_ENGLAND, "code": status}]}}]})
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
        "identifier": identifiers,
        "name": [{"use": "official", "family": person.family, "given": [person.given]}],
        "gender": person.sex,
        "birthDate": person.birth_date.isoformat(),
        "address": [{"use": "home", "line": ["1 Example Street"], "city": "Leeds", "postalCode": person.postcode}],
        "generalPractitioner": [{"identifier": {"system": ODS_ORG_SYSTEM, "value": person.gp_ods}}],
        "extension": [{"url": ETHNIC_CATEGORY_EXT, "valueCodeableConcept": {"coding": [
            {"system": ETHNIC_CATEGORY_ENGLAND, "code": person.ethnic}]}}],
    }
    if person.s_flag:
        resource["meta"]["security"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                         "code": "R"}]
    return resource


def _coded(code: tuple[str, str]) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": code[0], "display": code[1]}]}


def _when(rng: random.Random, since: date) -> str:
    day = since + timedelta(days=rng.randrange(0, max(1, (date(2026, 11, 1) - since).days)))
    return day.isoformat()


def clinical_entries(person: Person, patient_ref: str, rng: random.Random, count: int) -> list[dict[str, Any]]:
    """`count` primary-care resources for one person, referencing the Patient by `patient_ref`."""
    since = max(person.birth_date, date(2000, 1, 1))
    resources: list[dict[str, Any]] = []
    for n in range(count):
        kind = n % 6
        if kind == 0:
            code = rng.choice(SENSITIVE_CONDITIONS) if rng.random() < 0.03 else rng.choice(CONDITIONS)
            resources.append({"resourceType": "Condition", "subject": {"reference": patient_ref},
                              "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                             "condition-clinical", "code": "active"}]},
                              "code": _coded(code), "recordedDate": _when(rng, since),
                              "identifier": [{"system": "urn:scr:synth:gp", "value": f"{person.key}-c{n}"}]})
        elif kind in (1, 2):
            resources.append({"resourceType": "Observation", "status": "final", "subject": {"reference": patient_ref},
                              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                        "observation-category", "code": "vital-signs"}]}],
                              "code": _coded(("271649006", "Systolic blood pressure")),
                              "effectiveDateTime": _when(rng, since),
                              "valueQuantity": {"value": rng.randint(100, 170), "unit": "mm[Hg]",
                                                "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
                              "identifier": [{"system": "urn:scr:synth:gp", "value": f"{person.key}-o{n}"}]})
        elif kind == 3:
            resources.append({"resourceType": "MedicationStatement", "status": "active",
                              "subject": {"reference": patient_ref},
                              "medicationCodeableConcept": _coded(rng.choice(MEDICATIONS)),
                              "effectiveDateTime": _when(rng, since),
                              "identifier": [{"system": "urn:scr:synth:gp", "value": f"{person.key}-m{n}"}]})
        elif kind == 4:
            resources.append({"resourceType": "AllergyIntolerance", "patient": {"reference": patient_ref},
                              "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                             "allergyintolerance-clinical", "code": "active"}]},
                              "code": _coded(rng.choice(ALLERGIES)), "recordedDate": _when(rng, since),
                              "identifier": [{"system": "urn:scr:synth:gp", "value": f"{person.key}-a{n}"}]})
        else:
            resources.append({"resourceType": "Immunization", "status": "completed",
                              "patient": {"reference": patient_ref}, "vaccineCode": _coded(rng.choice(VACCINES)),
                              "occurrenceDateTime": _when(rng, since),
                              "identifier": [{"system": "urn:scr:synth:gp", "value": f"{person.key}-i{n}"}]})
    return resources


def gp_bundle(person: Person, rng: random.Random, clinical_count: int) -> dict[str, Any]:
    """A transaction Bundle as a GP system would send it: Patient first, then the record, linked by urn:uuid."""
    patient_url = f"urn:uuid:{_uuid(rng)}"
    entries = [{"fullUrl": patient_url, "resource": patient(person),
                "request": {"method": "POST", "url": "Patient"}}]
    for resource in clinical_entries(person, patient_url, rng, clinical_count):
        entries.append({"fullUrl": f"urn:uuid:{_uuid(rng)}", "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
