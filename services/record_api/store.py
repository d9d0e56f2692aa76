"""SQL for the record API: it reads what ingest stores (docs/CONTRACTS.md §1) and never writes it.

Every patient-data query is keyed by person (`person_id` leads the index it uses) so that one person's record
is one index range, and later one Citus shard. Census queries fetch only the small columns enforcement and
paging need; bodies are fetched afterwards for one page, in one query.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Select,
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from services.record_api.query import Criterion, DateValue, Reference, Token
from shared.registration import VOUCHED_BY_ITS_SENDER
from shared.schema import Person, RawMessage, Resource, ResourceVersion, SearchParam
from shared.search import DATE, REFERENCE, STRING, TOKEN


@dataclass(frozen=True)
class CensusRow:
    """What enforcement and paging need to know about one stored resource (or version), without its body."""

    resource_type: str
    id: str
    last_updated: datetime
    source_org: str
    labels: tuple[str, ...]
    person_id: str | None
    version_id: int = 0
    deleted: bool = False
    sort_date: datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.resource_type}/{self.id}"

    @property
    def key(self) -> tuple[str, str]:
        return self.resource_type, self.id

    # History's sort and cursor key: the instant as fixed-width text, so it compares as the instant does. Kept
    # once made: sorting and then paging ask for every row's key.
    @functools.cached_property
    def last_updated_key(self) -> str:
        return instant_key(self.last_updated)


def instant_key(value: datetime) -> str:
    """A UTC instant as `YYYY-MM-DDTHH:MM:SS.ffffff` (what cursors issued before hold too)."""
    return (value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat(timespec="microseconds")[:26]


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if value is None or value.tzinfo is UTC:  # PostgreSQL sessions are in UTC (shared.db): nothing to convert
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _columns(session: Session, statement: Any, parameters: dict[str, Any] | None = None) -> Sequence[Row[Any]]:
    """Run a SELECT of columns (no ORM entities) on the session's connection, in its transaction: the same rows,
    without the ORM's result handling, which was a tenth of a long `$everything`; fetched all at once (row by
    row was another twentieth)."""
    return session.connection().execute(statement, parameters).all()


# ---------------------------------------------------------------- persons and source Patients


def get_person(session: Session, person_id: str) -> Person | None:
    return session.get(Person, person_id)


def source_patients(session: Session, person_ids: Sequence[str]) -> dict[str, list[Resource]]:
    """Each person's linked source Patient records (current versions, not deleted)."""
    found: dict[str, list[Resource]] = {p: [] for p in person_ids}
    if not person_ids:
        return found
    rows = session.scalars(select(Resource).where(Resource.person_id.in_(person_ids),
                                                  Resource.resource_type == "Patient",
                                                  Resource.deleted.is_(False)).order_by(Resource.id))
    for row in rows:
        found[row.person_id].append(row)  # type: ignore[index]
    return found


def sources_with_channels(session: Session, person_id: str) -> tuple[list[Resource], dict[str, str]]:
    """One person's linked source Patient records (as `source_patients`) and the inbound channel (fhir, hl7v2,
    mllp, community, socialcare) each first arrived by, in one query: every read asks for both."""
    rows = session.execute(_SOURCES_WITH_CHANNELS, {"person_id": person_id}).all()
    return [row for row, _ in rows], {row.id: channel for row, channel in rows if channel is not None}


def person_record_summary(session: Session, person_id: str) -> list[tuple[str, list[str]]]:
    """The distinct (source_org, labels) pairs of a person's current resources: who contributed to the record and
    what labels it carries. Distinct in SQL: a long record has hundreds of rows but a handful of pairs."""
    return [(o, list(lab or [])) for o, lab in _columns(session, _RECORD_SUMMARY, {"person_id": person_id})]


