"""Inequality-aware counts for planning: persons, encounters, open social-care episodes and waiting items by
age band, sex, ethnic category, deprivation decile and place, one or two dimensions at a time, with persons
refused secondary use left out and small numbers suppressed (docs/POPULATION.md, "Aggregates").

Persons are read in keyset batches (one demographic row each); what they have is counted in SQL, grouped by
person, type, status and label set, never by loading resource bodies. Memory holds the table, not the data.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import String, cast, func, select
from sqlalchemy.orm import Session

from services.record_api.population.deidentify import SOCIAL_CARE, is_excluded, postcode_district
from services.record_api.population.demographics import PersonRow, person_batches
from services.record_api.population.deprivation import DeprivationLookup
from services.record_api.population.exclusions import PersonExclusions
from services.record_api.population.suppression import ALL, suppress, with_margins
from shared.errors import InvalidInput
from shared.schema import Resource

MEASURES = ("persons", "encounters", "open_social_care_episodes", "waiting_items")
MEASURE_NAMES = {"persons": "People", "encounters": "Encounters",
                 "open_social_care_episodes": "Open social-care episodes", "waiting_items": "Waiting items"}
UNKNOWN = "unknown"
AGE_BANDS = (("0-4", 0, 4), ("5-17", 5, 17), ("18-24", 18, 24), ("25-34", 25, 34), ("35-44", 35, 44),
             ("45-54", 45, 54), ("55-64", 55, 64), ("65-74", 65, 74), ("75-84", 75, 84), ("85+", 85, 200))
SEXES = {"female": "Female", "male": "Male", "other": "Other"}
# UK Core EthnicCategoryEngland (NHS Data Dictionary ETHNIC CATEGORY, 2001 census groups).
ETHNIC_CATEGORIES = {
    "A": "White: British", "B": "White: Irish", "C": "White: any other White background",
    "D": "Mixed: White and Black Caribbean", "E": "Mixed: White and Black African", "F": "Mixed: White and Asian",
    "G": "Mixed: any other mixed background", "H": "Asian or Asian British: Indian",
    "J": "Asian or Asian British: Pakistani", "K": "Asian or Asian British: Bangladeshi",
    "L": "Asian or Asian British: any other Asian background", "M": "Black or Black British: Caribbean",
    "N": "Black or Black British: African", "P": "Black or Black British: any other Black background",
    "R": "Other ethnic groups: Chinese", "S": "Other ethnic groups: any other ethnic group",
}
DIMENSIONS = {"age_band": "Age band", "sex": "Sex", "ethnic_category": "Ethnic category",
              "deprivation_decile": "Deprivation decile (IMD, 1 = most deprived)",
              "postcode_district": "Postcode district", "lsoa": "LSOA", "gp_practice": "GP practice"}
_CLOSED: dict[str, tuple[str, ...]] = {
    "age_band": (*(band for band, _, _ in AGE_BANDS), UNKNOWN), "sex": (*SEXES, UNKNOWN),
    "ethnic_category": (*ETHNIC_CATEGORIES, UNKNOWN), "deprivation_decile": (*(str(d) for d in range(1, 11)), UNKNOWN),
}
_UNKNOWN_LABELS = {"ethnic_category": "Not stated/unknown", "sex": "Not stated/unknown"}
COUNTED_TYPES = ("Encounter", "EpisodeOfCare", "ServiceRequest")


def parse_dimensions(value: str | None) -> tuple[str, ...]:
    """One or two dimension names, comma-separated."""
    names = tuple(n.strip() for n in (value or "").split(",") if n.strip())
    if not 1 <= len(names) <= 2 or len(set(names)) != len(names):
        raise InvalidInput("dimension must name one or two different dimensions, comma-separated",
                           expression=["dimension"])
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise InvalidInput(f"unknown dimension {unknown[0]!r}; choose from {', '.join(DIMENSIONS)}",
                           expression=["dimension"])
    return names


# ---------------------------------------------------------------- per person


def age_band(birth_date: str | None, today: date) -> str:
    if not birth_date or not birth_date[:4].isdigit():
        return UNKNOWN
    year = int(birth_date[:4])
    month = int(birth_date[5:7]) if len(birth_date) >= 7 else 7  # year only: assume mid-year
    day = int(birth_date[8:10]) if len(birth_date) >= 10 else 1
    age = today.year - year - (1 if (today.month, today.day) < (month, day) else 0)
    return next((band for band, low, high in AGE_BANDS if low <= age <= high), UNKNOWN)


def dimensions_of(row: PersonRow, lookup: DeprivationLookup, today: date) -> dict[str, str]:
    """A person's value in every dimension. S-flagged persons have no place: they count as unknown there."""
    area = None if row.restricted else lookup.area(row.postcode)
    return {
        "age_band": age_band(row.birth_date, today),
        "sex": row.gender if row.gender in SEXES else UNKNOWN,
        "ethnic_category": row.ethnic_code if row.ethnic_code in ETHNIC_CATEGORIES else UNKNOWN,
        "deprivation_decile": str(area.imd_decile) if area else UNKNOWN,
        "postcode_district": (None if row.restricted else postcode_district(row.postcode)) or UNKNOWN,
        "lsoa": area.lsoa_code if area else UNKNOWN,
        "gp_practice": (None if row.restricted else row.gp_practice) or UNKNOWN,
    }


