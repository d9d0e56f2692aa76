"""Social-care provider events for topic `socialcare.events`, valid against services/ingest/socialcare.schema.json
(docs/INGEST.md §4): assessments, care packages that start, change and end, safeguarding concerns, carers and
hospital-discharge support requests."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from typing import Any

from tools.synth.population import Person

PROVIDER = {"ods_code": "A1B2C", "system": "Mosaic"}
CARE_SERVICES = ["Homecare", "Reablement", "Residential care", "Day opportunities"]
SUPPLIERS = ["Bradford Care Ltd", "Leeds Homecare CIC", "Aire Valley Support"]


def person_ref(person: Person) -> dict[str, Any]:
    ref: dict[str, Any] = {"local_id": f"MOS-{person.key}", "family_name": person.family,
                           "given_name": person.given, "birth_date": person.birth_date.isoformat(),
                           "sex": person.sex, "postcode": person.postcode, "restricted": person.s_flag}
    if person.nhs_number:
        ref |= {"nhs_number": person.nhs_number, "nhs_number_verified": person.verified}
    return ref


def key_of(person: Person) -> str:
    """The Kafka key: the NHS number when known, else the provider's person key (one person stays ordered)."""
    return person.nhs_number or f"MOS-{person.key}"


def events(person: Person, rng: random.Random, count: int, start: date) -> list[dict[str, Any]]:
    """`count` events about one person in the order the provider raises them."""
    day = start
    package = f"CP-{person.key}"
    out: list[dict[str, Any]] = []
    for n in range(count):
        day += timedelta(days=rng.randint(2, 60))
        body = _care_package(package, day, n, count, rng) if n < 3 else _other(person, rng, day, n)
        out.append({"event_id": f"evt-{person.key}-{n}", "occurred_at": _at(day, rng), "provider": PROVIDER,
                    "person": person_ref(person), "confidential": rng.random() < 0.03} | body)
    return out


def _at(day: date, rng: random.Random) -> str:
    moment = datetime.combine(day, time(rng.randint(8, 17), rng.choice([0, 15, 30, 45])))
    return moment.isoformat() + "+00:00"


def _care_package(package: str, day: date, n: int, count: int, rng: random.Random) -> dict[str, Any]:
    kind = ["care_package.started", "care_package.changed", "care_package.ended"][n]
    if kind == "care_package.ended" and count > 3:
        kind = "care_package.changed"  # long records keep the package open
    body: dict[str, Any] = {"id": package, "service": rng.choice(CARE_SERVICES),
                            "supplier": rng.choice(SUPPLIERS), "frequency": f"{rng.randint(1, 4)} visits daily",
                            "hours_per_week": rng.randint(2, 28), "start_date": (day - timedelta(days=n)).isoformat()}
    if kind == "care_package.ended":
        body |= {"end_date": day.isoformat(), "end_reason": "needs met"}
    return {"event_type": kind, "care_package": body}


def _other(person: Person, rng: random.Random, day: date, n: int) -> dict[str, Any]:
    choice = n % 4
    if choice == 0:
        return {"event_type": "assessment.completed", "assessment": {
            "id": f"AS-{person.key}-{n}", "name": "Care Act needs assessment", "completed_on": day.isoformat(),
            "outcome": "eligible needs identified"}}
    if choice == 1:
        return {"event_type": "safeguarding.concern_raised", "concern": {
            "id": f"SG-{person.key}-{n}", "category": rng.choice(["neglect", "financial abuse", "self-neglect"]),
            "raised_on": day.isoformat()}}
    if choice == 2:
        return {"event_type": "carer.recorded", "contact": {
            "id": f"CT-{person.key}-{n}", "relationship": "daughter", "family_name": person.family,
            "given_name": "Sam", "phone": "07700 900123", "is_carer": True}}
    return {"event_type": "hospital_discharge_support.requested", "request": {
        "id": f"DS-{person.key}-{n}", "hospital_ods": "RR8", "expected_discharge_date": day.isoformat(),
        "pathway": rng.choice(["1", "2"]), "support": ["package of care restart"]}}
