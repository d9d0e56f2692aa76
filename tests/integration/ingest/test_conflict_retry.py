"""A message whose processing deadlocks with a concurrent batch on a real PostgreSQL: the attempt PostgreSQL aborts
is made again and stored once; only when the retries run out is it recorded failed, answered 503 (HL7: AE). The
concurrent batch is a second transaction taking the same rows in the opposite order, timed so that the deadlock is
certain and PostgreSQL picks the message's attempt to abort: it locks the row the message needs second, waits until
the message holds its first rows and waits for that one, then asks for those first rows itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.schema import RawMessage
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import Ingest, running_ingest
from tests.support import data

pytestmark = pytest.mark.integration

DIABETES = ("44054006", "Diabetes mellitus type 2")


@pytest.fixture
def impatient(pg_url, tokens) -> Iterator[Ingest]:
    """Ingest with no retry after a transient conflict: the first deadlock is the last."""
    with running_ingest(pg_url, tokens, conflict_retries=0) as running:
        yield running


def test_a_bundle_that_deadlocks_with_a_concurrent_batch_is_retried_and_stored_once(ingest) -> None:
    assert ingest.post_fhir(_gp_bundle("active")).status_code == 200
    before = _retried("deadlock")

    response = _deadlocked(ingest.sessions, needed_second="Condition", held_first="Patient",
                           send=lambda: ingest.post_fhir(_gp_bundle("resolved")))

    assert response.status_code == 200, response.text
    assert _retried("deadlock") > before
    entries = [entry["response"] for entry in response.json()["entry"]]
    assert [e["status"] for e in entries] == ["200 OK", "200 OK"]
    assert entries[1]["location"].endswith("/_history/2")  # the Condition's one new version
    condition, = ingest.rows("Condition")
    assert condition.body["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert _per_type(ingest.sessions) == {"Patient": (1, 1), "Condition": (1, 2), "Provenance": (2, 2)}
    assert [e["change"] for e in ingest.events() if e["resource_type"] == "Condition"] == ["create", "update"]
    assert _raw_statuses(ingest.sessions) == ["processed", "processed"]


def test_a_bundle_whose_deadlocks_outlast_the_retries_is_archived_failed_and_answered_503(impatient) -> None:
    assert impatient.post_fhir(_gp_bundle("active")).status_code == 200

    response = _deadlocked(impatient.sessions, needed_second="Condition", held_first="Patient",
                           send=lambda: impatient.post_fhir(_gp_bundle("resolved")))

    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    issue, = response.json()["issue"]
    assert issue["code"] == "transient" and "archived for retry" in issue["diagnostics"]
    failed = impatient.get(RawMessage, RawMessage.id == response.headers["x-raw-message-id"])
    assert failed.status == "failed" and failed.error.startswith("deadlock: ")
    assert _per_type(impatient.sessions)["Condition"] == (1, 1)  # nothing of it stored

    assert impatient.post_fhir(_gp_bundle("resolved")).status_code == 200  # the sender's retry
    retried = impatient.client.post(f"/ingest/raw/{failed.id}/retry", headers=impatient.admin())  # and the operator's
    assert retried.status_code == 200 and {c["change"] for c in retried.json()["changes"]} == {"unchanged"}
    assert _per_type(impatient.sessions) == {"Patient": (1, 1), "Condition": (1, 2), "Provenance": (2, 2)}


def test_an_hl7_message_whose_deadlocks_outlast_the_retries_gets_an_ae_archived_for_retry(impatient) -> None:
    assert impatient.post_hl7(messages.adt("A01", control="C1")).status_code == 200
    transfer = messages.adt("A02", control="C2", ts="20240301150000", ward="WARD07^BAY1^BED1")

    response = _deadlocked(impatient.sessions, needed_second="Encounter", held_first="Patient",
                           send=lambda: impatient.post_hl7(transfer))

    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    msa = next(line for line in response.text.split("\r") if line.startswith("MSA|")).split("|")
    assert msa[1] == "AE" and f"archived as {response.headers['x-raw-message-id']} for retry" in msa[3]
    assert impatient.post_hl7(transfer).status_code == 200  # the engine's resend: stored now, once
    assert _per_type(impatient.sessions) == {"Patient": (1, 1), "Encounter": (1, 2), "Provenance": (2, 2)}


def test_a_social_care_event_that_deadlocks_inside_a_batch_is_retried_alone_and_the_batch_kept(ingest) -> None:
    first = [_contact("E1", "01274 431000"), _package("E2", "care_package.started")]
    assert _post_events(ingest, first).status_code == 200
    before = _retried("deadlock")

    # The batch stores the contact (locking its RelatedPerson), then waits for the care package's rows, held by
    # the other transaction, which then asks for the RelatedPerson: its savepoint is the one aborted.
    second = [_contact("E3", "01274 439999"), _package("E4", "care_package.changed")]
    response = _deadlocked(ingest.sessions, needed_second="EpisodeOfCare", held_first="RelatedPerson",
                           send=lambda: _post_events(ingest, second))

    assert response.status_code == 200, response.text
    assert _retried("deadlock") > before
    # The change of frequency and hours is the CarePlan's; the EpisodeOfCare says nothing of them.
    assert _per_type(ingest.sessions) == {"Patient": (2, 2), "RelatedPerson": (1, 2), "EpisodeOfCare": (1, 1),
                                          "CarePlan": (1, 2), "Provenance": (4, 4)}
    plan, = ingest.rows("CarePlan")
    assert plan.body["activity"][0]["detail"]["scheduledString"] == "3 visits daily"
    with ingest.sessions() as session:
        archived = session.execute(text("SELECT status, sender_system FROM raw_message")).all()
    assert sorted(archived) == [("processed", "Mosaic")] * 4  # (a) the provider's system, over HTTP too


# ------------------------------------------------------------------------------------------- helpers

def _deadlocked(sessions: sessionmaker[Session], *, needed_second: str, held_first: str,
                send: Callable[[], Any]) -> Any:
    """`send()` run while another transaction deadlocks with it: that transaction locks the `needed_second` rows,
    waits until the message waits for them (so it holds its `held_first` rows), then asks for the `held_first` rows.
    PostgreSQL aborts the message's attempt (it began waiting first, and the other's deadlock check is put off)."""
    answers: list[Any] = []
    with sessions() as rival:
        rival.execute(text("SET LOCAL deadlock_timeout = '30s'"))
        _lock_all(rival, needed_second)
        sender = threading.Thread(target=lambda: answers.append(send()))
        sender.start()
        _wait_for_a_lock_wait(sessions)
        started = time.monotonic()
        _lock_all(rival, held_first)  # returns once PostgreSQL has aborted the message's attempt
        assert time.monotonic() - started < 20
        rival.rollback()
    sender.join(60)
    assert answers, "the message was never answered"
    return answers[0]


def _lock_all(session: Session, resource_type: str) -> None:
    rows = session.execute(text("SELECT id FROM resource WHERE resource_type = :type FOR UPDATE"),
                           {"type": resource_type}).all()
    assert rows, f"no {resource_type} to lock"


def _wait_for_a_lock_wait(sessions: sessionmaker[Session], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with sessions() as session:
            if session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND datname = current_database()")):
                return
        time.sleep(0.02)
    raise AssertionError("the message never waited for the rows the other transaction held")


def _retried(kind: str) -> float:
    return REGISTRY.get_sample_value("scr_ingest_conflicts_retried_total", {"kind": kind}) or 0.0


def _per_type(sessions: sessionmaker[Session]) -> dict[str, tuple[int, int]]:
    """Resource type -> (resources, versions): what a retry must not have doubled."""
    with sessions() as session:
        resources = dict(session.execute(text("SELECT resource_type, count(*) FROM resource GROUP BY 1")).all())
        versions = dict(session.execute(text("SELECT resource_type, count(*) FROM resource_version GROUP BY 1"))
                        .all())
    return {kind: (count, versions.get(kind, 0)) for kind, count in resources.items()}


def _raw_statuses(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(text("SELECT status FROM raw_message ORDER BY received_at")))


def _gp_bundle(status: str) -> dict[str, Any]:
    condition = messages.condition(*DIABETES, ident="PRB-1")
    condition["clinicalStatus"]["coding"][0]["code"] = status
    return messages.bundle([messages.patient(), condition])


def _contact(event_id: str, phone: str) -> dict[str, Any]:
    body = messages.EVENT_BODIES["contact.recorded"]
    return messages.event("contact.recorded", {"contact": body["contact"] | {"phone": phone}}, event_id=event_id)


def _package(event_id: str, event_type: str) -> dict[str, Any]:
    person = {"local_id": "MOS-55502", "nhs_number": data.NHS_NUMBERS[3], "nhs_number_verified": True,
              "family_name": "Shah", "given_name": "Imran", "birth_date": "1941-02-17", "sex": "male"}
    return messages.event(event_type, messages.EVENT_BODIES[event_type], event_id=event_id, person=person)


def _post_events(ingest: Ingest, events: list[dict[str, Any]]) -> Any:
    return ingest.client.post("/ingest/socialcare", json=events, headers=ingest.feed(data.SOCIAL_CARE_ODS))

