"""SQL for ingest: the raw archive, resources with their versions and search rows, and the person index
(persons, links, reviews, merges). No logic beyond what a query needs; service.py decides."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, exists, func, literal, or_, select, tuple_, update
from sqlalchemy.orm import Session, aliased, make_transient_to_detached

from shared.db import append_rows
from shared.fhir import NHS_NUMBER_SYSTEM
from shared.schema import (
    MatchReview,
    PatientMerge,
    Person,
    PersonLink,
    RawMessage,
    Resource,
    ResourceVersion,
    SearchParam,
)
from shared.search import SearchRow, normalise_postcode, normalise_text

# A family-name-and-postcode block keeps at most CANDIDATE_LIMIT source Patients, and a birth-date block of up to
# that many is scored in full. A larger birth-date block (a register of millions has a few hundred Patients a day,
# twice that with the transposed date) is sifted on its search rows first (person_index); beyond
# BIRTH_DATE_BLOCK_LIMIT (a placeholder date such as 1900-01-01 that systems use for "not known") it is cut, and
# the decision says so.
CANDIDATE_LIMIT = 200
BIRTH_DATE_BLOCK_LIMIT = 2_000
_SEARCH_COLUMNS = ("resource_type", "resource_id", "person_id", "param", "system", "code", "text", "date_low",
                   "date_high", "ref_type", "ref_id")
_VERSION_COLUMNS = ("resource_type", "id", "version_id", "person_id", "source_org", "raw_message_id", "labels",
                    "last_updated", "deleted", "body")
# A stored version, current or past: what carries labels and a body.
Labelled = Resource | ResourceVersion
# One resource_version row, in _VERSION_COLUMNS order.
VersionRow = tuple[str, str, int, str | None, str, str | None, list[str], datetime, bool, dict[str, Any]]


def new_id() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------------------------------- raw archive

@dataclass(frozen=True)
class Inbound:
    """One message as it arrived, to be archived."""

    channel: str
    content: bytes
    content_type: str
    sender_org: str | None = None
    sender_system: str | None = None
    detail: dict[str, Any] | None = None


def archive_many(session: Session, messages: list[Inbound]) -> list[RawMessage]:
    """Store inbound messages byte for byte, with their hashes and receipt times, before anything reads them: one
    multi-row insert, the receipt times a microsecond apart so that the archive's order is the order they came in
    (replay follows it)."""
    now = datetime.now(UTC)
    raws = [RawMessage(id=new_id(), channel=m.channel, received_at=now + timedelta(microseconds=n),
                       content_hash=hashlib.sha256(m.content).hexdigest(), content=m.content,
                       content_type=m.content_type[:128], sender_org=m.sender_org, sender_system=m.sender_system,
                       status="received", attempts=0, detail=m.detail or {}) for n, m in enumerate(messages)]
    session.add_all(raws)
    session.flush()
    return raws


# The statements every message runs are built once, every value a bound parameter: building a statement and its
# cache key afresh for each message cost more Python than PostgreSQL took to run it.
_RAWS = select(RawMessage).where(RawMessage.id.in_(bindparam("ids", expanding=True)))
_RAWS_LOCKED = _RAWS.with_for_update()
_RAWS_UNLESS_LOCKED = _RAWS.with_for_update(skip_locked=True)


def get_raw(session: Session, raw_id: str, *, lock: bool = False, skip_locked: bool = False) -> RawMessage | None:
    """The archived message (locked for this transaction when `lock`). With `skip_locked`, None while another
    transaction holds it (a process working on it), rather than waiting for it: PostgreSQL; SQLite locks nothing."""
    query = (_RAWS_UNLESS_LOCKED if skip_locked else _RAWS_LOCKED) if lock else _RAWS
    return session.scalar(query, {"ids": [raw_id]})


def get_raws(session: Session, raw_ids: list[str], *, lock: bool = False) -> list[RawMessage]:
    """The archived messages named, in the order named (any that vanished left out)."""
    found = {raw.id: raw for raw in session.scalars(_RAWS_LOCKED if lock else _RAWS, {"ids": raw_ids})}
    return [found[raw_id] for raw_id in raw_ids if raw_id in found]


_RAW_TABLE = RawMessage.__table__
_FINISH_RAW = {with_detail: update(_RAW_TABLE).where(_RAW_TABLE.c.id == bindparam("raw_id")).values(
    status=bindparam("status"), error=bindparam("error"), processed_at=bindparam("processed_at"),
    message_key=bindparam("message_key"), attempts=_RAW_TABLE.c.attempts + 1,
    **({"detail": bindparam("detail")} if with_detail else {}))
    for with_detail in (False, True)}


def finish_raw(session: Session, raw_id: str, status: str, *, error: str | None = None,
               detail: dict[str, Any] | None = None, message_key: str | None = None) -> None:
    """Record a message's outcome (and, processed, the sender's own id for it). A Core update of the table: the
    ORM's would evaluate its WHERE against every object in the session, and a batch holds hundreds (objects loaded
    before keep their old status)."""
    values = {"raw_id": raw_id, "status": status, "error": error, "processed_at": datetime.now(UTC),
              "message_key": message_key}
    session.execute(_FINISH_RAW[detail is not None], values | ({"detail": detail} if detail is not None else {}))


def raw_received(session: Session, since: datetime, until: datetime | None, *, channels: list[str] | None,
                 statuses: list[str] | None, after: tuple[datetime, str] | None, limit: int) -> list[RawMessage]:
    """Archived messages received in [since, until), oldest first, the next `limit` after the key `after`."""
    query = (select(RawMessage).where(RawMessage.received_at >= since)
             .order_by(RawMessage.received_at, RawMessage.id).limit(limit))
    if until is not None:
        query = query.where(RawMessage.received_at < until)
    if channels:
        query = query.where(RawMessage.channel.in_(channels))
    if statuses:
        query = query.where(RawMessage.status.in_(statuses))
    if after is not None:
        query = query.where(tuple_(RawMessage.received_at, RawMessage.id) > tuple_(*after))
    return list(session.scalars(query))


def list_raw(session: Session, status: str | None, limit: int, *,
             received_before: datetime | None = None) -> list[RawMessage]:
    """Archived messages, newest first: of one status, and received before a moment, when given."""
    query = select(RawMessage).order_by(RawMessage.received_at.desc()).limit(limit)
    if status:
        query = query.where(RawMessage.status == status)
    if received_before is not None:
        query = query.where(RawMessage.received_at < received_before)
    return list(session.scalars(query))


def processed_duplicate(session: Session, raw: RawMessage, channels: tuple[str, ...]) -> str | None:
    """An earlier, processed message with the same bytes on one of `channels` (an exact re-send)."""
    return session.scalar(_PROCESSED_DUPLICATE, {"hash": raw.content_hash, "channels": list(channels), "id": raw.id})


_PROCESSED_DUPLICATE = select(RawMessage.id).where(
    RawMessage.content_hash == bindparam("hash"), RawMessage.status == "processed",
    RawMessage.channel.in_(bindparam("channels", expanding=True)), RawMessage.id != bindparam("id")).limit(1)


def processed_with_key(session: Session, message_key: str, raw_id: str) -> tuple[str, dict[str, Any]] | None:
    """The processed message holding the sender's id (`message_key`; only the first processed with it holds it), if
    another does: its id and detail."""
    rows = session.execute(_WITH_KEY, {"key": message_key, "id": raw_id})
    return next(((row.id, row.detail) for row in rows if row.status == "processed"), None)


# Only the key in the WHERE clause: with the status there too, SQLite (no statistics) reads every processed
# message by ix_raw_status rather than the few with this key by ix_raw_message_key.
_WITH_KEY = select(RawMessage.id, RawMessage.status, RawMessage.detail).where(
    RawMessage.message_key == bindparam("key"), RawMessage.id != bindparam("id"))


def count_backlog(session: Session, unfinished_before: datetime) -> tuple[int, int]:
    """Failed messages, and those still `received` from before `unfinished_before`: one read of ix_raw_status (the
    gauges read both at each scrape, so one round trip rather than two)."""
    failed = func.count().filter(RawMessage.status == "failed")
    unfinished = func.count().filter(RawMessage.status == "received", RawMessage.received_at < unfinished_before)
    row = session.execute(select(failed, unfinished).where(RawMessage.status.in_(("failed", "received")))).one()
    return row[0] or 0, row[1] or 0


# ------------------------------------------------------------------------------------------- resources

def by_source_keys(session: Session, source_org: str, source_system: str, resource_type: str,
                   keys: Iterable[str]) -> dict[str, Resource]:
    found = by_typed_source_keys(session, source_org, source_system, [(resource_type, key) for key in keys])
    return {key: row for (_type, key), row in found.items()}


def by_typed_source_keys(session: Session, source_org: str, source_system: str,
                         keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Resource]:
    """The stored resources of one sender with these (type, source key)s, locked, in one round trip."""
    wanted = set(keys)
    if not wanted:
        return {}
    rows = session.scalars(_BY_SOURCE_KEYS, {"org": source_org, "system": source_system,
                                             "types": sorted({t for t, _ in wanted}),
                                             "keys": sorted({k for _, k in wanted})})
    found = {(row.resource_type, row.source_key or ""): row for row in rows}
    return {key: row for key, row in found.items() if key in wanted}


_BY_SOURCE_KEYS = select(Resource).where(
    Resource.source_org == bindparam("org"), Resource.source_system == bindparam("system"),
    Resource.resource_type.in_(bindparam("types", expanding=True)),
    Resource.source_key.in_(bindparam("keys", expanding=True))).with_for_update()


def current_batch(session: Session, after: tuple[str, str] | None, limit: int, *,
                  resource_type: str | None = None, lock: bool = True) -> list[Resource]:
    """The next `limit` current resources after the key `after`, in key order (locked for this transaction
    unless `lock` is False)."""
    query = select(Resource).order_by(Resource.resource_type, Resource.id).limit(limit)
    query = query.with_for_update() if lock else query
    if after is not None:
        query = query.where(tuple_(Resource.resource_type, Resource.id) > tuple_(*after))
    if resource_type is not None:
        query = query.where(Resource.resource_type == resource_type)
    return list(session.scalars(query))


def versions_of(session: Session, keys: list[tuple[str, str]]) -> list[ResourceVersion]:
    """Every stored version of the resources named by (type, id)."""
    if not keys:
        return []
    return list(session.scalars(select(ResourceVersion).where(
        tuple_(ResourceVersion.resource_type, ResourceVersion.id).in_(keys))))


def get_resource(session: Session, resource_type: str, resource_id: str) -> Resource | None:
    return session.get(Resource, (resource_type, resource_id))


def of_source_patient(session: Session, source_patient_id: str) -> list[Resource]:
    return list(session.scalars(select(Resource).where(Resource.source_patient_id == source_patient_id,
                                                       Resource.deleted.is_(False))
                                .order_by(Resource.resource_type, Resource.id).with_for_update()))


def version_row(row: Resource, raw_message_id: str | None) -> VersionRow:
    """The `resource_version` row for the version `row` now holds."""
    return (row.resource_type, row.id, row.version_id, row.person_id, row.source_org, raw_message_id,
            row.labels, row.last_updated, row.deleted, row.body)


_RESOURCE_COLUMNS = tuple(column.name for column in Resource.__table__.columns)


def add_resources(session: Session, rows: list[Resource]) -> None:
    """Insert new resource rows in one statement, then attach them to the session as if loaded, so later changes
    in the transaction are UPDATEs. The ORM's own inserts (a unit of work per flush, every attribute tracked)
    were about a tenth of a GP record's ingest, PostgreSQL's time included."""
    append_rows(session, Resource.__table__, _RESOURCE_COLUMNS,
                [tuple(getattr(row, name) for name in _RESOURCE_COLUMNS) for row in rows])
    for row in rows:
        make_transient_to_detached(row)
        session.add(row)


def add_versions(session: Session, rows: list[VersionRow]) -> None:
    """Insert version rows in one statement (versions are only ever appended)."""
    append_rows(session, ResourceVersion.__table__, _VERSION_COLUMNS, rows)


def replace_search_rows(session: Session, entries: list[tuple[str, str, str | None, list[SearchRow]]],
                        fresh: Collection[tuple[str, str]] = ()) -> None:
    """Drop the search rows of each (type, id) and insert its new ones: one delete per type (none for `fresh`
    resources, created in this transaction and never indexed before), one insert for every row of the message."""
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id, _person, _rows in entries:
        if (resource_type, resource_id) not in fresh:
            by_type.setdefault(resource_type, []).append(resource_id)
    for resource_type, ids in by_type.items():
        session.execute(_DELETE_SEARCH_ROWS, {"type": resource_type, "ids": ids})
    append_rows(session, SearchParam.__table__, _SEARCH_COLUMNS, [
        (t, i, p, r.param, r.system, r.code, r.text, r.date_low, r.date_high, r.ref_type, r.ref_id)
        for t, i, p, rows in entries for r in rows])


_SEARCH_TABLE = SearchParam.__table__
_DELETE_SEARCH_ROWS = delete(_SEARCH_TABLE).where(_SEARCH_TABLE.c.resource_type == bindparam("type"),
                                                  _SEARCH_TABLE.c.resource_id.in_(bindparam("ids", expanding=True)))


# ------------------------------------------------------------------------------------------- persons

def get_person(session: Session, person_id: str) -> Person | None:
    return session.get(Person, person_id)


def person_by_nhs_number(session: Session, number: str) -> Person | None:
    return session.scalar(select(Person).where(Person.nhs_number == number))


def create_person(session: Session, nhs_number: str | None) -> Person:
    """A new person, written with the session's next flush (its id is ours, so nothing waits for the insert)."""
    now = datetime.now(UTC)
    person = Person(id=new_id(), nhs_number=nhs_number, status="active", merged_into=None, version=1,
                    created=now, updated=now)
    session.add(person)
    return person


