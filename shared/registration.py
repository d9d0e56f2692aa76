"""Which GP practice a person is registered with, read from their linked source Patient records: one rule for the
consent service (who may review or lift an objection: the practice's own record only) and the record API (the
`registered` relationship: that practice, or the one any feed's newest record names)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.fhir import ODS_ORG_SYSTEM, canonical_system
from shared.ods import is_gp_practice
from shared.ods import normalise as normalise_ods
from shared.schema import RawMessage, Resource, ResourceVersion
from shared.sender_clock import believed, utc


class SourcePatient(Protocol):
    """A stored source Patient record (a `Resource` row, or a row of those columns)."""

    @property
    def id(self) -> str: ...
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def source_org(self) -> str: ...
    @property
    def source_updated(self) -> datetime | None: ...
    @property
    def last_updated(self) -> datetime: ...


# The ODS codes of stored Organizations, given their ids (normalised; an id not stored gives nothing).
OrganisationCodes = Callable[[list[str]], set[str]]
# Which of these source Patient records (by id) a feed token vouches for: a query on `VOUCHED_BY_ITS_SENDER`.
Vouched = Callable[[list[str]], set[str]]

# A `Resource` row's condition: some version of the record was written by a message whose feed token named the
# record's sender. Any version, not the current one: a relink or merge re-points the record with a version another
# message (or none) wrote, and the record is still the sender's. A message without a token (MLLP: its MSH-4 is only
# its own claim) vouches for no one.
VOUCHED_BY_ITS_SENDER = (select(ResourceVersion.version_id)
                         .join(RawMessage, RawMessage.id == ResourceVersion.raw_message_id)
                         .where(ResourceVersion.resource_type == Resource.resource_type,
                                ResourceVersion.id == Resource.id,
                                func.upper(func.trim(RawMessage.sender_org)) == func.upper(func.trim(
                                    Resource.source_org)))
                         .exists())


def registered_practice(records: Iterable[SourcePatient], *, own_record_only: bool,
                        organisation_codes: OrganisationCodes) -> set[str]:
    """The ODS codes (normalised) of the practice named in `Patient.generalPractitioner` by the newest of the (not
    deleted) records that names one, by ODS identifier or by reference to a stored Organization. Empty when none
    names one, or when the newest one's Organization is not stored (nothing older is trusted in its place).

    `own_record_only`: count only a practice's own record (sent by an organisation with a GP practice's code)
    naming that practice: the practice's own system saying "registered here". What a hospital or community record
    names is its sender's belief, and a PAS may name itself; standing over a person's objection needs the former.
    Whether the sender was who the record says is the caller's to check: this sees only the record.

    Newest by the sender's own time, no later than when stored, then when stored, then id. A registration changes
    when the person moves, and a hospital or community record keeps the practice of its day, so a union of every
    record would count a practice the person has left. Records with `active: false` name no one."""
    # Newest first, ties by id ascending: sort by id, then stably by time, newest first (datetimes compared as they
    # are: a read pays for this on every request, and timestamps cost more than the rest together).
    for record in sorted(sorted(records, key=attrgetter("id")), key=_when, reverse=True):
        body = record.body
        sender = _sender(record)
        if body.get("active") is False or (own_record_only and not is_gp_practice(sender)):
            continue
        codes, organisation_ids = practices_named(body)
        if codes or organisation_ids:
            named = codes | (organisation_codes(organisation_ids) if organisation_ids else set())
            return named & {sender} if own_record_only else named
    return set()


def registered_for_access(records: Sequence[SourcePatient], ods: str, *, vouched: Vouched,
                          organisation_codes: OrganisationCodes) -> bool:
    """Whether the organisation `ods` (normalised) has the record API's `registered` relationship: the newest record
    from any feed names it, or its own vouched record registers it (`own_record_only` over the records `vouched`
    keeps: the consent service's registered practice, who may lift the person's objection, is never less here).

    The newest claim is never older than the practice's own record, one of the records it is chosen from: a newer
    hospital record naming another practice adds that practice (perhaps the only news of a move) without taking this
    one's away; a newer practice record (the person registered elsewhere since) takes it away under both rules,
    unless a record newer still names it again."""
    if ods in registered_practice(records, own_record_only=False, organisation_codes=organisation_codes):
        return True
    # The strict rule names only a record's own sender: without a record this practice sent it cannot name it, so
    # the vouching (a query) is asked about only then, and a read by anyone else pays nothing more.
    if not is_gp_practice(ods) or all(_sender(record) != ods for record in records):
        return False
    practices = [record for record in records if is_gp_practice(_sender(record))]
    trusted = vouched([record.id for record in practices])
    return ods in registered_practice([record for record in practices if record.id in trusted],
                                      own_record_only=True, organisation_codes=organisation_codes)


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
    stored = utc(record.last_updated)
    # The sender's clock is its own: a record dated ahead of its arrival (2099) would otherwise stay the newest, and
    # its practice registered, whatever was sent after it.
    return believed(record.source_updated, stored) or stored, stored


def _sender(record: SourcePatient) -> str:
    return normalise_ods(record.source_org or "")


def stored_organisation_codes(session: Session, ids: Sequence[str]) -> set[str]:
    """The ODS codes (normalised) of the stored Organizations with these ids: a practice a Patient names by reference
    rather than by ODS identifier. One reading for the consent service and the record API."""
    if not ids:
        return set()
    bodies = session.scalars(select(Resource.body).where(Resource.resource_type == "Organization",
                                                         Resource.id.in_(ids)))
    return {normalise_ods(str(i["value"])) for body in bodies for i in body.get("identifier") or []
            if isinstance(i, dict) and canonical_system(i.get("system")) == ODS_ORG_SYSTEM and i.get("value")}
