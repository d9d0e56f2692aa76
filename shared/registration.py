"""Which GP practice a person is registered with, read from their linked source Patient records: one rule for the
consent service (who may review or lift an objection) and the record API (the `registered` relationship)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Protocol

from shared.fhir import ODS_ORG_SYSTEM, canonical_system
from shared.ods import normalise as normalise_ods


class SourcePatient(Protocol):
    """A stored source Patient record (a `Resource` row, or a row of those columns)."""

    @property
    def id(self) -> str: ...
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def source_updated(self) -> datetime | None: ...
    @property
    def last_updated(self) -> datetime: ...


def registered_practice(records: Iterable[SourcePatient]) -> tuple[set[str], list[str]]:
    """The practice named in `Patient.generalPractitioner` by the newest of the (not deleted) records that names
    one: its ODS codes (normalised: stripped, capitals) and the ids of the stored Organizations it refers to for
    one. Newest by the sender's own time, else when stored, then id. A registration changes when the person moves,
    and a hospital or community record keeps the practice of its day, so a union of every record would count a
    practice the person has left. Records with `active: false` name no one. Empty when none names a practice."""
    # Newest first, ties by id ascending: sort by id, then stably by time, newest first (datetimes compared as they
    # are: a read pays for this on every request, and timestamps cost more than the rest together).
    for record in sorted(sorted(records, key=attrgetter("id")), key=_when, reverse=True):
        body = record.body
        if body.get("active") is False:
            continue
        codes, organisation_ids = practices_named(body)
        if codes or organisation_ids:
            return codes, organisation_ids
    return set(), []


def practices_named(body: dict[str, Any]) -> tuple[set[str], list[str]]:
    """The ODS codes a Patient names as its GP practice, and the ids of the Organizations it refers to for one (a
    GP named only by GMP code names no practice)."""
    codes: set[str] = set()
    organisation_ids: list[str] = []
    for gp in body.get("generalPractitioner") or []:
        identifier = gp.get("identifier") or {}
        if canonical_system(identifier.get("system")) == ODS_ORG_SYSTEM and identifier.get("value"):
            codes.add(normalise_ods(str(identifier["value"])))
            continue  # the reference's Organization would only say the same code again: no need to read it
        reference = str(gp.get("reference") or "")
        if reference.startswith("Organization/"):
            organisation_ids.append(reference.removeprefix("Organization/"))
    return codes, organisation_ids


def _when(record: SourcePatient) -> tuple[datetime, datetime]:
    stored = _utc(record.last_updated)
    sent = record.source_updated
    return (_utc(sent) if sent else stored), stored


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite hands back naive UTC
