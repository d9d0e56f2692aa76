"""SQL for export jobs and their output: create, claim (compare-and-set, so exactly one replica runs a job),
heartbeat, cancel, finish, purge, and reading a file back one chunk at a time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.record_api.population.models import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    ExportChunk,
    ExportJob,
)


def now() -> datetime:
    return datetime.now(UTC)


def utc_instant(moment: datetime | None) -> str | None:
    """A FHIR instant in UTC (SQLite hands back naive times, which are UTC here)."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class JobRequest:
    """What a kick-off asked for."""

    level: str  # system | patient | group
    group_id: str | None
    types: list[str]
    since: datetime | None
    purpose: str
    recipient_sub: str
    recipient_ods: str | None
    request_url: str


@dataclass(frozen=True)
class OutputFile:
    resource_type: str
    part: int
    count: int

    @property
    def name(self) -> str:
        return f"{self.resource_type}-{self.part}.ndjson"


def create_job(session: Session, request: JobRequest) -> ExportJob:
    job = ExportJob(id=str(uuid.uuid4()), status=QUEUED, level=request.level, group_id=request.group_id,
                    types=list(request.types), since=request.since, purpose=request.purpose,
                    recipient_sub=request.recipient_sub, recipient_ods=request.recipient_ods,
                    request_url=request.request_url, requested_at=now(), counts={})
    session.add(job)
    session.flush()
    return job


def job_for(session: Session, job_id: str, sub: str, ods: str | None) -> ExportJob | None:
    """The job, only for the recipient who asked for it (anyone else is told it does not exist)."""
    job = session.get(ExportJob, job_id)
    if job is None or job.recipient_sub != sub or job.recipient_ods != ods:
        return None
    return job


def claim_next(sessions: sessionmaker[Session], worker: str) -> str | None:
    """Claim the oldest queued job for `worker`; None if there is none (or another replica won every race)."""
    with sessions() as session:
        candidates = list(session.scalars(select(ExportJob.id).where(ExportJob.status == QUEUED)
                                          .order_by(ExportJob.requested_at).limit(5)))
    return next((job_id for job_id in candidates if claim(sessions, job_id, worker)), None)


def claim(sessions: sessionmaker[Session], job_id: str, worker: str) -> bool:
    """Compare-and-set queued -> running: of several replicas trying, exactly one succeeds."""
    moment = now()
    with sessions.begin() as session:
        claimed = session.execute(
            update(ExportJob).where(ExportJob.id == job_id, ExportJob.status == QUEUED)
            .values(status=RUNNING, claimed_by=worker, heartbeat=moment, started_at=moment, progress="starting")
            .execution_options(synchronize_session=False))
        return claimed.rowcount == 1


def beat(session: Session, job_id: str, worker: str, progress: str) -> bool:
    """Record progress; False if the job is no longer this worker's to run (cancelled, or re-queued)."""
    result = session.execute(
        update(ExportJob).where(ExportJob.id == job_id, ExportJob.status == RUNNING, ExportJob.claimed_by == worker)
        .values(heartbeat=now(), progress=progress[:200]).execution_options(synchronize_session=False))
    return result.rowcount == 1


def set_transaction_time(session: Session, job_id: str, moment: datetime) -> None:
    session.execute(update(ExportJob).where(ExportJob.id == job_id).values(transaction_time=moment)
                    .execution_options(synchronize_session=False))