def get_link(session: Session, source_patient_id: str) -> PersonLink | None:
    return session.get(PersonLink, source_patient_id)


def add_link(session: Session, source_patient_id: str, person_id: str, method: str, score: float | None,
             explanation: dict[str, Any]) -> PersonLink:
    """The first link of a source Patient seen for the first time (written with the session's next flush)."""
    now = datetime.now(UTC)
    link = PersonLink(source_patient_id=source_patient_id, person_id=person_id, method=method, score=score,
                      explanation=explanation, created=now, updated=now)
    session.add(link)
    return link


def set_link(session: Session, source_patient_id: str, person_id: str, method: str, score: float | None,
             explanation: dict[str, Any]) -> PersonLink:
    link = session.get(PersonLink, source_patient_id)
    if link is None:
        link = add_link(session, source_patient_id, person_id, method, score, explanation)
    else:
        link.person_id, link.method, link.score, link.explanation, link.updated = (person_id, method, score,
                                                                                   explanation, datetime.now(UTC))
    session.flush()
    return link


def links_of_person(session: Session, person_id: str) -> int:
    return session.scalar(select(func.count()).select_from(PersonLink).where(PersonLink.person_id == person_id)) or 0


@dataclass(frozen=True)
class Blocks:
    """Source Patients worth considering for a new one. `certain` share its NHS number, or its family name and
    postcode; `by_birth_date` share only its birth date (or the transposed one): all of them when there are at
    most CANDIDATE_LIMIT, otherwise more than that and the caller sifts the block (`birth_date_block_fields`)."""

    certain: set[str]
    by_birth_date: list[str]

    @property
    def crowded(self) -> bool:
        return len(self.by_birth_date) > CANDIDATE_LIMIT