# Every read runs these two: built once, so a read does not pay for building and cache-keying them again.
_FIRST_CHANNEL = (select(RawMessage.channel)
                  .join(ResourceVersion, RawMessage.id == ResourceVersion.raw_message_id)
                  .where(ResourceVersion.resource_type == "Patient", ResourceVersion.id == Resource.id)
                  .order_by(ResourceVersion.version_id).limit(1).scalar_subquery())
_SOURCES_WITH_CHANNELS = (select(Resource, _FIRST_CHANNEL)
                          .where(Resource.person_id == bindparam("person_id"), Resource.resource_type == "Patient",
                                 Resource.deleted.is_(False))
                          .order_by(Resource.id))
_RECORD_SUMMARY = (select(Resource.source_org, Resource.labels)
                   .where(Resource.person_id == bindparam("person_id"), Resource.deleted.is_(False)).distinct())


def vouched_sources(session: Session, ids: Sequence[str]) -> set[str]:
    """Which of these source Patient records a feed token vouches for (`shared.registration.VOUCHED_BY_ITS_SENDER`:
    a practice's own record registers it only then)."""
    if not ids:
        return set()
    return set(session.scalars(select(Resource.id).where(Resource.resource_type == "Patient", Resource.id.in_(ids),
                                                          VOUCHED_BY_ITS_SENDER)))


# ---------------------------------------------------------------- single resources and versions


def get_resource(session: Session, resource_type: str, resource_id: str) -> Resource | None:
    return session.get(Resource, (resource_type, resource_id))


def get_version(session: Session, resource_type: str, resource_id: str, version_id: int) -> ResourceVersion | None:
    return session.get(ResourceVersion, (resource_type, resource_id, version_id))


def body_texts(session: Session, keys: Sequence[tuple[str, str]],
               person_id: str | None = None) -> dict[tuple[str, str], str]:
    """Current bodies for (type, id) pairs as their stored JSON text, unparsed, in one query. Given the person
    they all belong to, the query walks that person's index range (a third of the time of probing the primary
    key for every type and id on a long record)."""
    if not keys:
        return {}
    where = _one_of(session, keys) if person_id is None else and_(Resource.person_id == person_id,
                                                                    _any_id(session, [i for _, i in keys]))
    rows = _columns(session, select(Resource.resource_type, Resource.id, cast(Resource.body, Text)).where(where))
    wanted = set(keys)
    return {(t, i): text for t, i, text in rows if (t, i) in wanted}


def bodies_and_sources(session: Session, body_keys: Sequence[tuple[str, str]], source_keys: Sequence[tuple[str, str]],
                       person_id: str) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """One person's current bodies as stored JSON text (as `body_texts`) for `body_keys`, and the `meta.source` of
    `source_keys`, in one query: a duplicate group's other members are quoted on its representative by their source
    alone (read in SQL: parsing their whole bodies was a sixth of a long `$everything`). Both columns come for every
    row asked for; choosing per row in SQL (`CASE WHEN id = ANY(...)`) cost more than the few bodies it saved."""
    if not body_keys and not source_keys:
        return {}, {}
    source = Resource.body["meta"]["source"].as_string()
    rows = _columns(session, select(Resource.resource_type, Resource.id, cast(Resource.body, Text), source).where(
        Resource.person_id == person_id, _any_id(session, [i for _, i in (*body_keys, *source_keys)])))
    wanted_bodies, wanted_sources = set(body_keys), set(source_keys)
    texts: dict[tuple[str, str], str] = {}
    sources: dict[tuple[str, str], str] = {}
    for resource_type, resource_id, text, meta_source in rows:
        key = (resource_type, resource_id)
        if key in wanted_bodies:
            texts[key] = text
        if key in wanted_sources and meta_source:
            sources[key] = meta_source
    return texts, sources


