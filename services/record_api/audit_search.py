"""Privacy officers' search of the access trail: GET /fhir/AuditEvent by patient, user, organisation, date,
outcome and subtype (break-glass is subtype DCM|110127), newest first, keyset-paged on the audit sequence."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from services.record_api.paging import Cursor
from services.record_api.query import Parser, parse_date, parse_reference, parse_token
from shared.audit import DCM
from shared.errors import InvalidInput
from shared.schema import AuditEventRow

AUDIT_PARAMS: dict[str, tuple[str, str]] = {
    "patient": ("reference", "the person (Patient/<id>) the access was about"),
    "agent": ("token", "the user (SDS user id) who acted"),
    "organization": ("token", "the ODS code of the organisation the user acted for"),
    "date": ("date", "when the access was recorded"),
    "outcome": ("token", "0 success, 4 denied, 8 error"),
    "subtype": ("token", "restful interaction (read, search, everything, ...) or "
                         f"{DCM}|110127 for break-glass"),
}
_OUTCOMES = {"0": "success", "4": "denied", "8": "error", "success": "success", "denied": "denied",
             "error": "error"}


def parse(parser: Parser, items: Iterable[tuple[str, str]]) -> tuple[list[Any], int, bool, str | None, list[str]]:
    """(WHERE clauses, count, ascending, cursor text, ignored names) for an AuditEvent search."""
    clauses: list[Any] = []
    count, ascending, cursor, ignored = parser.default_count, False, None, []
    for name, value in items:
        if name in AUDIT_PARAMS:
            values = [v for v in value.split(",") if v]
            if not values:
                raise InvalidInput(f"parameter '{name}' needs a value", expression=[name])
            clauses.append(or_(*(_clause(name, v) for v in values)))
        elif name == "_count":
            from services.record_api.query import parse_count

            count = parse_count(value, parser.max_count)
        elif name == "_sort":
            if value not in ("date", "-date"):
                raise InvalidInput("parameter '_sort': AuditEvent sorts by date or -date", expression=["_sort"])
            ascending = value == "date"
        elif name == "_cursor":
            cursor = value
        elif name not in ("_format", "_total", "_pretty"):
            if parser.strict:
                raise InvalidInput(f"unknown or unsupported parameter '{name}' for AuditEvent "
                                   f"(Prefer: handling=strict)", expression=[name])
            ignored.append(name)
    return clauses, count, ascending, cursor, ignored


def _clause(name: str, value: str) -> Any:
    if name == "patient":
        return AuditEventRow.person_id == parse_reference(name, value).id
    if name == "date":
        bounds = parse_date(name, value)
        column = AuditEventRow.recorded
        return {"eq": and_(column >= bounds.low, column <= bounds.high), "gt": column > bounds.high,
                "sa": column > bounds.high, "lt": column < bounds.low, "eb": column < bounds.low,
                "ge": column >= bounds.low, "le": column <= bounds.high}[bounds.prefix]
    token = parse_token(name, value)
    if name == "agent":
        return AuditEventRow.actor_user == token.code
    if name == "organization":
        return AuditEventRow.actor_ods == token.code
    if name == "outcome":
        if token.code not in _OUTCOMES:
            raise InvalidInput("parameter 'outcome': use 0, 4 or 8", expression=["outcome"])
        return AuditEventRow.outcome == _OUTCOMES[token.code]
    if token.system == DCM or token.code == "110127":
        return AuditEventRow.break_glass_reason.is_not(None)
    return AuditEventRow.action == token.code


def page(session: Session, clauses: list[Any], count: int, ascending: bool, cursor: Cursor | None,
         stamp: str) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """One page of AuditEvents with the cursors of the pages after and before it (None where there are none)."""
    events, first, last = search(session, clauses, count, ascending, cursor)
    forwards = cursor is None or cursor.direction == "n"
    if first is None or last is None:  # an empty page: past the end (or the start) of the trail
        return (events, *_links_from_empty(session, clauses, ascending, cursor, stamp))
    more_after = not forwards or has_more(session, clauses, ascending, last, True)
    more_before = cursor is not None and (forwards or has_more(session, clauses, ascending, first, False))
    return (events, Cursor("n", (str(last),), stamp).encode() if more_after else None,
            Cursor("p", (str(first),), stamp).encode() if more_before else None)


def _links_from_empty(session: Session, clauses: list[Any], ascending: bool, cursor: Cursor | None,
                      stamp: str) -> tuple[str | None, str | None]:
    """(next, previous) cursors of an empty page: back whence its cursor came, from the cursor's row inclusive. A
    cursor past the end (or start) of the trail is forged, as rows are never removed; the row at it, if it is one
    this search finds, is on no page reached walking back from there exclusive."""
    if cursor is None or not has_more(session, clauses, ascending, int(cursor.key[0]), cursor.direction == "p",
                                      inclusive=True):
        return None, None
    forwards = cursor.direction == "n"
    back = Cursor("p" if forwards else "n", cursor.key, stamp, inclusive=True).encode()
    return (None, back) if forwards else (back, None)


def search(session: Session, clauses: list[Any], count: int, ascending: bool,
           cursor: Cursor | None) -> tuple[list[dict[str, Any]], int | None, int | None]:
    """(AuditEvent resources, first id, last id) of one page; ids place the next/previous cursors."""
    statement: Select[Any] = select(AuditEventRow).where(*clauses)
    backwards = cursor is not None and cursor.direction == "p"
    if cursor is not None:
        statement = statement.where(_beyond(int(cursor.key[0]), ascending != backwards, cursor.inclusive))
    newest_first = not ascending if not backwards else ascending
    order = AuditEventRow.id.desc() if newest_first else AuditEventRow.id.asc()
    rows = list(session.scalars(statement.order_by(order).limit(count)))
    if backwards:
        rows.reverse()
    resources = [row.body | {"id": str(row.id), "meta": {"lastUpdated": row.recorded.isoformat()}} for row in rows]
    return resources, rows[0].id if rows else None, rows[-1].id if rows else None


def has_more(session: Session, clauses: list[Any], ascending: bool, beyond: int, forwards: bool,
             inclusive: bool = False) -> bool:
    """Is there any row on the far side of `beyond` (or at it, `inclusive`) in the given direction of
    presentation?"""
    later = _beyond(beyond, ascending == forwards, inclusive)
    return session.scalar(select(AuditEventRow.id).where(*clauses, later).limit(1)) is not None


def _beyond(mark: int, upwards: bool, inclusive: bool) -> Any:
    """Rows past `mark` in id order, up or down; `inclusive`: the row at it too."""
    column = AuditEventRow.id
    if inclusive:
        return column >= mark if upwards else column <= mark
    return column > mark if upwards else column < mark
