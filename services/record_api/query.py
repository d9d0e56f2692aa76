"""FHIR search parameters parsed and checked before any SQL runs: what is asked for, in what order, how many.

Parameters come from `shared.search.SEARCH_PARAMS` (the one definition ingest indexes by) plus the common
`_id`/`_lastUpdated` and the result parameters. Malformed values are errors naming the parameter; unknown
parameters are errors under `Prefer: handling=strict` and are ignored and reported otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from shared.errors import InvalidInput
from shared.fhir import canonical_system
from shared.search import (
    DATE,
    EXACT_TEXT_LENGTH,
    REFERENCE,
    SEARCH_PARAMS,
    STRING,
    TOKEN,
    ParamDef,
    date_bounds,
    normalise_postcode,
    normalise_text,
)

DATE_PREFIXES = ("eq", "gt", "lt", "ge", "le", "sa", "eb")
STRING_MODIFIERS = ("exact", "contains")
SUMMARY_VALUES = ("count", "data", "false")
SORTABLE = ("_lastUpdated", "_id", "date")
# Patient searches walk persons by id (store.persons_statement), either way; a person's "last updated" is made from
# their sources when their Patient is built, so no index could page persons by it.
PATIENT_SORTABLE = ("_id",)
# Result parameters every search accepts; `_cursor` carries the opaque page position of next/previous links.
RESULT_PARAMS = frozenset({"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_cursor",
                           "_total", "_format", "_pretty"})
COMMON_PARAMS = (ParamDef("_id", TOKEN, ("id",), documentation="logical id"),
                 ParamDef("_lastUpdated", DATE, ("meta.lastUpdated",), documentation="when the record last changed"))
PATIENT_REFERENCE_PARAMS = ("patient", "subject")
# Reference parameters that may not be followed by _include: following them would reveal what S-flag
# redaction removes (the registered GP).
UNINCLUDABLE = frozenset({("Patient", "general-practitioner")})


@dataclass(frozen=True)
class Token:
    system: str | None  # None: any system; "" : no system (`|code`)
    code: str | None  # None: any code in the system (`system|`)


@dataclass(frozen=True)
class DateValue:
    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class Reference:
    type: str | None
    id: str


@dataclass(frozen=True)
class Criterion:
    """One search parameter occurrence: its values are ORed; occurrences of parameters are ANDed."""

    name: str
    kind: str
    modifier: str | None
    values: tuple[Token | DateValue | Reference | str, ...]


@dataclass(frozen=True)
class Include:
    source_type: str
    param: str
    reverse: bool = False


@dataclass(frozen=True)
class Sort:
    key: str = "_lastUpdated"
    descending: bool = True


@dataclass
class SearchQuery:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 50
    sort: Sort = field(default_factory=Sort)
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    cursor: str | None = None
    ignored: list[str] = field(default_factory=list)

    def criteria_named(self, *names: str) -> list[Criterion]:
        return [c for c in self.criteria if c.name in names]

    def without(self, *names: str) -> list[Criterion]:
        return [c for c in self.criteria if c.name not in names]


def param_defs(resource_type: str) -> dict[str, ParamDef]:
    """Every search parameter a type supports, by name (the CapabilityStatement advertises exactly these)."""
    return {d.name: d for d in (*COMMON_PARAMS, *SEARCH_PARAMS.get(resource_type, ()))}


def include_targets(resource_type: str) -> list[str]:
    """`_include` values a type supports: each of its reference parameters."""
    return [f"{resource_type}:{d.name}" for d in SEARCH_PARAMS.get(resource_type, ())
            if d.kind == REFERENCE and (resource_type, d.name) not in UNINCLUDABLE]


def revinclude_targets(resource_type: str) -> list[str]:
    """`_revinclude` values a type supports: clinical types pointing at a Patient, and Provenance:target."""
    found = ["Provenance:target"]
    if resource_type == "Patient":
        found += [f"{t}:{p}" for t in SEARCH_PARAMS if t not in ("Patient", "Provenance", "Consent")
                  for p in PATIENT_REFERENCE_PARAMS if any(d.name == p for d in SEARCH_PARAMS[t])]
    return found


class Parser:
    """Turns the query string of one request into a SearchQuery (or raises InvalidInput naming the parameter)."""

    def __init__(self, *, strict: bool, default_count: int, max_count: int) -> None:
        self.strict, self.default_count, self.max_count = strict, default_count, max_count

    def search(self, resource_type: str, items: Iterable[tuple[str, str]],
               extra: Iterable[str] = ()) -> SearchQuery:
        query = SearchQuery(resource_type, count=self.default_count,
                            sort=Sort("_id", False) if resource_type == "Patient" else Sort())
        defs = param_defs(resource_type)
        for raw_name, value in items:
            name, _, modifier = raw_name.partition(":")
            if raw_name in ("_include", "_revinclude"):
                self._include(query, raw_name, value)
            elif name in RESULT_PARAMS or name in extra:
                self._result(query, name, modifier, value)
            elif name in defs:
                query.criteria.append(parse_criterion(defs[name], modifier or None, value))
            else:
                self.unknown(query, raw_name)
        return query

    def unknown(self, query: SearchQuery, raw_name: str, what: str = "parameter") -> None:
        if self.strict:
            raise InvalidInput(f"unknown or unsupported {what} '{raw_name}' for {query.resource_type} "
                               f"(Prefer: handling=strict)", expression=[raw_name])
        query.ignored.append(raw_name)

    def _result(self, query: SearchQuery, name: str, modifier: str, value: str) -> None:
        if modifier:
            raise InvalidInput(f"parameter '{name}' takes no modifier", expression=[name])
        if name == "_count":
            query.count = parse_count(value, self.max_count)
        elif name == "_sort":
            query.sort = parse_sort(value, query.resource_type)
        elif name == "_summary":
            if value not in SUMMARY_VALUES:
                raise InvalidInput(f"parameter '_summary': supported values are {', '.join(SUMMARY_VALUES)}",
                                   expression=["_summary"])
            query.summary = None if value == "false" else value
        elif name == "_elements":
            query.elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif name == "_cursor":
            query.cursor = value
        elif name == "_format" and value not in ("json", "application/json", "application/fhir+json"):
            raise InvalidInput("parameter '_format': only JSON is served", expression=["_format"])
        # _total, _pretty and the caller's own extra names are accepted and need nothing here.

    def _include(self, query: SearchQuery, name: str, value: str) -> None:
        reverse = name == "_revinclude"
        allowed = revinclude_targets(query.resource_type) if reverse else include_targets(query.resource_type)
        if value not in allowed:
            self.unknown(query, f"{name}={value}", "value")
            return
        source_type, _, param = value.partition(":")
        query.includes.append(Include(source_type, param, reverse))


def parse_count(value: str, max_count: int) -> int:
    try:
        count = int(value)
    except ValueError:
        raise InvalidInput(f"parameter '_count' must be a whole number, not {value[:40]!r}",
                           expression=["_count"]) from None
    if count < 0:
        raise InvalidInput("parameter '_count' must not be negative", expression=["_count"])
    return min(count, max_count)  # FHIR lets a server return fewer than asked; the maximum is advertised


def parse_sort(value: str, resource_type: str) -> Sort:
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if len(keys) != 1:
        raise InvalidInput("parameter '_sort': one sort key is supported", expression=["_sort"])
    key = keys[0]
    descending = key.startswith("-")
    key = key.lstrip("-")
    if key not in SORTABLE or (key == "date" and "date" not in param_defs(resource_type)):
        raise InvalidInput(f"parameter '_sort': cannot sort {resource_type} by {key!r}", expression=["_sort"])
    if resource_type == "Patient" and key not in PATIENT_SORTABLE:
        # Refused, not answered in another order: a client paging by a key it did not get would be misled.
        raise InvalidInput(f"parameter '_sort': Patient searches are ordered by _id or -_id only, not {value!r}",
                           expression=["_sort"])
    return Sort(key, descending)


def parse_criterion(definition: ParamDef, modifier: str | None, raw: str) -> Criterion:
    name = definition.name
    if modifier and not (definition.kind == STRING and modifier in STRING_MODIFIERS):
        raise InvalidInput(f"parameter '{name}' does not support the modifier ':{modifier}'",
                           expression=[f"{name}:{modifier}"])
    parts = [p for p in _split_values(raw)]
    if not parts or any(p == "" for p in parts):
        raise InvalidInput(f"parameter '{name}' needs a value", expression=[name])
    if definition.kind == STRING and modifier == "exact":
        # Case and accents count: the search row keeps the text as written in its code column, so an exact match
        # is a token match on it (the parameter's name is kept, so S-flag rules still see a postcode search).
        return Criterion(name, TOKEN, modifier, tuple(Token(None, p[:EXACT_TEXT_LENGTH]) for p in parts))
    parse = {TOKEN: parse_token, DATE: parse_date, REFERENCE: parse_reference, STRING: _string_parser(name)}
    values = tuple(parse[definition.kind](name, p) for p in parts)
    if definition.implied_system:
        values = tuple(_implied(v, definition.implied_system) for v in values)  # type: ignore[arg-type]
    return Criterion(name, definition.kind, modifier, values)


def _implied(token: Token, system: str) -> Token:
    """`system|code` (or `system|`) on a code element whose binding implies `system`: as indexed, no system."""
    return Token("", token.code) if token.system == system else token


def _split_values(raw: str) -> list[str]:
    """Comma-separated alternatives; `\\,` is a literal comma (FHIR escaping)."""
    values, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return values


def parse_token(name: str, value: str) -> Token:
    if "|" not in value:
        return Token(None, value)
    system, _, code = value.partition("|")
    if not system and not code:
        raise InvalidInput(f"parameter '{name}': '|' alone is not a token", expression=[name])
    return Token(canonical_system(system) if system else "", code or None)


def parse_date(name: str, value: str) -> DateValue:
    prefix, text = ("eq", value)
    if value[:2].isalpha():
        prefix, text = value[:2], value[2:]
        if prefix not in DATE_PREFIXES:
            raise InvalidInput(f"parameter '{name}': the prefix '{prefix}' is not supported "
                               f"({', '.join(DATE_PREFIXES)})", expression=[name])
    low, high = date_bounds(text)
    if low is None or high is None:
        raise InvalidInput(f"parameter '{name}': {text[:40]!r} is not a FHIR date or dateTime", expression=[name])
    return DateValue(prefix, low, high)


def parse_reference(name: str, value: str) -> Reference:
    parts = value.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) == 1:
        return Reference(None, _check_id(name, parts[0]))
    return Reference(parts[-2], _check_id(name, parts[-1]))


def _check_id(name: str, value: str) -> str:
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-." for c in value):
        raise InvalidInput(f"parameter '{name}': {value[:40]!r} is not a resource id", expression=[name])
    return value


def _string_parser(name: str):  # type: ignore[no-untyped-def]
    normalise = normalise_postcode if name == "address-postalcode" else normalise_text

    def parse(param: str, value: str) -> str:
        text = normalise(value)
        if not text:
            raise InvalidInput(f"parameter '{param}' needs a value", expression=[param])
        return text

    return parse


def is_valid_id(value: str) -> bool:
    return bool(value) and len(value) <= 64 and all(c.isalnum() or c in "-." for c in value)
