"""Community contacts as CSV, one row per contact, to Patient, Encounter and EpisodeOfCare.

A bad row is refused with its row number (the header is row 1) and the column at fault; the good rows of
the same file are kept. The columns are documented in docs/INGEST.md.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from services.ingest.feeds.model import LOCAL_ZONE, AdapterError, Mapped, MappedMessage, Rejected, parse_instant
from shared import nhs_number
from shared.fhir import NHS_NUMBER_SYSTEM, NHS_VERIFICATION_ENGLAND, NHS_VERIFICATION_EXT, ODS_ORG_SYSTEM, Issue

REQUIRED = ("contact_id", "local_patient_id", "family_name", "given_name", "birth_date", "service",
            "clinician_role", "contact_date", "outcome")
OPTIONAL = ("nhs_number", "nhs_number_status", "sex", "postcode", "service_code", "contact_time", "last_updated")
COLUMNS = REQUIRED + OPTIONAL
OUTCOMES = {"attended": "finished", "discharged": "finished", "referred-on": "finished",
            "did-not-attend": "cancelled", "cancelled": "cancelled"}
SEX = {"male": "male", "m": "male", "female": "female", "f": "female", "other": "other", "unknown": "unknown",
       "u": "unknown"}
OUTCOME_SYSTEM = "urn:scr:community-contact-outcome"
LOCAL_ID_SYSTEM = "urn:scr:local-patient-id:{}"
CONTACT_SYSTEM = "urn:scr:community-contact:{}"
_POSTCODE = re.compile(r"^([A-Z]{1,2}\d[A-Z\d]?)\s*(\d[A-Z]{2})$")
_MAX_FIELD = 200


@dataclass(frozen=True)
class Row:
    """One checked CSV row."""

    number: int
    values: dict[str, str]
    birth_date: str
    contact_start: str
    updated: datetime | None


def map_csv(content: bytes, *, org: str, max_rows: int) -> MappedMessage:
    """Map a CSV extract; AdapterError if the file as a whole is unusable (encoding, header, size)."""
    reader = _reader(content)
    message = MappedMessage(source_org=org, atomic=False)
    rows: list[Row] = []
    try:
        for count, (number, record) in enumerate(_records(reader), start=1):
            if count > max_rows:
                raise AdapterError(Issue(f"the file has more than {max_rows} rows", "rows", code="too-costly"))
            row, issues = _check(number, record)
            if row is None:
                message.rejected.append(Rejected(f"row[{number}]", issues, number))
            else:
                rows.append(row)
    except csv.Error as exc:
        raise AdapterError(Issue(f"row {reader.line_num} is not valid CSV: {exc}", f"row[{reader.line_num}]",
                                 code="structure")) from None
    if not rows and not message.rejected:
        raise AdapterError(Issue("the file has a header but no rows", "rows", code="required"))
    _map_rows(rows, org, message)
    return message


def _records(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str | None, Any]]]:
    """Each record with its row number as the sender sees it: the line it starts on, the header being 1.
    Counting records would miss the blank lines DictReader skips; its line_num is the line a record ends on,
    later than its first when a quoted field spans lines."""
    for record in reader:
        yield reader.line_num - _line_breaks(record), record


def _line_breaks(record: dict[str | None, Any]) -> int:
    """The line breaks inside a record's quoted fields (its extra fields under None included)."""
    values = [*record.values(), *(record.get(None) or [])]
    return sum(v.count("\n") for v in values if isinstance(v, str))


def _reader(content: bytes) -> csv.DictReader[str]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AdapterError(Issue(f"the file is not UTF-8 text (byte {exc.start})", "file", code="structure")) \
            from None
    if "\x00" in text:
        raise AdapterError(Issue("the file contains NUL bytes; it is not CSV text", "file", code="structure"))
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip().lower() for h in reader.fieldnames or []]
    except csv.Error as exc:
        raise AdapterError(Issue(f"the header row is not valid CSV: {exc}", "row[1]", code="structure")) from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise AdapterError(Issue(f"the header lacks required columns: {', '.join(missing)}", "row[1]",
                                 code="required"))
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise AdapterError(Issue(f"the header has unknown columns: {', '.join(unknown)[:200]}", "row[1]",
                                 code="structure"))
    reader.fieldnames = header
    return reader


