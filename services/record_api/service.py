"""The record API's logic, no HTTP: read, vread, history, search, $everything. Each function follows the read
path of STYLE.md top to bottom: resolve the person, admit (consent decision), query, filter before paging,
page, fetch bodies, redact after paging, and hand the Guard what was returned for the audit."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from services.record_api import bundles, duplicates, store
from services.record_api.enforcement import Grant, Guard
from services.record_api.paging import Cursor, Key, Page, decode_cursor, fingerprint, paginate
from services.record_api.patient import last_updated as person_last_updated
from services.record_api.patient import person_patient, version_of
from services.record_api.query import PATIENT_REFERENCE_PARAMS, Include, Reference, SearchQuery, Sort, is_valid_id
from services.record_api.resource_types import DIRECTORY_TYPES, searchable_types
from services.record_api.settings import RecordApiSettings
from services.record_api.store import CensusRow, instant_key
from shared.db import load_stored_json
from shared.errors import InvalidInput, NotFound, TooLarge
from shared.schema import Person, Resource

# Types $everything leaves out unless _type names them: source Patients are folded into the person's Patient,
# Consent belongs to the consent service, and Provenance would double the result.
EVERYTHING_EXCLUDED = frozenset({"Patient", "Consent", "Provenance"})
LOCATION_SEARCH_PARAMS = frozenset({"address-postalcode", "general-practitioner"})


@dataclass
class Found:
    """A single resource as it will be served, with what conditional reads need."""

    body: dict[str, Any]
    version_id: str
    last_updated: datetime

    def headers(self) -> dict[str, str]:
        return {"ETag": f'W/"{self.version_id}"', "Last-Modified": format_datetime(self.last_updated, usegmt=True)}


# ---------------------------------------------------------------- persons


def resolve_person(session: Session, guard: Guard, patient_id: str) -> Person | None:
    """The person a Patient id stands for: a person's own id or a source Patient's; 410 if merged away."""
    person = store.get_person(session, patient_id) if is_valid_id(patient_id) else None
    if person is None and is_valid_id(patient_id):
        row = store.get_resource(session, "Patient", patient_id)
        person = store.get_person(session, row.person_id) if row is not None and row.person_id else None
    return _unless_merged(session, guard, person, patient_id)


def _unless_merged(session: Session, guard: Guard, person: Person | None, patient_id: str) -> Person | None:
    """The person, or 410 naming the survivor if they were merged away. The answer names the survivor, so the
    caller must first be admitted to the survivor as for any read (403 if not), and the access is audited."""
    if person is None or person.status != "merged":
        return person
    survivor = store.get_person(session, person.merged_into) if person.merged_into else None
    if survivor is None:
        guard.deny(None, f"Patient/{patient_id[:64]} was merged into a patient who is not known")
    assert survivor is not None
    grant = guard.admit(session, survivor)
    assert grant is not None
    grant.returned([f"Patient/{person.id}"])
    guard.gone(f"Patient/{patient_id} has been merged into Patient/{survivor.id}; use that id",
               [f"Patient/{survivor.id}"])


def person_view(session: Session, guard: Guard, grant: Grant) -> Found | None:
    """The person's Patient built from the source records this caller may see, or None if they see none."""
    person = grant.person
    visible = []
    for row in grant.sources:
        reason = grant.reason_hidden(row)
        if reason is None:
            visible.append(row)
        else:
            grant.note_withheld(f"Patient/{row.id}", reason)
    if not visible:
        return None
    body = grant.redact(person_patient(person, visible, grant.channels))
    return Found(body, version_of(person, visible), person_last_updated(person, visible))


# ---------------------------------------------------------------- read and vread


