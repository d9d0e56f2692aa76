"""The record API's routes: parse, authorise (every route but /fhir/metadata takes `enforcement.guard`),
call the service, shape the answer. Read-only: other methods get 405 with an OperationOutcome."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from services.record_api import audit_search, bundles, service
from services.record_api.capability import capability_statement
from services.record_api.enforcement import Guard, guard
from services.record_api.paging import decode_cursor, fingerprint
from services.record_api.query import Parser, SearchQuery, is_valid_id, parse_count, parse_date
from services.record_api.resource_types import searchable_types
from services.record_api.settings import RecordApiSettings
from shared.errors import InvalidInput, ScrError
from shared.fhir import FHIR_JSON

router = APIRouter(prefix="/fhir")


class NotSupported(ScrError):
    status, code = 400, "not-supported"


def _settings(request: Request) -> RecordApiSettings:
    return request.app.state.runtime.settings


def _session(request: Request) -> Session:
    return request.app.state.read_sessions()


def _strict(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(part.strip().lower() == "handling=strict" for part in prefer.split(","))


def _parser(request: Request) -> Parser:
    settings = _settings(request)
    return Parser(strict=_strict(request), default_count=settings.default_page_size,
                  max_count=settings.max_page_size)


def _items(request: Request) -> list[tuple[str, str]]:
    items = request.query_params.multi_items()
    for name, value in items:
        if "\x00" in name or "\x00" in value:  # PostgreSQL text cannot hold NUL: refuse it before any SQL
            raise InvalidInput(f"parameter {name[:40]!r} contains a NUL character", expression=[name[:40]])
    return items


# How many parts the sort key in each kind of cursor has (service.py: `_cursor_key`, `_history_key`, the person id
# Patient searches walk by): a cursor whose key has another shape is refused before the service reads it.
_HISTORY_KEY_LENGTH, _EVERYTHING_KEY_LENGTH, _PATIENT_KEY_LENGTH = 4, 3, 1


def _search_key_length(query: SearchQuery) -> int:
    if query.resource_type == "Patient":
        return _PATIENT_KEY_LENGTH
    return 2 if query.sort.key == "_id" else 3  # (id, type) or (instant, type, id)


def _check_cursor(request: Request, key_length: int) -> None:
    """Refuse a bad page position before any data is touched."""
    if cursor := request.query_params.get("_cursor"):
        decode_cursor(cursor, fingerprint(_items(request)), key_length=key_length)


@router.get("/metadata")
def metadata(request: Request) -> Response:
    return JSONResponse(capability_statement(_settings(request), bundles.fhir_base(request)), media_type=FHIR_JSON)


@router.get("/AuditEvent")
def search_audit(request: Request, current: Guard = Depends(guard("audit-search", "AuditEvent"))) -> Response:
    clauses, count, ascending, cursor_text, ignored = audit_search.parse(_parser(request), _items(request))
    stamp = fingerprint(_items(request))
    cursor = decode_cursor(cursor_text, stamp, key_length=1, numeric=True) if cursor_text else None  # a row id
    with _session(request) as session:
        events, next_cursor, previous_cursor = audit_search.page(session, clauses, count, ascending, cursor, stamp)
    base = bundles.fhir_base(request)
    current.description = f"audit search returned {len(events)} event(s)"
    payload = bundles.bundle("searchset", request, [bundles.entry(base, e) for e in events],
                             next_cursor=next_cursor, previous_cursor=previous_cursor,
                             issues=[bundles.ignored_issue(ignored)] if ignored else [])
    return current.respond(payload)


@router.get("/Patient/{id}/$everything")
def patient_everything(request: Request, id: str, current: Guard = Depends(guard("everything", "Patient"))
                       ) -> Response:
    params = _everything_params(request)
    with _session(request) as session:
        payload = service.everything(session, current, request, id, params)
        return current.respond(payload, session=session)


@router.get("/{resource_type}")
def search(request: Request, resource_type: str, current: Guard = Depends(guard("search"))) -> Response:
    if resource_type not in searchable_types():
        raise NotSupported(f"{resource_type} can be read by id but not searched", expression=[resource_type])
    query = _parser(request).search(resource_type, _items(request))
    _check_cursor(request, _search_key_length(query))
    with _session(request) as session:
        payload = service.search(session, current, request, _settings(request), query, fingerprint(_items(request)))
        return current.respond(payload, session=session)


@router.get("/{resource_type}/_history")
def type_history(request: Request, resource_type: str, current: Guard = Depends(guard("history"))) -> Response:
    if resource_type not in searchable_types():
        raise NotSupported(f"{resource_type} has no type-level history here", expression=[resource_type])
    return _history(request, current, resource_type, None)


@router.get("/{resource_type}/{id}")
def read(request: Request, resource_type: str, id: str, current: Guard = Depends(guard("read"))) -> Response:
    with _session(request) as session:
        found = service.read(session, current, resource_type, id)
        return _conditional(request, current, found, session)


@router.get("/{resource_type}/{id}/_history")
def instance_history(request: Request, resource_type: str, id: str,
                     current: Guard = Depends(guard("history"))) -> Response:
    return _history(request, current, resource_type, id)


def _history(request: Request, current: Guard, resource_type: str, resource_id: str | None) -> Response:
    """Either history; parameters it ignores are reported as search reports them, in the Bundle's own way."""
    params, ignored = _history_params(request, allow_patient=resource_id is None)
    with _session(request) as session:
        payload = service.history(session, current, request, _settings(request), resource_type=resource_type,
                                  resource_id=resource_id, params=params)
        if ignored:
            bundles.tag_issues(payload, [bundles.ignored_issue(ignored)])
        return current.respond(payload, session=session)


