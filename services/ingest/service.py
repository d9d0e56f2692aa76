"""The ingest pipeline: raw archive -> adapter -> identity -> labelling -> store (with provenance) -> events.

Every message is archived byte for byte and committed before anything parses it; processing then runs in one
transaction, so a message is either wholly stored or not at all (a batch Bundle or CSV keeps its good parts
and lists the bad). Bad input is `rejected` with the reason; a fault here leaves it `failed`, retryable.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.ingest import metrics, person_index, store
from services.ingest.feeds import community_csv, gp_fhir, hl7v2, hl7v2_charset, socialcare_events
from services.ingest.feeds.hl7v2_message import Segment
from services.ingest.feeds.model import AdapterError, MappedMessage, Rejected
from services.ingest.labelling import load_code_lists
from services.ingest.person_index import Thresholds
from services.ingest.records import Change, WriteContext
from services.ingest.settings import IngestSettings
from services.ingest.store import Inbound
from services.ingest.writer import MessageWriter, believe_sender_times
from shared import outbox
from shared.db import conflict_backoff, connection_lost, transaction, transient_conflict
from shared.errors import Conflict, NotFound, ScrError
from shared.events import RECORD_CHANGED, EventBus
from shared.fhir import Issue
from shared.ods import normalise as normalise_ods
from shared.schema import RawMessage
from shared.sender_clock import utc

log = structlog.get_logger("scr.ingest")

HL7_CHANNELS = ("hl7v2", "mllp")
RETRYABLE = frozenset({"failed", "received", "rejected"})
# Not a status of its own: a `received` row older than SCR_RAW_UNFINISHED_AFTER_SECONDS, its processing cut off.
UNFINISHED = "unfinished"
_ATTEMPTS = 3  # a concurrent first sighting of the same record loses a unique race; the retry then finds it
# Why a message failed for a transient database fault (answered 503 with Retry-After, not 500 as a fault here is).
_COLLIDED = "concurrent changes to the same records kept colliding"
_CONNECTION_LOST = "the connection to the database was lost"


class _TransientConflict(Exception):
    """An attempt PostgreSQL rolled back for a conflict with a concurrent transaction (shared.db.transient_conflict):
    a deadlock, a serialization failure or a lock timeout. Nothing of it was stored, so it may simply be made again."""

    def __init__(self, kind: str, error: Exception) -> None:
        super().__init__(kind)
        self.kind, self.error = kind, error


@dataclass
class Outcome:
    """What became of one raw message."""

    raw_id: str
    status: str  # processed | rejected | failed
    changes: list[Change] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    hl7_location: tuple[str, int, int] | None = None
    hl7_code: str = "207"
    duplicate_of: str | None = None
    channel: str = "unknown"
    reviews_opened: bool = False
    # Failed only for a transient database fault (a lost connection, or conflicts that outlasted their retries):
    # answered 503, since the sender's resend will do.
    transient: bool = False
    # When a sender's time in it was later than its receipt (ordered as received: a clock set wrong), the warning
    # its answer carries back, so the sender learns of it (an ACK's ERR with severity W, an OperationOutcome issue),
    # and the entries (Bundle entries, CSV rows) whose time it was.
    sender_clock_warning: Issue | None = None
    clamped_entries: frozenset[int] = frozenset()

    @property
    def error_text(self) -> str:
        return describe(self.issues)[:1000]


def _refusal(exc: AdapterError | ScrError) -> AdapterError:
    """A rule checked against the store (an A40 naming no record, ...) refuses the message as an adapter does."""
    if isinstance(exc, AdapterError):
        return exc
    location = ("MRG", 1, 0) if exc.expression and exc.expression[0].startswith("MRG") else None
    return AdapterError(Issue(exc.message, exc.expression[0] if exc.expression else None, code=exc.code),
                        hl7_location=location, hl7_code="204")


# The sender's time each feed orders by, as its sender knows the field.
_SENDER_TIME = {"hl7v2": "MSH-7", "mllp": "MSH-7", "fhir": "meta.lastUpdated", "community": "last_updated",
                "socialcare": "occurred_at"}


def _sender_clock_warning(channel: str, received_at: datetime, skew: timedelta) -> Issue:
    """The words for a sender whose time was later than its message's arrival: it was stored, not refused, so
    nothing else tells the sender (an AA, a 200) that its clock is wrong and its messages are ordered as received."""
    arrival = utc(received_at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    field_name = _SENDER_TIME.get(channel, "the sender's time")
    return Issue(f"{field_name} is more than {skew.total_seconds():g} seconds "
                 f"later than the message's arrival ({arrival}); stored, and ordered as received: check the sending "
                 "system's clock", severity="warning", code="informational")


def describe(issues: list[Issue]) -> str:
    """Issues as one line a sender or operator can act on: `where: what`."""
    return "; ".join(f"{i.expression}: {i.diagnostics}" if i.expression else i.diagnostics for i in issues)


class Pipeline:
    """One per process: the adapters, identity, labelling and store wired to a database and an event bus."""

    def __init__(self, sessions: sessionmaker[Session], bus: EventBus | None, settings: IngestSettings) -> None:
        self.sessions, self.bus, self.settings = sessions, bus, settings
        self.on_committed: Callable[[], None] | None = None  # the outbox relay's wake-up, when one runs here
        self._savepoints = sessions.kw["bind"].dialect.name == "postgresql"
        self.writer = MessageWriter(load_code_lists(settings.label_code_lists),
                                    Thresholds(settings.match_link_threshold, settings.match_review_threshold),
                                    remap=self._remap, replay_channels=frozenset(HL7_CHANNELS),
                                    sender_clock_skew=timedelta(seconds=settings.sender_clock_skew_seconds))

    # ----------------------------------------------------------------------------------- entry points

    def receive(self, channel: str, content: bytes, *, content_type: str, sender_org: str | None,
                sender_system: str | None, detail: dict[str, Any] | None = None) -> Outcome:
        """Archive the message (committed), then process it."""
        return self.receive_many([Inbound(channel, content, content_type, sender_org, sender_system, detail)])[0]

    def receive_many(self, messages: list[Inbound]) -> list[Outcome]:
        """Archive several messages in one statement (committed), then process them in one transaction with a
        savepoint each (PostgreSQL; one by one on SQLite, whose driver does not nest transactions). Outcomes in
        the order given. The fixed cost of a message (two transactions, pool checkouts, the archive insert) is
        what holds small messages such as social-care events back, so a Kafka poll is stored as one batch."""
        messages = [_with_hl7_sender(message) for message in messages]
        with transaction(self.sessions) as session:
            raw_ids = [raw.id for raw in store.archive_many(session, messages)]
        if len(raw_ids) == 1 or not self._savepoints:
            return [self.process(raw_id) for raw_id in raw_ids]
        return self._process_together(raw_ids)

    def process(self, raw_id: str) -> Outcome:
        """Process (or re-process) an archived message. An attempt that lost to concurrent work was rolled back
        whole, so it is made again: after a unique race at once (it then finds the winner's rows), after a transient
        conflict (a deadlock: two batches touching the same records in opposite orders) once the short jittered
        pause has let the other finish. Only when the attempts run out is the message recorded failed."""
        outcome = self._process(raw_id, claim=False)
        assert outcome is not None  # only a claim (recover) ever passes a message over
        return outcome

    def recover(self, raw_id: str) -> Outcome | None:
        """Process a message left `received` unless another process is at it: the row is claimed in the processing
        transaction with FOR UPDATE SKIP LOCKED, so of two replicas or operators recovering it at once one processes
        it and the other passes it over, as it passes over a message still being processed where it arrived (that
        transaction holds the row) or finished meanwhile. None when passed over."""
        return self._process(raw_id, claim=True)

    def _process(self, raw_id: str, *, claim: bool) -> Outcome | None:
        races = conflicts = 0
        while True:
            try:
                return self._process_once(raw_id, claim=claim)
            except IntegrityError:
                races += 1
                if races == _ATTEMPTS:
                    return self._failed(raw_id, "IntegrityError", "a concurrent change collided; retry")
            except _TransientConflict as conflict:
                conflicts += 1
                if conflicts > self.settings.conflict_retries:
                    return self._failed(raw_id, conflict.kind, str(conflict.error), transient=_COLLIDED)
                _pause_after(raw_id, conflict, conflicts)

    def retry(self, raw_id: str) -> Outcome:
        """Process a failed, rejected or unfinished message again; Conflict for any other, or for one being processed
        right now."""
        with self.sessions() as session:
            raw = store.get_raw(session, raw_id)
            if raw is None:
                raise NotFound(f"no raw message {raw_id}")
            status = raw.status
            if status not in RETRYABLE:
                raise Conflict(f"raw message {raw_id} is {status}; only failed, rejected or unfinished "
                               "messages are retried")
        if status != "received":
            return self.process(raw_id)
        outcome = self.recover(raw_id)  # it may still be in the hands of the process it arrived at
        if outcome is None:
            raise Conflict(f"raw message {raw_id} is being processed (or has just been); list it again")
        return outcome

    def received(self, since: datetime, until: datetime | None, *, channels: list[str] | None = None,
                 statuses: list[str] | None = None, page: int = 500) -> Iterator[dict[str, Any]]:
        """Archived messages received in [since, until), oldest first, a page at a time (for replay)."""
        after: tuple[datetime, str] | None = None
        while True:
            with self.sessions() as session:
                rows = store.raw_received(session, since, until, channels=channels, statuses=statuses, after=after,
                                          limit=page)
                found = [{"id": r.id, "channel": r.channel, "received_at": r.received_at.isoformat(),
                          "status": r.status} for r in rows]
            if not rows:
                return
            after = (rows[-1].received_at, rows[-1].id)
            yield from found

    # ----------------------------------------------------------------------------------- processing

    def _process_once(self, raw_id: str, *, claim: bool = False) -> Outcome | None:
        channel = "unknown"
        try:
            with transaction(self.sessions) as session:
                raw = store.get_raw(session, raw_id, lock=True, skip_locked=claim)
                if claim and (raw is None or raw.status != "received"):
                    return None  # held by the process working on it, or finished: not ours to process
                if raw is None:
                    raise LookupError(f"raw message {raw_id} vanished")
                channel = raw.channel
                outcome = self._apply(session, raw)
        except (AdapterError, ScrError) as exc:
            return self._rejected(raw_id, channel, _refusal(exc))
        except IntegrityError:
            raise
        except Exception as exc:  # any fault here: the message stays archived as failed, retryable
            if kind := transient_conflict(exc):
                raise _TransientConflict(kind, exc) from exc
            # Not retried here: a database that is away stays away for longer than a request should wait.
            return self._failed(raw_id, type(exc).__name__, str(exc),
                                transient=_CONNECTION_LOST if connection_lost(exc) else None)
        self._after_commit([outcome])
        return outcome

    def _process_together(self, raw_ids: list[str]) -> list[Outcome]:
        """One transaction for several archived messages, a savepoint each: a refused message is rejected alone,
        one that fails otherwise (a unique race, a fault) is rolled back alone and then processed on its own, as
        `process` would; if the transaction itself fails, every message is."""
        outcomes: dict[str, Outcome] = {}
        alone: list[str] = []
        try:
            with transaction(self.sessions) as session:
                for raw in store.get_raws(session, raw_ids, lock=True):
                    try:
                        with session.begin_nested():
                            outcomes[raw.id] = self._apply(session, raw)
                    except (AdapterError, ScrError) as exc:
                        outcomes[raw.id] = _mark_rejected(session, raw.id, raw.channel, _refusal(exc))
                    except Exception as exc:  # retried on its own below, where a failure is recorded
                        _count_if_conflict(exc)
                        alone.append(raw.id)
                alone += [raw_id for raw_id in raw_ids if raw_id not in outcomes and raw_id not in alone]
        except Exception as exc:  # the batch's own transaction failed: nothing of it was stored
            _count_if_conflict(exc)
            log.warning("batch not stored; processing its messages one by one", error_type=type(exc).__name__,
                        messages=len(raw_ids))
            return [self.process(raw_id) for raw_id in raw_ids]
        self._after_commit([o for o in outcomes.values() if o.status == "processed"])
        for outcome in outcomes.values():
            if outcome.status == "rejected":
                self._count_rejected(outcome)
        outcomes |= {raw_id: self.process(raw_id) for raw_id in alone}
        return [outcomes[raw_id] for raw_id in raw_ids]

    def _apply(self, session: Session, raw: RawMessage) -> Outcome:
        """Map and store one archived message in the caller's transaction."""
        if raw.channel in HL7_CHANNELS and (original := store.processed_duplicate(session, raw, HL7_CHANNELS)):
            return _resent(session, raw, original)
        mapped = self._map(raw.channel, raw.content, raw.sender_org, raw.sender_system)
        message_key, original = self._sender_message_id(session, raw, mapped)
        if original is not None:
            return _resent(session, raw, original)
        warning, clamped = self._believe_sender_times(raw, mapped)
        # Never processed before (an attempt that failed counted itself): no earlier Provenance of it to update.
        first_attempt = raw.status == "received" and raw.attempts == 0
        changes = self.writer.write(session, raw.id, raw.channel, mapped, first_attempt=first_attempt)
        self._publish_in(session, changes)
        detail = raw.detail | _summary(changes, mapped.rejected)
        if mapped.message_id:
            detail[_DIGEST] = mapped.message_id.digest
        store.finish_raw(session, raw.id, "processed", detail=detail, message_key=message_key)
        return Outcome(raw.id, "processed", changes, mapped.rejected, channel=raw.channel,
                       reviews_opened=store.reviews_opened(session), sender_clock_warning=warning,
                       clamped_entries=clamped)

    def _believe_sender_times(self, raw: RawMessage, mapped: MappedMessage) -> tuple[Issue | None, frozenset[int]]:
        """Order the message's items by their sender's time no later than its receipt (writer.believe_sender_times),
        saying so when it was later: one sender's clock set wrong shows as a run of these, naming it. The warning
        for the answer, and the entries whose time was not believed."""
        clamped = believe_sender_times(mapped, raw.received_at, self.writer.skew)
        if not clamped:
            return None, frozenset()
        log.warning("sender's time later than the receipt; ordered as received", raw_id=raw.id,
                    channel=raw.channel, source_org=mapped.source_org, source_system=mapped.source_system,
                    items=len(clamped))
        entries = frozenset(item.entry for item in clamped if item.entry is not None)
        return _sender_clock_warning(raw.channel, raw.received_at, self.writer.skew), entries

    def _remap(self, raw: RawMessage) -> MappedMessage:
        """An archived message mapped again for a stay's replay, its times believed as when it was first stored."""
        mapped = self._map(raw.channel, raw.content, raw.sender_org, raw.sender_system)
        believe_sender_times(mapped, raw.received_at, self.writer.skew)
        return mapped

    def _sender_message_id(self, session: Session, raw: RawMessage, mapped: MappedMessage
                           ) -> tuple[str | None, str | None]:
        """The archive's key for the sender's own id of the message (None when it has none), and the processed
        message this one repeats (None when it is the first with that id). Refused when the sender gave the id to a
        different message, unless this one was stored before (a replay or retry of it). One processed message holds
        each key (unique index, migration ingest_0004): of two deliveries of one id processed at once, the second to
        commit fails on the index, and its retry (`process`) finds the first."""
        if mapped.message_id is None:
            return None, None
        key = f"{raw.channel}:{mapped.source_org}:{mapped.message_id.value}"
        earlier = store.processed_with_key(session, key, raw.id)
        if earlier is None:
            return key, None
        if self._digest_of(session, *earlier) == mapped.message_id.digest:
            return None, earlier[0]
        if _stored_before(raw):
            # Stored when it arrived, before the check (ingest_0004 gave the id to an earlier event): refused now, the
            # archive would call `rejected` an event the store holds. Processed again; the id stays with its holder.
            return None, None
        raise AdapterError(Issue(f"event_id already used for a different event (raw message {earlier[0]})",
                                 "event_id", code="duplicate"))

    def _digest_of(self, session: Session, raw_id: str, detail: dict[str, Any]) -> str | None:
        """What a processed message's id stood for. Messages processed before ingest_0003 recorded no digest (their
        keys were filled in by ingest_0004): it is worked out again from the archived message."""
        if _DIGEST in detail:
            return detail[_DIGEST]
        raw = store.get_raw(session, raw_id)
        try:
            mapped = self._map(raw.channel, raw.content, raw.sender_org, raw.sender_system) if raw else None
        except (AdapterError, ScrError):  # no longer readable: the id stays held, and any other use refused
            return None
        return mapped.message_id.digest if mapped and mapped.message_id else None

    def _after_commit(self, outcomes: list[Outcome]) -> None:
        """Wake the outbox relay, count, and recount open reviews if a message opened one."""
        changes = [change for outcome in outcomes for change in outcome.changes]
        self._publish(changes)
        if any(outcome.reviews_opened for outcome in outcomes):  # only then: a count(*) per message is not free
            with self.sessions() as session:
                metrics.REVIEWS_OPEN.set(store.count_open_reviews(session))
        for outcome in outcomes:
            metrics.MESSAGES.labels(outcome.channel, "accepted").inc()
            if outcome.sender_clock_warning:
                metrics.SENDER_TIMES_CLAMPED.labels(outcome.channel).inc()
            for change in outcome.changes:
                metrics.RESOURCES.labels(outcome.channel, "unchanged" if change.change == "stale"
                                         else change.change).inc()

    def _rejected(self, raw_id: str, channel: str, exc: AdapterError) -> Outcome:
        with transaction(self.sessions) as session:
            outcome = _mark_rejected(session, raw_id, channel, exc)
        return self._count_rejected(outcome)

    def _count_rejected(self, outcome: Outcome) -> Outcome:
        metrics.MESSAGES.labels(outcome.channel, "rejected").inc()
        log.info("message rejected", raw_id=outcome.raw_id, channel=outcome.channel, issues=len(outcome.issues))
        return outcome

    def _failed(self, raw_id: str, kind: str, text: str, *, transient: str | None = None) -> Outcome:
        """Record the message failed (retryable). `transient` says why, when the fault is the database's and the
        sender may simply send again (answered 503); None for a fault here (500)."""
        # The exception text may quote the message (SQL parameters): it goes to the archive row, never the log.
        log.error("message processing failed", raw_id=raw_id, error_type=kind)
        channel = "unknown"
        try:
            with transaction(self.sessions) as session:
                store.finish_raw(session, raw_id, "failed", error=f"{kind}: {text}"[:2000])
                raw = store.get_raw(session, raw_id)
                channel = raw.channel if raw else channel
        except Exception as exc:  # the database itself is down: the raw row stays `received`, later unfinished
            log.error("could not record the failure", raw_id=raw_id, error_type=type(exc).__name__)
        metrics.MESSAGES.labels(channel, "failed").inc()
        if transient:
            return Outcome(raw_id, "failed", transient=True, issues=[Issue(
                f"processing failed ({kind}): {transient}; the message is archived for retry, and may be sent again "
                "shortly", code="transient")])
        return Outcome(raw_id, "failed", issues=[Issue(f"processing failed ({kind}); the message is archived "
                                                       "and will be retried", code="exception")])

    def _map(self, channel: str, content: bytes, sender_org: str | None, sender_system: str | None) -> MappedMessage:
        if channel == "fhir":
            mapped = gp_fhir.map_bundle(_json(content), max_entries=self.settings.max_bundle_entries)
        elif channel in HL7_CHANNELS:
            mapped = hl7v2.map_adt(hl7v2_charset.decode(content))
            _same_sender(mapped.source_org, sender_org, "MSH-4", ("MSH", 4, 0))
            # The archive's `MSH-3@MSH-4` is for operators: a record's source system stays MSH-3, or the channel
            # without one, as before it was archived, so its key (and a replay of older messages) is unchanged.
            sender_system = None
        elif channel == "community":
            mapped = community_csv.map_csv(content, org=sender_org or "", max_rows=self.settings.max_csv_rows)
        elif channel == "socialcare":
            mapped = socialcare_events.map_event(_json(content))
            _same_sender(mapped.source_org, sender_org, "provider.ods_code", None)
        else:
            raise AdapterError(Issue(f"unknown channel {channel!r}", code="not-supported"))
        # Stored normalised, as tokens' ods_code claims are (shared.auth): MSH-4 is as the sender wrote it, and a
        # record API caller's "own organisation" and the consent service's sender are compared by equality.
        mapped.source_org = normalise_ods(mapped.source_org or sender_org or "") or None
        mapped.source_system = mapped.source_system or sender_system or channel
        if not mapped.source_org:
            raise AdapterError(Issue("the sending organisation's ODS code is unknown", code="required"))
        return mapped

    # ----------------------------------------------------------------------------------- admin actions

    def admin_change(self, action: str, **kwargs: Any) -> list[Change]:
        """Run a person-index action (undo-merge, review) in one transaction, then publish its changes."""
        with transaction(self.sessions) as session:
            ctx = WriteContext("", "", None, datetime.now(UTC))
            if action == "undo-merge":
                changes = person_index.undo_merge(session, ctx, kwargs["merge_id"])
            else:
                changes = person_index.resolve_review(session, ctx, kwargs["review_id"], kwargs["decision"],
                                                      kwargs["reviewer"])
            ctx.write_queued(session)
            self._publish_in(session, changes)
            metrics.REVIEWS_OPEN.set(store.count_open_reviews(session))
        self._publish(changes)
        return changes

    def list_raw(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Archived messages, newest first, of a status or `unfinished`."""
        stored, received_before = self._raw_filter(status) if status else (None, None)
        with self.sessions() as session:
            return [{"id": r.id, "channel": r.channel, "received_at": r.received_at.isoformat(), "status": r.status,
                     "attempts": r.attempts, "error": r.error, "content_hash": r.content_hash,
                     "sender_org": r.sender_org, "sender_system": r.sender_system}
                    for r in store.list_raw(session, stored, limit, received_before=received_before)]

    def count_backlog(self) -> tuple[int, int]:
        """Archived messages failed, and unfinished (for the gauges, read at each scrape)."""
        with self.sessions() as session:
            return store.count_backlog(session, self._unfinished_before())

    def _raw_filter(self, status: str) -> tuple[str, datetime | None]:
        """A status as the archive holds it, and for `unfinished` the moment before which `received` means cut off:
        younger, it may be in the hands of a process (this one or another replica) right now."""
        if status != UNFINISHED:
            return status, None
        return "received", self._unfinished_before()

    def _unfinished_before(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=self.settings.raw_unfinished_after_seconds)

    def list_reviews(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [{"id": r.id, "source_patient_id": r.source_patient_id,
                     "candidate_person_id": r.candidate_person_id, "score": r.score, "explanation": r.explanation,
                     "status": r.status, "created": r.created.isoformat()}
                    for r in store.list_reviews(session, status, limit)]

    def refresh_gauges(self) -> None:
        """Recount open reviews (the raw archive's gauges are read at each scrape: app.py)."""
        with self.sessions() as session:
            metrics.REVIEWS_OPEN.set(store.count_open_reviews(session))

    def _publish(self, changes: list[Change]) -> None:
        """After the commit: tell the outbox relay there is something to send (CONTRACTS.md §2)."""
        if changes and self.on_committed is not None:
            self.on_committed()

    def _publish_in(self, session: Session, changes: list[Change]) -> None:
        """record.changed is written in the transaction of the change it announces (shared/outbox.py)."""
        outbox.stage(session, self.bus, RECORD_CHANGED, _record_changed(changes))


def _record_changed(changes: list[Change]) -> list[tuple[str | None, dict[str, Any]]]:
    return [(c.person_id, {"person_id": c.person_id, "resource_type": c.resource_type, "id": c.id,
                           "version_id": c.version_id, "change": c.change, "source_org": c.source_org})
            for c in changes if c.changed and c.resource_type != "Provenance"]


def _pause_after(raw_id: str, conflict: _TransientConflict, retry: int) -> None:
    """Count the conflict, then give the transaction that won it time to finish before the retry."""
    metrics.CONFLICTS_RETRIED.labels(conflict.kind).inc()
    log.info("transient database conflict; processing again", raw_id=raw_id, kind=conflict.kind, retry=retry)
    time.sleep(conflict_backoff(retry))


def _count_if_conflict(exc: Exception) -> None:
    """A message of a batch lost a transient conflict: processing it again on its own is a retry like any other."""
    if kind := transient_conflict(exc):
        metrics.CONFLICTS_RETRIED.labels(kind).inc()


def _mark_rejected(session: Session, raw_id: str, channel: str, refusal: AdapterError) -> Outcome:
    """Record in the raw archive why a message was refused; its outcome for the sender."""
    store.finish_raw(session, raw_id, "rejected", error=describe(refusal.issues)[:2000])
    return Outcome(raw_id, "rejected", issues=refusal.issues, hl7_location=refusal.hl7_location,
                   hl7_code=refusal.hl7_code, channel=channel)


_DIGEST = "message_digest"  # in a processed message's detail: what its sender's id for it stood for


def _stored_before(raw: RawMessage) -> bool:
    """Whether the message was processed before: it is now (a replay), or a later attempt failed or was refused after
    it had been (a replay cut off, or one that refused it before the check let it be), which keeps the summary of
    what it stored in its detail."""
    return raw.status == "processed" or "changes" in raw.detail


def _resent(session: Session, raw: RawMessage, original: str) -> Outcome:
    """A message already processed, sent again: recorded as a duplicate of it, nothing written."""
    store.finish_raw(session, raw.id, "processed", detail=raw.detail | {"duplicate_of": original})
    return Outcome(raw.id, "processed", channel=raw.channel, duplicate_of=original)


def _summary(changes: list[Change], rejected: list[Rejected]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.change] = counts.get(change.change, 0) + 1
    return {"changes": counts, "rejected_entries": [r.where for r in rejected][:500]}


def _json(content: bytes) -> Any:
    if b"\\u0000" in content:  # PostgreSQL JSON cannot hold NUL characters
        raise AdapterError(Issue("the JSON contains a NUL character (\\u0000)", code="structure"))
    try:
        value = json.loads(content)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates (\\ud800) cannot be stored
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(Issue(f"the body is not valid JSON: {exc}", code="structure")) from None
    except UnicodeEncodeError:
        raise AdapterError(Issue("the JSON contains an unpaired UTF-16 surrogate", code="structure")) from None
    except RecursionError:
        raise AdapterError(Issue("the body nests too deeply", code="structure")) from None
    return value


def _with_hl7_sender(message: Inbound) -> Inbound:
    """An HL7 message is archived under the sender its MSH names (the routes and the MLLP listener know no other)."""
    if message.channel not in HL7_CHANNELS or message.sender_system is not None:
        return message
    return dataclasses.replace(message, sender_system=hl7_sender(message.content))


def hl7_sender(content: bytes) -> str | None:
    """Who sent an HL7 message, for the archive's sender_system: `<MSH-3>@<MSH-4>` (`PAS@RX1`), the sending
    application at the sending facility, each its first component; the application alone when MSH-4 is empty, `@RX1`
    when MSH-3 is. The application alone is ambiguous (many trusts' PAS send `PAS`), and over MLLP nothing else names
    the trust (no token, so no sender_org). MSH is read by position, as for MSH-18, so a message refused for its
    version or structure still names its sender; None when the message does not begin with a readable MSH."""
    msh = _msh(content)
    if msh is None:
        return None
    application, facility = msh.get(3), msh.get(4)
    sender = f"{application}@{facility}" if facility else application
    return sender[:128] or None  # what the archive column holds


def _msh(content: bytes) -> Segment | None:
    """MSH-3 and MSH-4 of a message, by position with its own separators; None when its MSH cannot be read."""
    try:
        text = hl7v2_charset.decode(content)
    except AdapterError:  # refused later, at MSH-18. As Latin-1 the ASCII of MSH-3 and MSH-4 still reads (a UTF-16
        text = content.decode("latin-1")  # body then has no readable MSH)
    line = re.split(r"[\r\n]", text.lstrip("\r\n \t\x00"), maxsplit=1)[0]
    if not line.startswith("MSH") or len(line) < 8 or "\x00" in line:  # PostgreSQL text holds no NUL
        return None
    fields = line.split(line[3])  # fields[1] is MSH-2 (the encoding characters), so MSH-n is fields[n - 1]
    encoding = fields[1]
    if len(encoding) < 4 or len(fields) < 3:
        return None
    component, repetition, escape, subcomponent = encoding[:4]
    return Segment("MSH", 1, {n: fields[n - 1].split(repetition) for n in (3, 4) if n <= len(fields)},
                   (component, subcomponent, escape))


def _same_sender(claimed: str | None, authenticated: str | None, where: str,
                 hl7_location: tuple[str, int, int] | None) -> None:
    """Over HTTP the token names the sender; the message may not claim another organisation."""
    if authenticated and claimed and normalise_ods(claimed) != normalise_ods(authenticated):
        raise AdapterError(Issue(f"{where} {claimed!r} is not the organisation the token was issued to",
                                 where, code="forbidden"), hl7_location=hl7_location, hl7_code="204")
