"""HL7 v2 batches over HTTP (HL7 v2.5 §2.10.3: [FHS] BHS {MSH ...} BTS [FTS]): a trust's backfill or a night's
extract in one request. The envelope is checked whole before anything is archived: a batch whose trailer counts
a different number of messages is truncated or padded, and is refused so the sender resends it rather than
leaving a gap. Each message inside is then archived and processed on its own, in order (the pipeline's
`receive_many`: one transaction, a savepoint each), and the answer is an acknowledgment batch: the same envelope
around one ACK per message, in the order sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.ingest.feeds.hl7v2_message import LOCAL_ZONE, build_ack

ENVELOPE = ("FHS", "BHS", "BTS", "FTS")


class BatchError(ValueError):
    """The envelope is wrong; `location` is (segment, field) for the ERR segment."""

    def __init__(self, reason: str, segment: str, field_no: int = 0) -> None:
        super().__init__(reason)
        self.location = (segment, field_no, 0)


class BatchTooLarge(BatchError):
    """More messages than one request may carry, or a message over the size limit."""


@dataclass
class Batch:
    """A batch split into its envelope segments (fields by position, as HL7 numbers them) and its messages."""

    file_header: list[str] | None = None
    header: list[str] | None = None
    messages: list[str] = field(default_factory=list)

    def control_id(self) -> str:
        """BHS-11, or FHS-11 when the batch header has none: what the acknowledgment refers back to."""
        for segment in (self.header, self.file_header):
            if segment and len(segment) > 10 and segment[10]:
                return segment[10]
        return ""


def is_batch(body: bytes) -> bool:
    return body.lstrip(b"\x0b\r\n \t").startswith((b"FHS|", b"BHS|"))


def split(text: str, *, max_messages: int) -> Batch:
    """The messages of a one-batch file, each as the segments it arrived with (\\r-separated)."""
    segments = [s for s in text.replace("\r\n", "\r").replace("\n", "\r").strip("\x0b\x1c \t\r").split("\r") if s]
    batch = Batch()
    trailers: dict[str, list[str]] = {}  # BTS and FTS by name, each as its fields
    current: list[str] = []  # the message being read, segment by segment
    for segment in segments:
        name = segment[:3]
        if name in ENVELOPE or name == "MSH":
            _close(batch, current)
            current = []
        if name in ENVELOPE:
            _envelope(batch, trailers, name, segment)
            continue
        if name == "MSH" and (batch.header is None or "BTS" in trailers):
            raise BatchError("a message outside the batch: MSH must come between BHS and BTS", "MSH")
        if name != "MSH" and not current:
            raise BatchError(f"segment {name} outside any message", name)
        current.append(segment)
    _close(batch, current)
    _check_counts(batch, trailers, max_messages)
    return batch


def _close(batch: Batch, segments: list[str]) -> None:
    if segments:
        batch.messages.append("\r".join(segments) + "\r")


def _envelope(batch: Batch, trailers: dict[str, list[str]], name: str, segment: str) -> None:
    fields = segment.split("|")
    if name == "FHS":
        if batch.file_header is not None or batch.header is not None:
            raise BatchError("FHS must come first, once", "FHS")
        batch.file_header = fields
    elif name == "BHS":
        if batch.header is not None:
            raise BatchError("one batch per request: a second BHS was found; send each batch on its own", "BHS")
        batch.header = fields
    elif name == "BTS":
        if batch.header is None or "BTS" in trailers:
            raise BatchError("BTS must close the one batch opened by BHS", "BTS")
        trailers[name] = fields
    elif name == "FTS":
        if batch.file_header is None or "BTS" not in trailers or "FTS" in trailers:
            raise BatchError("FTS must close the file opened by FHS, after BTS", "FTS")
        trailers[name] = fields


def _check_counts(batch: Batch, trailers: dict[str, list[str]], max_messages: int) -> None:
    if batch.header is None:
        raise BatchError("a batch needs its BHS header", "BHS")
    # A file cut short loses its trailers first: without them nothing says the batch is whole.
    if "BTS" not in trailers:
        raise BatchError("the batch has no BTS trailer: it may be truncated; nothing was accepted, send it again",
                         "BTS")
    if batch.file_header is not None and "FTS" not in trailers:
        raise BatchError("the file has no FTS trailer: it may be truncated; nothing was accepted, send it again",
                         "FTS")
    if len(batch.messages) > max_messages:
        raise BatchTooLarge(f"{len(batch.messages)} messages in one batch; at most {max_messages} are accepted; "
                            "nothing was accepted", "BTS")
    counted = _number(trailers.get("BTS"), 1)
    if counted is not None and counted != len(batch.messages):
        raise BatchError(f"BTS-1 counts {counted} messages but the batch holds {len(batch.messages)}: it may be "
                         "truncated; nothing was accepted, send it again", "BTS", 1)
    batches = _number(trailers.get("FTS"), 1)
    if batches is not None and batches != 1:
        raise BatchError(f"FTS-1 counts {batches} batches; one batch per request is accepted", "FTS", 1)


def _number(fields: list[str] | None, position: int) -> int | None:
    if not fields or len(fields) <= position or not fields[position]:
        return None
    try:
        return int(fields[position])
    except ValueError:
        raise BatchError(f"{fields[0]}-{position} is not a number", fields[0], position) from None


def acknowledgment(batch: Batch, acks: list[str]) -> str:
    """The acknowledgment batch: our FHS/BHS referring to the sender's, the ACKs in order, BTS (and FTS)."""
    now = datetime.now(LOCAL_ZONE).strftime("%Y%m%d%H%M%S")
    ours = f"SCR{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
    lines = []
    if batch.file_header is not None:
        lines.append(_header("FHS", batch.file_header, now, ours))
    lines.append(_header("BHS", batch.header or [], now, ours))
    lines += [ack.rstrip("\r") for ack in acks]
    lines.append(f"BTS|{len(acks)}")
    if batch.file_header is not None:
        lines.append("FTS|1")
    return "\r".join(lines) + "\r"


def _header(name: str, theirs: list[str], now: str, ours: str) -> str:
    """Sent by us to them (their sending application and facility become the receiving ones); field 12, the
    reference control id, is theirs."""
    def of(position: int) -> str:
        return theirs[position - 1] if len(theirs) >= position else ""

    return f"{name}|^~\\&|SCR|ICS|{of(3)}|{of(4)}|{now}||||{ours}|{of(11)}"


def refusal(text: str, error: BatchError) -> str:
    """An AR for a batch refused whole: MSA-2 is the batch's control id (BHS-11, else FHS-11), sent to the
    application and facility the header names."""
    found = Batch()
    for segment in text.replace("\n", "\r").split("\r"):
        if segment.startswith("BHS|") and found.header is None:
            found.header = segment.split("|")
        elif segment.startswith("FHS|") and found.file_header is None:
            found.file_header = segment.split("|")
    sender = found.header or found.file_header or []
    app, facility = (sender[2], sender[3]) if len(sender) > 3 else ("", "")
    header = f"MSH|^~\\&|{app}|{facility}||||||{found.control_id()}|P|2.4"
    return build_ack(header, "AR", str(error), error.location, "100")
