"""Clinically duplicate entries across sources, presented once with every source attached ($everything).

Two visible resources are clinically equivalent when they share a coded concept under the key for their
type (below); equivalence is transitive (a GP allergy coded in SNOMED and dm+d joins the hospital's SNOMED one
and a care home's dm+d one). The representative is the group's first entry in presentation order; it carries
one `also-recorded-by` extension per other member naming that member's source and record, and the other
members are not listed separately. Grouping runs over what the caller may see, so a withheld duplicate never
shows up as an attached source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.record_api.store import CensusRow
from shared.fhir import ODS_ORG_SYSTEM

ALSO_RECORDED_BY = "urn:scr:fhir:StructureDefinition:also-recorded-by"
# Per type, the index parameters whose values make the equivalence key; Immunization also needs the same day.
KEY_PARAMS: dict[str, tuple[str, ...]] = {
    "AllergyIntolerance": ("code",),
    "Condition": ("code",),
    "MedicationStatement": ("code",),
    "MedicationRequest": ("code",),
    "Immunization": ("vaccine-code", "date"),
}


@dataclass
class Groups:
    """Representatives mapped to the other members of their group, and every member that is not shown alone."""

    others: dict[tuple[str, str], list[CensusRow]] = field(default_factory=dict)
    folded: set[tuple[str, str]] = field(default_factory=set)


def group(ordered: Sequence[CensusRow], index_rows: Sequence[tuple[Any, ...]]) -> Groups:
    """Group `ordered` (visible rows in presentation order) by clinical equivalence."""
    keys = _keys(index_rows)
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(item: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(item, item) != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    owner: dict[Any, tuple[str, str]] = {}
    for row in ordered:
        me = (row.resource_type, row.id)
        for key in keys.get(me, ()):
            if key in owner:
                first, second = find(owner[key]), find(me)
                if first != second:
                    parent[second] = first
            else:
                owner[key] = me
    members: dict[tuple[str, str], list[CensusRow]] = {}
    for row in ordered:
        members.setdefault(find((row.resource_type, row.id)), []).append(row)
    result = Groups()
    for rows in members.values():
        if len(rows) > 1:
            representative, *rest = rows  # `ordered` is in presentation order, so rows are too
            result.others[(representative.resource_type, representative.id)] = rest
            result.folded.update((r.resource_type, r.id) for r in rest)
    return result


def _keys(index_rows: Sequence[tuple[Any, ...]]) -> dict[tuple[str, str], set[Any]]:
    codes: dict[tuple[str, str], set[tuple[str, str | None, str]]] = {}
    days: dict[tuple[str, str], set[str]] = {}
    for resource_type, resource_id, param, system, code, date_low in index_rows:
        me = (resource_type, resource_id)
        if param == "date" and date_low is not None:
            days.setdefault(me, set()).add(date_low.date().isoformat())
        elif code:
            codes.setdefault(me, set()).add((resource_type, system, code))
    keys: dict[tuple[str, str], set[Any]] = {}
    for me, concepts in codes.items():
        if "date" in KEY_PARAMS.get(me[0], ()):
            keys[me] = {(c, d) for c in concepts for d in days.get(me, ())}  # no date, no key
        else:
            keys[me] = set(concepts)
    return keys


def attach_sources(body: dict[str, Any], others: Sequence[CensusRow],
                   sources: dict[tuple[str, str], str]) -> dict[str, Any]:
    """The representative's body with one also-recorded-by extension per other member of its group (`sources`:
    each member's meta.source, where it has one)."""
    extensions = list(body.get("extension") or [])
    for row in others:
        source = sources.get((row.resource_type, row.id))
        parts: list[dict[str, Any]] = [
            {"url": "organization", "valueIdentifier": {"system": ODS_ORG_SYSTEM, "value": row.source_org}},
            {"url": "record", "valueReference": {"reference": row.ref}},
        ]
        if source:
            parts.insert(0, {"url": "source", "valueUri": source})
        extensions.append({"url": ALSO_RECORDED_BY, "extension": parts})
    return body | {"extension": extensions}
