"""Storing one mapped message: identity for each source Patient, labels, then every resource as a new version
(or not: unchanged re-sends and late, older updates write nothing), and one Provenance. Runs inside the
pipeline's transaction; nothing here commits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import person_index, records, store
from services.ingest.feeds.model import (
    AdapterError,
    Mapped,
    MappedMessage,
    Rejected,
    StateConflict,
    refuse_dependents,
    rewrite_references,
)
from services.ingest.labelling import CodeLists, labels_for
from services.ingest.person_index import Thresholds
from services.ingest.provenance import provenance_for
from services.ingest.records import Change, WriteContext
from shared.fhir import Issue
from shared.labels import RESTRICTED
from shared.schema import RawMessage
from shared.sender_clock import believed, utc

# Maps an archived message again (the pipeline's adapters), for replaying a stay when a late event arrives.
Remap = Callable[[RawMessage], MappedMessage]


class MessageWriter:
    """Identity, labelling and the store for mapped messages."""

    def __init__(self, code_lists: CodeLists, thresholds: Thresholds, remap: Remap | None = None,
                 replay_channels: frozenset[str] = frozenset(), sender_clock_skew: timedelta = timedelta(0)) -> None:
        self.code_lists, self.thresholds = code_lists, thresholds
        self.remap, self.replay_channels = remap, replay_channels
        self.skew = sender_clock_skew  # as the pipeline believed senders' times (believe_sender_times)

    def write(self, session: Session, raw_id: str, channel: str, mapped: MappedMessage, *,
              first_attempt: bool = False) -> list[Change]:
        """Store one mapped message in the caller's transaction; every resource it touched, and how.
        `first_attempt`: the message has never been processed, so nothing stored can carry its raw id."""
        ctx = WriteContext(mapped.source_org or "", mapped.source_system or channel, raw_id, datetime.now(UTC))
        for item in mapped.items:
            item.source_key = item.source_key or f"hash:{records.content_hash(item.resource)}"
        persons: dict[str, tuple[str | None, str]] = {}
        self._resolve_stored_patients(session, mapped, persons)
        refs: dict[str, str] = {}
        changes = self._store_patients(session, ctx, channel, mapped, persons, refs)
        if mapped.merge:
            ctx.write_queued(session)  # the merge queries the records it moves, this message's new ones included
            surviving_id = persons[mapped.merge.surviving_ref][0] or ""
            surviving = ctx.written.get(("Patient", surviving_id)) or store.get_resource(session, "Patient",
                                                                                         surviving_id)
            if surviving is None:
                raise AdapterError(Issue("the surviving record is missing", mapped.merge.where))
            changes += person_index.merge(session, ctx, surviving, mapped.merge.retired_source_key)
        changes += self._store_others(session, ctx, channel, mapped, persons, refs)
        if changed := [c for c in changes if c.changed]:
            self._store_provenance(session, ctx, changed, first_attempt)
        ctx.write_queued(session)  # every new row, version and search row of the message, Provenance's included
        return changes

    def _resolve_stored_patients(self, session: Session, mapped: MappedMessage,
                                 persons: dict[str, tuple[str | None, str]]) -> None:
        """Resources that name a stored Patient (FHIR `Patient/<id>`): a person id or a source Patient id."""
        for item in list(mapped.items):
            ref = item.patient_ref
            if item not in mapped.items or not ref or not ref.startswith("Patient/") or ref in persons:
                continue
            target = ref.split("/", 1)[1]
            person = store.get_person(session, target)
            if person is not None:
                persons[ref] = (None, person_index.follow(session, person).id)
                continue
            row = store.get_resource(session, "Patient", target)
            if row is not None and not row.deleted and (link := store.get_link(session, row.id)):
                persons[ref] = (row.id, link.person_id)
                continue
            issue = Issue(f"patient reference {ref!r} names no stored Patient", f"{item.where}.resource",
                          code="not-found")
            if mapped.atomic:
                raise AdapterError(issue)
            mapped.items.remove(item)
            mapped.rejected.append(Rejected(item.where or "", [issue], item.entry))
            refuse_dependents(mapped, {ref: item.where or "" for ref in item.refs})

    def _store_patients(self, session: Session, ctx: WriteContext, channel: str, mapped: MappedMessage,
                        persons: dict[str, tuple[str | None, str]], refs: dict[str, str]) -> list[Change]:
        patients = mapped.patients
        existing = store.by_source_keys(session, ctx.source_org, ctx.source_system, "Patient",
                                        [p.source_key for p in patients])
        changes = []
        for item in patients:
            change, more = self._store_patient(session, ctx, channel, item, existing.get(item.source_key))
            if ("Patient", change.id) in ctx.written:  # a second entry for the same record updates this one
                existing[item.source_key] = ctx.written[("Patient", change.id)]
            # A new source Patient's person is the one just assigned; a stored one's may have moved just now.
            person_id = change.person_id if change.change == "create" and change.person_id \
                else person_index.person_of(session, change.id)
            for ref in item.refs:
                refs[ref] = f"Patient/{person_id}"
                persons[ref] = (change.id, person_id)
            changes += [change, *more]
        return changes

    def _store_patient(self, session: Session, ctx: WriteContext, channel: str, item: Mapped,
                       existing: Any) -> tuple[Change, list[Change]]:
        body = _keep_merge_links(existing.body if existing else None, item.resource)
        restricted = _s_flag(item, existing)
        labels = labels_for(body, self.code_lists, channel=channel, confidential=item.confidential,
                            restricted=restricted)
        digest = records.content_hash(body, flags=("R",) if restricted else ())
        if existing is not None:
            verdict = _verdict(existing, item, digest, self.skew)
            if verdict:
                return _located(Change("Patient", existing.id, existing.version_id, existing.person_id, verdict,
                                       existing.source_org), item), []
            change = records.write(session, ctx, existing=existing, resource_type="Patient", resource_id=existing.id,
                                   body=body, labels=labels, person_id=existing.person_id,
                                   source_patient_id=existing.id, source_key=item.source_key,
                                   source_updated=item.source_updated, digest=digest)
            ctx.write_queued(session)
            return _located(change, item), person_index.after_update(session, ctx, existing.id, body)
        resource_id = store.new_id()
        ctx.write_queued(session)  # an earlier Patient of this message may be this one's match
        person_id = person_index.assign_new(session, resource_id, body, self.thresholds)
        change = records.write(session, ctx, existing=None, resource_type="Patient", resource_id=resource_id,
                               body=body, labels=labels, person_id=person_id, source_patient_id=resource_id,
                               source_key=item.source_key, source_updated=item.source_updated, digest=digest)
        return _located(change, item), []

    def _store_others(self, session: Session, ctx: WriteContext, channel: str, mapped: MappedMessage,
                      persons: dict[str, tuple[str | None, str]], refs: dict[str, str]) -> list[Change]:
        others = [item for item in mapped.items if item.resource_type != "Patient"]
        existing: dict[tuple[str, str], Any] = store.by_typed_source_keys(
            session, ctx.source_org, ctx.source_system, [(item.resource_type, item.source_key) for item in others])
        for item in others:
            key = (item.resource_type, item.source_key)
            if key not in existing:
                existing[key] = _Pending(store.new_id())
            for ref in item.refs:
                refs[ref] = f"{item.resource_type}/{existing[key].id}"
        changes = []
        for item in others:
            row = existing[(item.resource_type, item.source_key)]
            if isinstance(row, _Pending):  # new, or first written by an earlier entry of this message
                resource_id, row = row.id, ctx.written.get((item.resource_type, row.id))
            else:
                resource_id = row.id
            changes.append(self._store_other(session, ctx, channel, item, row, resource_id, persons, refs))
        return changes

    def _store_other(self, session: Session, ctx: WriteContext, channel: str, item: Mapped, existing: Any,
                     resource_id: str, persons: dict[str, tuple[str | None, str]], refs: dict[str, str]) -> Change:
        source_patient_id, person_id = persons[item.patient_ref] if item.patient_ref else (None, None)
        body, labels, digest = self._prepared(_merged(item, existing, self.skew), channel, item, refs)
        source_updated = item.source_updated
        if existing is not None:
            verdict = _verdict(existing, item, digest, self.skew)
            if verdict == "stale" and (replayed := self._replayed(session, channel, item, existing)) is not None:
                # A late event of a stay: the stay as if its events had arrived in the order they happened.
                body, labels, digest = self._prepared(replayed, channel, item, refs)
                verdict = "stale" if existing.content_hash == digest else None
                source_updated = existing.source_updated  # the newest event applied is still the stored one
            # Stale never writes; an unchanged body still moves if the record now belongs to another person.
            if verdict == "stale" or (verdict and existing.person_id == person_id):
                return _located(Change(item.resource_type, existing.id, existing.version_id, existing.person_id,
                                       verdict, existing.source_org), item)
        change = records.write(session, ctx, existing=existing, resource_type=item.resource_type,
                               resource_id=resource_id, body=body, labels=labels, person_id=person_id,
                               source_patient_id=source_patient_id, source_key=item.source_key,
                               source_updated=source_updated, digest=digest)
        return _located(change, item)

    def _prepared(self, body: dict[str, Any], channel: str, item: Mapped,
                  refs: dict[str, str]) -> tuple[dict[str, Any], list[str], str]:
        """The body with the message's references resolved, its labels and its content hash."""
        body = rewrite_references(body, refs)
        if dangling := records.unresolved_local_reference(body):
            raise AdapterError(Issue(f"reference {dangling!r} does not resolve within the message", item.where))
        labels = labels_for(body, self.code_lists, channel=channel, confidential=item.confidential)
        return body, labels, records.content_hash(body, flags=("V",) if item.confidential else ())

    def _replayed(self, session: Session, channel: str, item: Mapped, existing: Any) -> dict[str, Any] | None:
        """For an event older than the stored state that asks for it (an ADT transfer after the discharge), the
        resource rebuilt from the events of every archived message that shaped its versions plus this one,
        applied in event-time order. None when the resource is not built from events of a replayable feed (never
        for HL7: the pipeline replays both its channels). An AdapterError when the order rules this event out."""
        if not item.replay_when_late or item.merge is None or self.remap is None \
                or channel not in self.replay_channels:
            return None
        events = [(item.source_updated, _LAST, item.merge)]
        for raw in store.raw_messages_of(session, existing.resource_type, existing.id):
            if raw.channel not in self.replay_channels:
                continue
            try:
                earlier = self.remap(raw)
            except AdapterError:
                continue  # refused when it arrived, so it never shaped the resource
            events += [(other.source_updated, raw.received_at, other.merge) for other in earlier.items
                       if other.merge and other.resource_type == item.resource_type
                       and other.source_key == item.source_key]
        ordered = sorted(events, key=lambda e: (utc(e[0]) if e[0] else _FIRST, utc(e[1])))
        if ordered[0][2] is item.merge and item.refused_first and len(ordered) > 1:
            raise item.refused_first(ordered[1][0])  # e.g. a discharge older than the admission: it ends nothing
        body: dict[str, Any] | None = None
        for _at, _received, merge in ordered:
            try:
                body = merge(body)
            except StateConflict:
                if merge is item.merge:
                    raise  # the late message is ruled out where it falls: refused, as it would be in order
                # Accepted when it arrived, but an earlier-dated event that came since rules it out: passed over.
        return body

    def _store_provenance(self, session: Session, ctx: WriteContext, changed: list[Change],
                          first_attempt: bool) -> None:
        key = f"raw:{ctx.raw_id}"
        existing = None if first_attempt else store.by_source_keys(session, ctx.source_org, ctx.source_system,
                                                                   "Provenance", [key]).get(key)
        people = {c.person_id for c in changed if c.person_id}
        body = provenance_for(changed, ctx)
        records.write(session, ctx, existing=existing, resource_type="Provenance",
                      resource_id=existing.id if existing else store.new_id(), body=body, labels=[],
                      person_id=people.pop() if len(people) == 1 else None, source_patient_id=None,
                      source_key=key, source_updated=None)