def blocked_patients(session: Session, *, birth_dates: list[date], nhs: str | None, family: str | None,
                     postcode: str | None, exclude: str) -> Blocks:
    """Blocking: same or transposed birth date, same NHS number, or same family name and postcode."""
    certain: set[str] = set()
    by_birth_date: list[str] = []
    if birth_dates or nhs:
        # Room for the NHS number's rows (they come first), and birth-date rows enough to tell a crowded block.
        rows = session.execute(_BLOCKED[(bool(birth_dates), bool(nhs))],
                               {"lows": _day_starts(birth_dates), "nhs": nhs, "limit": 2 * CANDIDATE_LIMIT + 1})
        for resource_id, param in rows:
            if param == "identifier":
                certain.add(resource_id)
            else:
                by_birth_date.append(resource_id)
    if family and postcode:
        certain |= set(session.scalars(_BY_NAME_AND_POSTCODE, {"family": normalise_text(family),
                                                               "postcode": normalise_postcode(postcode)}))
    certain.discard(exclude)
    return Blocks(certain, [i for i in dict.fromkeys(by_birth_date) if i not in certain and i != exclude])


def birth_date_block_fields(session: Session, birth_dates: list[date], params: Collection[str]) -> list[Any]:
    """The search rows (resource id, param, system, code, text, date_low) of the source Patients born on these
    days, of BIRTH_DATE_BLOCK_LIMIT + 1 of them at most (so a caller can tell the block was cut)."""
    return list(session.execute(_BIRTH_DATE_BLOCK_FIELDS, {"lows": _day_starts(birth_dates), "params": list(params),
                                                           "limit": BIRTH_DATE_BLOCK_LIMIT + 1}))


