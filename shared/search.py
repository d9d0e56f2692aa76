"""Which search parameters are indexed for each resource type, and how values are extracted and normalised.

Ingest writes these rows when it stores a resource; the record API queries them and advertises exactly this
table in its CapabilityStatement; operators rebuild them from stored resources. One definition for all three.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

STRING, TOKEN, DATE, REFERENCE = "string", "token", "date", "reference"


@dataclass(frozen=True)
class ParamDef:
    name: str
    kind: str
    paths: tuple[str, ...]  # dotted element paths; a trailing [x] means any choice type (effectiveDateTime...)
    target: str | None = None  # for references: only index references to this type
    documentation: str = ""
    # For a `code` element: the system its required binding implies (IMPLIED_SYSTEMS). The element carries none,
    # so it is indexed without one, and a search naming this system is a search for the code alone.
    implied_system: str | None = None


def _p(name: str, kind: str, *paths: str, target: str | None = None, doc: str = "") -> ParamDef:
    return ParamDef(name, kind, paths, target, doc)


_SUBJECT = (_p("subject", REFERENCE, "subject"), _p("patient", REFERENCE, "subject", target="Patient"))
_PATIENT = (_p("patient", REFERENCE, "patient", target="Patient"),)

SEARCH_PARAMS: dict[str, tuple[ParamDef, ...]] = {
    "Patient": (
        _p("identifier", TOKEN, "identifier"),
        _p("family", STRING, "name.family"),
        _p("given", STRING, "name.given"),
        _p("name", STRING, "name.family", "name.given", "name.text"),
        _p("birthdate", DATE, "birthDate"),
        _p("gender", TOKEN, "gender"),
        _p("address-postalcode", STRING, "address.postalCode"),
        _p("general-practitioner", REFERENCE, "generalPractitioner"),
    ),
    "Encounter": (*_SUBJECT, _p("date", DATE, "period"), _p("status", TOKEN, "status"),
                  _p("class", TOKEN, "class"), _p("type", TOKEN, "type"), _p("identifier", TOKEN, "identifier"),
                  _p("episode-of-care", REFERENCE, "episodeOfCare")),
    "Condition": (*_SUBJECT, _p("code", TOKEN, "code"), _p("category", TOKEN, "category"),
                  _p("clinical-status", TOKEN, "clinicalStatus"), _p("status", TOKEN, "clinicalStatus"),
                  _p("date", DATE, "onset[x]", "recordedDate",
                     doc="onset or recorded date (Condition's onset-date, offered under the common name)"),
                  _p("identifier", TOKEN, "identifier")),
    "Observation": (*_SUBJECT, _p("code", TOKEN, "code"), _p("category", TOKEN, "category"),
                    _p("status", TOKEN, "status"), _p("date", DATE, "effective[x]"),
                    _p("identifier", TOKEN, "identifier"), _p("encounter", REFERENCE, "encounter")),
    "AllergyIntolerance": (*_PATIENT, _p("code", TOKEN, "code"), _p("category", TOKEN, "category"),
                           _p("clinical-status", TOKEN, "clinicalStatus"), _p("status", TOKEN, "clinicalStatus"),
                           _p("date", DATE, "recordedDate", "onset[x]"),
                           _p("identifier", TOKEN, "identifier")),
    "MedicationStatement": (*_SUBJECT, _p("code", TOKEN, "medicationCodeableConcept"),
                            _p("status", TOKEN, "status"), _p("date", DATE, "effective[x]", "dateAsserted"),
                            _p("category", TOKEN, "category"), _p("identifier", TOKEN, "identifier")),
    "MedicationRequest": (*_SUBJECT, _p("code", TOKEN, "medicationCodeableConcept"),
                          _p("status", TOKEN, "status"), _p("intent", TOKEN, "intent"),
                          _p("category", TOKEN, "category"), _p("date", DATE, "authoredOn"),
                          _p("identifier", TOKEN, "identifier")),
    "Immunization": (*_PATIENT, _p("code", TOKEN, "vaccineCode"), _p("vaccine-code", TOKEN, "vaccineCode"),
                     _p("status", TOKEN, "status"), _p("date", DATE, "occurrence[x]"),
                     _p("identifier", TOKEN, "identifier")),
    "Procedure": (*_SUBJECT, _p("code", TOKEN, "code"), _p("category", TOKEN, "category"),
                  _p("status", TOKEN, "status"), _p("date", DATE, "performed[x]"),
                  _p("identifier", TOKEN, "identifier")),
    "CarePlan": (*_SUBJECT, _p("category", TOKEN, "category"), _p("status", TOKEN, "status"),
                 _p("intent", TOKEN, "intent"), _p("date", DATE, "period"), _p("identifier", TOKEN, "identifier")),
    "Flag": (*_SUBJECT, _p("code", TOKEN, "code"), _p("category", TOKEN, "category"),
             _p("status", TOKEN, "status"), _p("date", DATE, "period"), _p("identifier", TOKEN, "identifier")),
    "DocumentReference": (*_SUBJECT, _p("type", TOKEN, "type"), _p("code", TOKEN, "type"),
                          _p("category", TOKEN, "category"), _p("status", TOKEN, "status"),
                          _p("date", DATE, "date"), _p("identifier", TOKEN, "identifier")),
    "EpisodeOfCare": (*_PATIENT, _p("type", TOKEN, "type"), _p("code", TOKEN, "type"),
                      _p("status", TOKEN, "status"), _p("date", DATE, "period"),
                      _p("organization", REFERENCE, "managingOrganization"),
                      _p("identifier", TOKEN, "identifier")),
    "ServiceRequest": (*_SUBJECT, _p("code", TOKEN, "code"), _p("category", TOKEN, "category"),
                       _p("status", TOKEN, "status"), _p("intent", TOKEN, "intent"),
                       _p("date", DATE, "authoredOn"), _p("identifier", TOKEN, "identifier")),
    "DiagnosticReport": (*_SUBJECT, _p("code", TOKEN, "code"), _p("category", TOKEN, "category"),
                         _p("status", TOKEN, "status"), _p("date", DATE, "effective[x]"),
                         _p("identifier", TOKEN, "identifier")),
    "RelatedPerson": (*_PATIENT, _p("relationship", TOKEN, "relationship"),
                      _p("name", STRING, "name.family", "name.given", "name.text"),
                      _p("identifier", TOKEN, "identifier")),
    "Consent": (*_PATIENT, _p("status", TOKEN, "status"), _p("category", TOKEN, "category"),
                _p("scope", TOKEN, "scope"), _p("date", DATE, "dateTime")),
    "Appointment": (_p("patient", REFERENCE, "participant.actor", target="Patient"),
                    _p("status", TOKEN, "status"), _p("date", DATE, "start"),
                    _p("identifier", TOKEN, "identifier")),
    "Provenance": (_p("target", REFERENCE, "target"), _p("patient", REFERENCE, "target", target="Patient"),
                   _p("date", DATE, "recorded")),
}

_FHIR = "http://hl7.org/fhir/"
# Token parameters on `code` elements (not Coding or CodeableConcept: Condition's and AllergyIntolerance's
# clinical status carry their own system) and the system of the code system their required binding draws from,
# per FHIR R4. Such a code is indexed without a system, so `system|code` must be read as the code alone, and
# `system|` with any other system finds nothing.
IMPLIED_SYSTEMS: dict[tuple[str, str], str] = {
    ("Patient", "gender"): _FHIR + "administrative-gender",
    ("Encounter", "status"): _FHIR + "encounter-status",
    ("Observation", "status"): _FHIR + "observation-status",
    ("AllergyIntolerance", "category"): _FHIR + "allergy-intolerance-category",
    ("MedicationStatement", "status"): _FHIR + "CodeSystem/medication-statement-status",
    ("MedicationRequest", "status"): _FHIR + "CodeSystem/medicationrequest-status",
    ("MedicationRequest", "intent"): _FHIR + "CodeSystem/medicationrequest-intent",
    ("Immunization", "status"): _FHIR + "event-status",
    ("Procedure", "status"): _FHIR + "event-status",
    ("CarePlan", "status"): _FHIR + "request-status",
    ("CarePlan", "intent"): _FHIR + "request-intent",
    ("Flag", "status"): _FHIR + "flag-status",
    ("DocumentReference", "status"): _FHIR + "document-reference-status",
    ("EpisodeOfCare", "status"): _FHIR + "episode-of-care-status",
    ("ServiceRequest", "status"): _FHIR + "request-status",
    ("ServiceRequest", "intent"): _FHIR + "request-intent",
    ("DiagnosticReport", "status"): _FHIR + "diagnostic-report-status",
    ("Consent", "status"): _FHIR + "consent-state-codes",
    ("Appointment", "status"): _FHIR + "appointmentstatus",
}
SEARCH_PARAMS = {resource_type: tuple(replace(d, implied_system=IMPLIED_SYSTEMS.get((resource_type, d.name)))
                                      for d in definitions)
                 for resource_type, definitions in SEARCH_PARAMS.items()}


@dataclass(frozen=True)
class SearchRow:
    param: str
    system: str | None = None
    code: str | None = None  # a token's code; for a string, the text as written (what `:exact` compares)
    text: str | None = None
    date_low: datetime | None = None
    date_high: datetime | None = None
    ref_type: str | None = None
    ref_id: str | None = None


EXACT_TEXT_LENGTH = 256  # the search row's code column


def normalise_text(value: str) -> str:
    """FHIR string matching is case- and accent-insensitive: fold both, collapse spaces."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())[:256]


