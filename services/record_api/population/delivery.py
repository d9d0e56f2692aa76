"""Serving a finished export's files against the exclusions in force at download, not only those at plan time.

Files are kept for SCR_EXPORT_RETENTION_HOURS; someone who opts out, objects or withholds a category after the job
ran must not be delivered in that time. So each stored line carries, for the record API only, who it is about
(the person, then any other person it refers to) and the item's labels, and every download fetches the exclusions
again and leaves out the lines they now refuse. The recipient receives the NDJSON line alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from services.record_api.population.exclusions import PersonExclusions, final_person
from services.record_api.population.sensitivity import is_excluded

Allows = Callable[[list[str], list[str]], bool]  # (persons, labels) -> may this line be delivered now?
TAB = "\t"  # never inside a compact JSON line: json.dumps escapes control characters


def stored_line(persons: Iterable[str], labels: Iterable[str] | None, line: str) -> str:
    """What is stored for one NDJSON line: `<person,...>\\t<label,...>\\t<line>`."""
    return f"{','.join(persons)}{TAB}{','.join(labels or ())}{TAB}{line}"


@dataclass(frozen=True)
class CurrentExclusions:
    """The exclusions as they are at download, and where merged persons went."""

    persons: PersonExclusions
    survivors: dict[str, str]

    def allows(self, persons: list[str], labels: list[str]) -> bool:
        """Refused if any person the line is about (or refers to) is refused now, or the item is in a category its
        person has withheld now."""
        finals = [final_person(self.survivors, p) for p in persons]
        if set(persons) & self.persons.refused or set(finals) & self.persons.refused:
            return False
        if not persons:
            return True
        withheld = self.persons.withheld.get(persons[0], frozenset()) | self.persons.withheld.get(finals[0],
                                                                                                frozenset())
        return not is_excluded(labels, withheld)


def everything(_persons: list[str], _labels: list[str]) -> bool:
    """For the CLI, which writes files straight after the run, under the exclusions it has just fetched."""
    return True


def deliver(chunks: Iterable[bytes], allows: Allows) -> Iterator[bytes]:
    """The file's NDJSON, one stored chunk at a time, without the lines `allows` refuses. A line stored without
    its persons (written before they were kept) cannot be re-checked, so it is not delivered."""
    for chunk in chunks:
        kept = []
        for stored in chunk.decode().splitlines():
            fields = stored.split(TAB, 2)
            if len(fields) != 3:
                continue
            persons, labels, line = fields
            if allows(persons.split(",") if persons else [], labels.split(",") if labels else []):
                kept.append(f"{line}\n")
        if kept:
            yield "".join(kept).encode()
