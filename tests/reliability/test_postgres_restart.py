"""Restart the real PostgreSQL cluster while a GP system sends Bundles and while a clinician's EPR reads: no
Bundle the sender was told was stored is lost, none is stored twice, a Bundle the restart cut off mid-processing is
shown as unfinished and stored once by the operator's `retry --all-failed`, every read either succeeds (and is
audited) or fails with an OperationOutcome, and every service is ready again afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from shared.db import migrate
from shared.schema import Person
from tests.reliability.conftest import SCALE, Counts, wait_for
from tools.load import messages
from tools.load.stack import Stack
from tools.peers.postgres import PostgresServer
from tools.processes import REPO_ROOT

pytestmark = pytest.mark.integration
READER = "555000000077"
# A raw row still `received` this long after it arrived is unfinished (default 300 s; short here so the test need
# not wait): the sender has its final answers long before.
UNFINISHED_AFTER = "5"


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own, so restarting it disturbs no other test."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.destroy()


def _gauge(base_url: str, name: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return float(next(line for line in text.splitlines() if line.startswith(f"{name} ")).split()[1])


def _recover(stack: Stack, counts: Counts, bundles: int) -> dict[str, object]:
    """The operator's recovery after the outage: the Bundle cut off mid-processing (its row left `received`, since
    the database was away when its failure was to be recorded) shows in scr_ingest_raw_unfinished once older than
    the threshold, and `retry --all-failed` stores it (and anything failed) once: the sender's resend had stored its
    content already, so nothing changes and nothing is stored twice."""
    ingest = stack.url("ingest")
    unfinished, failed = counts.raw("fhir", "received"), counts.raw("fhir", "failed")
    wait_for(lambda: _gauge(ingest, "scr_ingest_raw_unfinished") == unfinished, 60, "the cut-off Bundle counted")
    retry = subprocess.run([sys.executable, "-m", "services.ingest.cli", "retry", "--all-failed"], cwd=REPO_ROOT,
                           env=stack.env_for_cli(), capture_output=True, text=True, timeout=300)
    retried = [json.loads(line) for line in retry.stdout.splitlines() if line.strip()]
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert [r["status"] for r in retried] == ["processed"] * (unfinished + failed)
    assert counts.raw("fhir", "received") == counts.raw("fhir", "failed") == 0
    assert _gauge(ingest, "scr_ingest_raw_unfinished") == _gauge(ingest, "scr_ingest_raw_failed") == 0
    assert counts.resources("Patient") == bundles == counts.persons()
    assert counts.resources("Condition") == 2 * bundles == counts.versions("Condition")
    assert counts.duplicate_source_keys() == 0
    return {"unfinished_seen": unfinished, "failed_seen": failed, "retried": [r["status"] for r in retried],
            "raw_processed_after": counts.raw("fhir", "processed")}


class Sender:
    """A GP system: sends each Bundle until it gets a final answer (resending after a 5xx or a dropped connection)."""

    def __init__(self, url: str, token: str, bundles: list[dict]) -> None:
        self.url, self.token, self.bundles = url, token, bundles
        self.answers: Counter[str] = Counter()
        self.final: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {self.token}"}) as client:
            for bundle in self.bundles:
                while True:
                    try:
                        response = client.post(f"{self.url}/ingest/fhir", json=bundle)
                    except httpx.HTTPError as exc:
                        self.answers[type(exc).__name__] += 1
                        time.sleep(0.5)
                        continue
                    status = response.status_code
                    retry_after = status != 503 or "retry-after" in response.headers
                    self.answers[str(status) if retry_after else "503 without Retry-After"] += 1
                    if status < 500:
                        self.final.append(status)
                        break
                    time.sleep(0.5)
        self.done.set()


class Reader:
    """A clinician's EPR reading each person's record in turn until told to stop."""

    def __init__(self, url: str, token: str, person_ids: list[str]) -> None:
        self.url, self.token, self.person_ids = url, token, person_ids
        self.statuses: Counter[int] = Counter()
        self.not_outcomes = 0
        self.ok_after: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {self.token}"}) as client:
            i = 0
            while not self.stop.is_set():
                person = self.person_ids[i % len(self.person_ids)]
                path = f"/fhir/Patient/{person}/$everything" if i % 2 else f"/fhir/Condition?patient={person}"
                try:
                    response = client.get(f"{self.url}{path}")
                except httpx.HTTPError:
                    self.statuses[0] += 1
                    time.sleep(0.2)
                    continue
                self.statuses[response.status_code] += 1
                body = response.json()
                expected = "Bundle" if response.status_code == 200 else "OperationOutcome"
                if body.get("resourceType") != expected:
                    self.not_outcomes += 1
                i += 1


def test_a_postgres_restart_during_ingest_and_during_reads_loses_nothing_and_leaves_every_read_audited(
        own_postgres, kafka, make_stack, signer, figures) -> None:
    url = own_postgres.create_database("scr")
    migrate(url)
    counts = Counts(url)
    stack = make_stack(url, kafka.bootstrap, SCR_CONSUMERS_ENABLED="false", SCR_MLLP_ENABLED="false",
                       SCR_RAW_UNFINISHED_AFTER_SECONDS=UNFINISHED_AFTER).start()

    # --- during ingest
    persons = messages.people(60 * SCALE, start=999_350_000)
    sender = Sender(stack.url("ingest"), signer.feed(messages.GP_ODS), [messages.gp_bundle(p) for p in persons])
    threading.Thread(target=sender.run, daemon=True).start()
    wait_for(lambda: len(sender.final) >= 15, 120, "the sender to be under way", 0.05)
    own_postgres.restart()
    wait_for(sender.done.is_set, 300, "every Bundle to get a final answer")
    for name in ("ingest", "consent", "record_api"):
        wait_for(lambda name=name: stack.ready(name), 60, f"{name} ready again")
    ingest_figures = {"bundles": len(persons), "final_answers": dict(Counter(sender.final)),
                      "answers_seen": dict(sender.answers), "patients": counts.resources("Patient"),
                      "conditions": counts.resources("Condition"), "condition_versions": counts.versions("Condition"),
                      "persons": counts.persons(), "raw_processed": counts.raw("fhir", "processed"),
                      "raw_failed": counts.raw("fhir", "failed"), "raw_unfinished": counts.raw("fhir", "received")}
    figures["during_ingest"] = ingest_figures
    assert sender.final == [200] * len(persons)
    # The database away, before or after archiving, is 503 with Retry-After (the sender's retry will do), never 500.
    assert not {a for a in sender.answers if a.startswith("5") and a != "503"}, sender.answers
    assert counts.resources("Patient") == len(persons) and counts.persons() == len(persons)
    assert counts.resources("Condition") == 2 * len(persons) == counts.versions("Condition")
    assert counts.duplicate_source_keys() == 0
    figures["recovery"] = _recover(stack, counts, len(persons))

    # --- during reads
    with counts.sessions() as session:
        person_ids = list(session.scalars(select(Person.id)))
    reader = Reader(stack.url("record_api"), signer.clinician(ods=messages.GP_ODS, sub=READER), person_ids)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    wait_for(lambda: reader.statuses[200] >= 20, 120, "reads to be under way", 0.05)
    own_postgres.restart()
    before = reader.statuses[200]
    wait_for(lambda: reader.statuses[200] >= before + 20, 120, "reads to succeed again after the restart")
    reader.stop.set()
    thread.join(30)
    ok = reader.statuses[200]
    errors = sum(n for status, n in reader.statuses.items() if status != 200)
    audited = counts.audit(READER, "success")
    figures["during_reads"] = {"statuses": dict(reader.statuses), "audited_success": audited,
                               "answers_not_fhir": reader.not_outcomes}
    assert set(reader.statuses) <= {0, 200, 503}, reader.statuses  # the database away is 503 (retry), not 500
    assert reader.not_outcomes == 0  # every failure was an OperationOutcome, never a stack trace
    assert ok <= audited <= ok + errors  # every record shown was audited
    for name in ("ingest", "consent", "record_api"):
        assert stack.ready(name)
    for name, log in stack.logs().items():  # a database error's traceback would quote SQL parameters
        assert "Traceback" not in log, name
    counts.close()