def linked_patients(session: Session, resource_ids: Collection[str]) -> list[tuple[Resource, Person]]:
    """Source Patients with the person each is linked to (merged or not)."""
    if not resource_ids:
        return []
    return [(resource, person) for resource, person in session.execute(_LINKED_PATIENTS,
                                                                       {"ids": list(resource_ids)})]


def _day_starts(days: list[date]) -> list[datetime]:
    """Birth dates as the search index holds them (the start of the day, UTC)."""
    return [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in days]


# A search row of a Patient born on one of the days `lows` (their starts, as the index holds a birth date).
_BORN_ON = and_(SearchParam.param == "birthdate", SearchParam.date_low.in_(bindparam("lows", expanding=True)))


def _blocked(by_birth_date: bool, by_nhs_number: bool) -> Select[tuple[str, str]]:
    blocks = []
    if by_birth_date:
        blocks.append(_BORN_ON)
    if by_nhs_number:
        blocks.append(and_(SearchParam.param == "identifier", SearchParam.system == NHS_NUMBER_SYSTEM,
                           SearchParam.code == bindparam("nhs")))
    statement = select(SearchParam.resource_id, SearchParam.param).where(SearchParam.resource_type == "Patient",
                                                                         or_(*blocks))
    if by_birth_date and by_nhs_number:
        # The NHS number's rows first: where a birth date has more source Patients than the limit (a placeholder
        # date), the limit must cut birth-date rows, never the records holding the same number.
        statement = statement.order_by((SearchParam.param == "identifier").desc())
    return statement.limit(bindparam("limit"))