def version_bodies(session: Session, keys: Sequence[tuple[str, str, int]]) -> dict[tuple[str, str, int], Any]:
    if not keys:
        return {}
    rows = _columns(session,
        select(ResourceVersion.resource_type, ResourceVersion.id, ResourceVersion.version_id, ResourceVersion.body)
        .where(tuple_(ResourceVersion.resource_type, ResourceVersion.id, ResourceVersion.version_id)
               .in_(list(keys))))
    return {(t, i, v): body for t, i, v, body in rows}


def census_of(session: Session, keys: Iterable[tuple[str, str]]) -> list[CensusRow]:
    keys = list(keys)
    if not keys:
        return []
    wanted = set(keys)
    rows = _census(session, select(*_CENSUS_COLUMNS).where(_one_of(session, keys), Resource.deleted.is_(False)))
    return [row for row in rows if row.key in wanted]


def provenance_targets(session: Session, person_id: str, provenance_ids: Sequence[str]) -> dict[str, list[CensusRow]]:
    """What each of one person's Provenance resources targets (versioned references included, as indexed), current
    rows, deleted ones too: a Provenance of a deletion is judged by what was deleted."""
    if not provenance_ids:
        return {}
    pairs = _columns(session, select(SearchParam.resource_id, SearchParam.ref_type, SearchParam.ref_id).where(
        SearchParam.person_id == person_id, SearchParam.param == "target", SearchParam.resource_type == "Provenance",
        SearchParam.resource_id.in_(sorted(set(provenance_ids))), SearchParam.ref_id.is_not(None)))
    keys = {(t, i) for _p, t, i in pairs}
    rows = {r.key: r for r in _census(session, select(*_CENSUS_COLUMNS).where(_one_of(session, list(keys))))} \
        if keys else {}
    found: dict[str, list[CensusRow]] = {i: [] for i in provenance_ids}
    for provenance_id, ref_type, ref_id in pairs:
        if (ref_type, ref_id) in rows:
            found[provenance_id].append(rows[(ref_type, ref_id)])
    return found


def _one_of(session: Session, keys: Sequence[tuple[str, str]]) -> ColumnElement[bool]:
    """`resource` rows whose (type, id) is one of `keys`, a superset when types and ids cross (callers keep only
    the keys they asked for). SQLite has no arrays: a row-value IN list there."""
    if session.get_bind().dialect.name != "postgresql":
        return tuple_(Resource.resource_type, Resource.id).in_(list(keys))
    types = sorted({t for t, _ in keys})
    return and_(Resource.resource_type == any_(bindparam("one_of_types", types, type_=ARRAY(String))),
                _any_id(session, [i for _, i in keys]))


def _any_id(session: Session, ids: Sequence[str]) -> ColumnElement[bool]:
    """`resource.id` is one of `ids`. On PostgreSQL as one array parameter, so the statement's text is the same
    whatever the number of ids and is prepared once per connection (a list of 300 values was parsed and planned
    afresh on every read)."""
    if session.get_bind().dialect.name != "postgresql":
        return Resource.id.in_(sorted(set(ids)))
    return Resource.id == any_(bindparam("any_ids", sorted(set(ids)), type_=ARRAY(String)))


# ---------------------------------------------------------------- searches within one person


_CENSUS_COLUMNS = (Resource.resource_type, Resource.id, Resource.last_updated, Resource.source_org,
                   Resource.labels, Resource.person_id, Resource.version_id)


def search_census(session: Session, *, person_id: str, types: Sequence[str], criteria: Sequence[Criterion] = (),
                  since: datetime | None = None, sort_by_date: bool = False) -> list[CensusRow]:
    """Every current resource of one person of the given types matching every criterion."""
    columns: list[Any] = list(_CENSUS_COLUMNS)
    if sort_by_date:
        columns.append(select(func.min(SearchParam.date_low)).where(
            SearchParam.resource_type == Resource.resource_type, SearchParam.resource_id == Resource.id,
            SearchParam.param == "date").scalar_subquery())
    statement = select(*columns).where(Resource.person_id == person_id, Resource.resource_type.in_(types),
                                       Resource.deleted.is_(False))
    if since is not None:
        statement = statement.where(Resource.last_updated >= since)
    for criterion in criteria:
        statement = statement.where(criterion_clause(criterion))
    return _census(session, statement)


