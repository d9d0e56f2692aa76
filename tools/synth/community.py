"""Community-trust CSV extracts of contacts, in the exact columns of docs/INGEST.md §3."""

from __future__ import annotations

import csv
import io
import random
from datetime import date, timedelta

from tools.synth.population import Person

COMMUNITY_ODS = "RY6"
COLUMNS = ("contact_id", "local_patient_id", "nhs_number", "nhs_number_status", "family_name", "given_name",
           "birth_date", "sex", "postcode", "service", "service_code", "clinician_role", "contact_date",
           "contact_time", "outcome", "last_updated")
SERVICES = [("District nursing", "DN", "District nurse"), ("Podiatry", "POD", "Podiatrist"),
            ("Community physiotherapy", "PHYS", "Physiotherapist"), ("Speech and language therapy", "SALT",
                                                                      "Speech and language therapist")]


def rows(person: Person, rng: random.Random, count: int, start: date) -> list[dict[str, str]]:
    """`count` contacts of one person with one community service; the last may discharge them."""
    name, code, role = rng.choice(SERVICES)
    day = start
    out = []
    for n in range(count):
        day += timedelta(days=rng.randint(3, 40))
        last = n == count - 1
        outcome = "discharged" if last and rng.random() < 0.5 else rng.choice(["attended"] * 8 +
                                                                                ["did-not-attend", "cancelled"])
        out.append({
            "contact_id": f"C{person.key}-{code}-{n}", "local_patient_id": f"RIO{person.key}",
            "nhs_number": _spaced(person.nhs_number) if person.nhs_number else "",
            "nhs_number_status": ("01" if person.verified else "02") if person.nhs_number else "",
            "family_name": person.family, "given_name": person.given,
            "birth_date": person.birth_date.strftime("%d/%m/%Y") if n % 2 else person.birth_date.isoformat(),
            "sex": person.sex, "postcode": person.postcode, "service": name, "service_code": code,
            "clinician_role": role, "contact_date": day.isoformat(), "contact_time": f"{rng.randint(8, 17):02d}:"
                                                                                    f"{rng.choice(['00', '30'])}",
            "outcome": outcome, "last_updated": f"{day.isoformat()}T18:00:00+00:00"})
    return out


def _spaced(number: str) -> str:
    """NHS numbers as people write them (3 3 4); the feed accepts spaces."""
    return f"{number[:3]} {number[3:6]} {number[6:]}"


def csv_file(contacts: list[dict[str, str]]) -> bytes:
    """One extract: a header row, then the contacts."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(contacts)
    return buffer.getvalue().encode("utf-8")