# Built once: every new source Patient runs them, and building them was most of their cost in Python.
_BLOCKED = {(dates, nhs): _blocked(dates, nhs) for dates in (True, False) for nhs in (True, False) if dates or nhs}


# Driven from the birth-date rows, each source Patient's own rows then found by resource id
# (tests/integration/ingest/test_matcher_blocking.py holds it to reading the block's rows under either plan).
# A list of the block's ids as parameters instead was a filter PostgreSQL tested each row against in turn.
_BIRTH_DATE_BLOCK = (select(SearchParam.resource_id).where(SearchParam.resource_type == "Patient", _BORN_ON)
                     .limit(bindparam("limit")).subquery("block"))
_BLOCK_ROW = aliased(SearchParam)
_BIRTH_DATE_BLOCK_FIELDS = select(_BLOCK_ROW.resource_id, _BLOCK_ROW.param, _BLOCK_ROW.system, _BLOCK_ROW.code,
                                  _BLOCK_ROW.text, _BLOCK_ROW.date_low).where(
    _BLOCK_ROW.resource_type == "Patient", _BLOCK_ROW.resource_id == _BIRTH_DATE_BLOCK.c.resource_id,
    _BLOCK_ROW.param.in_(bindparam("params", expanding=True)))
# Same family name and postcode, driven from the postcode (a few households) and checking each one's family name
# by resource id. A join of the two rows let PostgreSQL's generic plan (psycopg prepares a statement after five
# runs) read every Patient with the same family name first: it estimates `text = $1` from the column as a whole,
# where the names of every parameter make one surname look rare. At 300,000 source Patients that was 3-6 ms a
# new Patient against 0.2, growing with the register. So: OFFSET 0 keeps the EXISTS a subplan run per Patient
# at the postcode (the planner cannot turn it into that join), and the family name is compared with IS NOT
# DISTINCT FROM, the same test for a row that has a name but one no index serves, so the subplan can only look
# the row up by resource id (tests/integration/ingest/test_matcher_blocking.py proves the plan both ways).
_FAMILY_ROW = aliased(SearchParam)
_SAME_FAMILY = (select(literal(1))
                .where(_FAMILY_ROW.resource_type == "Patient", _FAMILY_ROW.resource_id == SearchParam.resource_id,
                       _FAMILY_ROW.param == "family",
                       _FAMILY_ROW.text.is_not_distinct_from(bindparam("family")))
                .offset(0))