def _census(session: Session, statement: Any) -> list[CensusRow]:
    rows = []
    for row in _columns(session, statement):
        rows.append(CensusRow(row[0], row[1], utc(row[2]), row[3], tuple(row[4] or ()), row[5],  # type: ignore[arg-type]
                              version_id=row[6], sort_date=utc(row[7]) if len(row) > 7 else None))
    return rows


def history_census(session: Session, *, resource_type: str, resource_id: str | None = None,
                   person_id: str | None = None, since: datetime | None = None) -> list[CensusRow]:
    statement = select(ResourceVersion.resource_type, ResourceVersion.id, ResourceVersion.last_updated,
                       ResourceVersion.source_org, ResourceVersion.labels, ResourceVersion.person_id,
                       ResourceVersion.version_id, ResourceVersion.deleted
                       ).where(ResourceVersion.resource_type == resource_type)
    if resource_id is not None:
        statement = statement.where(ResourceVersion.id == resource_id)
    if person_id is not None:
        statement = statement.where(ResourceVersion.person_id == person_id)
    if since is not None:
        statement = statement.where(ResourceVersion.last_updated >= since)
    rows = _columns(session, statement)
    current = current_labels(session, {(r[0], r[1]) for r in rows})
    return [CensusRow(t, i, utc(lu), org, _union(lab, current.get((t, i))), pid, version_id=v,  # type: ignore[arg-type]
                      deleted=bool(d))
            for t, i, lu, org, lab, pid, v, d in rows]


