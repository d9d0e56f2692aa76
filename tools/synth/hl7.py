"""Acute-trust HL7 v2.4 ADT in NHS ITK style: a registration, then admissions and discharges with allergies
and diagnoses, as a PAS would send them through a trust integration engine."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from tools.synth.population import Person

TRUST_ODS = "RR8"
ICD10 = [("I10", "Essential hypertension"), ("J45.9", "Asthma, unspecified"), ("E11.9", "Type 2 diabetes"),
         ("N39.0", "Urinary tract infection"), ("S72.0", "Fracture of neck of femur")]
ALLERGENS = [("PEN", "Penicillin"), ("LATEX", "Latex"), ("NUT", "Peanut")]
WARDS = ["WARD01", "WARD02", "AMU", "CCU", "ED"]


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def _pid(person: Person, sex_style: str) -> str:
    identifiers = [f"{person.key}^^^{TRUST_ODS}^MR"]
    if person.nhs_number:
        identifiers.insert(0, f"{person.nhs_number}^^^NHS^NH")
    sex = {"male": "M", "female": "F"}[person.sex] if sex_style == "letters" else \
        {"male": "1", "female": "2"}[person.sex]
    trace = "NSTS01" if person.nhs_number and person.verified else "NSTS02" if person.nhs_number else ""
    fields = [""] * 33
    fields[0], fields[1] = "PID", "1"
    fields[3] = "~".join(identifiers)
    fields[5] = f"{person.family}^{person.given}"
    fields[7] = person.birth_date.strftime("%Y%m%d")
    fields[8] = sex
    fields[11] = f"1 Example Street^^Leeds^^{person.postcode}"
    fields[22] = person.ethnic
    fields[32] = trace
    return "|".join(fields)


def _msh(event: str, structure: str, control_id: str, moment: datetime) -> str:
    return (f"MSH|^~\\&|PAS|{TRUST_ODS}|SCR|ICS|{_ts(moment)}||ADT^{event}^{structure}|{control_id}|P|2.4"
            f"|||AL|NE|GBR||EN|ITKv1.0")


def _pd1(person: Person) -> str:
    return f"PD1|||PRACTICE^^{person.gp_ods}|G9999999^GP^A^^^Dr"


def messages(person: Person, rng: random.Random, admissions: int, start: datetime,
             confidential_rate: float = 0.0) -> list[str]:
    """A28 registration, then `admissions` A01/A03 pairs, in the order a PAS sends them (CR-separated); a
    `confidential_rate` share of diagnoses carry DG1-18 = Y (the source marks them confidential)."""
    style = rng.choice(["letters", "digits"])
    out = [_message(person, "A28", "ADT_A05", start, style, f"{person.key}-0", [])]
    moment = start
    for n in range(admissions):
        moment += timedelta(days=rng.randint(20, 200), hours=rng.randint(0, 23))
        visit = f"V{person.key}{n:03d}"
        pv1 = f"PV1|1|I|{rng.choice(WARDS)}^^^{TRUST_ODS}||||C1234567^Consultant^A|||300|||||||||{visit}" \
              f"|||||||||||||||||||||||||{_ts(moment)}"
        allergen = rng.choice(ALLERGENS)
        diagnosis = rng.choice(ICD10)
        extra = [pv1, f"AL1|1|DA|{allergen[0]}^{allergen[1]}^L|MO|Rash",
                 f"DG1|1|I10|{diagnosis[0]}^{diagnosis[1]}^I10||{_ts(moment)}|A"
                 + ("|" * 12 + "Y" if confidential_rate and rng.random() < confidential_rate else "")]
        out.append(_message(person, "A01", "ADT_A01", moment, style, f"{person.key}-{n}a", extra))
        discharge = moment + timedelta(days=rng.randint(1, 10))
        pv1_end = pv1 + f"|{_ts(discharge)}"
        out.append(_message(person, "A03", "ADT_A03", discharge, style, f"{person.key}-{n}d",
                            [pv1_end]))
        moment = discharge
    return out


def _message(person: Person, event: str, structure: str, moment: datetime, style: str, control: str,
             segments: list[str]) -> str:
    head = [_msh(event, structure, control, moment), f"EVN|{event}|{_ts(moment)}", _pid(person, style),
            _pd1(person)]
    return "\r".join(head + segments) + "\r"
