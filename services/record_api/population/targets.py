"""What one export job knows about the targets of references (deidentify.Targets): which persons are refused
secondary use, which items stay out, and the NHS number behind another person's pseudonym.

A reference must neither point at something left out (its pseudonym would show that a sensitive item, or an
opted-out person, exists) nor fail to resolve to what was exported (another included person's Patient.id is keyed
by their NHS number, so the reference must be too).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.record_api.population.exclusions import PersonExclusions
from services.record_api.population.sensitivity import is_excluded
from shared.schema import Person, Resource

NUMBER_CACHE = 10_000  # other persons' NHS numbers held at once (references to others are few)
Survivors = dict[str, tuple[str, str | None]]  # merged person -> (the person it was merged into, its NHS number)


def excluded_items(session: Session, persons: PersonExclusions, survivors: Survivors) -> set[tuple[str, str]]:
    """(type, id) of every item that stays out: a sensitive label, a category its person withheld, or a refused
    person's. Read as narrow rows; only the excluded are kept (ids only)."""
    found: set[tuple[str, str]] = set()
    statement = (select(Resource.resource_type, Resource.id, Resource.person_id, Resource.labels)
                 .where(Resource.person_id.is_not(None), Resource.deleted.is_(False))
                 .execution_options(yield_per=2000))
    for resource_type, resource_id, person_id, labels in session.execute(statement):
        owner = survivors.get(person_id, (person_id, None))[0]
        if {person_id, owner} & persons.refused or is_excluded(labels, persons.withheld.get(owner, frozenset())):
            found.add((resource_type, resource_id))
    return found


class JobTargets:
    """deidentify.Targets for one job: decided at plan time, with NHS numbers looked up as references need them."""

    def __init__(self, sessions: sessionmaker[Session], persons: PersonExclusions, survivors: Survivors,
                 excluded: set[tuple[str, str]]) -> None:
        self.sessions, self.persons, self.survivors, self.excluded = sessions, persons, survivors, excluded
        self._numbers: dict[str, tuple[bool, str | None]] = {}

    def person(self, person_id: str) -> tuple[str, str | None] | None:
        if person_id in self.survivors:
            final, nhs = self.survivors[person_id]
        else:
            known, nhs = self._number(person_id)
            if not known:
                return None  # not a person: nothing outside the export could resolve it
            final = person_id
        if {person_id, final} & self.persons.refused:
            return None
        return final, nhs

    def item_excluded(self, resource_type: str, resource_id: str) -> bool:
        return (resource_type, resource_id) in self.excluded

    def _number(self, person_id: str) -> tuple[bool, str | None]:
        """(whether an active person has this id, their NHS number)."""
        if person_id not in self._numbers:
            if len(self._numbers) >= NUMBER_CACHE:
                self._numbers.clear()
            with self.sessions() as session:
                row = session.execute(select(Person.nhs_number).where(Person.id == person_id,
                                                                      Person.status == "active")).first()
            self._numbers[person_id] = (row is not None, row[0] if row else None)
        return self._numbers[person_id]
