"""Running one bulk export job, start to finish, with memory that does not grow with the export's size.

1. Ask the consent service who is refused secondary use (once per job; fail closed) and turn that into persons.
2. Walk persons in keyset batches for the Patient file (and, for a Group, its members).
3. Stream each other type with a server-side cursor (`yield_per`), skip what may not leave, de-identify the
   rest, and write NDJSON in chunks of SCR_EXPORT_CHUNK_ROWS lines, each chunk its own short transaction.
Between chunks the job's heartbeat is written; a cancelled or re-queued job stops there.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.record_api.population import store
from services.record_api.population.deidentify import Deidentifier, is_excluded, nhs_number_residue, recipient_of
from services.record_api.population.delivery import stored_line
from services.record_api.population.demographics import PersonRow, person_batches, restricted_persons
from services.record_api.population.deprivation import DeprivationLookup
from services.record_api.population.exclusions import Exclusions, ExclusionsUnavailable, PersonExclusions, resolve
from services.record_api.population.models import ExportJob
from services.record_api.population.pseudonym import Pseudonymiser
from services.record_api.population.targets import JobTargets, excluded_items
from services.record_api.resource_types import DIRECTORY_TYPES
from services.record_api.store import utc
from shared.audit import AuditRecord, write_audit
from shared.auth import Principal
from shared.errors import ScrError
from shared.schema import Person, Resource

log = structlog.get_logger("scr.record_api.population")
STREAM_BATCH = 500
BEAT_EVERY_ROWS = 5000


class ExclusionSource(Protocol):
    def fetch(self, purpose: str, organisation: str | None) -> Exclusions: ...


class Stopped(Exception):
    """The job stopped being this worker's (cancelled or re-queued), or this replica is shutting down."""

    def __init__(self, requeue: bool) -> None:
        super().__init__("stopped")
        self.requeue = requeue


