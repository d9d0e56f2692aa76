"""Messages whose processing was cut off (left `received`: the process killed, or the database gone before the
failure could be recorded), on a real PostgreSQL: once older than SCR_RAW_UNFINISHED_AFTER_SECONDS they are counted
at every scrape, listed, and stored exactly once by `retry --all-failed`; a younger one, which may be in the hands of
a process right now, is left alone, and so is one whose row another process holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from services.ingest import store
from services.ingest.service import Pipeline
from services.ingest.store import Inbound
from shared.db import create_db_engine
from shared.schema import RawMessage, Resource, ResourceVersion
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import Ingest
from tests.support import data
from tests.support.services import service_env
from tools.processes import REPO_ROOT

pytestmark = pytest.mark.integration
_PAST_THRESHOLD = timedelta(seconds=600)  # the default threshold is 300 s


def _archive(ingest: Ingest, nhs: str, local_id: str, *, age: timedelta = timedelta(0)) -> str:
    """Archive a Bundle as receive does (committed, `received`) and process nothing, as a process killed just after
    archiving leaves it; `age` backdates its receipt."""
    bundle = messages.bundle([messages.patient(nhs=nhs, local_id=local_id),
                              messages.condition("44054006", "Diabetes mellitus type 2", ident=f"PRB-{local_id}")])
    with ingest.sessions.begin() as session:
        (raw,) = store.archive_many(session, [Inbound("fhir", json.dumps(bundle).encode(), "application/fhir+json",
                                                      data.GP_ODS, "emis-web")])
        session.execute(update(RawMessage).where(RawMessage.id == raw.id)
                        .values(received_at=datetime.now(UTC) - age))
        return raw.id


def _cli(ingest: Ingest, pg_url: str, *args: str) -> tuple[int, list[dict]]:
    result = subprocess.run([sys.executable, "-m", "services.ingest.cli", *args], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, env=os.environ | service_env(ingest.tokens, pg_url))
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _gauge(ingest: Ingest, name: str) -> float:
    line = next(x for x in ingest.client.get("/metrics").text.splitlines() if x.startswith(f"{name} "))
    return float(line.split()[1])


def _pipeline(ingest: Ingest) -> Pipeline:
    return ingest.client.app.state.runtime.extras["pipeline"]


def test_an_unfinished_message_is_counted_listed_and_stored_once_by_retry_all_failed(ingest, pg_url) -> None:
    cut_off = _archive(ingest, data.NHS_NUMBERS[0], "EMIS-1", age=_PAST_THRESHOLD)
    in_flight = _archive(ingest, data.NHS_NUMBERS[1], "EMIS-2")  # younger than the threshold

    assert _gauge(ingest, "scr_ingest_raw_unfinished") == 1  # counted at the scrape: nothing here set it
    assert _gauge(ingest, "scr_ingest_raw_failed") == 0
    listed = ingest.client.get("/ingest/raw?status=unfinished", headers=ingest.admin()).json()
    assert [(r["id"], r["status"], r["sender_system"]) for r in listed] == [(cut_off, "received", "emis-web")]
    code, lines = _cli(ingest, pg_url, "list", "--status", "unfinished")
    assert code == 0 and [r["id"] for r in lines] == [cut_off]

    code, lines = _cli(ingest, pg_url, "retry", "--all-failed")
    assert code == 0 and [(r["raw_id"], r["status"]) for r in lines] == [(cut_off, "processed")]
    assert lines[0]["changes"] >= 2
    stored = ingest.get(RawMessage, RawMessage.id == cut_off)
    assert (stored.status, stored.attempts) == ("processed", 1)
    assert ingest.count(Resource, Resource.resource_type.in_(["Patient", "Condition"])) == 2
    young = ingest.get(RawMessage, RawMessage.id == in_flight)
    assert (young.status, young.attempts) == ("received", 0)  # never touched
    assert _gauge(ingest, "scr_ingest_raw_unfinished") == 0

    code, lines = _cli(ingest, pg_url, "retry", "--all-failed")  # nothing left to take: stored once
    assert code == 0 and lines == []
    assert ingest.count(ResourceVersion, ResourceVersion.resource_type.in_(["Patient", "Condition"])) == 2
    assert ingest.count(Resource, Resource.resource_type == "Provenance") == 1
    assert ingest.get(RawMessage, RawMessage.id == cut_off).attempts == 1


def test_an_unfinished_message_another_process_holds_is_passed_over_not_processed_twice(ingest, pg_url) -> None:
    raw_id = _archive(ingest, data.NHS_NUMBERS[0], "EMIS-1", age=_PAST_THRESHOLD)

    with ingest.sessions.begin() as holder:  # another replica recovering it (or still processing it) holds its row
        assert store.get_raw(holder, raw_id, lock=True) is not None
        assert _pipeline(ingest).recover(raw_id) is None  # at once: SKIP LOCKED, no waiting
        code, lines = _cli(ingest, pg_url, "retry", "--all-failed")
        assert code == 0 and [(r["raw_id"], r["status"]) for r in lines] == [(raw_id, "skipped")]
        retried = ingest.client.post(f"/ingest/raw/{raw_id}/retry", headers=ingest.admin())
        assert retried.status_code == 409 and "being processed" in retried.text
    assert ingest.get(RawMessage, RawMessage.id == raw_id).status == "received"
    assert ingest.count(Resource, Resource.resource_type == "Patient") == 0

    retried = ingest.client.post(f"/ingest/raw/{raw_id}/retry", headers=ingest.admin())
    assert retried.status_code == 200 and retried.json()["status"] == "processed"
    assert _pipeline(ingest).recover(raw_id) is None  # finished: not processed again
    assert ingest.get(RawMessage, RawMessage.id == raw_id).attempts == 1
    assert ingest.count(ResourceVersion, ResourceVersion.resource_type == "Patient") == 1


def test_the_raw_gauges_keep_their_last_value_while_the_database_cannot_be_read(ingest) -> None:
    _archive(ingest, data.NHS_NUMBERS[0], "EMIS-1", age=_PAST_THRESHOLD)
    assert _gauge(ingest, "scr_ingest_raw_unfinished") == 1
    _archive(ingest, data.NHS_NUMBERS[1], "EMIS-2", age=_PAST_THRESHOLD)  # not yet scraped when the database goes
    pipeline = _pipeline(ingest)
    engine = pipeline.sessions.kw["bind"]
    away = create_db_engine(engine.url.set(host="127.0.0.1", port=1).render_as_string(hide_password=False))
    try:  # the sessions now reach a port nothing listens on: the database away
        pipeline.sessions.configure(bind=away)
        assert ingest.client.get("/metrics").status_code == 200
        assert _gauge(ingest, "scr_ingest_raw_unfinished") == 1 and _gauge(ingest, "scr_ingest_raw_failed") == 0
    finally:
        pipeline.sessions.configure(bind=engine)
        away.dispose()
    assert _gauge(ingest, "scr_ingest_raw_unfinished") == 2  # read again once the database is back
