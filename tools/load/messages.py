"""Realistic inbound messages for the load run and the fault tests: GP FHIR Bundles, NHS ITK HL7 v2 ADT,
community CSV and social-care events, for synthetic people with valid 999-range NHS numbers.

Every generator is deterministic in its arguments, so a test can count exactly what it sent and what it
expects stored. Names and postcodes are drawn from small fixed lists so a log search can look for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import nhs_number

GP_ODS, ACUTE_ODS, COMMUNITY_ODS, SOCIAL_CARE_ODS = "Y12345", "RR8", "RY6", "A1B2C"
FAMILY = ("Okonkwo", "Whitfield", "Przybylski", "Haworth", "Abernethy", "Sutcliffe", "Mbeki", "Lindqvist")
GIVEN = ("Adaeze", "Gwendolyn", "Tadeusz", "Marjorie", "Lachlan", "Ffion", "Kwabena", "Ingrid")
POSTCODES = ("LS6 2QT", "BD7 1AB", "HX1 5RL", "WF1 3JS", "HG2 8PX", "YO1 7HH", "LS9 7TF", "BD18 3LA")
STREETS = ("Cardigan Road", "Manningham Lane", "Skircoat Green", "Wakefield Road")
CLINICAL = (("195967001", "Asthma"), ("44054006", "Diabetes mellitus type 2"), ("38341003", "Hypertensive disorder"),
            ("13645005", "Chronic obstructive lung disease"))
NHS_VERIFIED = {"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
                "valueCodeableConcept": {"coding": [{
                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland",
                    "code": "01"}]}}


def nhs_numbers(count: int, start: int = 999_300_000) -> list[str]:
    """`count` distinct Mod-11 valid NHS numbers in the 999 range (never issued to real patients)."""
    found: list[str] = []
    prefix = start
    while len(found) < count:
        digit = nhs_number.check_digit(f"{prefix:09d}")
        if digit is not None:
            found.append(f"{prefix:09d}{digit}")
        prefix += 1
    return found


@dataclass(frozen=True)
class Person:
    """A synthetic person; `n` makes every identifier and name derived from it unique and reproducible."""

    n: int
    nhs: str

    @property
    def family(self) -> str:
        return f"{FAMILY[self.n % len(FAMILY)]}{'' if self.n < len(FAMILY) else self.n}"

    @property
    def given(self) -> str:
        return GIVEN[self.n % len(GIVEN)]

    @property
    def postcode(self) -> str:
        return POSTCODES[self.n % len(POSTCODES)]

    @property
    def birth_date(self) -> str:
        return f"{1930 + self.n % 70}-{1 + self.n % 12:02d}-{1 + self.n % 28:02d}"


def people(count: int, start: int = 999_300_000) -> list[Person]:
    return [Person(i, number) for i, number in enumerate(nhs_numbers(count, start))]


def gp_bundle(person: Person, conditions: int = 2, *, kind: str = "transaction") -> dict[str, Any]:
    """A GP system's Bundle: the Patient (verified NHS number) and `conditions` Conditions about them."""
    patient = {"resourceType": "Patient",
               "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": person.nhs,
                               "extension": [NHS_VERIFIED]},
                              {"system": "https://fhir.y12345.nhs.uk/Id/local-patient", "value": f"EMIS-{person.n}"}],
               "name": [{"use": "official", "family": person.family, "given": [person.given]}],
               "gender": "female" if person.n % 2 else "male", "birthDate": person.birth_date,
               "address": [{"use": "home", "line": [f"{person.n % 90 + 1} {STREETS[person.n % len(STREETS)]}"],
                            "city": "Leeds", "postalCode": person.postcode}]}
    entries: list[dict[str, Any]] = [{"fullUrl": f"urn:uuid:patient-{person.n}", "resource": patient,
                                      "request": {"method": "POST", "url": "Patient"}}]
    for i in range(conditions):
        code, display = CLINICAL[(person.n + i) % len(CLINICAL)]
        condition = {"resourceType": "Condition",
                     "identifier": [{"system": "https://fhir.y12345.nhs.uk/Id/problem", "value": f"P-{person.n}-{i}"}],
                     "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                              "condition-clinical", "code": "active"}]},
                     "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}],
                              "text": display},
                     "subject": {"reference": f"urn:uuid:patient-{person.n}"}, "recordedDate": "2024-04-02"}
        entries.append({"fullUrl": f"urn:uuid:condition-{person.n}-{i}", "resource": condition,
                        "request": {"method": "POST", "url": "Condition"}})
    return {"resourceType": "Bundle", "type": kind, "meta": {"lastUpdated": "2024-04-02T10:00:00+00:00"},
            "entry": entries}