def normalise_postcode(value: str) -> str:
    return re.sub(r"\s+", "", value).casefold()


def extract(resource: dict[str, Any]) -> list[SearchRow]:
    """The search rows for one resource, per SEARCH_PARAMS; unknown types index nothing."""
    rows: list[SearchRow] = []
    for definition in SEARCH_PARAMS.get(resource.get("resourceType", ""), ()):
        for path in definition.paths:
            for value in _values(resource, path.split(".")):
                rows.extend(_rows(definition, path, value))
    return list(dict.fromkeys(rows))


def _values(node: Any, parts: list[str]) -> list[Any]:
    if not parts:
        return node if isinstance(node, list) else [node]
    if isinstance(node, list):
        return [v for item in node for v in _values(item, parts)]
    if not isinstance(node, dict):
        return []
    head = parts[0]
    if head.endswith("[x]"):
        stem = head[:-3]
        return [(k, v) for k, v in node.items() if k.startswith(stem) and k != stem] if len(parts) == 1 else []
    return _values(node.get(head), parts[1:]) if head in node else []


def _rows(definition: ParamDef, path: str, value: Any) -> list[SearchRow]:
    choice_type = None
    if isinstance(value, tuple):  # from a [x] path: (elementName, value)
        choice_type, value = value
    name = definition.name
    if definition.kind == STRING and isinstance(value, str):
        text = normalise_postcode(value) if name == "address-postalcode" else normalise_text(value)
        return [SearchRow(name, text=text, code=value[:EXACT_TEXT_LENGTH])]
    if definition.kind == TOKEN:
        return [SearchRow(name, system=s, code=c) for s, c in _tokens(value)]
    if definition.kind == DATE:
        low, high = _date_range(value, choice_type)
        return [SearchRow(name, date_low=low, date_high=high)] if low else []
    if definition.kind == REFERENCE and isinstance(value, dict):
        ref = _reference(value.get("reference"))
        if ref and (definition.target is None or ref[0] == definition.target):
            return [SearchRow(name, ref_type=ref[0], ref_id=ref[1])]
    return []