_BY_NAME_AND_POSTCODE = (
    select(SearchParam.resource_id)
    .where(SearchParam.resource_type == "Patient", SearchParam.param == "address-postalcode",
           SearchParam.text == bindparam("postcode"), exists(_SAME_FAMILY))
    .limit(CANDIDATE_LIMIT))
# With each one's person, in the same statement: scoring needs both, and a person each was a query each.
_LINKED_PATIENTS = (select(Resource, Person)
                    .join(PersonLink, PersonLink.source_patient_id == Resource.id)
                    .join(Person, Person.id == PersonLink.person_id)
                    .where(Resource.resource_type == "Patient", Resource.id.in_(bindparam("ids", expanding=True)),
                           Resource.deleted.is_(False)))


# ------------------------------------------------------------------------------------------- reviews, merges

def add_review(session: Session, source_patient_id: str, candidate_person_id: str, score: float,
               explanation: dict[str, Any]) -> MatchReview:
    review = MatchReview(id=new_id(), source_patient_id=source_patient_id, candidate_person_id=candidate_person_id,
                         score=score, explanation=explanation, status="open", created=datetime.now(UTC))
    session.add(review)
    session.flush()
    session.info[_REVIEWS_OPENED] = True
    return review


_REVIEWS_OPENED = "scr.reviews_opened"


def reviews_opened(session: Session) -> bool:
    """Whether a match review was opened in this session since the last call (so the open-reviews gauge needs a
    recount). A message rolled back after opening one leaves the mark for the next: one recount too many."""
    return bool(session.info.pop(_REVIEWS_OPENED, False))


def list_reviews(session: Session, status: str | None, limit: int) -> list[MatchReview]:
    query = select(MatchReview).order_by(MatchReview.created).limit(limit)
    return list(session.scalars(query.where(MatchReview.status == status) if status else query))


def get_review(session: Session, review_id: str) -> MatchReview | None:
    return session.scalar(select(MatchReview).where(MatchReview.id == review_id).with_for_update())


def count_open_reviews(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(MatchReview).where(MatchReview.status == "open")) or 0


def add_merge(session: Session, surviving: str, retired: str, previous_state: dict[str, Any],
              raw_message_id: str | None) -> PatientMerge:
    merge = PatientMerge(id=new_id(), surviving_patient_id=surviving, retired_patient_id=retired,
                         previous_state=previous_state, raw_message_id=raw_message_id, created=datetime.now(UTC))
    session.add(merge)
    session.flush()
    return merge


def get_merge(session: Session, merge_id: str) -> PatientMerge | None:
    return session.scalar(select(PatientMerge).where(PatientMerge.id == merge_id).with_for_update())


def raw_messages_of(session: Session, resource_type: str, resource_id: str) -> list[RawMessage]:
    """The archived messages that wrote a version of one resource, oldest first."""
    writers = select(ResourceVersion.raw_message_id).where(ResourceVersion.resource_type == resource_type,
                                                           ResourceVersion.id == resource_id)
    return list(session.scalars(select(RawMessage).where(RawMessage.id.in_(writers))
                                .order_by(RawMessage.received_at)))