def _hl7_time(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def adt(person: Person, event: str, *, visit: str, control: str, at: datetime, ward: str = "WARD01^BAY1^BED1",
        discharged: datetime | None = None, admitted: datetime | None = None) -> str:
    """An ITK v2.4 ADT message (A01 admit, A02 transfer, A03 discharge, A08 update) for one visit."""
    structure = {"A01": "ADT_A01", "A02": "ADT_A02", "A03": "ADT_A03", "A08": "ADT_A01"}[event]
    ts = _hl7_time(at)
    pid = ["PID", "1", "", f"{person.nhs}^^^NHS^NH~MRN{person.n:07d}^^^{ACUTE_ODS}^MR", "",
           f"{person.family.upper()}^{person.given}^^^^^L", "", person.birth_date.replace("-", ""),
           "F" if person.n % 2 else "M", "", "",
           f"{person.n % 90 + 1} {STREETS[person.n % len(STREETS)]}^^Leeds^^{person.postcode}^GBR^H", "", "", "",
           "", "", "", "", "", "", "", "A", "", "", "", "", "", "", "", "", "", "NSTS01"]
    pv1 = ["PV1", "1", "I", f"{ward}^{ACUTE_ODS}", "", "", "", "C1234567^SMITH^JOHN^^^Mr", "", "", "300", "", "",
           "", "19", "", "", "", "", visit] + [""] * 16 + ["", "", "", "", "", "", "", "",
                                                          _hl7_time(admitted or at),
                                                          _hl7_time(discharged) if discharged else ""]
    lines = [f"MSH|^~\\&|PAS|{ACUTE_ODS}|SCR|ICS|{ts}||ADT^{event}^{structure}|{control}|P|2.4|||AL|NE|GBR||EN|"
             "ITKv1.0", f"EVN|{event}|{ts}|||C1234567^SMITH^JOHN|{ts}", "|".join(pid),
             f"PD1|||LEEDS MEDICAL PRACTICE^^{GP_ODS}|G9999998^JONES^ALICE^^^Dr", "|".join(pv1)]
    return "\r".join(lines) + "\r"


def admission(person: Person, visit: str, start: datetime) -> list[str]:
    """Admit, transfer, discharge: the three messages of one stay, in the order the PAS sent them."""
    return [adt(person, "A01", visit=visit, control=f"{visit}-1", at=start),
            adt(person, "A02", visit=visit, control=f"{visit}-2", at=start + timedelta(hours=5),
                ward="WARD07^BAY3^BED2", admitted=start),
            adt(person, "A03", visit=visit, control=f"{visit}-3", at=start + timedelta(days=2),
                ward="WARD07^BAY3^BED2", admitted=start, discharged=start + timedelta(days=2))]


def socialcare_event(person: Person, i: int, *, occurred: datetime | None = None) -> dict[str, Any]:
    """A `contact.recorded` event: one RelatedPerson per (person, i)."""
    when = (occurred or datetime(2024, 5, 1, 10, tzinfo=UTC)) + timedelta(minutes=i)
    return {"event_id": f"evt-{person.n}-{i}", "event_type": "contact.recorded", "occurred_at": when.isoformat(),
            "provider": {"ods_code": SOCIAL_CARE_ODS, "system": "Mosaic"},
            "person": {"local_id": f"MOS-{person.n}", "nhs_number": person.nhs, "nhs_number_verified": True,
                       "family_name": person.family, "given_name": person.given, "birth_date": person.birth_date,
                       "sex": "female" if person.n % 2 else "male", "postcode": person.postcode},
            "contact": {"id": f"CON-{person.n}-{i}", "relationship": "neighbour", "family_name": "Carter",
                        "given_name": "Sam", "phone": "07700 900461", "is_carer": False}}


CSV_HEADER = ("contact_id,local_patient_id,nhs_number,nhs_number_status,family_name,given_name,birth_date,sex,"
              "postcode,service,service_code,clinician_role,contact_date,contact_time,outcome")


def community_csv(rows: list[tuple[Person, int]]) -> str:
    """A community extract: one contact row per (person, contact number)."""
    lines = [CSV_HEADER]
    for person, i in rows:
        lines.append(f"RY6-C-{person.n}-{i},RY6-P-{person.n},{person.nhs},01,{person.family},{person.given},"
                     f"{person.birth_date},{'female' if person.n % 2 else 'male'},{person.postcode},District nursing,"
                     f"DN,District nurse,2024-03-{1 + i % 28:02d},09:30,attended")
    return "\n".join(lines) + "\n"
