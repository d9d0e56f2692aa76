"""HL7 v2 (ER7) messages: parsing with hl7apy into positional segments, timestamps, and ACKs.

hl7apy checks the framing (MSH, encoding characters, segment names); fields are then read by position,
because NHS ITK feeds use Z-segments and local quirks a strict message structure would refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from typing import Literal

from hl7apy import load_reference
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from services.ingest.feeds.model import LOCAL_ZONE, AdapterError
from shared.fhir import Issue

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")
_ESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}
_STANDARD_MSH = "MSH|^~\\&|"
_FAST_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1"})
_FAST_SEGMENTS = frozenset({"MSH", "EVN", "PID", "PD1", "PV1", "PV2", "NK1", "AL1", "DG1", "MRG"})
_Z_SEGMENT = re.compile(r"^Z[A-Z0-9]{2}$")
_CONTROL = re.compile(r"[\x00-\x0c\x0e-\x1f\x7f]")
_PADDED = re.compile(r"[|^~&\r] | (?=[|^~&\r]|$)")  # a value with leading or trailing spaces
HL7_NULL = '""'  # HL7 v2 "delete the value": unlike an empty field, which only says nothing


@dataclass
class Segment:
    """One segment, its fields by position (1-based, as the specification numbers them), repetitions kept."""

    name: str
    index: int  # 1-based occurrence of this segment name in the message
    fields: dict[int, list[str]] = field(default_factory=dict)
    separators: tuple[str, str, str] = ("^", "&", "\\")

    def repetitions(self, number: int) -> list[list[str]]:
        """Each repetition of a field as its unescaped components. The HL7 null reads as no value: every
        element is built from the message afresh, so what the sender deletes is simply left out."""
        component, subcomponent, escape = self.separators
        return [[_component(c.split(subcomponent)[0], escape) for c in rep.split(component)]
                for rep in self.fields.get(number, []) if rep]

    def is_null(self, number: int) -> bool:
        """Whether the field was sent as the HL7 null: for the few values kept across messages (a stored
        Encounter's details, the S-flag), where deleting differs from saying nothing."""
        return [rep.strip() for rep in self.fields.get(number, [])] == [HL7_NULL]

    def get(self, number: int, component: int = 1, repetition: int = 0) -> str:
        """One component of one repetition ('' when absent)."""
        reps = self.repetitions(number)
        if repetition >= len(reps) or component > len(reps[repetition]):
            return ""
        return reps[repetition][component - 1].strip()


@dataclass
class Message:
    segments: list[Segment]

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]


def parse(text: str) -> Message:
    """Parse an ER7 message; AdapterError (reject) if it is not one."""
    normalised = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r \t\x00")
    if not normalised.startswith("MSH"):
        # A batch framed as one message (MLLP carries one message a frame) gets told where batches go.
        batch = " (an HL7 batch: send it to POST /ingest/hl7v2)" if normalised.startswith(("FHS|", "BHS|")) else ""
        raise AdapterError(Issue(f"the message does not start with an MSH segment{batch}", "MSH", code="structure"),
                           hl7_location=("MSH", 0, 0), hl7_code="100")
    if "\x00" in normalised:
        # PostgreSQL text cannot hold NUL, and no HL7 field may carry one.
        raise AdapterError(Issue("the message contains a NUL character", "MSH", code="structure"),
                           hl7_location=("MSH", 0, 0), hl7_code="100")
    fast = fast_segments(normalised)
    return Message(fast if fast is not None else full_segments(normalised))


