"""One person, one Patient: the Patient the record API serves for a person, built from its linked source
Patient records (docs/RECORD_API.md, "Demographic precedence").

Each demographic element comes whole from the first source, in precedence order, that has it:
1. a source whose NHS number is the person's and is verified (UK Core verification status 01);
2. then by kind of source: GP, acute, community, social care, anything else;
3. then the most recently updated (by the sender's time, no later than when the record was stored).
Identifiers are the union of every source's (deduplicated, the NHS number first); `Patient.link` points at
each source record (`seealso`), and those records stay readable by their own ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.fhir import NHS_NUMBER_SYSTEM, NHS_VERIFICATION_EXT, ODS_ORG_SYSTEM, canonical_system
from shared.labels import security_coding
from shared.ods import is_gp_practice
from shared.schema import Person, Resource
from shared.sender_clock import believed, utc

SOURCE_KINDS = ("gp", "acute", "community", "social-care", "other")
_CHANNEL_KINDS = {"hl7v2": "acute", "mllp": "acute", "community": "community", "socialcare": "social-care"}
_VERIFIED_CODES = frozenset({"01", "number-present-and-verified"})
# Elements taken whole from one source; choice types travel together so a merge never mixes variants.
MERGED_ELEMENTS: tuple[tuple[str, ...], ...] = (
    ("name",), ("gender",), ("birthDate",), ("deceasedBoolean", "deceasedDateTime"), ("address",), ("telecom",),
    ("maritalStatus",), ("multipleBirthBoolean", "multipleBirthInteger"), ("contact",), ("communication",),
    ("generalPractitioner",), ("managingOrganization",), ("extension",),
)


def source_kind(row: Resource, channel: str | None) -> str:
    """GP, acute, community or social care, from the channel the record came by and the sender's ODS code."""
    if is_gp_practice(row.source_org or ""):
        return "gp"
    if channel in _CHANNEL_KINDS:
        return _CHANNEL_KINDS[channel]
    return "community" if channel == "fhir" else "other"


def has_verified_nhs_number(body: dict[str, Any], nhs_number: str | None) -> bool:
    if not nhs_number:
        return False
    for identifier in body.get("identifier") or []:
        if canonical_system(identifier.get("system")) != NHS_NUMBER_SYSTEM or identifier.get("value") != nhs_number:
            continue
        for extension in identifier.get("extension") or []:
            if extension.get("url") != NHS_VERIFICATION_EXT:
                continue
            codings = (extension.get("valueCodeableConcept") or {}).get("coding") or []
            if any(c.get("code") in _VERIFIED_CODES for c in codings):
                return True
    return False


def in_precedence_order(person: Person, sources: Sequence[Resource], channels: dict[str, str]) -> list[Resource]:
    def rank(row: Resource) -> tuple[int, int, float]:
        verified = has_verified_nhs_number(row.body, person.nhs_number)
        kind = SOURCE_KINDS.index(source_kind(row, channels.get(row.id)))
        return (0 if verified else 1, kind, -_updated(row).timestamp())

    return sorted(sources, key=rank)


def _updated(row: Resource) -> datetime:
    """Most recently updated by the sender's time, no later than when stored (as the registered practice is read):
    a source dated ahead of its arrival (2099) would otherwise give the person its details for ever, whatever the
    other sources send after it."""
    stored = utc(row.last_updated)
    return believed(row.source_updated, stored) or stored


def person_patient(person: Person, sources: Sequence[Resource], channels: dict[str, str]) -> dict[str, Any]:
    """The person's Patient from the given source records (those the caller may see), in FHIR R4 JSON."""
    ordered = in_precedence_order(person, sources, channels)
    patient: dict[str, Any] = {"resourceType": "Patient", "id": person.id,
                               "meta": _meta(person, ordered), "active": True,
                               "identifier": merged_identifiers(person, ordered)}
    for group in MERGED_ELEMENTS:
        donor = next((row.body for row in ordered if any(e in row.body for e in group)), None)
        if donor is not None:
            patient.update({e: donor[e] for e in group if e in donor})
    patient["link"] = [{"other": {"reference": f"Patient/{row.id}"}, "type": "seealso"} for row in ordered]
    return patient


def merged_identifiers(person: Person, ordered: Sequence[Resource]) -> list[dict[str, Any]]:
    seen: set[tuple[Any, Any]] = set()
    merged: list[dict[str, Any]] = []
    for row in ordered:
        for identifier in row.body.get("identifier") or []:
            key = (canonical_system(identifier.get("system")), identifier.get("value"))
            if key in seen or key[1] is None:
                continue
            seen.add(key)
            merged.append(identifier | {"system": key[0]} if key[0] else identifier)
    merged.sort(key=lambda i: 0 if i.get("system") == NHS_NUMBER_SYSTEM and i.get("value") == person.nhs_number
                else 1)
    return merged


def version_of(person: Person, sources: Sequence[Resource]) -> str:
    """A version id that changes whenever the person or any source record it was built from changes."""
    parts = [person.version, sorted((row.id, row.version_id) for row in sources)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def last_updated(person: Person, sources: Sequence[Resource]) -> datetime:
    from services.record_api.store import utc

    return max([utc(person.updated)] + [utc(row.last_updated) for row in sources])  # type: ignore[type-var]


def _meta(person: Person, ordered: Sequence[Resource]) -> dict[str, Any]:
    tags, labels = [], set()
    for row in ordered:
        tag = {"system": ODS_ORG_SYSTEM, "code": row.source_org}
        if tag not in tags:
            tags.append(tag)
        labels.update(row.labels or ())
    meta: dict[str, Any] = {"versionId": version_of(person, ordered),
                            "lastUpdated": last_updated(person, ordered).isoformat().replace("+00:00", "Z"),
                            "tag": tags}
    if labels:
        meta["security"] = [security_coding(label) for label in sorted(labels)]
    return meta