def person_measures(session: Session, person_ids: Sequence[str],
                    withheld: dict[str, frozenset[str]]) -> dict[str, Counter[str]]:
    """Encounters, open social-care episodes and waiting items per person, counted in SQL."""
    status = Resource.body["status"].as_string()
    labels = cast(Resource.labels, String)
    rows = session.execute(
        select(Resource.person_id, Resource.resource_type, status, labels, func.count())
        .where(Resource.person_id.in_(person_ids), Resource.resource_type.in_(COUNTED_TYPES),
               Resource.deleted.is_(False))
        .group_by(Resource.person_id, Resource.resource_type, status, labels))
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for person_id, resource_type, state, label_text, count in rows:
        codes = json.loads(label_text) if label_text else []
        if is_excluded(codes, withheld.get(person_id, frozenset())):
            continue
        found[person_id].update({m: count for m in measures_of(resource_type, state, codes)})
    return found


def measures_of(resource_type: str, status: str | None, labels: list[str]) -> list[str]:
    """Which measures one item counts towards (docs/POPULATION.md has the definitions)."""
    if resource_type == "Encounter":
        if status == "planned":
            return ["waiting_items"]
        return [] if status in ("cancelled", "entered-in-error") else ["encounters"]
    if resource_type == "EpisodeOfCare":
        counted = ["open_social_care_episodes"] if SOCIAL_CARE in labels and status in (
            "active", "waitlist", "onhold") else []
        return counted + (["waiting_items"] if status == "waitlist" else [])
    if resource_type == "ServiceRequest" and status in ("active", "on-hold"):
        return ["waiting_items"]
    return []


# ---------------------------------------------------------------- the tables


@dataclass
class Tables:
    """Raw counts (before suppression) for each breakdown, and the place values seen."""

    breakdowns: tuple[tuple[str, ...], ...]
    cells: dict[tuple[str, ...], dict[tuple[str, ...], Counter[str]]] = field(default_factory=dict)
    seen: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    totals: Counter[str] = field(default_factory=Counter)


def tabulate(session: Session, persons: PersonExclusions, lookup: DeprivationLookup,
             breakdowns: Sequence[tuple[str, ...]], today: date, batch_size: int = 500) -> Tables:
    tables = Tables(tuple(breakdowns), {b: defaultdict(Counter) for b in breakdowns})
    for batch in person_batches(session, batch_size, persons.withheld):
        rows = [row for row in batch if row.person_id not in persons.refused]
        measures = person_measures(session, [row.person_id for row in rows], persons.withheld)
        for row in rows:
            values = dimensions_of(row, lookup, today)
            counted = Counter(measures.get(row.person_id, Counter())) + Counter(persons=1)
            tables.totals.update(counted)
            for name, value in values.items():
                tables.seen[name].add(value)
            for breakdown in breakdowns:
                tables.cells[breakdown][tuple(values[d] for d in breakdown)].update(counted)
    return tables


def domain(tables: Tables, dimension: str) -> tuple[str, ...]:
    if dimension in _CLOSED:
        return _CLOSED[dimension]
    return (*sorted(v for v in tables.seen[dimension] if v != UNKNOWN), UNKNOWN)


def label(dimension: str, value: str) -> str:
    if value == UNKNOWN:
        return _UNKNOWN_LABELS.get(dimension, "Unknown")
    if dimension == "ethnic_category":
        return f"{value} {ETHNIC_CATEGORIES[value]}"
    if dimension == "sex":
        return SEXES[value]
    return value


def publish(tables: Tables, breakdown: tuple[str, ...], threshold: int) -> dict[str, Any]:
    """One breakdown, every measure, suppressed: cells, (for two dimensions) margins, and the total.

    Each measure's table, margins and total are suppressed as one system (suppression.with_margins). Persons come
    first: wherever a count of persons is hidden, every event measure is hidden too, so that a place with one
    person never shows that person's events (a zero included: "the hidden few had none" is about them too)."""
    domains = [domain(tables, d) for d in breakdown]
    cells = list(itertools.product(*domains))
    raw = tables.cells[breakdown]
    measures: dict[str, Any] = {}
    persons_hidden: set[tuple[str, ...]] = set()
    for measure in MEASURES:  # persons first
        counts = with_margins({cell: raw[cell][measure] if cell in raw else 0 for cell in cells})
        shown = suppress(counts, threshold, forced=persons_hidden)
        if measure == "persons":
            persons_hidden = {cell for cell, count in shown.items() if count is None}
        measures[measure] = _published(breakdown, domains, cells, shown)
    return {"dimensions": list(breakdown), "threshold": threshold,
            "values": {d: [{"code": v, "label": label(d, v)} for v in dom] for d, dom in
                       zip(breakdown, domains, strict=True)},
            "measures": measures}


def _published(breakdown: tuple[str, ...], domains: list[tuple[str, ...]], cells: list[tuple[str, ...]],
               shown: dict[tuple[str, ...], int | None]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "total": shown[(ALL,) * len(breakdown)],
        "cells": [{**dict(zip(breakdown, cell, strict=True)), "count": shown[cell]} for cell in cells]}
    if len(breakdown) == 2:
        entry["margins"] = {
            breakdown[0]: [{"value": v, "count": shown[(v, ALL)]} for v in domains[0]],
            breakdown[1]: [{"value": v, "count": shown[(ALL, v)]} for v in domains[1]]}
    return entry
