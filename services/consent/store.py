"""SQL for the consent service: consents and their versions, the person index and record store it reads, and
the audit rows behind the citizen's access log. Every query is keyed by NHS number or id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from services.consent.facts import ods_code, parse_datetime, range_end
from shared.registration import VOUCHED_BY_ITS_SENDER, registered_practice, stored_organisation_codes
from shared.schema import AuditEventRow, ConsentRecord, ConsentVersion, Person, RawMessage, Resource, ResourceVersion


@dataclass(frozen=True)
class Author:
    kind: str  # citizen | professional
    ods: str | None = None
    role: str | None = None
    user: str | None = None


# pg_advisory_xact_lock(int, int): two-key locks are a key space of their own, so these never meet the one-key locks
# of the audit chains (shared.audit) and the outbox relay (shared.outbox). The first key says they are consent's.
_PERSON_LOCK_SPACE = 0x5C0C
# SQLite: its one write lock, taken by a write that changes nothing. The driver begins the transaction at this first
# write (earlier reads ran outside one), so every read after it sees the latest commit and no one else can commit.
_SQLITE_WRITE_LOCK = text("UPDATE consent SET id = id WHERE id = ''")


def lock_people(session: Session, *nhs_numbers: str) -> None:
    """Serialise every change to these people's consents until this transaction ends. Taken first in each change, so
    a change judges what is in force, and takes its time, only after every earlier change for them has committed.
    PostgreSQL: an advisory lock per NHS number (a hash collision only serialises two people), taken in one order so
    two changes naming the same two people cannot deadlock; SQLite serialises all writers."""
    if session.get_bind().dialect.name != "postgresql":
        session.execute(_SQLITE_WRITE_LOCK)
        return
    for number in sorted(set(nhs_numbers)):
        session.execute(select(func.pg_advisory_xact_lock(_PERSON_LOCK_SPACE, func.hashtext(number))))


def filed_under(session: Session, *consent_ids: str) -> list[str]:
    """The NHS numbers these consents are filed under now (those that exist), in order."""
    return sorted(set(session.scalars(select(ConsentRecord.nhs_number).where(ConsentRecord.id.in_(consent_ids)))))


def consents_for(session: Session, nhs_number: str) -> list[ConsentRecord]:
    """Every consent (current version) about one person, whatever its status."""
    return list(session.scalars(select(ConsentRecord).where(ConsentRecord.nhs_number == nhs_number)
                                .order_by(ConsentRecord.recorded_at, ConsentRecord.id)))


def get(session: Session, consent_id: str, *, for_update: bool = False) -> ConsentRecord | None:
    query = select(ConsentRecord).where(ConsentRecord.id == consent_id)
    return session.scalars(query.with_for_update() if for_update else query).first()


def preferences_of(session: Session, nhs_number: str, *, for_update: bool = False) -> ConsentRecord | None:
    query = select(ConsentRecord).where(ConsentRecord.nhs_number == nhs_number, ConsentRecord.kind == "preferences")
    return session.scalars(query.with_for_update() if for_update else query).first()


def insert(session: Session, *, consent_id: str, nhs_number: str, kind: str, author: Author, recorded: datetime,
           body: dict[str, Any]) -> ConsentRecord:
    """Version 1 of a new consent (flushed, so a second first-preferences row fails here, not at commit)."""
    stamped = _stamp(body, 1, recorded)
    row = ConsentRecord(id=consent_id, nhs_number=nhs_number, kind=kind, status=stamped["status"], version_id=1,
                        recorded_at=recorded, author_kind=author.kind, author_ods=author.ods,
                        author_role=author.role, author_user=author.user, **_period(stamped))
    row.body = stamped
    session.add(row)
    session.add(ConsentVersion(id=consent_id, version_id=1, nhs_number=nhs_number, recorded_at=recorded,
                               body=stamped))
    session.flush()
    return row


def new_version(session: Session, row: ConsentRecord, *, recorded: datetime, body: dict[str, Any],
                author: Author | None = None, nhs_number: str | None = None) -> bool:
    """Replace the current version if it is still `row.version_id` (compare-and-set); False if someone else
    wrote first. `nhs_number`: the person the new version is about, when it is another than the row's (an imported
    consent following its source record to another person: it and its history are read by NHS number)."""
    nhs_number = nhs_number or row.nhs_number
    if nhs_number != row.nhs_number and row.author_kind == "citizen":
        # A citizen's choices belong to the NHS number of their token; nothing a feed does may move them.
        raise ValueError("a citizen's consent is never filed under another NHS number")
    version = row.version_id + 1
    stamped = _stamp(body, version, recorded)
    values: dict[str, Any] = {"version_id": version, "status": stamped["status"], "recorded_at": recorded,
                              "body": stamped, "nhs_number": nhs_number, **_period(stamped)}
    if author:
        values |= {"author_kind": author.kind, "author_ods": author.ods, "author_role": author.role,
                   "author_user": author.user}
    result = session.execute(update(ConsentRecord)
                             .where(ConsentRecord.id == row.id, ConsentRecord.version_id == row.version_id)
                             .values(**values).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return False
    session.add(ConsentVersion(id=row.id, version_id=version, nhs_number=nhs_number, recorded_at=recorded,
                               body=stamped))
    session.flush()
    session.expire(row)
    return True


def _stamp(body: dict[str, Any], version: int, recorded: datetime) -> dict[str, Any]:
    return body | {"meta": (body.get("meta") or {}) | {"versionId": str(version),
                                                        "lastUpdated": recorded.isoformat()}}


def _period(body: dict[str, Any]) -> dict[str, Any]:
    period = (body.get("provision") or {}).get("period") or {}
    return {"period_start": parse_datetime(period.get("start")), "period_end": range_end(period.get("end"))}


def history(session: Session, nhs_number: str, *, limit: int, offset: int) -> list[tuple[ConsentVersion,
                                                                                          ConsentRecord]]:
    """Versions of every consent about one person, newest first, with the consent they belong to."""
    rows = session.execute(
        select(ConsentVersion, ConsentRecord).join(ConsentRecord, ConsentRecord.id == ConsentVersion.id)
        .where(ConsentVersion.nhs_number == nhs_number)
        .order_by(ConsentVersion.recorded_at.desc(), ConsentVersion.id.desc(), ConsentVersion.version_id.desc())
        .limit(limit).offset(offset)
    ).all()
    return [(version, consent) for version, consent in rows]


def version(session: Session, consent_id: str, version_id: int) -> ConsentVersion | None:
    return session.get(ConsentVersion, (consent_id, version_id))


def access_log(session: Session, nhs_number: str, *, before: int | None, limit: int) -> list[AuditEventRow]:
    """Audit rows about one person, newest first, strictly older than the `before` cursor."""
    query = select(AuditEventRow).where(AuditEventRow.nhs_number == nhs_number)
    if before is not None:
        query = query.where(AuditEventRow.id < before)
    return list(session.scalars(query.order_by(AuditEventRow.id.desc()).limit(limit)))


def person_id_for(session: Session, nhs_number: str) -> str | None:
    return session.scalar(select(Person.id).where(Person.nhs_number == nhs_number))


def nhs_number_of_person(session: Session, person_id: str) -> str | None:
    return session.scalar(select(Person.nhs_number).where(Person.id == person_id))


def source_resource(session: Session, resource_type: str, resource_id: str) -> Resource | None:
    return session.get(Resource, (resource_type, resource_id))


def feed_sender(session: Session, source: Resource) -> str | None:
    """The ODS code of the organisation that sent the current version of a stored resource, when it is known for
    sure: the `ods_code` claim of the feed token the message that wrote it came with (ingest refuses a message
    naming another organisation, MSH-4 or provider.ods_code, than its token). None when no token named one (MLLP
    and the social-care topic carry none: the message's own claim is all there is) or when the version was written
    by another message than the sender's own (a relink or merge re-pointing it)."""
    sender = session.scalar(select(RawMessage.sender_org)
                            .join(ResourceVersion, ResourceVersion.raw_message_id == RawMessage.id)
                            .where(ResourceVersion.resource_type == source.resource_type,
                                   ResourceVersion.id == source.id, ResourceVersion.version_id == source.version_id))
    return ods_code(sender) if sender and ods_code(sender) == ods_code(source.source_org) else None


def registered_practices(session: Session, nhs_number: str) -> set[str]:
    """ODS codes of the GP practice the person is registered with now, as the practice's own records say
    (`shared.registration` with `own_record_only`: the newest of their linked source Patient records sent by a
    practice that names one, by ODS identifier or a reference to a stored Organization, counted only if it names
    its sender). Only records a feed token vouches for count: one that came over MLLP names its sender only by
    MSH-4, which anyone on the network can write. Empty when no practice is known."""
    person_id = person_id_for(session, nhs_number)
    if person_id is None:
        return set()
    rows = session.execute(select(Resource.body, Resource.source_org, Resource.source_updated, Resource.last_updated,
                                  Resource.id)
                           .where(Resource.resource_type == "Patient", Resource.person_id == person_id,
                                  Resource.deleted.is_(False), VOUCHED_BY_ITS_SENDER)).all()
    return registered_practice(rows, own_record_only=True,
                               organisation_codes=lambda ids: stored_organisation_codes(session, ids))