def full_segments(normalised: str) -> list[Segment]:
    """Segments through hl7apy, which checks the framing of any message (the reference path)."""
    try:
        parsed = parse_message(normalised, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    except Exception as exc:  # hl7apy raises many types for malformed input; every one is a rejection
        raise AdapterError(Issue(f"the message cannot be parsed as HL7 v2: {_first_line(exc)}", "MSH",
                                 code="structure"), hl7_location=("MSH", 0, 0), hl7_code="100") from None
    chars = parsed.encoding_chars
    separators = (chars["COMPONENT"], chars["SUBCOMPONENT"], chars["ESCAPE"])
    counts: dict[str, int] = {}
    segments = []
    for element in parsed.children:
        # Fields by position from the segment's own text: hl7apy names only the fields its version defines.
        name = str(element.name)
        counts[name] = counts.get(name, 0) + 1
        parts = element.to_er7().split(chars["FIELD"])
        offset = 1 if name == "MSH" else 0  # MSH-1 is the field separator itself
        fields = {number + offset: value.split(chars["REPETITION"]) for number, value in enumerate(parts)
                  if number and value}
        if name == "MSH":
            fields[2] = [parts[1]]  # the encoding characters are not repetitions
        segments.append(Segment(name, counts[name], fields, separators))
    return segments


def fast_segments(normalised: str) -> list[Segment] | None:
    """The same segments as `full_segments` for the messages PAS systems actually send, about 50 times faster
    (hl7apy builds an object per field and component, then the fields are read back by position anyway):
    standard encoding characters, a version hl7apy knows, and only the ADT segments (and Z-segments) whose
    acceptance by hl7apy is tested. Anything else answers None, and the message goes the full way."""
    if not normalised.startswith(_STANDARD_MSH) or _CONTROL.search(normalised) or _PADDED.search(normalised):
        return None  # hl7apy trims spaces and drops control characters in its own ways: it decides
    lines = normalised.split("\r")
    header = lines[0].split("|")
    if len(header) < 12 or header[11] not in _FAST_VERSIONS:
        return None
    counts: dict[str, int] = {}
    segments = []
    for line in lines:
        name = line[:3]
        if not (name in _FAST_SEGMENTS or _Z_SEGMENT.match(name)) or (len(line) > 3 and line[3] != "|"):
            return None
        parts = line.split("|")
        if name in _FAST_SEGMENTS and len(parts) - 1 > _defined_fields(name, header[11]) - (name == "MSH"):
            return None  # more fields than the version defines: hl7apy renumbers those, so it decides
        counts[name] = counts.get(name, 0) + 1
        offset = 1 if name == "MSH" else 0
        fields = {number + offset: value.split("~") for number, value in enumerate(parts) if number and value}
        if name == "MSH":
            fields[2] = [parts[1]]
        segments.append(Segment(name, counts[name], fields))
    return segments


@cache
def _defined_fields(segment: str, version: str) -> int:
    """How many fields hl7apy's definition of `segment` has in `version`."""
    return len(load_reference(segment, "Segment", version)[1])


def _component(value: str, escape: str) -> str:
    return "" if value.strip() == HL7_NULL else _unescape(value, escape)


def _unescape(value: str, escape: str) -> str:
    if escape not in value:
        return value
    pattern = re.escape(escape) + r"([FSTRE])" + re.escape(escape)
    return re.sub(pattern, lambda m: _ESCAPES[m.group(1)], value)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def parse_ts(value: str) -> datetime | None:
    """An HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) as an aware UTC datetime, or None if malformed: the
    instant for ordering messages. A date counts as its midnight in England; fhir_datetime keeps it a date."""
    match = _TS.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                          int(second or 0))
        if zone:
            sign = 1 if zone[0] == "+" else -1
            offset = sign * (int(zone[1:3]) * 60 + int(zone[3:5]))
            return moment.replace(tzinfo=timezone(timedelta(minutes=offset))).astimezone(UTC)
        return moment.replace(tzinfo=LOCAL_ZONE).astimezone(UTC)
    except ValueError:
        return None


def fhir_datetime(value: str) -> str | None:
    """An HL7 TS/DTM as a FHIR dateTime at the precision sent, or None if malformed. A date (or year, or month)
    stays one: it names a day, not an instant, and its midnight in British Summer Time is the day before in UTC.
    A time of day is the UTC instant (local time in England unless an offset is sent)."""
    match = _TS.match(value.strip())
    if not match:
        return None
    year, month, day, hour = match.groups()[:4]
    if hour is not None:
        moment = parse_ts(value)
        return moment.isoformat() if moment else None
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    return "-".join(part for part in (year, month, day) if part)