def _check(number: int, record: dict[str | None, Any]) -> tuple[Row | None, list[Issue]]:
    where = f"row[{number}]"
    if None in record or any(v is None for v in record.values()):
        return None, [Issue("the row does not have the same number of fields as the header", where,
                            code="structure")]
    values = {k: v.strip() for k, v in record.items() if isinstance(k, str)}
    issues = [Issue(f"{c} is required", f"{where}.{c}", code="required") for c in REQUIRED if not values.get(c)]
    issues += [Issue(f"{c} is longer than {_MAX_FIELD} characters", f"{where}.{c}", code="too-long")
               for c, v in values.items() if len(v) > _MAX_FIELD]
    birth = _date(values.get("birth_date", ""))
    contact_day = _date(values.get("contact_date", ""))
    contact_time = _time(values.get("contact_time", ""))
    updated = parse_instant(values.get("last_updated")) if values.get("last_updated") else None
    checks = [
        ("birth_date", values.get("birth_date") and birth is None, "is not a date (YYYY-MM-DD or DD/MM/YYYY)"),
        ("birth_date", birth is not None and birth > date.today(), "is in the future"),
        ("contact_date", values.get("contact_date") and contact_day is None,
         "is not a date (YYYY-MM-DD or DD/MM/YYYY)"),
        ("contact_time", values.get("contact_time") and contact_time is None, "is not a time (HH:MM)"),
        ("last_updated", values.get("last_updated") and updated is None, "is not an ISO 8601 date-time"),
        ("outcome", values.get("outcome") and values["outcome"].lower() not in OUTCOMES,
         f"must be one of {', '.join(OUTCOMES)}"),
        ("sex", values.get("sex") and values["sex"].lower() not in SEX, "must be male, female, other or unknown"),
        ("postcode", values.get("postcode") and not _POSTCODE.match(values["postcode"].upper()),
         "is not a UK postcode"),
        ("nhs_number_status", values.get("nhs_number_status") and
         values["nhs_number_status"] not in {f"0{n}" for n in range(1, 9)}, "must be a tracing status 01-08"),
    ]
    issues += [Issue(f"{column} {values.get(column)!r} {why}", f"{where}.{column}", code="value")
               for column, failed, why in checks if failed]
    if values.get("nhs_number") and (problem := nhs_number.problem(values["nhs_number"])):
        issues.append(Issue(problem, f"{where}.nhs_number", code="value"))
    if issues:
        return None, issues
    start = datetime.combine(contact_day, contact_time or time(0, 0)).replace(tzinfo=LOCAL_ZONE)  # type: ignore[arg-type]
    contact_start = start.isoformat() if contact_time else contact_day.isoformat()  # type: ignore[union-attr]
    return Row(number, values, birth.isoformat(), contact_start, updated), []  # type: ignore[union-attr]


def _date(value: str) -> date | None:
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