def read(session: Session, guard: Guard, resource_type: str, resource_id: str) -> Found:
    if resource_type == "Patient" and (person := _person_by_id(session, guard, resource_id)) is not None:
        grant = guard.admit(session, person)
        assert grant is not None
        found = person_view(session, guard, grant)
        if found is None:
            guard.withhold_item(grant, "objection")
        assert found is not None
        grant.returned([f"Patient/{person.id}"])
        return found
    row = store.get_resource(session, resource_type, resource_id) if is_valid_id(resource_id) else None
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id[:64]} is not known", expression=[resource_type])
    if row.deleted:  # 410 confirms the record existed: only to whom a live one would be shown, and audited
        _admitted(session, guard, row)
        guard.gone(f"{resource_type}/{resource_id} has been deleted", [resource_type])
    body = _served(session, guard, row)
    return Found(body, str(row.version_id), store.utc(row.last_updated))  # type: ignore[arg-type]


def vread(session: Session, guard: Guard, resource_type: str, resource_id: str, version: str) -> Found:
    if resource_type == "Patient" and _person_by_id(session, guard, resource_id) is not None:
        found = read(session, guard, resource_type, resource_id)
        if found.version_id != version:
            raise NotFound(f"Patient/{resource_id} is served in its current version only ({found.version_id}); "
                           f"earlier demographics are in the history of its source records (Patient.link)",
                           expression=["Patient"])
        return found
    if not version.isdigit() or not is_valid_id(resource_id):
        raise NotFound(f"{resource_type}/{resource_id[:64]}/_history/{version[:16]} is not known")
    row = store.get_version(session, resource_type, resource_id, int(version))
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id}/_history/{version} is not known", expression=[resource_type])
    # A label added later (sealed, re-coded as sensitive) covers the earlier versions too.
    current = store.current_labels(session, [(resource_type, resource_id)]).get((resource_type, resource_id), [])
    labels = [*row.labels, *current]
    if row.deleted:
        _admitted(session, guard, row, labels)  # type: ignore[arg-type]
        guard.gone(f"version {version} of {resource_type}/{resource_id} is a deletion", [resource_type])
    body = _served(session, guard, row, labels)  # type: ignore[arg-type]
    return Found(body, str(row.version_id), store.utc(row.last_updated))  # type: ignore[arg-type]


def _person_by_id(session: Session, guard: Guard, person_id: str) -> Person | None:
    person = store.get_person(session, person_id) if is_valid_id(person_id) else None
    return _unless_merged(session, guard, person, person_id)