@dataclass(frozen=True)
class _Pending:
    """A resource not stored yet: its id is chosen up front so references to it resolve, and a later entry of
    the same message with the same key updates it rather than making a second one."""

    id: str


_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)  # the late message is the last received


def believe_sender_times(mapped: MappedMessage, received_at: datetime, skew: timedelta) -> list[Mapped]:
    """Each item's sender time as ordering believes it (shared.sender_clock): one later than the message's receipt
    by more than `skew` counts as the receipt, so a message dated ahead (2099) cannot pass for newer than every update
    sent after it. Only the ordering time changes: the bodies keep what the sender sent, the archive the message.
    The items whose times were not believed (the answer warns the sender at each)."""
    clamped = []
    for item in mapped.items:
        sent = item.source_updated
        item.source_updated = believed(sent, received_at, skew=skew)
        if sent is not None and item.source_updated != sent:
            clamped.append(item)
    return clamped


def _merged(item: Mapped, existing: Any, skew: timedelta) -> dict[str, Any]:
    """The item applied to the stored body. An event the stored state rules out is refused, unless it is older than
    that state and replayable: then the replay, which puts it where it belongs by event time, decides."""
    if not item.merge or existing is None:
        return item.resource
    try:
        return item.merge(records.unstamped(existing))
    except StateConflict:
        if item.replay_when_late and _older(existing, item, skew):
            return item.resource  # only hashed: an older item is never written as merged
        raise