def _tokens(value: Any) -> list[tuple[str | None, str]]:
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or "text" in value:  # CodeableConcept
        return [(c.get("system"), str(c["code"])) for c in value.get("coding", []) if isinstance(c, dict)
                and c.get("code")]
    if "code" in value:  # Coding
        return [(value.get("system"), str(value["code"]))]
    if "value" in value:  # Identifier
        from shared.fhir import canonical_system

        return [(canonical_system(value.get("system")), str(value["value"]))]
    return []


def _reference(reference: Any) -> tuple[str, str] | None:
    if not isinstance(reference, str) or reference.startswith(("urn:", "#")):
        return None
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


def _date_range(value: Any, choice_type: str | None) -> tuple[datetime | None, datetime | None]:
    if isinstance(value, dict):  # Period
        start, end = value.get("start"), value.get("end")
        low = date_bounds(start)[0] if isinstance(start, str) else None
        high = date_bounds(end)[1] if isinstance(end, str) else None
        if low is None and high is None:
            return None, None
        return low or EARLIEST, high or LATEST
    if isinstance(value, str) and (choice_type is None or "Date" in choice_type or choice_type.endswith("Instant")):
        return date_bounds(value)
    return None, None


_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$")


# The calendar's ends as instants: a value whose span (or whose offset) reaches past them is clamped to them, so
# 9999-12-31 or 0001-01-01T00:30+01:00 (valid FHIR) is indexed and searched, never an overflow.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def date_bounds(value: str) -> tuple[datetime | None, datetime | None]:
    """The instant range a FHIR date/dateTime covers: '1980' is all of 1980, '1980-05-01T10:00Z' is a minute."""
    match = _DATE.match(value.strip())
    if not match:
        return None, None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        if hour is None:  # a date: a whole year, month or day, in UTC
            last_month = int(month or 12)
            last_day = int(day) if day else calendar.monthrange(int(year), last_month)[1]
            return (datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC),
                    datetime(int(year), last_month, last_day, 23, 59, 59, 999999, tzinfo=UTC))
        text = f"{year}-{month}-{day}T{hour}:{minute}:{second or '00'}{fraction or ''}{_zone(zone)}"
        instant = datetime.fromisoformat(text)  # checks the offset too (+25:00 is no offset)
    except ValueError:
        return None, None
    wall = instant.replace(tzinfo=None)
    if second is None:
        last = wall.replace(second=59, microsecond=999999)
    else:
        last = wall if fraction else wall.replace(microsecond=999999)
    return _as_utc(wall, instant.tzinfo), _as_utc(last, instant.tzinfo)


def _as_utc(wall: datetime, zone: tzinfo | None) -> datetime:
    """A wall-clock time at an offset as a UTC instant, clamped to the calendar's ends."""
    offset = (zone.utcoffset(wall) if zone else None) or timedelta(0)
    try:
        return (wall - offset).replace(tzinfo=UTC)
    except OverflowError:
        return EARLIEST if offset > timedelta(0) else LATEST


def _zone(zone: str | None) -> str:
    return "+00:00" if zone in (None, "Z") else zone