@router.get("/{resource_type}/{id}/_history/{version}")
def vread(request: Request, resource_type: str, id: str, version: str,
          current: Guard = Depends(guard("vread"))) -> Response:
    with _session(request) as session:
        found = service.vread(session, current, resource_type, id, version)
        return _conditional(request, current, found, session)


def _conditional(request: Request, current: Guard, found: service.Found, session: Session) -> Response:
    """If-None-Match / If-Modified-Since: an unchanged resource answers 304 (still audited: the caller looked)."""
    headers = found.headers()
    if _unchanged(request, found):
        return current.respond(None, status=304, headers=headers, session=session)
    return current.respond(found.body, headers=headers, session=session)


def _unchanged(request: Request, found: service.Found) -> bool:
    """RFC 9110 §13.1.3: If-Modified-Since counts only without If-None-Match, and a date that cannot be read is
    ignored. Last-Modified is sent to the second, so the resource is compared to the second too."""
    if "if-none-match" in request.headers:
        tags = {t.strip().removeprefix("W/").strip('"') for t in request.headers["if-none-match"].split(",")}
        return found.version_id in tags or "*" in tags
    since = _http_date(request.headers.get("if-modified-since", ""))
    return since is not None and found.last_updated.replace(microsecond=0) <= since


def _http_date(value: str) -> datetime | None:
    """An HTTP-date is always GMT (RFC 9110 §5.6.7), whichever of its three forms is sent."""
    try:
        parsed = parsedate_to_datetime(value)
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _everything_params(request: Request) -> service.EverythingParams:
    parser = _parser(request)
    count, since, types, ignored = _settings(request).default_page_size, None, None, []
    for name, value in _items(request):
        if name == "_count":
            count = parse_count(value, parser.max_count)  # 0: the total only, as for search
        elif name == "_since":
            since = _instant(name, value)
        elif name == "_type":
            types = [t.strip() for t in value.split(",") if t.strip()]
            unknown = [t for t in types if t not in searchable_types()]
            if unknown or not types:
                raise InvalidInput(f"parameter '_type': not a type served here: {', '.join(unknown) or value!r}",
                                   expression=["_type"])
        elif name not in ("_cursor", "_format", "_pretty"):
            _unknown(parser, name, "Patient/$everything")
            ignored.append(name)
    stamp = fingerprint(_items(request))
    cursor = request.query_params.get("_cursor")
    return service.EverythingParams(count, since, types,
                                    decode_cursor(cursor, stamp, key_length=_EVERYTHING_KEY_LENGTH) if cursor else None,
                                    stamp, ignored)


def _history_params(request: Request, *, allow_patient: bool) -> tuple[service.HistoryParams, list[str]]:
    """The history parameters, and the unknown ones ignored (refused under Prefer: handling=strict)."""
    parser = _parser(request)
    count, since, patient, ignored = _settings(request).default_page_size, None, None, []
    for name, value in _items(request):
        if name == "_count":
            count = parse_count(value, parser.max_count)  # 0: the total only, as for search
        elif name == "_since":
            since = _instant(name, value)
        elif name == "patient" and allow_patient:
            patient = value.rsplit("/", 1)[-1]
            if not is_valid_id(patient):
                raise InvalidInput(f"parameter 'patient': {value[:40]!r} is not a Patient id", expression=["patient"])
        elif name not in ("_cursor", "_format", "_pretty"):
            _unknown(parser, name, "_history")
            ignored.append(name)
    stamp = fingerprint(_items(request))
    cursor = request.query_params.get("_cursor")
    return service.HistoryParams(count, since,
                                 decode_cursor(cursor, stamp, key_length=_HISTORY_KEY_LENGTH) if cursor else None,
                                 stamp, patient), ignored


def _instant(name: str, value: str) -> Any:
    return parse_date(name, value).low


def _unknown(parser: Parser, name: str, where: str) -> None:
    if parser.strict:
        raise InvalidInput(f"unknown or unsupported parameter '{name}' for {where} (Prefer: handling=strict)",
                           expression=[name])