def _served(session: Session, guard: Guard, row: Resource, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """One stored resource (or version) as this caller may see it: admitted, visible, redacted."""
    grant = _admitted(session, guard, row, labels)
    return row.body if grant is None else _present(session, grant, row.body)


def _admitted(session: Session, guard: Guard, row: Resource, labels: Sequence[str] | None = None) -> Grant | None:
    """Admit the caller to one stored resource (or version), judged by `labels` if given, else its own: 403 if they
    may not see it; the Grant it is served under (None for a directory resource, which belongs to nobody)."""
    ref = f"{row.resource_type}/{row.id}"
    if row.person_id is None:
        if row.resource_type in DIRECTORY_TYPES:
            guard.other_entities.append(ref)
            return None
        guard.deny(None, f"{ref} is not linked to a person, so its sharing cannot be decided")
    person = store.get_person(session, row.person_id)  # type: ignore[arg-type]
    if person is None:
        guard.deny(None, f"{ref} belongs to no known person, so its sharing cannot be decided")
    assert person is not None
    grant = guard.admit(session, person, labels=[*row.labels, *(labels or ())])
    assert grant is not None
    judged = row if labels is None else CensusRow(row.resource_type, row.id, row.last_updated, row.source_org,
                                                 tuple(labels), row.person_id)
    reason = grant.reason_hidden(judged)
    if reason is not None:
        grant.note_withheld(ref, reason)
        guard.withhold_item(grant, reason)
    grant.returned([ref])
    return grant


def _shown(session: Session, grant: Grant, row: CensusRow, text: str) -> dict[str, Any] | bundles.StoredJson:
    """The body this caller gets: the stored JSON text untouched when nothing about it changes for them, else
    parsed and presented (redacted, Provenance targets filtered)."""
    if row.resource_type != "Provenance" and not grant.alters(row.resource_type):
        return bundles.StoredJson(text)
    return _present(session, grant, load_stored_json(text))


def _present(session: Session, grant: Grant, body: dict[str, Any]) -> dict[str, Any]:
    body = grant.redact(body)
    if body.get("resourceType") == "Provenance":
        body = _provenance_targets(session, grant, body)
    return body


def _provenance_targets(session: Session, grant: Grant, body: dict[str, Any]) -> dict[str, Any]:
    """A Provenance lists what one message changed; keep only the targets this caller may see."""
    visible = grant.visible_targets(str(body.get("id"))) | {f"Patient/{grant.person.id}"}
    kept = [t for t in body.get("target") or [] if _target_ref(t.get("reference")) in visible]
    return body | {"target": kept}


def _target_ref(reference: Any) -> str | None:
    """`Type/id` of a reference, relative, absolute or versioned (ingest targets `Condition/<id>/_history/1`)."""
    parts = str(reference or "").rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


# ---------------------------------------------------------------- history


def history(session: Session, guard: Guard, request: Request, settings: RecordApiSettings, *, resource_type: str,
            resource_id: str | None, params: HistoryParams) -> dict[str, Any]:
    if resource_id is not None and resource_type == "Patient" and _person_by_id(session, guard, resource_id):
        found = read(session, guard, resource_type, resource_id)
        entry = {"fullUrl": f"{bundles.fhir_base(request)}/Patient/{resource_id}", "resource": found.body,
                 "request": {"method": "GET", "url": f"Patient/{resource_id}"}, "response": {"status": "200"}}
        return bundles.bundle("history", request, [entry] if params.count else [], total=1)
    rows, person = _history_rows(session, guard, resource_type, resource_id, params)
    if rows is None:
        return bundles.bundle("history", request, [], total=0)
    grant = None
    if person is not None:
        grant = guard.admit(session, person, labels={label for row in rows for label in row.labels})
        rows = grant.filter(rows)  # type: ignore[union-attr]
    elif resource_type in DIRECTORY_TYPES:
        guard.other_entities.append(f"{resource_type}/{resource_id}")
    else:
        guard.deny(None, f"{resource_type}/{resource_id} is not linked to a person, so its sharing cannot be decided")
    visible = sorted(rows, key=_history_key, reverse=True)
    page = paginate(visible, _history_key, True, params.count, params.cursor)
    found = store.version_bodies(session, [(r.resource_type, r.id, r.version_id) for r in page.items])
    base = bundles.fhir_base(request)
    entries = [_history_entry(base, grant, session, row, found.get((row.resource_type, row.id, row.version_id)))
               for row in page.items]
    issues = []
    if grant is not None:
        grant.returned(f"{r.ref}/_history/{r.version_id}" for r in page.items if not r.deleted)
        issues = [bundles.withheld_issue()] if grant.withheld_count else []
    return bundles.bundle("history", request, entries, total=len(visible), issues=issues,
                          next_cursor=page.cursor("n", params.fingerprint),
                          previous_cursor=page.cursor("p", params.fingerprint))


def _history_rows(session: Session, guard: Guard, resource_type: str, resource_id: str | None,
                  params: HistoryParams) -> tuple[list[CensusRow] | None, Person | None]:
    """The versions asked for and the person they belong to (rows None: an unknown patient, so no history). Each
    version carries its own labels and the resource's current ones (store.history_census)."""
    if resource_id is None:
        person = _required_person(session, guard, params.patient)
        if person is None:
            return None, None
        return store.history_census(session, resource_type=resource_type, person_id=person.id,
                                    since=params.since), person
    current = store.get_resource(session, resource_type, resource_id) if is_valid_id(resource_id) else None
    if current is None:
        raise NotFound(f"{resource_type}/{resource_id[:64]} is not known", expression=[resource_type])
    rows = store.history_census(session, resource_type=resource_type, resource_id=resource_id, since=params.since)
    person = store.get_person(session, current.person_id) if current.person_id else None
    return rows, person


@dataclass
class HistoryParams:
    count: int
    since: datetime | None
    cursor: Cursor | None
    fingerprint: str
    patient: str | None = None


def _history_key(row: CensusRow) -> Key:
    return (row.last_updated_key, row.resource_type, row.id, f"{row.version_id:010d}")


def _history_entry(base: str, grant: Grant | None, session: Session, row: CensusRow, body: Any) -> dict[str, Any]:
    url = f"{row.resource_type}/{row.id}"
    if row.deleted or body is None:
        return {"fullUrl": f"{base}/{url}", "request": {"method": "DELETE", "url": url},
                "response": {"status": "410", "lastModified": row.last_updated.isoformat()}}
    method = "POST" if row.version_id == 1 else "PUT"
    shown = _present(session, grant, body) if grant is not None else body
    return {"fullUrl": f"{base}/{url}", "resource": shown,
            "request": {"method": method, "url": url if method == "PUT" else row.resource_type},
            "response": {"status": "201" if method == "POST" else "200",
                         "etag": f'W/"{row.version_id}"', "lastModified": row.last_updated.isoformat()}}


def _required_person(session: Session, guard: Guard, patient: str | None) -> Person | None:
    if not patient:
        raise InvalidInput("type-level history and clinical searches need one patient (patient=<id>): the record "
                           "is shared per person", expression=["patient"])
    return resolve_person(session, guard, patient)


# ---------------------------------------------------------------- search within one person


def search(session: Session, guard: Guard, request: Request, settings: RecordApiSettings,
           query: SearchQuery, fingerprint_: str) -> dict[str, Any]:
    if query.resource_type == "Patient":
        return patient_search(session, guard, request, settings, query, fingerprint_)
    person = _required_person(session, guard, _patient_of(query))
    issues = [bundles.ignored_issue(query.ignored)] if query.ignored else []
    if person is None:
        return bundles.bundle("searchset", request, [], total=0, issues=issues)
    grant = guard.admit(session, person)
    assert grant is not None
    rows = store.search_census(session, person_id=person.id, types=[query.resource_type],
                               criteria=query.without(*PATIENT_REFERENCE_PARAMS),
                               sort_by_date=query.sort.key == "date")
    visible = sorted(grant.filter(rows), key=_order_key(query.sort), reverse=query.sort.descending)
    if grant.withheld_count:
        issues.insert(0, bundles.withheld_issue())
    if query.summary == "count" or query.count == 0:
        return bundles.bundle("searchset", request, [], total=len(visible), issues=issues)
    cursor = decode_cursor(query.cursor, fingerprint_) if query.cursor else None
    page = paginate(visible, _cursor_key(query.sort), query.sort.descending, query.count, cursor)
    texts = store.body_texts(session, [r.key for r in page.items], person.id)
    base = bundles.fhir_base(request)
    shaped = bool(query.elements or query.summary)
    entries: list[dict[str, Any]] = []
    for row in (r for r in page.items if r.key in texts):
        text = texts[row.key]
        body = bundles.shape(_present(session, grant, load_stored_json(text)), query.elements, query.summary) \
            if shaped else _shown(session, grant, row, text)
        entries.append(bundles.stored_entry(base, row.resource_type, row.id, body))
    included, unreadable = _included(session, guard, grant, base, query, page.items)
    entries += included
    grant.returned(bundles.reference_of(e) for e in entries)
    if grant.withheld_count and bundles.withheld_issue() not in issues:  # an included item or target withheld
        issues.insert(0, bundles.withheld_issue())
    if unreadable:
        issues.append(bundles.unreadable_issue(unreadable))
    return bundles.bundle("searchset", request, entries, total=len(visible), issues=issues,
                          next_cursor=page.cursor("n", fingerprint_),
                          previous_cursor=page.cursor("p", fingerprint_))


def _patient_of(query: SearchQuery) -> str | None:
    criteria = query.criteria_named(*PATIENT_REFERENCE_PARAMS)
    if not criteria:
        return None
    values = [v for c in criteria for v in c.values]
    if len({v.id for v in values if isinstance(v, Reference)}) > 1:
        raise InvalidInput("a clinical search names exactly one patient", expression=[criteria[0].name])
    reference = values[0]
    assert isinstance(reference, Reference)
    if reference.type not in (None, "Patient"):
        raise InvalidInput(f"parameter '{criteria[0].name}' must reference a Patient", expression=[criteria[0].name])
    return reference.id


def _order_key(sort: Sort):  # type: ignore[no-untyped-def]
    """How rows are ordered: by the instants themselves (all UTC), so sorting makes no text per row (sorting a long
    record by text keys was a twentieth of its `$everything`)."""
    if sort.key == "_id":
        return lambda r: (r.id, r.resource_type)
    if sort.key == "date":
        return lambda r: (r.sort_date or _BEFORE_ANY_DATE, r.resource_type, r.id)
    return lambda r: (r.last_updated, r.resource_type, r.id)


def _cursor_key(sort: Sort) -> Callable[[CensusRow], Key]:
    """The key a cursor carries: the order key with each instant as fixed-width text (`instant_key`), which
    orders the same; made only for the rows paging compares or ends on."""
    order = _order_key(sort)
    return lambda r: tuple(_as_text(value) for value in order(r))


def _as_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return "" if value is _BEFORE_ANY_DATE else instant_key(value)  # a missing date: first, as before
    return value


_BEFORE_ANY_DATE = datetime.min.replace(tzinfo=UTC)


def _included(session: Session, guard: Guard, grant: Grant, base: str, query: SearchQuery,
              matches: Sequence[CensusRow]) -> tuple[list[dict[str, Any]], set[str]]:
    """_include and _revinclude targets of one page, in batched queries, each through the same grant; and the
    types left out because the token's SMART scopes cannot read them (a search scope on the matches is no scope on
    what they point at)."""
    entries: list[dict[str, Any]] = []
    keys: list[tuple[str, str]] = []
    unreadable: set[str] = set()
    ids = [r.id for r in matches]
    refs = [(r.resource_type, r.id) for r in matches]
    for include in query.includes:
        if include.reverse:  # only Provenance:target outside Patient searches
            if _readable(guard, "Provenance", unreadable):
                keys += [("Provenance", i) for i in store.referencing(session, "Provenance", "target", refs)]
            continue
        for ref_type, ref_id in store.references_from(session, include.source_type, ids, include.param):
            if not _readable(guard, ref_type, unreadable):
                continue
            if ref_type == "Patient":
                if not any(bundles.reference_of(e).startswith("Patient/") for e in entries):
                    found = person_view(session, guard, grant)
                    if found is not None:
                        entries.append(bundles.entry(base, found.body, "include"))
            else:
                keys.append((ref_type, ref_id))
    return entries + _entries_for(session, grant, base, keys, "include"), unreadable


def _readable(guard: Guard, resource_type: str, unreadable: set[str]) -> bool:
    """Whether the token may read this type (noting it in `unreadable` if not)."""
    if guard.caller.may(resource_type, "read"):
        return True
    unreadable.add(resource_type)
    return False


def _entries_for(session: Session, grant: Grant, base: str, keys: Sequence[tuple[str, str]],
                 mode: str) -> list[dict[str, Any]]:
    rows = store.census_of(session, list(dict.fromkeys(keys)))
    shown = [r for r in rows if r.person_id is None and r.resource_type in DIRECTORY_TYPES]
    shown += grant.filter(r for r in rows if r.person_id is not None)
    owners = {r.person_id for r in shown}
    texts = store.body_texts(session, [r.key for r in shown], grant.person.id if owners == {grant.person.id} else None)
    return [bundles.stored_entry(base, r.resource_type, r.id, _shown(session, grant, r, texts[r.key]), mode)
            for r in shown if r.key in texts]


# ---------------------------------------------------------------- Patient search (across persons)


def patient_search(session: Session, guard: Guard, request: Request, settings: RecordApiSettings,
                   query: SearchQuery, fingerprint_: str) -> dict[str, Any]:
    """Persons whose source records match, one Patient each, walked in id order (`_sort=-_id`: descending):
    persons the caller may not see are skipped before paging (pages stay full) within a bounded scan (then the
    page is short, with a next link)."""
    if not query.criteria:
        # Listing every person a clinician could see is a trawl, not care: the Spine's PDS refuses it too.
        raise InvalidInput("a Patient search needs at least one search parameter (identifier, family, given, "
                           "birthdate, gender, address-postalcode...)", expression=["Patient"])
    issues = [bundles.ignored_issue(query.ignored)] if query.ignored else []
    cursor = decode_cursor(query.cursor, fingerprint_) if query.cursor else None
    counting = query.summary == "count" or query.count == 0
    forwards = cursor is None or cursor.direction == "n"
    # The walk goes the way of the sort for a next page, against it for a previous one.
    walk = _Walk(mark=cursor.key[0] if cursor else None, ascending=forwards != query.sort.descending,
                 inclusive=bool(cursor and cursor.inclusive))
    wanted = settings.patient_search_scan_limit if counting else query.count
    shown, last_examined, exhausted = _walk_persons(session, guard, query, settings, walk, wanted)
    exhausted = exhausted or last_examined is None or not _more_persons(session, query, last_examined,
                                                                        walk.ascending)
    if counting:
        if not exhausted:
            raise TooLarge("too many patients match to count; narrow the search", expression=["_summary"])
        withheld = [bundles.withheld_issue()] if guard.withheld_count else []
        return bundles.bundle("searchset", request, [], total=len(shown), issues=withheld + issues)
    onward = Cursor("n" if forwards else "p", (last_examined,), fingerprint_) \
        if last_examined is not None and not exhausted else None
    back = _way_back(session, query, walk, forwards, shown[0][0].person.id if shown else last_examined, fingerprint_)
    if not forwards:
        shown.reverse()
    entries = _patient_entries(session, guard, request, query, shown, issues)
    next_cursor, previous_cursor = (onward, back) if forwards else (back, onward)
    return bundles.bundle("searchset", request, entries, issues=issues,
                          next_cursor=next_cursor.encode() if next_cursor else None,
                          previous_cursor=previous_cursor.encode() if previous_cursor else None)


def _way_back(session: Session, query: SearchQuery, walk: _Walk, forwards: bool, nearest: str | None,
              fingerprint_: str) -> Cursor | None:
    """The link whence a page's walk came (`previous` from a next page), from `nearest`, the first person the walk
    showed or, all it examined left out, the last it examined (linking from the mark would skip the person there),
    exclusive. A walk that examined no one (all beyond a stale cursor merged or made inactive since) links from
    the mark inclusive: the person there ended (or began) the page the cursor came from, and is on no other page."""
    direction = "p" if forwards else "n"
    if nearest is None:
        if walk.mark is None or not _more_persons(session, query, walk.mark, not walk.ascending, inclusive=True):
            return None
        return Cursor(direction, (walk.mark,), fingerprint_, inclusive=True)
    if forwards and (walk.mark is None or not _more_persons(session, query, nearest, not walk.ascending)):
        return None  # the first page, or only persons gone lie before it
    return Cursor(direction, (nearest,), fingerprint_)


def _patient_entries(session: Session, guard: Guard, request: Request, query: SearchQuery,
                     shown: Sequence[tuple[Grant, Found]], issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of one page of persons (each Patient, then what `_revinclude` brings), noting for the audit what
    each grant returned and adding to `issues` what the caller should know."""
    base = bundles.fhir_base(request)
    entries = [bundles.entry(base, bundles.shape(found.body, query.elements, query.summary)) for _g, found in shown]
    unreadable = {i.source_type for i in query.includes if i.reverse and not guard.caller.may(i.source_type, "read")}
    for grant, _found in shown:
        grant.returned([f"Patient/{grant.person.id}"])
        included = _patient_revincludes(session, grant, base, [i for i in query.includes
                                                               if i.source_type not in unreadable])
        grant.returned(bundles.reference_of(e) for e in included)
        entries += included
    if guard.withheld_count:
        issues.insert(0, bundles.withheld_issue())
    if unreadable:
        issues.append(bundles.unreadable_issue(unreadable))
    return entries


@dataclass(frozen=True)
class _Walk:
    """Where a Patient search's walk through person ids starts (None: from the first; past the person there, or at
    them when `inclusive`) and which way."""

    mark: str | None
    ascending: bool
    inclusive: bool = False


def _walk_persons(session: Session, guard: Guard, query: SearchQuery, settings: RecordApiSettings, walk: _Walk,
                  wanted: int) -> tuple[list[tuple[Grant, Found]], str | None, bool]:
    """(visible persons with their Patient in walk order, the last person id examined, whether that was the
    last candidate there is)."""
    shown: list[tuple[Grant, Found]] = []
    last: str | None = None
    examined = 0
    scan_limit = settings.patient_search_scan_limit
    for batch_size in _batch_sizes(wanted, scan_limit):
        asked = min(batch_size, scan_limit - examined)
        batch = store.candidates(session, query.criteria, beyond=last or walk.mark, ascending=walk.ascending,
                                 inclusive=walk.inclusive and last is None, limit=asked)
        for candidate in batch:
            last, examined = candidate.person.id, examined + 1
            if (shown_one := _shown_person(session, guard, query, candidate)) is not None:
                shown.append(shown_one)
                if len(shown) >= wanted:
                    return shown, last, False
        if len(batch) < asked or examined >= scan_limit:
            return shown, last, len(batch) < asked
    return shown, last, False  # not reached: the sizes never run out


def _batch_sizes(wanted: int, scan_limit: int) -> Iterator[int]:
    """How many candidates each query of a walk reads (with their sources): the page's worth first, as most pages
    fill from it, then doubling, so a walk past many persons the caller may not see costs a few queries, not one
    per person, and a page never reads every candidate's sources up to the scan limit to show a few."""
    size = max(1, min(wanted, scan_limit))
    while True:
        yield size
        size = min(2 * size, scan_limit)


def _shown_person(session: Session, guard: Guard, query: SearchQuery,
                  candidate: store.Candidate) -> tuple[Grant, Found] | None:
    """A candidate admitted and their Patient, or None if they are left out (leaving no grant behind)."""
    grant = guard.admit(session, candidate.person, soft=True, found=_found_by(session, query),
                        sources=(candidate.sources, candidate.channels))
    if grant is None:
        return None
    found = person_view(session, guard, grant)
    locating = any(c.name in LOCATION_SEARCH_PARAMS for c in query.criteria)
    if found is None or (locating and grant.redacts_location):
        # An S-flagged person must not be findable by where they live or who their GP is.
        guard.grants.remove(grant)
        return None
    return grant, found


def _found_by(session: Session, query: SearchQuery) -> Callable[[Grant], bool]:
    """Whether a candidate matched on source records the caller may see. The candidate query matches any source;
    a match on a sealed or withheld source (an identifier, a former surname) must be no match at all, or the
    search would say what the record withholds."""
    def found(grant: Grant) -> bool:
        visible = [row.id for row in grant.sources if grant.can_see(row)]
        if len(visible) == len(grant.sources):
            return True  # the candidate query already judged these very sources
        return store.matches_on(session, query.criteria, grant.person.id, visible)
    return found


def _more_persons(session: Session, query: SearchQuery, beyond: str, ascending: bool, inclusive: bool = False) -> bool:
    return bool(store.matching_persons(session, query.criteria, beyond=beyond, ascending=ascending,
                                       inclusive=inclusive, limit=1))


def _patient_revincludes(session: Session, grant: Grant, base: str,
                         includes: Sequence[Include]) -> list[dict[str, Any]]:
    keys: list[tuple[str, str]] = []
    for include in includes:
        if not include.reverse:
            continue
        if include.source_type == "Provenance":
            targets = [("Patient", grant.person.id)] + [("Patient", s.id) for s in grant.sources]
            keys += [("Provenance", i) for i in store.referencing(session, "Provenance", "target", targets)]
        else:
            rows = store.search_census(session, person_id=grant.person.id, types=[include.source_type])
            keys += [(r.resource_type, r.id) for r in rows]
    return _entries_for(session, grant, base, keys, "include")


# ---------------------------------------------------------------- $everything


@dataclass
class EverythingParams:
    count: int
    since: datetime | None
    types: list[str] | None
    cursor: Cursor | None
    fingerprint: str
    ignored: list[str]


def everything(session: Session, guard: Guard, request: Request, person_id: str,
               params: EverythingParams) -> dict[str, Any]:
    person = resolve_person(session, guard, person_id)
    if person is None:
        raise NotFound(f"Patient/{person_id[:64]} is not known", expression=["Patient"])
    grant = guard.admit(session, person)
    assert grant is not None
    types = [t for t in (params.types or [t for t in searchable_types() if t not in EVERYTHING_EXCLUDED])
             if guard.caller.may(t, "read")]  # types the token cannot read are simply not asked for
    rows = store.search_census(session, person_id=person.id, types=types, since=params.since)
    newest_first = Sort("_lastUpdated", True)
    visible = sorted(grant.filter(rows), key=_order_key(newest_first), reverse=True)
    groups = duplicates.group(visible, store.equivalence_codes(session, person.id, duplicates.KEY_PARAMS,
                                                               [(r.resource_type, r.id) for r in visible]))
    presented = [r for r in visible if (r.resource_type, r.id) not in groups.folded]
    page = paginate(presented, _cursor_key(newest_first), True, params.count, params.cursor)
    others = [o for r in page.items for o in groups.others.get((r.resource_type, r.id), [])]
    # Bodies of the page, and the sources of the duplicates folded into its items (quoted on their representative).
    texts, sources = store.bodies_and_sources(session, [r.key for r in page.items], [r.key for r in others], person.id)
    base = bundles.fhir_base(request)
    entries: list[dict[str, Any]] = []
    # Asked for on every page, as the total counts the Patient only when the caller may see one.
    patient = person_view(session, guard, grant)
    if patient is not None and params.count and _first_page(params.cursor, page):
        entries.append(bundles.entry(base, patient.body))
    for row in page.items:
        body: dict[str, Any] | bundles.StoredJson
        if row.key in groups.others:  # the representative of a duplicate group: its other sources attached
            body = duplicates.attach_sources(_present(session, grant, load_stored_json(texts[row.key])),
                                             groups.others[row.key], sources)
        else:
            body = _shown(session, grant, row, texts[row.key])
        entries.append(bundles.stored_entry(base, row.resource_type, row.id, body))
    grant.returned(bundles.reference_of(e) for e in entries)
    grant.returned(r.ref for r in others)
    issues = ([bundles.withheld_issue()] if grant.withheld_count else []) + \
        ([bundles.ignored_issue(params.ignored)] if params.ignored else [])
    return bundles.bundle("searchset", request, entries, total=len(presented) + (1 if patient else 0), issues=issues,
                          next_cursor=page.cursor("n", params.fingerprint),
                          previous_cursor=page.cursor("p", params.fingerprint))


def _first_page(cursor: Cursor | None, page: Page[CensusRow]) -> bool:
    """Whether this `$everything` page is the first, which the Patient leads: asked for without a cursor, or
    reached walking back to the start (a next page starting there follows a first page that showed it)."""
    return cursor is None or (cursor.direction == "p" and page.previous_key is None)


def new_fingerprint(request: Request) -> str:
    return fingerprint(request.query_params.multi_items())

