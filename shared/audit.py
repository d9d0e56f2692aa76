"""Audit: every access, denial and change becomes a FHIR AuditEvent row, hash-chained per person so that a
removed or altered row is detectable, and written in the caller's transaction so an access whose audit
cannot be written fails with it rather than going unrecorded."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Insert, LargeBinary, Select, Text, bindparam, cast, func, insert, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.orm import Session

from shared.auth import Principal
from shared.fhir import ACT_REASON_SYSTEM, ODS_ORG_SYSTEM, SDS_USER_SYSTEM, canonical_json
from shared.schema import AuditEventRow

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
JOB_ROLE_SYSTEM = "https://fhir.hl7.org.uk/CodeSystem/UKCore-SDSJobRoleName"
GENESIS = "0" * 64

# action -> (AuditEvent.type DCM code, display, AuditEvent.action CRUDE code)
_TYPES = {
    "read": ("110110", "Patient Record", "R"),
    "vread": ("110110", "Patient Record", "R"),
    "history": ("110110", "Patient Record", "R"),
    "search": ("110112", "Query", "E"),
    "everything": ("110110", "Patient Record", "R"),
    "export": ("110106", "Export", "R"),
    "decide": ("110113", "Security Alert", "E"),
    "consent-change": ("110110", "Patient Record", "U"),
    "consent-read": ("110110", "Patient Record", "R"),
    "audit-search": ("110112", "Query", "E"),
}
_OUTCOMES = {"success": "0", "denied": "4", "error": "8"}


@dataclass
class AuditRecord:
    """What happened, to whom, by whom, and why; `entities` are the references returned or changed."""

    service: str
    action: str
    outcome: str
    principal: Principal | None
    person_id: str | None = None
    nhs_number: str | None = None
    purpose: str | None = None
    break_glass_reason: str | None = None
    entities: list[str] = field(default_factory=list)
    withheld_count: int = 0
    description: str | None = None


def write_audit(session: Session, record: AuditRecord) -> int:
    """Append one audit row in the caller's transaction, chained to the previous row of the same person; returns
    its id. See `write_audits`."""
    return write_audits(session, [record])[0]


def write_audits(session: Session, records: Sequence[AuditRecord]) -> list[int]:
    """Append audit rows in the caller's transaction (or, on a connection in autocommit, in one transaction of
    their own), each chained to the previous row of its person; returns their ids.

    Every read writes one, so on PostgreSQL they cost one round trip: for each row the chain's lock and one
    INSERT that reads the previous hash and computes the new one itself (sha256 in SQL, the same bytes as
    `verify_chain` hashes), all sent together. Each INSERT is its own statement, run after its lock is granted,
    so under READ COMMITTED it sees the newest row committed before then."""
    appends = [_prepared(record) for record in records]
    if session.get_bind().dialect.name == "postgresql":
        return _append_pipelined(session, appends)
    return [_append_one_by_one(session, append) for append in appends]


@dataclass(frozen=True)
class _Append:
    lock_key: int
    kind: str
    chain: str | None
    columns: dict[str, Any]
    body: dict[str, Any]
    canonical: bytes


def _prepared(record: AuditRecord) -> _Append:
    recorded = datetime.now(UTC)
    body = audit_event_resource(record, recorded)
    kind, chain = _chain_of(record)
    return _Append(zlib.crc32((record.person_id or record.nhs_number or "-").encode()), kind, chain,
                   _columns(record, recorded), body, canonical_json(body))


def _append_one_by_one(session: Session, append: _Append) -> int:
    """SQLite: take its write lock, read the previous hash, insert."""
    session.execute(_SQLITE_WRITE_LOCK)
    previous = session.scalar(_previous_hash(append.kind), {"chain": append.chain}) or GENESIS
    digest = hashlib.sha256(previous.encode() + append.canonical).hexdigest()
    return int(session.execute(insert(AuditEventRow).values(**append.columns, body=append.body, prev_hash=previous,
                                                            hash=digest).returning(AuditEventRow.id)).scalar_one())


def _append_pipelined(session: Session, appends: Sequence[_Append]) -> list[int]:
    """The chains' advisory locks and the hashed INSERTs in one round trip (psycopg's pipeline mode), on the
    session's own connection: in its transaction, or (autocommit, as the record API reads) wrapped in a
    BEGIN ... COMMIT sent in the same round trip. The server runs them in order, so each INSERT starts only once
    its lock is held. Sent through SQLAlchemy they were four round trips and a third of an audited read."""
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.pipeline():
        with driver.transaction() if driver.autocommit else contextlib.nullcontext():
            inserted = []
            for append in appends:
                sql, constants = _hashed_insert_sql(append.kind)
                driver.execute(_ADVISORY_LOCK_SQL, (append.lock_key,))
                inserted.append(driver.execute(sql, constants | append.columns | {
                    "chain": append.chain, "canonical": append.canonical, "body": append.canonical.decode()}))
        rows = [cursor.fetchone() for cursor in inserted]
    assert all(row is not None for row in rows), "an INSERT ... RETURNING returned no row"
    return [int(row[0]) for row in rows]  # type: ignore[index]


@functools.cache
def _hashed_insert_sql(kind: str) -> tuple[str, dict[str, Any]]:
    """`_hashed_insert` as the SQL text and constant parameters SQLAlchemy would send to psycopg."""
    compiled = _hashed_insert(kind).compile(dialect=psycopg_dialect.dialect())
    return str(compiled), dict(compiled.params)


_COLUMNS = ("recorded", "service", "action", "outcome", "person_id", "nhs_number", "actor_kind", "actor_user",
            "actor_ods", "actor_role", "purpose", "break_glass_reason")


@functools.cache
def _hashed_insert(kind: str) -> Insert:
    """INSERT ... SELECT: the previous hash read and the new one computed by PostgreSQL in the same statement.
    Built once per kind of chain, with every value a parameter: building and cache-keying the statement afresh
    for every read cost more than running it."""
    previous = select(func.coalesce(_previous_hash(kind).scalar_subquery(), GENESIS).label("hash")).subquery()
    digest = func.encode(func.sha256(func.convert_to(previous.c.hash, "UTF8").op("||")(
        bindparam("canonical", type_=LargeBinary))), "hex")
    values = [bindparam(name, type_=AuditEventRow.__table__.c[name].type) for name in _COLUMNS]
    body = cast(bindparam("body", type_=Text), JSONB)
    rows = select(*values, body, previous.c.hash, digest)
    table = AuditEventRow.__table__  # a Core insert: the ORM's bulk-insert path adds nothing to one row
    return insert(table).from_select([*_COLUMNS, "body", "prev_hash", "hash"], rows).returning(table.c.id)


@functools.cache
def _previous_hash(kind: str) -> Select[tuple[str]]:
    return select(AuditEventRow.hash).where(_CHAIN_FILTERS[kind]).order_by(AuditEventRow.id.desc()).limit(1)


def _columns(record: AuditRecord, recorded: datetime) -> dict[str, Any]:
    principal = record.principal
    return dict(recorded=recorded, service=record.service, action=record.action, outcome=record.outcome,
                person_id=record.person_id, nhs_number=record.nhs_number,
                actor_kind=principal.kind if principal else "anonymous",
                actor_user=principal.subject if principal else None,
                actor_ods=principal.ods_code if principal else None,
                actor_role=principal.role if principal else None,
                purpose=record.purpose, break_glass_reason=record.break_glass_reason)


def _chain_of(record: AuditRecord) -> tuple[str, str | None]:
    """Which chain a row joins: its person's, else (a denial before any person was found) its NHS number's, else
    the chain of rows about nobody in particular."""
    if record.person_id:
        return "person", record.person_id
    if record.nhs_number:
        return "nhs_number", record.nhs_number
    return "none", None


_CHAIN_FILTERS: dict[str, Any] = {
    "person": AuditEventRow.person_id == bindparam("chain", type_=Text),
    "nhs_number": (AuditEventRow.nhs_number == bindparam("chain", type_=Text)) & AuditEventRow.person_id.is_(None),
    "none": AuditEventRow.person_id.is_(None) & AuditEventRow.nhs_number.is_(None),
}
# Writers of one chain are serialised before the previous row is read, until their transaction ends.
# PostgreSQL: an advisory lock per chain. SQLite: its one write lock, taken by a write that changes nothing (the
# driver opens a transaction for it, and SQLite grants the lock with an up-to-date snapshot); reading the previous
# hash first would let two writers chain to the same row.
_ADVISORY_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"
_SQLITE_WRITE_LOCK = text("UPDATE audit_event SET id = id WHERE id < 0")


def verify_chain(rows: list[AuditEventRow]) -> bool:
    """True if each row's hash matches its body and links to the row before (rows of one chain, in id order)."""
    previous = GENESIS
    for row in rows:
        if row.prev_hash != previous:
            return False
        if hashlib.sha256(previous.encode() + canonical_json(row.body)).hexdigest() != row.hash:
            return False
        previous = row.hash
    return True