def parse_date(value: str) -> str | None:
    """An HL7 date (YYYYMMDD, or a TS whose date part is used) as a FHIR date, or None if malformed."""
    digits = value.strip()[:8]
    if not re.fullmatch(r"\d{8}", digits):
        return None
    try:
        return datetime.strptime(digits, "%Y%m%d").date().isoformat()
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------- ACKs

def control_id_of(text: str) -> str:
    """MSH-10 read straight from the text, for ACKs to messages too broken to parse."""
    first = text.replace("\n", "\r").split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 4:
        return ""
    parts = first.split(first[3])
    return parts[9][:50] if len(parts) > 9 else ""


def build_ack(text: str, code: str, message: str = "", location: tuple[str, int, int] | None = None,
              error_code: str = "207", *, severity: Literal["E", "W"] = "E") -> str:
    """An ACK for `text`: MSA-1 AA/AE/AR, MSA-2 its control id, and for errors an ERR segment naming the
    segment and field at fault (v2.4 ERR-1 and the v2.5 ERR-2/3/4 fields both). An AA carries an ERR only as a
    warning (`severity` W, HL70516): accepted and stored, but something in it the sender should put right."""
    header = text.replace("\n", "\r").split("\r", 1)[0]
    parts = header.split("|") if header.startswith("MSH|") else []
    sending_app, sending_facility = (parts[2], parts[3]) if len(parts) > 3 else ("", "")
    event = parts[8].split("^")[1] if len(parts) > 8 and "^" in parts[8] else ""
    now = datetime.now(LOCAL_ZONE).strftime("%Y%m%d%H%M%S")
    control = control_id_of(text)
    ack_id = f"ACK{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
    lines = [
        f"MSH|^~\\&|SCR|ICS|{_escape(sending_app)}|{_escape(sending_facility)}|{now}||ACK^{event}^ACK|{ack_id}"
        f"|P|2.4",
        f"MSA|{code}|{_escape(control)}|{_escape(message)[:200]}",
    ]
    if code != "AA" or severity == "W":
        lines.append(_err_segment(message, location, error_code, severity))
    return "\r".join(lines) + "\r"


def _err_segment(message: str, location: tuple[str, int, int] | None, error_code: str, severity: str) -> str:
    """ERR-1 (v2.4 segment^sequence^field^condition), ERR-2 (v2.5 location, with the component),
    ERR-3 (condition), ERR-4 (severity: E error, W warning), ERR-8 (words for a person)."""
    segment, field_no, component = location or ("", 0, 0)
    text = _CONDITIONS.get(error_code, "Application error")
    legacy = f"{segment}^1^{field_no}^{error_code}&{text}&HL70357" if segment else f"^^^{error_code}&{text}&HL70357"
    erl = f"{segment}^1^{field_no}^1" + (f"^{component}" if component else "") if segment else ""
    return f"ERR|{legacy}|{erl}|{error_code}^{text}^HL70357|{severity}||||{_escape(message)[:200]}"


# HL70357. A warning on an AA is condition 0 (the table has no code for "accepted, but"): its severity (ERR-4 W),
# location (ERR-2) and words (ERR-8) say what to put right; 102 would claim the field unreadable, 207 a fault here.
_CONDITIONS = {"0": "Message accepted", "100": "Segment sequence error", "101": "Required field missing",
               "102": "Data type error", "103": "Table value not found", "200": "Unsupported message type",
               "201": "Unsupported event code", "203": "Unsupported version id", "204": "Unknown key identifier",
               "205": "Duplicate key identifier", "206": "Application record locked",
               "207": "Application internal error"}


def _escape(value: str) -> str:
    out = value.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
    return out.replace("~", "\\R\\").replace("\r", " ").replace("\n", " ")
