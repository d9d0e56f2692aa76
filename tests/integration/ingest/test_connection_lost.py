"""The database connection lost while a message is processed (after its raw row was archived), on a real PostgreSQL:
the backend processing it is terminated while it waits for rows another transaction holds, as a restart, a failover
or the network would end it. The message is recorded failed and answered 503 with Retry-After (HL7: AE "archived for
retry"), a transient fault the sender's resend or an operator's retry recovers; a fault here stays 500."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.ingest.app import create_app
from services.ingest.feeds.hl7v2_message import parse
from services.ingest.mllp import END, frame, open_connection
from shared.db import create_db_engine, make_session_factory
from shared.schema import RawMessage
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import Ingest, ingest_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def mllp(pg_url, tokens) -> Iterator[tuple[int, Ingest]]:
    app = create_app(ingest_settings(tokens, pg_url))
    engine = create_db_engine(pg_url)
    try:
        with TestClient(app) as client:
            yield app.state.runtime.extras["mllp"].port, Ingest(client, tokens, make_session_factory(engine))
    finally:
        engine.dispose()


def test_a_bundle_whose_connection_is_lost_is_archived_failed_and_answered_503_then_recovered(ingest) -> None:
    diabetes = messages.condition("44054006", "Diabetes mellitus type 2", ident="PRB-1")
    bundle = messages.bundle([messages.patient(), diabetes])
    assert ingest.post_fhir(bundle).status_code == 200

    response, killed = _cut_off(ingest.sessions, held="Patient", send=lambda: ingest.post_fhir(bundle))

    assert killed and response.status_code == 503 and response.headers["retry-after"] == "5"
    issue, = response.json()["issue"]
    assert issue["code"] == "transient" and "connection to the database was lost" in issue["diagnostics"]
    assert "archived for retry" in issue["diagnostics"]
    failed = ingest.get(RawMessage, RawMessage.id == response.headers["x-raw-message-id"])
    assert failed.status == "failed" and failed.error.startswith("OperationalError: ")
    retried = ingest.client.post(f"/ingest/raw/{failed.id}/retry", headers=ingest.admin())  # what --all-failed does
    assert retried.status_code == 200 and {c["change"] for c in retried.json()["changes"]} == {"unchanged"}


def test_an_hl7_message_whose_connection_is_lost_gets_an_ae_archived_for_retry_with_503(ingest) -> None:
    assert ingest.post_hl7(messages.adt("A01", control="C1")).status_code == 200
    transfer = messages.adt("A02", control="C2", ts="20240301150000", ward="WARD07^BAY1^BED1")

    response, killed = _cut_off(ingest.sessions, held="Patient", send=lambda: ingest.post_hl7(transfer))

    assert killed and response.status_code == 503 and response.headers["retry-after"] == "5"
    msa = parse(response.text).first("MSA")
    assert msa.get(1) == "AE" and f"archived as {response.headers['x-raw-message-id']} for retry" in msa.get(3)
    assert ingest.get(RawMessage, RawMessage.id == response.headers["x-raw-message-id"]).status == "failed"
    assert ingest.post_hl7(transfer).status_code == 200  # the engine's resend
    assert _statuses(ingest) == ["failed", "processed", "processed"]


def test_an_hl7_batch_whose_connections_are_lost_is_answered_503_every_message_ae(ingest) -> None:
    assert ingest.post_hl7(messages.adt("A01", control="C1")).status_code == 200

    # The batch's transaction, then each message processed alone, all lose their connection.
    response, killed = _cut_off(ingest.sessions, held="Patient", send=lambda: ingest.post_hl7(_BATCH))

    assert killed >= 3 and response.status_code == 503 and response.headers["retry-after"] == "5"
    assert [s.split("|")[1] for s in response.text.split("\r") if s.startswith("MSA|")] == ["AE", "AE"]
    assert _statuses(ingest) == ["failed", "failed", "processed"]


def test_an_hl7_batch_whose_transaction_alone_loses_its_connection_is_stored_message_by_message(ingest) -> None:
    assert ingest.post_hl7(messages.adt("A01", control="C1")).status_code == 200

    response, killed = _cut_off(ingest.sessions, held="Patient", send=lambda: ingest.post_hl7(_BATCH), at_most=1)

    assert killed == 1 and response.status_code == 200, response.text
    assert _statuses(ingest) == ["processed"] * 3


def test_a_message_over_mllp_whose_connection_is_lost_gets_an_ae_and_its_resend_an_aa(mllp) -> None:
    port, ingest = mllp
    update = messages.adt("A08", control="M2", ts="20240301120000").encode()
    with open_connection("127.0.0.1", port) as sock:
        assert parse(_exchange(sock, messages.adt("A01", control="M1").encode())).first("MSA").get(1) == "AA"
        ack, killed = _cut_off(ingest.sessions, held="Patient", send=lambda: _exchange(sock, update))
        resent = _exchange(sock, update)
    msa = parse(ack).first("MSA")
    assert killed and msa.get(1) == "AE" and "for retry" in msa.get(3)
    assert parse(resent).first("MSA").get(1) == "AA"
    assert _statuses(ingest) == ["failed", "processed", "processed"]


def test_a_fault_here_is_still_a_500(ingest) -> None:
    with ingest.sessions.begin() as session:  # not the connection: the code's own fault, which a resend repeats
        session.execute(text("ALTER TABLE search_param RENAME TO search_param_away"))
    response = ingest.post_fhir(messages.bundle([messages.patient()]))
    assert response.status_code == 500 and "retry-after" not in response.headers
    assert response.json()["issue"][0]["code"] == "exception"


# ------------------------------------------------------------------------------------------- helpers

_BATCH = ("BHS|^~\\&|PAS|RR8|SCR|ICS|20240301120000||||B1\r"
          + messages.adt("A08", control="C2", ts="20240301120000")
          + messages.adt("A02", control="C3", ts="20240301150000", ward="WARD07^BAY1^BED1") + "BTS|2\r")


def _cut_off(sessions: sessionmaker[Session], *, held: str, send: Callable[[], Any],
             at_most: int = 1000) -> tuple[Any, int]:
    """`send()` run while another transaction holds every `held` row; each backend that waits for them is terminated
    (pg_terminate_backend: the server ends the connection, as in a restart), up to `at_most`, until `send()` is
    answered; then the rows are let go. The answer, and how many connections were cut."""
    answers: list[Any] = []
    killed = 0
    with sessions() as rival:
        rows = rival.execute(text("SELECT id FROM resource WHERE resource_type = :type FOR UPDATE"),
                             {"type": held}).all()
        assert rows, f"no {held} to hold"
        sender = threading.Thread(target=lambda: answers.append(send()))
        sender.start()
        deadline = time.monotonic() + 30
        while not answers and killed < at_most and time.monotonic() < deadline:
            killed += _terminate_waiting(sessions)
            time.sleep(0.02)
        rival.rollback()
    sender.join(30)
    assert answers, "the message was never answered"
    return answers[0], killed


def _terminate_waiting(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(session.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND pid <> pg_backend_pid()")).all())


def _statuses(ingest: Ingest) -> list[str]:
    with ingest.sessions() as session:
        return sorted(session.scalars(text("SELECT status FROM raw_message")))


def _exchange(sock: socket.socket, message: bytes) -> str:
    """Send one framed message and read its ACK."""
    sock.sendall(frame(message))
    answer = b""
    while END not in answer:
        chunk = sock.recv(65536)
        assert chunk, "the listener closed the connection"
        answer += chunk
    return answer[1:answer.index(END)].decode()
