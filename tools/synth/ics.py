"""A whole ICS's inputs sized by one number: enough people that every feed together stores about `resources`
resources (1k to 1M), each person with a deterministic mix of GP, acute, community and social-care records.

Every person has their own random stream (seeded by the seed and their key), so any slice of the population
can be emitted on its own, in any order, and is the same every time: the benchmark streams feeds phase by
phase without holding a million resources in memory.

What is in it: valid 999-range NHS numbers (5% of people have none), S-flagged people, sensitive diagnoses
(HIV, STI, gender identity, fertility: labelled and withheld by default), confidential items (HL7 DG1-18,
social-care `confidential`), citizens who object to sharing or have the National Data Opt-out (recorded
through the consent service), near-duplicates (another system's record of the same person without an NHS
number and with a typo, transposed date or short name: the matcher's work), and a few people with long
records (~300 resources) for `$everything`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from tools.synth import community, fhir, hl7, socialcare
from tools.synth.population import Person, generate, near_duplicate

DEFAULT_SEED = 20261123
HEAVY_GP_RESOURCES = 240  # with acute, community and social care a heavy person has ~300 resources


@dataclass(frozen=True)
class Profile:
    """How much each feed holds about one person."""

    gp_clinical: int
    admissions: int
    contacts: int
    social_events: int
    duplicate_elsewhere: bool  # community / social care know them only as a near-duplicate

    def estimate(self) -> int:
        """Resource versions this person's inputs store (one Provenance per message included)."""
        acute = 2 + 6 * self.admissions if self.admissions else 0
        contacts = self.contacts + 2 if self.contacts else 0
        social = 1 + (5 * self.social_events) // 2 if self.social_events else 0
        return self.gp_clinical + 2 + acute + contacts + social


@dataclass(frozen=True)
class Planned:
    person: Person
    profile: Profile

    @property
    def elsewhere(self) -> Person:
        """How community and social-care systems know this person."""
        if self.profile.duplicate_elsewhere:
            return near_duplicate(self.person, _rng(self.person, "dup"))
        return self.person


def _rng(person: Person, stream: str, seed: int = DEFAULT_SEED) -> random.Random:
    return random.Random(f"{seed}/{person.key}/{stream}")


def _profile(person: Person, seed: int, heavy: bool) -> Profile:
    rng = _rng(person, "profile", seed)
    if heavy:
        return Profile(HEAVY_GP_RESOURCES, 6, 8, 8, False)
    return Profile(gp_clinical=min(120, 3 + int(rng.expovariate(1 / 18))),
                   admissions=rng.randint(1, 3) if rng.random() < 0.3 else 0,
                   contacts=rng.randint(2, 6) if rng.random() < 0.2 else 0,
                   social_events=rng.randint(2, 6) if rng.random() < 0.1 else 0,
                   duplicate_elsewhere=person.nhs_number is not None and rng.random() < 0.02)


def plan(resources: int, seed: int = DEFAULT_SEED) -> list[Planned]:
    """People, in order, until their inputs store about `resources` resources. Every 500th person (the first
    included) with an NHS number has a long record."""
    people = generate(max(8, resources // 25 + 50), seed)
    out: list[Planned] = []
    total = 0
    for index, person in enumerate(people):
        if total >= resources:
            break
        person.heavy = index % 500 == 0 and person.nhs_number is not None
        planned = Planned(person, _profile(person, seed, person.heavy))
        out.append(planned)
        total += planned.profile.estimate()
    return out


def estimate(people: list[Planned]) -> int:
    return sum(p.profile.estimate() for p in people)


# ------------------------------------------------------------------------------------------- feeds


def gp_bundles(people: list[Planned], seed: int = DEFAULT_SEED) -> Iterator[dict[str, Any]]:
    """One GP transaction Bundle per person."""
    for planned in people:
        yield fhir.gp_bundle(planned.person, _rng(planned.person, "gp", seed), planned.profile.gp_clinical)


def adt_messages(people: list[Planned], seed: int = DEFAULT_SEED) -> Iterator[list[str]]:
    """Each admitted person's ADT messages (A28, then A01/A03 pairs), in the order the PAS sends them."""
    for planned in people:
        if planned.profile.admissions:
            rng = _rng(planned.person, "acute", seed)
            start = datetime(2024, 1, 1, 9) if rng.random() < 0.5 else datetime(2023, 3, 1, 14)
            yield hl7.messages(planned.person, rng, planned.profile.admissions, start, confidential_rate=0.03)


def community_files(people: list[Planned], rows_per_file: int = 500,
                    seed: int = DEFAULT_SEED) -> Iterator[bytes]:
    """CSV extracts of about `rows_per_file` contacts; one person's contacts never span two files."""
    batch: list[dict[str, str]] = []
    for planned in people:
        if planned.profile.contacts:
            rng = _rng(planned.person, "community", seed)
            batch += community.rows(planned.elsewhere, rng, planned.profile.contacts, date(2025, 1, 6))
            if len(batch) >= rows_per_file:
                yield community.csv_file(batch)
                batch = []
    if batch:
        yield community.csv_file(batch)


def social_events(people: list[Planned], seed: int = DEFAULT_SEED) -> Iterator[tuple[str, dict[str, Any]]]:
    """(Kafka key, event) for every social-care event, each person's in order."""
    for planned in people:
        if planned.profile.social_events:
            who = planned.elsewhere
            rng = _rng(planned.person, "social", seed)
            for event in socialcare.events(who, rng, planned.profile.social_events, date(2025, 3, 3)):
                yield socialcare.key_of(who), event


def preference_changes(people: list[Planned]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(NHS number, preferences document) for every citizen who objects or has the National Data Opt-out."""
    for planned in people:
        person = planned.person
        if person.nhs_number and (person.objects or person.national_opt_out):
            yield person.nhs_number, {"direct_care": "object" if person.objects else "share",
                                      "withheld_categories": [], "denied_organisations": [],
                                      "national_data_opt_out": person.national_opt_out}


def heavy(people: list[Planned]) -> list[Person]:
    """People with long records and a verified NHS number (the `$everything` subjects)."""
    return [p.person for p in people if p.person.heavy and p.person.verified and not p.person.objects]