def audit_event_resource(record: AuditRecord, recorded: datetime) -> dict[str, Any]:
    type_code, type_display, crude = _TYPES.get(record.action, ("110110", "Patient Record", "E"))
    subtype = [{"system": RESTFUL, "code": record.action}]
    if record.break_glass_reason:
        subtype.append({"system": DCM, "code": "110127", "display": "Emergency Override Started"})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": type_code, "display": type_display},
        "subtype": subtype,
        "action": crude,
        "recorded": recorded.isoformat(),
        "outcome": _OUTCOMES.get(record.outcome, "8"),
        "agent": _agents(record),
        "source": {"observer": {"display": f"scr-{record.service}"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4", "display": "Application Server"}]},
        "entity": _entities(record),
    }
    if record.description:
        event["outcomeDesc"] = record.description
    if record.purpose:
        event["purposeOfEvent"] = [{"coding": [{"system": ACT_REASON_SYSTEM, "code": record.purpose}]}]
    return event


def _agents(record: AuditRecord) -> list[dict[str, Any]]:
    principal = record.principal
    if principal is None:
        return [{"requestor": True, "who": {"display": "unauthenticated caller"}}]
    agent: dict[str, Any] = {"requestor": True, "who": {"identifier": {
        "system": SDS_USER_SYSTEM if principal.kind == "clinician" else "urn:scr:subject",
        "value": principal.subject}}}
    if principal.role:
        agent["role"] = [{"coding": [{"system": JOB_ROLE_SYSTEM, "code": principal.role}]}]
    if record.break_glass_reason:
        agent["purposeOfUse"] = [{"coding": [{"system": ACT_REASON_SYSTEM, "code": "ETREAT"}],
                                  "text": record.break_glass_reason}]
    agents = [agent]
    if principal.ods_code:
        agents.append({"requestor": False, "who": {"identifier": {"system": ODS_ORG_SYSTEM,
                                                                   "value": principal.ods_code}}})
    return agents


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    entities = []
    if record.person_id:
        entities.append({"what": {"reference": f"Patient/{record.person_id}"},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                  "code": "1", "display": "Person"},
                         "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                                  "code": "1", "display": "Patient"}})
    entities.extend({"what": {"reference": ref}} for ref in record.entities)
    if record.withheld_count:
        entities.append({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                  "code": "2", "display": "System Object"},
                         "description": f"{record.withheld_count} item(s) withheld by consent or sensitivity"})
    return entities