def _time(value: str) -> time | None:
    for fmt in ("%H:%M", "%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt).time()
        except ValueError:
            continue
    return None


def _map_rows(rows: list[Row], org: str, message: MappedMessage) -> None:
    patients: dict[str, str] = {}
    episodes: dict[str, list[Row]] = {}
    for row in rows:
        local_id = row.values["local_patient_id"]
        if local_id not in patients:
            patients[local_id] = f"urn:scr:csv:patient:{local_id}"
            message.items.append(Mapped(_patient(row, org), f"local:{local_id}", row.updated,
                                        refs=(patients[local_id],), where=f"row[{row.number}]", entry=row.number))
        episodes.setdefault(_episode_key(row), []).append(row)
    for key, episode_rows in episodes.items():
        message.items.append(_episode(key, episode_rows, org, patients))
    for row in rows:
        message.items.append(_encounter(row, org, patients))


def _patient(row: Row, org: str) -> dict[str, Any]:
    values = row.values
    identifiers: list[dict[str, Any]] = [{"system": LOCAL_ID_SYSTEM.format(org), "value": values["local_patient_id"]}]
    if values.get("nhs_number"):
        nhs: dict[str, Any] = {"system": NHS_NUMBER_SYSTEM, "value": nhs_number.normalise(values["nhs_number"])}
        if values.get("nhs_number_status"):
            nhs["extension"] = [{"url": NHS_VERIFICATION_EXT, "valueCodeableConcept": {"coding": [
                {"system": NHS_VERIFICATION_ENGLAND, "code": values["nhs_number_status"]}]}}]
        identifiers.insert(0, nhs)
    patient: dict[str, Any] = {
        "resourceType": "Patient", "identifier": identifiers,
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
        "name": [{"use": "official", "family": values["family_name"], "given": [values["given_name"]]}],
        "birthDate": row.birth_date,
    }
    if values.get("sex"):
        patient["gender"] = SEX[values["sex"].lower()]
    if values.get("postcode"):
        outward, inward = _POSTCODE.match(values["postcode"].upper()).groups()  # type: ignore[union-attr]
        patient["address"] = [{"use": "home", "postalCode": f"{outward} {inward}"}]
    return patient


def _episode_key(row: Row) -> str:
    return f"episode:{row.values['local_patient_id']}:{row.values.get('service_code') or row.values['service']}"


def _service(row: Row) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": row.values["service"]}
    if row.values.get("service_code"):
        concept["coding"] = [{"system": "urn:scr:community-service", "code": row.values["service_code"],
                              "display": row.values["service"]}]
    return concept


def _episode(key: str, rows: list[Row], org: str, patients: dict[str, str]) -> Mapped:
    first = rows[0]
    start = min(r.contact_start[:10] for r in rows)
    discharged = [r.contact_start[:10] for r in rows if r.values["outcome"].lower() == "discharged"]
    fields = {
        "resourceType": "EpisodeOfCare", "type": [_service(first)],
        "patient": {"reference": patients[first.values["local_patient_id"]]},
        "managingOrganization": {"identifier": {"system": ODS_ORG_SYSTEM, "value": org}},
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-EpisodeOfCare"]},
    }
    merge = _EpisodeChange(fields, start, max(discharged) if discharged else None)
    updated = max((r.updated for r in rows if r.updated), default=None)
    return Mapped(merge(None), key, updated, refs=(f"urn:scr:csv:{key}",),
                  patient_ref=patients[first.values["local_patient_id"]], merge=merge,
                  where=f"row[{first.number}]", entry=first.number)


@dataclass(frozen=True)
class _EpisodeChange:
    """An episode grows across files: it starts at the first contact ever sent and ends at a discharge."""

    fields: dict[str, Any]
    start: str
    end: str | None

    def __call__(self, current: dict[str, Any] | None) -> dict[str, Any]:
        period = dict((current or {}).get("period") or {})
        period["start"] = min(filter(None, [period.get("start"), self.start]))
        if self.end:
            period["end"] = max(filter(None, [period.get("end"), self.end]))
        episode = dict(self.fields) | {"period": period, "status": "finished" if "end" in period else "active"}
        return episode


def _encounter(row: Row, org: str, patients: dict[str, str]) -> Mapped:
    outcome = row.values["outcome"].lower()
    encounter = {
        "resourceType": "Encounter", "status": OUTCOMES[outcome],
        "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Encounter"]},
        "identifier": [{"system": CONTACT_SYSTEM.format(org), "value": row.values["contact_id"]}],
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                  "display": "ambulatory"},
        "subject": {"reference": patients[row.values["local_patient_id"]]},
        "serviceType": _service(row),
        "participant": [{"type": [{"text": row.values["clinician_role"]}]}],
        "period": {"start": row.contact_start},
        "episodeOfCare": [{"reference": f"urn:scr:csv:{_episode_key(row)}"}],
        "hospitalization": {"dischargeDisposition": {"coding": [{"system": OUTCOME_SYSTEM, "code": outcome}]}},
        "serviceProvider": {"identifier": {"system": ODS_ORG_SYSTEM, "value": org}},
    }
    return Mapped(encounter, f"contact:{row.values['contact_id']}", row.updated,
                  patient_ref=patients[row.values["local_patient_id"]], where=f"row[{row.number}]",
                  entry=row.number)