def _older(existing: Any, item: Mapped, skew: timedelta) -> bool:
    # The stored time believed as the item's was: a record stored with a time ahead of its arrival before the clamp
    # existed (2099) counts as when it was stored, so updates sent after it are no longer ignored as older.
    newer = believed(existing.source_updated, existing.last_updated, skew=skew)
    return bool(item.source_updated and newer and utc(item.source_updated) < newer)


def _verdict(existing: Any, item: Mapped, digest: str, skew: timedelta) -> str | None:
    """`stale` for an update older than what is stored, `unchanged` for a re-send, None to write."""
    if _older(existing, item, skew):
        return "stale"
    if existing.content_hash == digest:
        return "unchanged"
    return None


def _s_flag(item: Mapped, existing: Any) -> bool:
    """The S-flag as the source last stated it: a message silent about it keeps the stored Patient's."""
    if item.restricted is not None:
        return item.restricted
    return existing is not None and RESTRICTED in (existing.labels or [])


def _keep_merge_links(current: dict[str, Any] | None, body: dict[str, Any]) -> dict[str, Any]:
    """A re-sent source Patient keeps the merge links (and retirement) the person index gave it."""
    if not current or not current.get("link") or body.get("link"):
        return body
    kept = dict(body) | {"link": current["link"]}
    if current.get("active") is False:
        kept["active"] = False
    return kept


def _located(change: Change, item: Mapped) -> Change:
    change.entry, change.where = item.entry, item.where
    return change