def current_labels(session: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """The labels of the current version (deleted or not) of each resource. A label added later (a record sealed
    or re-coded as sensitive) applies to every earlier version too: versions are judged against both."""
    keys = list(keys)
    if not keys:
        return {}
    rows = _columns(session, select(Resource.resource_type, Resource.id, Resource.labels).where(_one_of(session, keys)))
    return {(t, i): list(lab or ()) for t, i, lab in rows}


def _union(*label_lists: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(label for labels in label_lists for label in labels or ()))


def criterion_clause(criterion: Criterion) -> ColumnElement[bool]:
    """A WHERE clause on `resource` for one criterion (its values ORed)."""
    if criterion.name == "_id":
        return Resource.id.in_([v.code for v in criterion.values if isinstance(v, Token) and v.code])
    if criterion.name == "_lastUpdated":
        return or_(*(_instant_clause(Resource.last_updated, v) for v in criterion.values
                     if isinstance(v, DateValue)))
    matches = or_(*(_value_clause(criterion, v) for v in criterion.values))
    return select(SearchParam.row_id).where(
        SearchParam.resource_type == Resource.resource_type, SearchParam.resource_id == Resource.id,
        SearchParam.param == criterion.name, matches).exists()


def _value_clause(criterion: Criterion, value: Any) -> ColumnElement[bool]:
    if criterion.kind == TOKEN:
        return token_clause(value)
    if criterion.kind == STRING:
        if criterion.modifier == "exact":
            return SearchParam.text == value
        if criterion.modifier == "contains":
            return SearchParam.text.contains(value, autoescape=True)
        return _prefix(value)
    if criterion.kind == DATE:
        return date_clause(value)
    if criterion.kind == REFERENCE:
        assert isinstance(value, Reference)
        clause = SearchParam.ref_id == value.id
        return and_(clause, SearchParam.ref_type == value.type) if value.type else clause
    raise ValueError(criterion.kind)


# Above every character a stored text can hold next: `prefix <= text < prefix + _TOP` is every text starting
# with the prefix, in bytewise (UTF-8, code point) order, which the text column has (shared.schema).
_TOP = "\U0010ffff"


def _prefix(value: str) -> ColumnElement[bool]:
    """FHIR's default string match, starts-with. The range bounds are what an index can use, with the value a
    bound parameter (a prepared statement's generic plan cannot derive a range from `LIKE $1 || '%'`); the LIKE
    keeps the meaning exact."""
    return and_(SearchParam.text >= value, SearchParam.text < value + _TOP,
                SearchParam.text.startswith(value, autoescape=True))


def token_clause(token: Token) -> ColumnElement[bool]:
    clauses = []
    if token.code is not None:
        clauses.append(SearchParam.code == token.code)
    if token.system == "":
        clauses.append(SearchParam.system.is_(None))
    elif token.system is not None:
        clauses.append(SearchParam.system == token.system)
    return and_(*clauses)


def date_clause(value: DateValue) -> ColumnElement[bool]:
    """FHIR date prefixes against the indexed range [date_low, date_high] of the resource's value."""
    low, high = SearchParam.date_low, SearchParam.date_high
    return {
        "eq": and_(low >= value.low, high <= value.high),
        "gt": high > value.high,
        "lt": low < value.low,
        "ge": high >= value.low,
        "le": low <= value.high,
        "sa": low > value.high,
        "eb": high < value.low,
    }[value.prefix]


def _instant_clause(column: Any, value: DateValue) -> ColumnElement[bool]:
    return {
        "eq": and_(column >= value.low, column <= value.high),
        "gt": column > value.high, "sa": column > value.high,
        "lt": column < value.low, "eb": column < value.low,
        "ge": column >= value.low,
        "le": column <= value.high,
    }[value.prefix]


# ---------------------------------------------------------------- Patient search (across persons)


def matches_on(session: Session, criteria: Sequence[Criterion], person_id: str, source_ids: Sequence[str]) -> bool:
    """Whether one person meets every criterion on the given source Patient records alone (those the caller may
    see): the same clauses as `matching_persons`, so the two never disagree on what a match is."""
    statement = persons_statement(criteria, limit=1, sources=source_ids)
    return session.scalar(statement.where(Person.id == person_id)) is not None


def matching_persons(session: Session, criteria: Sequence[Criterion], *, beyond: str | None = None,
                     ascending: bool = True, inclusive: bool = False, limit: int) -> list[Person]:
    """Active persons with source Patients satisfying every criterion, in id order from `beyond` (exclusive unless
    `inclusive`).

    Criteria are ANDed over the person: a criterion is met if any of the person's source records meets it,
    so a merged person is found by any source's identifiers and demographics."""
    return list(session.scalars(persons_statement(criteria, beyond=beyond, ascending=ascending, inclusive=inclusive,
                                                  limit=limit)))


@dataclass
class Candidate:
    """A person a Patient search found, with their sources as `sources_with_channels` gives them."""

    person: Person
    sources: list[Resource]
    channels: dict[str, str]


def candidates(session: Session, criteria: Sequence[Criterion], *, beyond: str | None, ascending: bool,
               inclusive: bool = False, limit: int) -> list[Candidate]:
    """`matching_persons` with each one's source Patients and their first channels, in one query: admitting a
    candidate needs both, and reading them candidate by candidate cost a round trip each."""
    found = persons_statement(criteria, beyond=beyond, ascending=ascending, inclusive=inclusive,
                              limit=limit).with_only_columns(Person.id)
    rows = session.execute(
        select(Person, Resource, _FIRST_CHANNEL).where(Person.id.in_(found))
        .outerjoin(Resource, and_(Resource.person_id == Person.id, Resource.resource_type == "Patient",
                                  Resource.deleted.is_(False)))
        .order_by(Person.id.asc() if ascending else Person.id.desc(), Resource.id)).all()
    by_person: dict[str, Candidate] = {}
    for found_person, source, channel in rows:
        candidate = by_person.setdefault(found_person.id, Candidate(found_person, [], {}))
        if source is not None:
            candidate.sources.append(source)
            if channel is not None:
                candidate.channels[source.id] = channel
    return list(by_person.values())


def persons_statement(criteria: Sequence[Criterion], *, beyond: str | None = None, ascending: bool = True,
                      inclusive: bool = False, limit: int, sources: Sequence[str] | None = None
                      ) -> Select[tuple[Person]]:
    """Active persons meeting every criterion on any of their source Patients (only on `sources`, when given),
    in id order (`ascending` or not) from `beyond`, exclusive (`inclusive`: from the person there, for a page
    whose cursor's person is on no other page): keyset paging either way."""
    statement = select(Person).where(Person.status == "active")
    within = Resource.id.in_(sources) if sources is not None else None
    for criterion in criteria:
        if criterion.name == "_id":
            ids = [v.code for v in criterion.values if isinstance(v, Token) and v.code]
            source_owners = select(Resource.person_id).where(Resource.resource_type == "Patient",
                                                             Resource.id.in_(ids))
            if within is not None:
                source_owners = source_owners.where(within)
            statement = statement.where(or_(Person.id.in_(ids), Person.id.in_(source_owners)))
            continue
        owners = select(Resource.person_id).where(Resource.resource_type == "Patient", Resource.deleted.is_(False),
                                                  criterion_clause(criterion))
        if within is not None:
            owners = owners.where(within)
        statement = statement.where(Person.id.in_(owners))
    if beyond is not None:
        if inclusive:
            statement = statement.where(Person.id >= beyond if ascending else Person.id <= beyond)
        else:
            statement = statement.where(Person.id > beyond if ascending else Person.id < beyond)
    return statement.order_by(Person.id.asc() if ascending else Person.id.desc()).limit(limit)


# ---------------------------------------------------------------- _include, _revinclude, duplicates


def references_from(session: Session, resource_type: str, ids: Sequence[str], param: str) -> list[tuple[str, str]]:
    """(ref_type, ref_id) of the `param` references of the given resources."""
    if not ids:
        return []
    return [(t, i) for t, i in _columns(session,
        select(SearchParam.ref_type, SearchParam.ref_id).where(
            SearchParam.resource_type == resource_type, SearchParam.resource_id.in_(ids),
            SearchParam.param == param, SearchParam.ref_id.is_not(None)).distinct())]


def referencing(session: Session, source_type: str, param: str, targets: Sequence[tuple[str, str]]) -> list[str]:
    """Ids of `source_type` resources whose `param` reference points at any of `targets`."""
    if not targets:
        return []
    return [resource_id for (resource_id,) in _columns(session, select(SearchParam.resource_id).where(
        SearchParam.resource_type == source_type, SearchParam.param == param,
        tuple_(SearchParam.ref_type, SearchParam.ref_id).in_(list(targets))).distinct())]


def equivalence_codes(session: Session, person_id: str, params: dict[str, tuple[str, ...]],
                      keys: Sequence[tuple[str, str]]) -> list[tuple[str, str, str, str | None, str | None,
                                                                  datetime | None]]:
    """(type, id, param, system, code, date_low) index rows that clinical-duplicate detection compares, for the
    given resources of one person: `params` maps each resource type to the parameters that make its key.
    Keyed by person (index ix_search_person_param) so the plan never depends on the table's size."""
    wanted = {k for k in keys if k[0] in params}
    if not wanted:
        return []
    names = sorted({p for ps in params.values() for p in ps})
    rows = _columns(session, select(SearchParam.resource_type, SearchParam.resource_id, SearchParam.param,
                                    SearchParam.system, SearchParam.code, SearchParam.date_low)
                    .where(SearchParam.person_id == person_id, SearchParam.param.in_(names)))
    return [(t, i, p, s, c, utc(d)) for t, i, p, s, c, d in rows
            if (t, i) in wanted and p in params.get(t, ())]
