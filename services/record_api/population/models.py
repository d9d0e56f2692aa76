"""Bulk export jobs and their NDJSON output, kept in the database so that any record API replica can run a job,
answer its status and serve its files (migration branch `population`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.schema import Base

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)


class ExportJob(Base):
    """One `$export` request: what was asked, for whom, and how far it has got."""

    __tablename__ = "population_export_job"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # queued | running | completed | failed | cancelled
    level: Mapped[str] = mapped_column(String(16))  # system | patient | group
    group_id: Mapped[str | None] = mapped_column(String(64))
    types: Mapped[list[str]] = mapped_column(default=list)
    since: Mapped[datetime | None]
    purpose: Mapped[str] = mapped_column(String(16))  # HOPERAT | HRESCH
    recipient_sub: Mapped[str] = mapped_column(String(128))
    recipient_ods: Mapped[str | None] = mapped_column(String(16))
    request_url: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime]
    transaction_time: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    heartbeat: Mapped[datetime | None]
    progress: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    # Resources written per type, persons left out and why, items removed by reason: counts, never who.
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_population_export_job_status", "status", "requested_at"),)


class ExportChunk(Base):
    """A bounded piece of one output file: up to SCR_EXPORT_CHUNK_ROWS NDJSON lines. A file is its chunks in
    `seq` order; a file is one resource type and part number."""

    __tablename__ = "population_export_chunk"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    lines: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)
