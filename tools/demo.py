"""Demo data for `make run`, sent through the real feeds exactly as source systems would send it.

One demo person (NHS number 9990000018, the dev citizen token's) arrives from every feed: a GP practice's
FHIR Bundle, the acute trust's HL7 v2 ADT, a community CSV extract and social-care events. The same
penicillin allergy comes from the GP and the hospital (so the unified view shows one entry with both sources),
and an HIV diagnosis is withheld by default. A small synthetic crowd follows, and two citizens record choices:
one objects to sharing, one withholds mental-health information and opts out of research and planning.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import httpx

from shared.fhir import NHS_NUMBER_SYSTEM, NHS_VERIFICATION_ENGLAND, NHS_VERIFICATION_EXT, ODS_ORG_SYSTEM, SNOMED
from shared.settings import DEV_DIR, ServiceSettings
from tools.devkeys import ensure_signing_key, mint
from tools.synth import fhir as synth_fhir
from tools.synth import hl7 as synth_hl7
from tools.synth.population import generate

DEMO_NHS = "9990000018"
GP, ACUTE, COMMUNITY, SOCIAL_CARE = "Y12345", "RR8", "RY6", "A1B2C"
CROWD = 40


class _Feeds:
    """Feed tokens per sending organisation, and the POSTs."""

    def __init__(self, ingest_url: str, consent_url: str) -> None:
        settings = ServiceSettings()
        self._key, _ = ensure_signing_key(DEV_DIR)
        self._iss, self._aud = settings.jwt_issuer, settings.jwt_audience
        self.ingest, self.consent = ingest_url, consent_url
        self.client = httpx.Client(timeout=60)

    def token(self, claims: dict[str, Any]) -> str:
        return mint(self._key, claims, issuer=self._iss, audience=self._aud, lifetime=600)

    def _feed_headers(self, ods: str, system: str) -> dict[str, str]:
        token = self.token({"sub": f"feed-{ods}", "scope": "system/*.write", "ods_code": ods})
        return {"Authorization": f"Bearer {token}", "X-Source-System": system}

    def post(self, path: str, ods: str, system: str, content: bytes | str, content_type: str) -> httpx.Response:
        headers = self._feed_headers(ods, system) | {"Content-Type": content_type}
        response = self.client.post(f"{self.ingest}{path}", content=content, headers=headers)
        if response.status_code >= 300 and not (path == "/ingest/hl7v2" and "MSA|AA" in response.text):
            raise RuntimeError(f"demo data refused by {path}: {response.status_code} {response.text[:500]}")
        if path == "/ingest/hl7v2" and "MSA|AA" not in response.text:
            raise RuntimeError(f"demo ADT not accepted: {response.text[:300]}")
        return response

    def citizen_choice(self, nhs_number: str, choices: dict[str, Any]) -> None:
        token = self.token({"sub": f"nhslogin-{nhs_number}", "nhs_number": nhs_number,
                            "identity_proofing_level": "P9"})
        headers = {"Authorization": f"Bearer {token}"}
        current = self.client.get(f"{self.consent}/consent/me", headers=headers)
        current.raise_for_status()
        document = current.json() | choices
        response = self.client.put(f"{self.consent}/consent/me", json=document,
                                   headers=headers | {"If-Match": current.headers["etag"]})
        response.raise_for_status()


def _demo_patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [
            {"system": NHS_NUMBER_SYSTEM, "value": DEMO_NHS, "extension": [{"url": NHS_VERIFICATION_EXT,
             "valueCodeableConcept": {"coding": [{"system": NHS_VERIFICATION_ENGLAND, "code": "01"}]}}]},
            {"system": "https://fhir.y12345.nhs.uk/Id/local-patient", "value": "EMIS-100001"}],
        "name": [{"use": "official", "family": "Demo", "given": ["Alex"]}],
        "gender": "female", "birthDate": "1961-03-14",
        "address": [{"use": "home", "line": ["12 Park Row"], "city": "Leeds", "postalCode": "LS1 5HD"}],
        "telecom": [{"system": "phone", "value": "0113 496 0000", "use": "home"}],
        "generalPractitioner": [{"identifier": {"system": ODS_ORG_SYSTEM, "value": GP}}],
    }


def _coded(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": code, "display": display}]}


def gp_bundle() -> dict[str, Any]:
    patient = "urn:uuid:6f1c2a4e-0d3b-4c55-9a43-1f2e3d4c5b6a"
    clinical = [
        {"resourceType": "AllergyIntolerance", "patient": {"reference": patient},
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                        "allergyintolerance-clinical", "code": "active"}]},
         "code": _coded("91936005", "Allergy to penicillin"), "recordedDate": "2009-06-01",
         "identifier": [{"system": "urn:emis:y12345", "value": "AL-1"}]},
        {"resourceType": "Condition", "subject": {"reference": patient},
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": "active"}]},
         "code": _coded("38341003", "Hypertensive disorder"), "recordedDate": "2015-02-11",
         "identifier": [{"system": "urn:emis:y12345", "value": "PR-1"}]},
        {"resourceType": "Condition", "subject": {"reference": patient},
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": "active"}]},
         "code": _coded("86406008", "Human immunodeficiency virus infection"), "recordedDate": "2012-08-20",
         "identifier": [{"system": "urn:emis:y12345", "value": "PR-2"}]},
        {"resourceType": "MedicationStatement", "status": "active", "subject": {"reference": patient},
         "medicationCodeableConcept": _coded("318475005", "Amlodipine 5mg tablets"),
         "effectiveDateTime": "2015-02-11", "identifier": [{"system": "urn:emis:y12345", "value": "MS-1"}]},
        {"resourceType": "Observation", "status": "final", "subject": {"reference": patient},
         "code": _coded("271649006", "Systolic blood pressure"), "effectiveDateTime": "2026-10-02",
         "valueQuantity": {"value": 138, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"},
         "identifier": [{"system": "urn:emis:y12345", "value": "OB-1"}]},
        {"resourceType": "Immunization", "status": "completed", "patient": {"reference": patient},
         "vaccineCode": _coded("871751006", "Influenza vaccine"), "occurrenceDateTime": "2026-10-02",
         "identifier": [{"system": "urn:emis:y12345", "value": "IM-1"}]},
    ]
    entries = [{"fullUrl": patient, "resource": _demo_patient(), "request": {"method": "POST", "url": "Patient"}}]
    entries += [{"fullUrl": f"urn:uuid:6f1c2a4e-0d3b-4c55-9a43-00000000000{n}", "resource": r,
                 "request": {"method": "POST", "url": r["resourceType"]}} for n, r in enumerate(clinical)]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _adt(event: str, structure: str, control: str, when: str, extra: list[str]) -> str:
    segments = [
        f"MSH|^~\\&|PAS|{ACUTE}|SCR|ICS|{when}||ADT^{event}^{structure}|{control}|P|2.4|||AL|NE|GBR||EN|ITKv1.0",
        f"EVN|{event}|{when}",
        f"PID|1||{DEMO_NHS}^^^NHS^NH~RR8-445566^^^RR8^MR||Demo^Alex||19610314|2|||12 Park Row^^Leeds^^LS1 5HD"
        "|||||||||||||||||||||NSTS01",
        f"PD1|||PARK ROW SURGERY^^{GP}",
        *extra,
    ]
    return "\r".join(segments) + "\r"


def acute_messages() -> list[str]:
    pv1 = "PV1|1|I|AMU^BAY2^BED4^RR8||||C4567890^Khan^Imran|||300|||||||||V2026-0042|||||||||||||||||||||||||" \
          "20261101083000"
    return [
        _adt("A28", "ADT_A05", "DEMO-1", "20261101080000", []),
        _adt("A01", "ADT_A01", "DEMO-2", "20261101083000",
             [pv1, "AL1|1|DA|91936005^Allergy to penicillin^SCT|MO|Rash",
              "DG1|1|I10|J18.9^Pneumonia, unspecified^I10||20261101083000|A"]),
        _adt("A03", "ADT_A03", "DEMO-3", "20261104160000", [pv1 + "|20261104160000"]),
    ]


def community_csv() -> str:
    return ("contact_id,local_patient_id,nhs_number,nhs_number_status,family_name,given_name,birth_date,sex,"
            "postcode,service,service_code,clinician_role,contact_date,contact_time,outcome\n"
            f"DN-9001,RY6-7788,{DEMO_NHS},01,Demo,Alex,1961-03-14,female,LS1 5HD,District nursing,DN,"
            "District nurse,2026-11-06,10:30,attended\n"
            f"DN-9002,RY6-7788,{DEMO_NHS},01,Demo,Alex,1961-03-14,female,LS1 5HD,District nursing,DN,"
            "District nurse,2026-11-13,10:15,attended\n")


def social_care_events() -> list[dict[str, Any]]:
    person = {"local_id": "MOS-55501", "nhs_number": DEMO_NHS, "nhs_number_verified": True,
              "family_name": "Demo", "given_name": "Alex", "birth_date": "1961-03-14", "sex": "female",
              "postcode": "LS1 5HD"}
    provider = {"ods_code": SOCIAL_CARE, "system": "Mosaic"}
    return [
        {"event_id": "demo-sc-1", "event_type": "assessment.completed", "occurred_at": "2026-11-05T11:00:00Z",
         "provider": provider, "person": person,
         "assessment": {"id": "AS-1", "name": "Care Act assessment", "completed_on": "2026-11-05",
                        "outcome": "Eligible for homecare"}},
        {"event_id": "demo-sc-2", "event_type": "care_package.started", "occurred_at": "2026-11-07T09:00:00Z",
         "provider": provider, "person": person,
         "care_package": {"id": "CP-1", "service": "Homecare", "supplier": "Leeds Care Ltd",
                          "frequency": "2 visits daily", "hours_per_week": 7, "start_date": "2026-11-07"}},
        {"event_id": "demo-sc-3", "event_type": "carer.recorded", "occurred_at": "2026-11-07T09:05:00Z",
         "provider": provider, "person": person,
         "contact": {"id": "CT-1", "relationship": "daughter", "family_name": "Demo", "given_name": "Sam",
                     "phone": "07700 900123", "is_carer": True}},
    ]


def _crowd(feeds: _Feeds) -> int:
    rng = random.Random(2026)
    people = generate(CROWD, seed=2026)
    for person in people:
        feeds.post("/ingest/fhir", person.gp_ods, "EMIS-Web", _json(synth_fhir.gp_bundle(person, rng, 8)),
                   "application/fhir+json")
        for message in synth_hl7.messages(person, rng, 1, datetime(2025, 1, 6, 9)):
            feeds.post("/ingest/hl7v2", ACUTE, "PAS", message, "x-application/hl7-v2+er7")
    return len(people)


def _json(document: Any) -> bytes:
    import json

    return json.dumps(document).encode()


def load(ingest_url: str, consent_url: str) -> str:
    """Send the demo data through the running services; returns a one-line summary."""
    feeds = _Feeds(ingest_url, consent_url)
    feeds.post("/ingest/fhir", GP, "EMIS-Web", _json(gp_bundle()), "application/fhir+json")
    for message in acute_messages():
        feeds.post("/ingest/hl7v2", ACUTE, "PAS", message, "x-application/hl7-v2+er7")
    feeds.post("/ingest/community", COMMUNITY, "SystmOne", community_csv(), "text/csv")
    feeds.post("/ingest/socialcare", SOCIAL_CARE, "Mosaic", _json(social_care_events()), "application/json")
    crowd = _crowd(feeds)
    feeds.citizen_choice("9990000026", {"direct_care": "object"})
    feeds.citizen_choice("9990000034", {"withheld_categories": ["PSY"], "national_data_opt_out": True})
    return (f"demo person NHS {DEMO_NHS} from GP, acute, community and social care; {crowd} synthetic people; "
            "2 citizens' choices")
