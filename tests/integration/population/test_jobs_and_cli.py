"""Export jobs with several replicas (claimed once, re-queued when a replica stops or dies) and the command line
the benchmark drives (a synchronous export that reports its counts, and the aggregates), on real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from services.record_api.population import store
from services.record_api.population.models import ExportChunk, ExportJob
from services.record_api.population.service import Population
from tests.integration.population import world as population
from tests.integration.population.conftest import RECIPIENT_ODS, ServedApp
from tools.peers.ports import free_port
from tools.processes import REPO_ROOT

pytestmark = pytest.mark.integration


def _job(sessions: Any, **overrides: Any) -> str:
    request = store.JobRequest(**({"level": "system", "group_id": None, "types": ["Patient", "Encounter"],
                                   "since": None, "purpose": "HOPERAT", "recipient_sub": "ics-planning",
                                   "recipient_ods": RECIPIENT_ODS, "request_url": "test"} | overrides))
    with sessions.begin() as session:
        return store.create_job(session, request).id


@pytest.fixture
def quiet_population(population_settings) -> Population:
    """The population service with no worker thread: the test plays the replicas itself."""
    from shared.db import create_db_engine, make_session_factory

    settings = population_settings(export_worker_enabled=False, export_chunk_rows=2)
    service = Population(settings)
    service.bind(make_session_factory(create_db_engine(settings.database_url)))
    return service


def test_of_two_replicas_claiming_a_job_exactly_one_gets_it(quiet_population) -> None:
    sessions = quiet_population.sessions
    job_id = _job(sessions)
    assert [store.claim(sessions, job_id, "replica-a"), store.claim(sessions, job_id, "replica-b")] == [True, False]
    assert store.claim_next(sessions, "replica-b") is None
    with sessions() as session:
        assert session.get(ExportJob, job_id).claimed_by == "replica-a"


def test_a_replica_that_stops_mid_job_gives_it_back_without_partial_output(quiet_population, record_store,
                                                                           consents) -> None:
    population.build(record_store, consents)
    sessions = quiet_population.sessions
    job_id = _job(sessions)
    assert store.claim(sessions, job_id, "replica-a")
    status = quiet_population.runner().run(job_id, "replica-a", should_stop=lambda: True)
    assert status == "queued"
    with sessions() as session:
        assert session.get(ExportJob, job_id).status == "queued"
        assert session.scalars(select(ExportChunk)).first() is None
    assert store.claim_next(sessions, "replica-b") == job_id
    assert quiet_population.runner().run(job_id, "replica-b") == "completed"


def test_a_job_whose_replica_died_is_requeued_and_cancelling_stops_a_running_one(quiet_population) -> None:
    sessions = quiet_population.sessions
    dead, cancelled = _job(sessions), _job(sessions)
    assert store.claim(sessions, dead, "replica-a") and store.claim(sessions, cancelled, "replica-b")
    with sessions.begin() as session:
        session.execute(update(ExportJob).where(ExportJob.id == dead)
                        .values(heartbeat=store.now() - timedelta(minutes=10)))
        store.add_chunk(session, dead, "Patient", 1, 1, ["{}"])
    with sessions.begin() as session:
        assert store.requeue_stale(session, stale_after=300) == 1
    with sessions.begin() as session:
        store.cancel(session, session.get(ExportJob, cancelled))
    with sessions() as session:
        assert session.get(ExportJob, dead).status == "queued"
        assert session.scalars(select(ExportChunk)).first() is None
        assert not store.beat(session, cancelled, "replica-b", "still going")  # the worker stops at its next chunk


def _cli(*args: str, consent_url: str, pg_url: str, token_file: Path, key_file: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"SCR_DATABASE_URL": pg_url, "SCR_CONSENT_URL": consent_url,
                        "SCR_CONSENT_TOKEN_FILE": str(token_file), "SCR_EXPORT_PSEUDONYM_KEY_FILE": str(key_file),
                        "SCR_POPULATION_SUPPRESSION_THRESHOLD": "3"}
    return subprocess.run([sys.executable, "-m", "services.record_api.population.cli", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_cli_runs_an_export_synchronously_and_reports_what_it_wrote(consent: ServedApp, record_store, consents,
                                                                        pg_url, consent_token_file, key_file,
                                                                        tmp_path) -> None:
    world = population.build(record_store, consents)
    out = tmp_path / "export"
    done = _cli("export", "--recipient", "bench", "--organisation", RECIPIENT_ODS, "--out", str(out),
                consent_url=consent.url, pg_url=pg_url, token_file=consent_token_file, key_file=key_file)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed" and report["peak_rss_mb"] > 0 and report["elapsed_seconds"] >= 0
    assert report["resources"]["Patient"] == 3
    assert report["skipped"]["items with a sensitive label"] >= 3
    written = {f.name: f.read_text() for f in out.iterdir()}
    assert set(written) == {f["name"] for f in report["files"]}
    assert all(len(written[f["name"]].splitlines()) == f["count"] for f in report["files"])
    for _person, nhs in world.excluded.values():
        assert all(nhs is None or nhs not in text for text in written.values())


def test_the_cli_prints_suppressed_aggregates_and_fails_closed(consent: ServedApp, record_store, consents, pg_url,
                                                               consent_token_file, key_file) -> None:
    population.build(record_store, consents)
    table = _cli("aggregates", "--dimension", "sex", "--format", "csv", consent_url=consent.url, pg_url=pg_url,
                 token_file=consent_token_file, key_file=key_file)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == "sex,persons,encounters,open_social_care_episodes,waiting_items"
    # Four women may be counted without --organisation (one only denied QWO); Olivia's one open social-care
    # package is a small number.
    assert lines[1].startswith("female,4,") and lines[1].endswith(",suppressed,0")
    dead = _cli("aggregates", "--dimension", "sex", consent_url=f"http://127.0.0.1:{free_port()}", pg_url=pg_url,
                token_file=consent_token_file, key_file=key_file)
    assert dead.returncode == 1 and "consent service is unreachable" in dead.stderr and dead.stdout == ""


def test_the_export_never_needs_the_raw_archive(consent: ServedApp, record_store, consents, pg_url,
                                                consent_token_file, key_file) -> None:
    """Run as a database role with the production grants: everything but raw_message (only ingest's)."""
    import psycopg

    population.build(record_store, consents)
    role = "scr_population_test"
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
        conn.execute(f'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
        conn.execute(f'REVOKE ALL ON TABLE raw_message FROM PUBLIC, "{role}"')
    as_role = pg_url.replace("://scr@", f"://{role}@")
    assert as_role != pg_url
    with psycopg.connect(as_role.replace("postgresql+psycopg://", "postgresql://")) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT count(*) FROM raw_message")
    for command in (["export", "--recipient", "bench"], ["aggregates", "--dimension", "age_band"]):
        done = _cli(*command, consent_url=consent.url, pg_url=as_role, token_file=consent_token_file,
                    key_file=key_file)
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["measures"]["persons"]["total"] == 4
