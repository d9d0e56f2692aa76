"""The background worker that runs export jobs: one thread per record API replica (started and stopped with the
app's lifespan). Jobs live in the database and are claimed by compare-and-set on the job row, so with several
replicas each job runs exactly once, on whichever replica claims it first; a replica that dies mid-job stops
beating and its job is re-queued for another; a replica shutting down gives its job back."""

from __future__ import annotations

import os
import socket
import threading
import time

import structlog
from sqlalchemy.orm import Session, sessionmaker

from services.record_api.population import store
from services.record_api.population.export import ExportRunner

log = structlog.get_logger("scr.record_api.population.worker")
HOUSEKEEPING_SECONDS = 60.0


class ExportWorker:
    def __init__(self, sessions: sessionmaker[Session], runner: ExportRunner, *, poll_seconds: float,
                 stale_seconds: float, retention_hours: float) -> None:
        self.sessions, self.runner = sessions, runner
        self.poll_seconds, self.stale_seconds, self.retention_hours = poll_seconds, stale_seconds, retention_hours
        self.name = f"record-api-{socket.gethostname()}-{os.getpid()}-{id(self):x}"[:128]
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._housekept = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="export-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A job was just queued here: look now rather than at the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_pending()
            except Exception as exc:  # a broken poll (database away) must not kill the worker
                log.warning("export worker poll failed", error_type=type(exc).__name__)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def run_pending(self) -> int:
        """Housekeeping, then every job this replica can claim; returns how many ran."""
        self._housekeeping()
        ran = 0
        while not self._stopping.is_set() and (job_id := store.claim_next(self.sessions, self.name)):
            status = self.runner.run(job_id, self.name, self._stopping.is_set)
            log.info("export job finished", job=job_id, status=status)
            ran += 1
        return ran

    def _housekeeping(self) -> None:
        if time.monotonic() - self._housekept < HOUSEKEEPING_SECONDS and self._housekept:
            return
        self._housekept = time.monotonic()
        with self.sessions.begin() as session:
            store.requeue_stale(session, self.stale_seconds)
            store.purge_expired(session, self.retention_hours)
