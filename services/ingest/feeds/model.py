"""What every feed adapter returns: the mapped resources of one message, and the error it raises for bad input.

Resources refer to each other (and to their source Patient) by local references; the pipeline turns those
into stored ids once identity has decided which person each source Patient belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.fhir import Issue
from shared.local_time import LONDON

# Times without a zone from English systems (HL7 v2 timestamps, CSV contact times) are local time in England.
LOCAL_ZONE = LONDON
# A function from the stored body (None when new) to the new body: for feeds that send changes, not states.
Merge = Callable[[dict[str, Any] | None], dict[str, Any]]


@dataclass
class Mapped:
    """One FHIR resource mapped from a message, with what makes a re-send idempotent."""

    resource: dict[str, Any]
    source_key: str
    source_updated: datetime | None = None
    refs: tuple[str, ...] = ()  # the local references other resources in the message use for this one
    patient_ref: str | None = None  # local reference of the source Patient it belongs to
    confidential: bool = False  # the source marked it confidential/sealed/private
    # Patient only: the S-flag (location hiding) from the source; None when the message says nothing about it,
    # so a stored flag stands.
    restricted: bool | None = False
    merge: Merge | None = None
    # When older than the stored state: rebuild from the archived events in time order (every ADT event of a stay:
    # a late transfer belongs in the ward history, a late discharge must still end the stay), rather than ignore it.
    replay_when_late: bool = False
    # None when, replayed, it may be the first event of the resource (a late admit may begin a stay); otherwise its
    # refusal then, given the earliest other event's time: a discharge dated before everything else known about the
    # stay ends nothing, and is refused.
    refused_first: Callable[[datetime | None], AdapterError] | None = None
    where: str | None = None  # where in the message it came from, for per-entry outcomes
    entry: int | None = None  # its position among the message's entries (Bundle entry, CSV row)

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])


@dataclass
class MergeRequest:
    """An A40: the retired record (by its source key) is replaced by the surviving Patient (by local ref)."""

    surviving_ref: str
    retired_source_key: str
    where: str


@dataclass(frozen=True)
class SenderMessageId:
    """The sender's own id for a message (a social-care `event_id`), unique per sender, and a digest of what the
    message says: the same id again with the same digest is a re-send, with another digest a different message."""

    value: str
    digest: str


@dataclass
class MappedMessage:
    """Everything one inbound message maps to."""

    items: list[Mapped] = field(default_factory=list)
    source_system: str | None = None
    source_org: str | None = None
    merge: MergeRequest | None = None
    # All or nothing (a transaction, an ADT message, an event); otherwise bad parts are refused, good ones kept.
    atomic: bool = True
    # Per-entry problems in feeds that keep the good parts of a message (batch Bundles, CSV rows).
    rejected: list[Rejected] = field(default_factory=list)
    message_id: SenderMessageId | None = None

    @property
    def patients(self) -> list[Mapped]:
        return [m for m in self.items if m.resource_type == "Patient"]


@dataclass
class Rejected:
    """A part of a message that was refused while the rest was kept (a batch entry, a CSV row)."""

    where: str
    issues: list[Issue]
    index: int | None = None


class AdapterError(Exception):
    """The message is bad input: it says where and why, and nothing of it is stored."""

    def __init__(self, issues: list[Issue] | Issue, *, hl7_location: tuple[str, int, int] | None = None,
                 hl7_code: str = "102") -> None:
        self.issues = [issues] if isinstance(issues, Issue) else issues
        self.hl7_location = hl7_location  # (segment, field, component) for the ACK's ERR segment
        self.hl7_code = hl7_code  # HL7 table 0357 error condition
        super().__init__("; ".join(i.diagnostics for i in self.issues))


class StateConflict(AdapterError):
    """An event the state it would apply to rules out (an ADT transfer of a cancelled visit). Refused when it
    arrives; an archived one that a late message's replay puts after such a state is passed over instead, as it
    would have been refused had the messages arrived in event-time order."""


def parse_instant(value: Any) -> datetime | None:
    """A FHIR instant/dateTime as an aware UTC datetime (dates count as midnight UTC), or None."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text if len(text) > 7 else f"{text}-01-01"[:10])
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def references_in(node: Any) -> Iterator[str]:
    """Every `reference` string in a resource, at any depth."""
    if isinstance(node, dict):
        if isinstance(reference := node.get("reference"), str):
            yield reference
        for value in node.values():
            yield from references_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from references_in(value)


def refuse_dependents(message: MappedMessage, refused: dict[str, str]) -> None:
    """Refuse every item of a message that keeps its good parts when it refers, directly or through another
    refused item, to a refused part: its reference would point at nothing. `refused` maps each refused part's
    local reference to where that part was in the message."""
    pending = dict(refused)
    while pending:
        ref, where = pending.popitem()
        for item in [i for i in message.items if ref in set(references_in(i.resource))]:
            message.items.remove(item)
            issue = Issue(f"it refers to {where}, which was refused", f"{item.where}.resource", code="invalid")
            message.rejected.append(Rejected(item.where or "", [issue], item.entry))
            pending.update({r: item.where or "" for r in item.refs})


def rewrite_references(node: Any, mapping: dict[str, str]) -> Any:
    """Every `reference` found in `mapping` replaced by its target: a Bundle's own references to local
    `urn:scr:entry:N` refs, local refs to stored ids, a merged person's references to the surviving one."""
    if isinstance(node, dict):
        out = {k: rewrite_references(v, mapping) for k, v in node.items()}
        reference = node.get("reference")
        if isinstance(reference, str) and reference in mapping:
            out["reference"] = mapping[reference]
        return out
    if isinstance(node, list):
        return [rewrite_references(v, mapping) for v in node]
    return node
