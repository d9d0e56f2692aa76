"""Population health inside the record API: what the routes and the CLI call (no HTTP here). Holds the
exclusions client, the deprivation lookup, the pseudonymisation key (read when needed, never logged) and the
export worker, and is wired into the app with `install` plus the lifespan's `start`/`stop`."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from services.record_api.population import store
from services.record_api.population.aggregates import publish, tabulate
from services.record_api.population.delivery import CurrentExclusions
from services.record_api.population.deprivation import DeprivationLookup
from services.record_api.population.exclusions import ExclusionClient, merge_survivors, resolve
from services.record_api.population.export import ExclusionSource, ExportRunner
from services.record_api.population.worker import ExportWorker
from services.record_api.settings import RecordApiSettings
from shared.auth import ConfigurationError
from shared.errors import ServiceUnavailable

MIN_SECRET_BYTES = 32


class ExportNotConfigured(ServiceUnavailable):
    """No usable pseudonymisation key: nothing can be exported until the operator supplies one."""


def load_secret(settings: RecordApiSettings) -> bytes:
    """The platform's pseudonymisation secret, from SCR_EXPORT_PSEUDONYM_KEY_FILE (or SCR_EXPORT_PSEUDONYM_KEY)."""
    if settings.export_pseudonym_key_file:
        try:
            secret = Path(settings.export_pseudonym_key_file).read_bytes().strip()
        except OSError:
            raise ExportNotConfigured("the pseudonymisation key file (SCR_EXPORT_PSEUDONYM_KEY_FILE) cannot be "
                                      "read, so nothing can be exported") from None
    elif settings.export_pseudonym_key is not None:
        secret = settings.export_pseudonym_key.get_secret_value().strip().encode()
    else:
        raise ExportNotConfigured("exports are not configured: no pseudonymisation key "
                                  "(set SCR_EXPORT_PSEUDONYM_KEY_FILE)")
    if len(secret) < MIN_SECRET_BYTES:
        raise ExportNotConfigured(f"the pseudonymisation key is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def load_lookup(path: str) -> DeprivationLookup:
    """The operator's postcode -> LSOA -> IMD table; a service that cannot read it does not start."""
    try:
        return DeprivationLookup.from_csv(Path(path))
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"IMD lookup file {path} (SCR_IMD_LOOKUP_FILE) is not usable: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


class Population:
    """Bulk export and aggregates for one record API process."""

    def __init__(self, settings: RecordApiSettings, exclusions: ExclusionSource | None = None) -> None:
        self.settings = settings
        self.exclusions: ExclusionSource = exclusions or ExclusionClient(
            settings.consent_url, settings.consent_token_file, timeout=max(settings.consent_timeout_seconds, 10.0),
            page_size=settings.consent_page_size)
        self.lookup = load_lookup(settings.imd_lookup_file)
        self._sessions: sessionmaker[Session] | None = None
        self.worker: ExportWorker | None = None

    # ------------------------------------------------------------ wiring

    def install(self, app: FastAPI) -> None:
        """Routes first: `/fhir/$export...` must win over the generic `/fhir/{resource_type}` routes."""
        from services.record_api.population.api import fhir_router, population_router

        self._sessions = app.state.runtime.sessions
        app.state.population = self
        app.include_router(fhir_router)
        app.include_router(population_router)

    def bind(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            raise RuntimeError("population service used before it was bound to a database")
        return self._sessions

    def runner(self) -> ExportRunner:
        return ExportRunner(self.sessions, self.exclusions, self.lookup, self.secret,
                            chunk_rows=self.settings.export_chunk_rows,
                            file_max=self.settings.export_file_max_resources)

    def start(self) -> None:
        if self.settings.export_worker_enabled:
            self.worker = ExportWorker(self.sessions, self.runner(), poll_seconds=self.settings.export_poll_seconds,
                                       stale_seconds=self.settings.export_stale_seconds,
                                       retention_hours=self.settings.export_retention_hours)
            self.worker.start()

    def stop(self) -> None:
        if self.worker:
            self.worker.stop()
            self.worker = None

    def secret(self) -> bytes:
        return load_secret(self.settings)

    # ------------------------------------------------------------ operations

    def queue_export(self, session: Session, request: store.JobRequest) -> store.ExportJob:
        """Queue a job (in the caller's transaction); refused now, not later, when exports are not configured."""
        self.secret()
        return store.create_job(session, request)

    def queued(self) -> None:
        if self.worker:
            self.worker.wake()

    def current_exclusions(self, purpose: str, organisation: str | None) -> CurrentExclusions:
        """The exclusions in force now (for a download), fail closed like a job's."""
        exclusions = self.exclusions.fetch(purpose, organisation)
        with self.sessions() as session:
            return CurrentExclusions(resolve(session, exclusions), merge_survivors(session))

    def aggregates(self, *, purpose: str, organisation: str | None, breakdowns: list[tuple[str, ...]],
                   today: date) -> list[dict[str, Any]]:
        """Suppressed tables for each breakdown, people refused secondary use left out (fail closed)."""
        exclusions = self.exclusions.fetch(purpose, organisation)
        with self.sessions() as session:
            persons = resolve(session, exclusions)
            tables = tabulate(session, persons, self.lookup, breakdowns, today)
        threshold = self.settings.population_suppression_threshold
        return [publish(tables, breakdown, threshold) for breakdown in breakdowns]