class ChunkWriter:
    """NDJSON lines per type, stored in chunks of at most `chunk_rows` lines and files of at most `file_max`."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, chunk_rows: int, file_max: int,
                 checkpoint: Callable[[str], None]) -> None:
        self.sessions, self.job_id = sessions, job_id
        self.chunk_rows, self.file_max = max(1, chunk_rows), max(1, file_max)
        self.checkpoint = checkpoint
        self.counts: Counter[str] = Counter()
        self._buffer: list[str] = []
        self._type: str | None = None
        self._part, self._seq, self._in_part = 1, 0, 0

    def add(self, resource_type: str, line: str) -> None:
        """Add one stored line (delivery.stored_line: the NDJSON line and who it is about)."""
        if resource_type != self._type:
            self.flush()
            self._type, self._part, self._seq, self._in_part = resource_type, 1, 0, 0
        if self._in_part == self.file_max:
            self.flush()
            self._part, self._seq, self._in_part = self._part + 1, 0, 0
        self._buffer.append(line)
        self._in_part += 1
        self.counts[resource_type] += 1
        if len(self._buffer) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buffer or self._type is None:
            return
        self._seq += 1
        with self.sessions.begin() as session:
            store.add_chunk(session, self.job_id, self._type, self._part, self._seq, self._buffer)
        self._buffer = []
        self.checkpoint(f"{self._type}: {self.counts[self._type]:,} written")


@dataclass
class _Plan:
    """Everything a job decided before streaming: who is out, who is S-flagged, where merged persons went."""

    persons: PersonExclusions
    restricted: set[str]
    survivors: dict[str, tuple[str, str | None]]
    deidentifier: Deidentifier
    members: set[str] | None = None
    skipped: Counter[str] = field(default_factory=Counter)


class ExportRunner:
    """Runs jobs claimed by a worker (or synchronously, from the CLI)."""

    def __init__(self, sessions: sessionmaker[Session], exclusions: ExclusionSource, lookup: DeprivationLookup,
                 secret: Callable[[], bytes], *, chunk_rows: int = 1000, file_max: int = 100_000) -> None:
        self.sessions, self.exclusions, self.lookup, self.secret = sessions, exclusions, lookup, secret
        self.chunk_rows, self.file_max = chunk_rows, file_max

    def run(self, job_id: str, worker: str, should_stop: Callable[[], bool] = lambda: False) -> str:
        """Run a claimed job; returns its final status (completed, failed, cancelled or queued)."""
        with self.sessions() as session:
            job = session.get(ExportJob, job_id)
            if job is None:
                return "missing"
            session.expunge(job)
        job.since = utc(job.since)  # SQLite hands back naive times
        checkpoint = self._checkpoint(job_id, worker, should_stop)
        writer = ChunkWriter(self.sessions, job_id, self.chunk_rows, self.file_max, checkpoint)
        plan: _Plan | None = None
        try:
            plan = self._plan(job, worker)
            self._write(job, plan, writer, checkpoint)
            return self._finish(job, worker, writer, plan)
        except Stopped as stop:
            return self._stopped(job_id, worker, stop)
        except (ExclusionsUnavailable, ScrError) as exc:
            return self._fail(job, worker, exc.message, writer, plan)
        except Exception as exc:  # a fault here: the job fails whole, its partial output is dropped
            log.error("export job failed", job=job_id, error_type=type(exc).__name__)
            return self._fail(job, worker, "internal error while exporting; nothing was delivered", writer, plan)

    # ------------------------------------------------------------ before streaming

    def _plan(self, job: ExportJob, worker: str) -> _Plan:
        moment = store.now()
        with self.sessions.begin() as session:
            store.set_transaction_time(session, job.id, moment)
            store.beat(session, job.id, worker, "fetching the secondary-use exclusions")
        job.transaction_time = moment
        exclusions = self.exclusions.fetch(job.purpose, job.recipient_ods)  # fail closed: raises on any failure
        pseudonymiser = Pseudonymiser(self.secret(), recipient_of(job.recipient_sub, job.recipient_ods))
        with self.sessions() as session:
            persons = resolve(session, exclusions)
            restricted = restricted_persons(session)
            survivors = _survivors(session)
            targets = JobTargets(self.sessions, persons, survivors, excluded_items(session, persons, survivors))
        plan = _Plan(persons, restricted, survivors, Deidentifier(pseudonymiser, self.lookup, targets))
        plan.skipped.update({f"persons refused: {rule}": n for rule, n in exclusions.rules().items()})
        return plan

    def _checkpoint(self, job_id: str, worker: str, should_stop: Callable[[], bool]) -> Callable[[str], None]:
        def checkpoint(progress: str) -> None:
            if should_stop():
                raise Stopped(requeue=True)
            with self.sessions.begin() as session:
                if not store.beat(session, job_id, worker, progress):
                    raise Stopped(requeue=False)

        return checkpoint

    # ------------------------------------------------------------ streaming

    def _write(self, job: ExportJob, plan: _Plan, writer: ChunkWriter,
               checkpoint: Callable[[str], None]) -> None:
        if "Patient" in job.types or job.level == "group":
            self._persons(job, plan, writer, checkpoint)
        for resource_type in job.types:
            if resource_type == "Patient":
                continue
            if resource_type in DIRECTORY_TYPES:
                self._directory(job, plan, writer, resource_type)
            else:
                self._resources(job, plan, writer, resource_type, checkpoint)
            writer.flush()

    def _persons(self, job: ExportJob, plan: _Plan, writer: ChunkWriter,
                 checkpoint: Callable[[str], None]) -> None:
        practice = job.group_id.removeprefix("practice-") if job.group_id else None
        plan.members = set() if job.level == "group" else None
        with self.sessions() as session:
            for batch in person_batches(session, STREAM_BATCH, plan.persons.withheld):
                for row in batch:
                    self._person(job, plan, writer, row, practice)
                checkpoint(f"Patient: {writer.counts['Patient']:,} written")
        writer.flush()

    def _person(self, job: ExportJob, plan: _Plan, writer: ChunkWriter, row: PersonRow,
                practice: str | None) -> None:
        if row.person_id in plan.persons.refused:
            plan.skipped["persons excluded"] += 1
            return
        if plan.members is not None:
            # A practice Group: registered there, and not S-flagged (membership would reveal where they live).
            if row.gp_practice != practice or row.restricted:
                return
            plan.members.add(row.person_id)
        if "Patient" not in job.types or (job.since and row.changed <= job.since):
            return
        line = _line(plan.deidentifier.patient(row))
        if nhs_number_residue(line):
            plan.skipped["identifier residue"] += 1
            return
        writer.add("Patient", stored_line([row.person_id], None, line))

    def _resources(self, job: ExportJob, plan: _Plan, writer: ChunkWriter, resource_type: str,
                   checkpoint: Callable[[str], None]) -> None:
        statement = (select(Resource.person_id, Resource.labels, Resource.body, Person.nhs_number)
                     .join(Person, Person.id == Resource.person_id)
                     .where(Resource.resource_type == resource_type, Resource.deleted.is_(False),
                            Resource.last_updated <= job.transaction_time)
                     .execution_options(yield_per=STREAM_BATCH))
        if job.since:
            statement = statement.where(Resource.last_updated > job.since)
        seen = 0
        with self.sessions() as session:
            for person_id, labels, body, nhs in session.execute(statement):
                seen += 1
                if seen % BEAT_EVERY_ROWS == 0:
                    checkpoint(f"{resource_type}: {seen:,} read")
                line = self._resource_line(plan, person_id, labels, body, nhs)
                if line is not None:
                    writer.add(resource_type, line)

    def _resource_line(self, plan: _Plan, person_id: str, labels: list[str] | None, body: dict[str, Any],
                       nhs: str | None) -> str | None:
        person_id, nhs = plan.survivors.get(person_id, (person_id, nhs))
        if person_id in plan.persons.refused:
            plan.skipped["items of excluded persons"] += 1
            return None
        if plan.members is not None and person_id not in plan.members:
            return None
        if is_excluded(labels, plan.persons.withheld.get(person_id, frozenset())):
            plan.skipped["items with a sensitive label"] += 1
            return None
        referenced: set[str] = set()
        line = _line(plan.deidentifier.resource(body, person_id=person_id, person_nhs=nhs,
                                                restricted=person_id in plan.restricted, referenced=referenced))
        if nhs_number_residue(line):
            plan.skipped["identifier residue"] += 1
            return None
        return stored_line([person_id, *sorted(referenced - {person_id})], labels, line)

    def _directory(self, job: ExportJob, plan: _Plan, writer: ChunkWriter, resource_type: str) -> None:
        statement = (select(Resource.body).where(Resource.resource_type == resource_type,
                                                 Resource.person_id.is_(None), Resource.deleted.is_(False),
                                                 Resource.last_updated <= job.transaction_time)
                     .execution_options(yield_per=STREAM_BATCH))
        if job.since:
            statement = statement.where(Resource.last_updated > job.since)
        with self.sessions() as session:
            for (body,) in session.execute(statement):
                writer.add(resource_type, stored_line([], None, _line(plan.deidentifier.directory(body))))

    # ------------------------------------------------------------ the end

    def _finish(self, job: ExportJob, worker: str, writer: ChunkWriter, plan: _Plan) -> str:
        writer.flush()
        counts = _counts(writer, plan)
        with self.sessions.begin() as session:
            if not store.finish(session, job.id, worker, counts):
                raise Stopped(requeue=False)
            _audit(session, job, "success", f"bulk export {job.id} completed: {sum(writer.counts.values()):,} "
                                            f"resource(s) of {len(writer.counts)} type(s)")
        return store.COMPLETED

    def _fail(self, job: ExportJob, worker: str, reason: str, writer: ChunkWriter, plan: _Plan | None) -> str:
        with self.sessions.begin() as session:
            store.fail(session, job.id, worker, reason, _counts(writer, plan))
            _audit(session, job, "error", f"bulk export {job.id} failed: {reason}")
        return store.FAILED

    def _stopped(self, job_id: str, worker: str, stop: Stopped) -> str:
        with self.sessions.begin() as session:
            if stop.requeue:
                store.requeue(session, job_id, worker)
                return store.QUEUED
            store.drop_output(session, job_id)
        return store.CANCELLED


def _survivors(session: Session) -> dict[str, tuple[str, str | None]]:
    """Merged person -> (the person it was merged into, that person's NHS number)."""
    merged = dict(session.execute(select(Person.id, Person.merged_into).where(Person.status == "merged",
                                                                              Person.merged_into.is_not(None))).all())
    numbers = dict(session.execute(select(Person.id, Person.nhs_number)
                                   .where(Person.id.in_(set(merged.values())))).all()) if merged else {}
    return {person: (into, numbers.get(into)) for person, into in merged.items()}


def _line(resource: dict[str, Any]) -> str:
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False)


def _counts(writer: ChunkWriter, plan: _Plan | None) -> dict[str, Any]:
    return {"resources": dict(writer.counts), "skipped": dict(plan.skipped) if plan else {}}


def _audit(session: Session, job: ExportJob, outcome: str, description: str) -> None:
    principal = Principal("system", job.recipient_sub, ods_code=job.recipient_ods)
    write_audit(session, AuditRecord(service="record_api", action="export", outcome=outcome, principal=principal,
                                     purpose=job.purpose, description=description))