def finish(session: Session, job_id: str, worker: str, counts: dict[str, Any]) -> bool:
    result = session.execute(
        update(ExportJob).where(ExportJob.id == job_id, ExportJob.status == RUNNING, ExportJob.claimed_by == worker)
        .values(status=COMPLETED, finished_at=now(), counts=counts, progress="complete")
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def fail(session: Session, job_id: str, worker: str | None, error: str, counts: dict[str, Any]) -> None:
    """Mark a job failed and drop any output it wrote: a failed export is never half-delivered."""
    clause = [ExportJob.id == job_id, ExportJob.status.in_(ACTIVE)]
    if worker:
        clause.append(ExportJob.claimed_by == worker)
    session.execute(update(ExportJob).where(*clause).values(status=FAILED, finished_at=now(), error=error[:2000],
                                                            counts=counts, progress="failed")
                    .execution_options(synchronize_session=False))
    drop_output(session, job_id)


def requeue(session: Session, job_id: str, worker: str) -> None:
    """Give a job back (this replica is stopping): another replica starts it again from the beginning."""
    session.execute(update(ExportJob).where(ExportJob.id == job_id, ExportJob.status == RUNNING,
                                            ExportJob.claimed_by == worker)
                    .values(status=QUEUED, claimed_by=None, heartbeat=None, progress="re-queued")
                    .execution_options(synchronize_session=False))
    drop_output(session, job_id)


def requeue_stale(session: Session, stale_after: float) -> int:
    """Re-queue running jobs whose worker stopped beating (its replica died); their partial output is dropped."""
    cutoff = now() - timedelta(seconds=stale_after)
    stale = list(session.scalars(select(ExportJob.id).where(ExportJob.status == RUNNING,
                                                            ExportJob.heartbeat < cutoff)))
    for job_id in stale:
        session.execute(update(ExportJob).where(ExportJob.id == job_id, ExportJob.status == RUNNING,
                                                ExportJob.heartbeat < cutoff)
                        .values(status=QUEUED, claimed_by=None, progress="re-queued after a stalled worker")
                        .execution_options(synchronize_session=False))
        drop_output(session, job_id)
    return len(stale)


def cancel(session: Session, job: ExportJob) -> None:
    """Spec DELETE: stop a running job, or remove a finished one and its files."""
    if job.status in ACTIVE:
        job.status, job.finished_at, job.progress = CANCELLED, now(), "cancelled"
    drop_output(session, job.id)
    if job.status not in ACTIVE:
        session.delete(job)


def drop_output(session: Session, job_id: str) -> None:
    session.execute(delete(ExportChunk).where(ExportChunk.job_id == job_id))


def purge_expired(session: Session, retention_hours: float) -> int:
    cutoff = now() - timedelta(hours=retention_hours)
    expired = list(session.scalars(select(ExportJob.id).where(ExportJob.status.in_((COMPLETED, FAILED, CANCELLED)),
                                                              ExportJob.finished_at < cutoff)))
    for job_id in expired:
        drop_output(session, job_id)
        session.execute(delete(ExportJob).where(ExportJob.id == job_id))
    return len(expired)


def add_chunk(session: Session, job_id: str, resource_type: str, part: int, seq: int, lines: list[str]) -> None:
    session.add(ExportChunk(job_id=job_id, resource_type=resource_type, part=part, seq=seq, lines=len(lines),
                            data="".join(f"{line}\n" for line in lines)))


def output_files(session: Session, job_id: str) -> list[OutputFile]:
    rows = session.execute(select(ExportChunk.resource_type, ExportChunk.part, func.sum(ExportChunk.lines))
                           .where(ExportChunk.job_id == job_id)
                           .group_by(ExportChunk.resource_type, ExportChunk.part)
                           .order_by(ExportChunk.resource_type, ExportChunk.part))
    return [OutputFile(t, int(p), int(n or 0)) for t, p, n in rows]


def file_exists(session: Session, job_id: str, resource_type: str, part: int) -> bool:
    return session.scalar(select(ExportChunk.seq).where(
        ExportChunk.job_id == job_id, ExportChunk.resource_type == resource_type, ExportChunk.part == part
    ).limit(1)) is not None


def read_file(sessions: sessionmaker[Session], job_id: str, resource_type: str, part: int) -> Iterator[bytes]:
    """A file's bytes, one chunk per query and per yield: serving a large file holds one chunk in memory."""
    seq = -1
    while True:
        with sessions() as session:
            row = session.execute(select(ExportChunk.seq, ExportChunk.data).where(
                ExportChunk.job_id == job_id, ExportChunk.resource_type == resource_type,
                ExportChunk.part == part, ExportChunk.seq > seq).order_by(ExportChunk.seq).limit(1)).first()
        if row is None:
            return
        seq = row[0]
        yield row[1].encode()

