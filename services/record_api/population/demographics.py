"""One demographic row per person for secondary use, read in bounded batches: sex, birth date, ethnic category,
postcode, registered GP practice, the S-flag. Each element comes from the person's source records in the record
API's demographic precedence (services/record_api/patient.py): a verified NHS number first, then GP practice
records, then the most recently updated. The record API also ranks acute, community and social-care sources by the
inbound channel, which lives in the raw archive; the export deliberately never reads the raw archive (only ingest's
database role may, deploy/helm migration grants), so those sources are ranked by recency alone.

Source records that would not themselves be exported never contribute: those the source marked confidential
(`V`), those with any other excluded sensitive label (sensitivity.EXCLUDED_LABELS), and those in a category the
person withheld (a person who withheld `SOC` keeps their social-care record's postcode and ethnicity out too).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.record_api.patient import in_precedence_order
from services.record_api.population.sensitivity import is_excluded
from services.record_api.store import source_patients, utc
from shared.fhir import ETHNIC_CATEGORY_ENGLAND, ETHNIC_CATEGORY_EXT, ODS_ORG_SYSTEM
from shared.labels import RESTRICTED
from shared.schema import Person, Resource


@dataclass(frozen=True)
class PersonRow:
    """What secondary use may know about one person before de-identification."""

    person_id: str
    nhs_number: str | None
    gender: str | None
    birth_date: str | None
    ethnic_code: str | None
    postcode: str | None
    gp_practice: str | None
    deceased: bool
    restricted: bool  # S-flag: no location data of any kind leaves for secondary use
    changed: datetime


Withheld = Mapping[str, frozenset[str]]  # person id -> categories the person withheld


def person_batches(session: Session, batch_size: int = 500, withheld: Withheld | None = None,
                   ) -> Iterator[list[PersonRow]]:
    """Every active person, `batch_size` at a time, in id order (keyset paging: memory stays flat)."""
    after = ""
    while True:
        persons = list(session.scalars(select(Person).where(Person.status == "active", Person.id > after)
                                       .order_by(Person.id).limit(batch_size)))
        if not persons:
            return
        yield rows_for(session, persons, withheld or {})
        after = persons[-1].id
        session.expunge_all()


def rows_for(session: Session, persons: Sequence[Person], withheld: Withheld | None = None) -> list[PersonRow]:
    sources = source_patients(session, [p.id for p in persons])
    return [_row(person, sources[person.id], (withheld or {}).get(person.id, frozenset())) for person in persons]


def _row(person: Person, sources: list[Resource], withheld: frozenset[str]) -> PersonRow:
    restricted = any(RESTRICTED in (r.labels or ()) for r in sources)  # from every source: fail towards hiding
    usable = [r for r in sources if not is_excluded(r.labels, withheld)]
    ordered = [r.body for r in in_precedence_order(person, usable, channels={})]
    changed = max([utc(person.updated)] + [utc(r.last_updated) for r in usable])  # type: ignore[type-var]
    return PersonRow(
        person_id=person.id, nhs_number=person.nhs_number,
        gender=_first(ordered, lambda b: b.get("gender")),
        birth_date=_first(ordered, lambda b: b.get("birthDate")),
        ethnic_code=_first(ordered, ethnic_code),
        postcode=_first(ordered, home_postcode),
        gp_practice=_first(ordered, gp_practice),
        deceased=bool(_first(ordered, lambda b: b.get("deceasedBoolean") or b.get("deceasedDateTime"))),
        restricted=restricted, changed=changed,  # type: ignore[arg-type]
    )


def _first(bodies: list[dict[str, Any]], pick: Any) -> Any:
    for body in bodies:
        value = pick(body)
        if value:
            return value
    return None


def ethnic_code(body: dict[str, Any]) -> str | None:
    """The UK Core EthnicCategoryEngland code on a Patient, if any."""
    for extension in body.get("extension") or []:
        if extension.get("url") != ETHNIC_CATEGORY_EXT:
            continue
        for coding in (extension.get("valueCodeableConcept") or {}).get("coding") or []:
            if coding.get("system") == ETHNIC_CATEGORY_ENGLAND and coding.get("code"):
                return str(coding["code"])
    return None


def home_postcode(body: dict[str, Any]) -> str | None:
    """The current home postcode: a `home` address first, then any address not marked old or temporary."""
    addresses = [a for a in body.get("address") or [] if a.get("postalCode") and a.get("use") not in ("old", "temp")]
    addresses.sort(key=lambda a: 0 if a.get("use") == "home" else 1)
    return str(addresses[0]["postalCode"]) if addresses else None


def gp_practice(body: dict[str, Any]) -> str | None:
    """The registered GP practice's ODS code (Patient.generalPractitioner by ODS identifier)."""
    for gp in body.get("generalPractitioner") or []:
        identifier = gp.get("identifier") or {}
        if identifier.get("system") == ODS_ORG_SYSTEM and identifier.get("value"):
            return str(identifier["value"])
    return None


def restricted_persons(session: Session) -> set[str]:
    """Persons with any S-flagged (`R`) source record; read as narrow rows, keeping only the few flagged."""
    found: set[str] = set()
    statement = (select(Resource.person_id, Resource.labels)
                 .where(Resource.resource_type == "Patient", Resource.deleted.is_(False))
                 .execution_options(yield_per=2000))
    for person_id, labels in session.execute(statement):
        if person_id and RESTRICTED in (labels or ()):
            found.add(person_id)
    return found
