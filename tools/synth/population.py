"""A deterministic synthetic ICS population: people with valid test-range NHS numbers (or none), realistic
names, dates, postcodes and GP practices, some S-flagged, some objecting or opted out, some near-duplicates.

The same seed always gives the same people; feed emitters (fhir.py, hl7.py, ...) turn them into inputs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from shared import nhs_number

FAMILY = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Robinson",
          "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Khan", "Ahmed",
          "O'Brien", "Nowak", "Kowalski", "Okafor", "Mensah", "Singh", "Begum", "Hussain", "Clarke", "Lewis"]
GIVEN_F = ["Olivia", "Amelia", "Isla", "Ava", "Mia", "Grace", "Sophia", "Aisha", "Fatima", "Zofia",
           "Siân", "Chloe", "Emily", "Ruby", "Maryam", "Ella", "Florence", "Evie", "Harper", "Amara"]
GIVEN_M = ["Oliver", "George", "Arthur", "Noah", "Muhammad", "Leo", "Harry", "Oscar", "Jack", "Charlie",
           "Jacob", "Thomas", "Ibrahim", "Kwame", "Piotr", "Dylan", "Rhys", "Ethan", "Samuel", "Joseph"]
POSTCODE_AREAS = ["LS1", "LS6", "LS9", "LS11", "LS15", "BD3", "BD7", "WF1", "WF10", "HD1", "HX1", "YO1"]
GP_PRACTICES = ["B86001", "B86002", "B86010", "B86016", "B86025", "Y12345", "B86030", "B86042"]
ETHNIC = ["A", "A", "A", "A", "B", "C", "D", "F", "H", "J", "K", "M", "N", "R", "S", "Z"]


@dataclass
class Person:
    key: str  # stable synthetic key, also used as local ids
    nhs_number: str | None
    verified: bool
    family: str
    given: str
    sex: str  # male | female
    birth_date: date
    postcode: str
    gp_ods: str
    ethnic: str
    s_flag: bool = False
    objects: bool = False
    national_opt_out: bool = False
    heavy: bool = False  # a long record (~300 resources) for $everything measurements
    twin_of: str | None = None
    near_duplicate_of: str | None = None
    tags: list[str] = field(default_factory=list)


def _nhs_numbers(rng: random.Random, count: int) -> list[str]:
    numbers: set[str] = set()
    while len(numbers) < count:
        prefix = f"999{rng.randrange(0, 10**6):06d}"
        digit = nhs_number.check_digit(prefix)
        if digit is not None and len(set(prefix)) > 1:
            numbers.add(f"{prefix}{digit}")
    return sorted(numbers)


def _postcode(rng: random.Random) -> str:
    return f"{rng.choice(POSTCODE_AREAS)} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}" \
           f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"


def _birth_date(rng: random.Random) -> date:
    return date(1930, 1, 1) + timedelta(days=rng.randrange(0, 365 * 94))


def generate(count: int, seed: int = 20261123) -> list[Person]:
    """`count` people. About 5% have no NHS number, 2% are S-flagged, 3% object, 6% have the national opt-out,
    1% are twins of another person, 2% reappear as near-duplicates without an NHS number (matcher tests)."""
    rng = random.Random(seed)
    numbers = iter(_nhs_numbers(rng, count))
    people: list[Person] = []
    for index in range(count):
        sex = rng.choice(["male", "female"])
        person = Person(
            key=f"P{index:07d}",
            nhs_number=None if rng.random() < 0.05 else next(numbers),
            verified=rng.random() < 0.97,
            family=rng.choice(FAMILY),
            given=rng.choice(GIVEN_F if sex == "female" else GIVEN_M),
            sex=sex,
            birth_date=_birth_date(rng),
            postcode=_postcode(rng),
            gp_ods=rng.choice(GP_PRACTICES),
            ethnic=rng.choice(ETHNIC),
            s_flag=rng.random() < 0.02,
            objects=rng.random() < 0.03,
            national_opt_out=rng.random() < 0.06,
            heavy=rng.random() < 0.002,
        )
        people.append(person)
        if people and rng.random() < 0.01:
            people.append(_twin(rng, person, index, numbers))
    return people[:count]


def _twin(rng: random.Random, sibling: Person, index: int, numbers) -> Person:  # type: ignore[no-untyped-def]
    sex = rng.choice(["male", "female"])
    return Person(key=f"T{index:07d}", nhs_number=next(numbers, None), verified=True, family=sibling.family,
                  given=rng.choice([g for g in (GIVEN_F if sex == "female" else GIVEN_M) if g != sibling.given]),
                  sex=sex, birth_date=sibling.birth_date, postcode=sibling.postcode, gp_ods=sibling.gp_ods,
                  ethnic=sibling.ethnic, twin_of=sibling.key)


def near_duplicate(person: Person, rng: random.Random) -> Person:
    """The same person as another system might hold them: no NHS number, a typo or transposed date."""
    change = rng.choice(["typo", "transposed", "nickname"])
    given, birth = person.given, person.birth_date
    if change == "typo" and len(given) > 3:
        i = rng.randrange(1, len(given) - 1)
        given = given[:i] + given[i + 1] + given[i] + given[i + 2:]
    elif change == "transposed" and birth.day <= 12 and birth.day != birth.month:
        birth = date(birth.year, birth.day, birth.month)
    elif change == "nickname":
        given = given[:3]
    return Person(key=f"{person.key}D", nhs_number=None, verified=False, family=person.family, given=given,
                  sex=person.sex, birth_date=birth, postcode=person.postcode, gp_ods=person.gp_ods,
                  ethnic=person.ethnic, near_duplicate_of=person.key, tags=[change])
