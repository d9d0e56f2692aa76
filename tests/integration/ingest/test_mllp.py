"""HL7 v2 over MLLP on a real TCP socket: several messages on one connection, one ACK each, AR for garbage
and for oversized frames, a frame the sender abandons, connections that go quiet, MSH-18 character sets, and
the listener closed when the service stops."""

import socket
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from services.ingest.app import create_app
from services.ingest.feeds.hl7v2_message import parse
from services.ingest.mllp import END, START, frame, open_connection
from shared.db import create_db_engine, make_session_factory
from shared.schema import RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import Ingest, ingest_settings

pytestmark = pytest.mark.integration


def _read_acks(sock: socket.socket, count: int) -> list[str]:
    buffer, acks = b"", []
    while len(acks) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(acks)} ACKs"
        buffer += chunk
        while START in buffer and END in buffer:
            start, end = buffer.index(START), buffer.index(END)
            acks.append(buffer[start + 1:end].decode())
            buffer = buffer[end + len(END):]
    return acks


@contextmanager
def _listening(pg_url, tokens, **overrides):
    app = create_app(ingest_settings(tokens, pg_url, **({"max_hl7_bytes": 20_000} | overrides)))
    engine = create_db_engine(pg_url)
    with TestClient(app) as client:
        port = app.state.runtime.extras["mllp"].port
        yield port, Ingest(client, tokens, make_session_factory(engine))
    engine.dispose()
    with pytest.raises(OSError):  # stopped with the service: nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.fixture
def mllp(pg_url, tokens):
    with _listening(pg_url, tokens) as listening:
        yield listening


@pytest.fixture
def impatient_mllp(pg_url, tokens):
    """A listener that waits 1 s for the rest of a frame and 3 s for the next message."""
    with _listening(pg_url, tokens, mllp_frame_timeout_seconds=1, mllp_idle_timeout_seconds=3) as listening:
        yield listening


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("scr_ingest_mllp_frames_dropped_total", {"reason": reason}) or 0.0


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the listener closes `sock` (it sends nothing first); fails after `limit`."""
    sock.settimeout(limit)
    began = time.monotonic()
    assert sock.recv(1024) == b"", "the listener answered instead of closing the connection"
    return time.monotonic() - began


def test_several_messages_on_one_connection_get_one_ack_each(mllp) -> None:
    port, ingest = mllp
    batch = [messages.adt("A28", control="M1"), "garbage that is not HL7",
             messages.adt("A01", control="M3", ts="20240302100000"),
             messages.adt("A01", control="M4", nhs="9990000019")]
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(b"".join(frame(m.encode()) for m in batch))
        acks = [parse(a) for a in _read_acks(sock, 4)]
        # The same connection carries on after an error: a fifth message, sent in two pieces.
        fifth = frame(messages.adt("A03", control="M5", ts="20240305100000", discharged="20240305100000").encode())
        sock.sendall(fifth[:40])
        sock.sendall(fifth[40:])
        acks += [parse(a) for a in _read_acks(sock, 1)]
    assert [(a.first("MSA").get(1), a.first("MSA").get(2)) for a in acks] == [
        ("AA", "M1"), ("AR", ""), ("AA", "M3"), ("AE", "M4"), ("AA", "M5")]
    assert acks[3].first("ERR").get(2, 1) == "PID" and acks[3].first("ERR").get(2, 3) == "3"
    (encounter,) = ingest.rows("Encounter")
    assert encounter.body["status"] == "finished"
    assert ingest.count(RawMessage, RawMessage.channel == "mllp") == 5
    assert ingest.count(RawMessage, RawMessage.status == "rejected") == 2


def test_an_adt_dated_ahead_over_mllp_gets_aa_with_a_warning_and_one_on_time_a_plain_aa(mllp) -> None:
    port, _ingest = mllp
    now = datetime.now(UTC)
    sent = [messages.adt("A01", control="AHEAD", ts=(now + timedelta(days=1)).strftime("%Y%m%d%H%M%S+0000")),
            messages.adt("A08", control="ONTIME", ts=now.strftime("%Y%m%d%H%M%S+0000"))]
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(b"".join(frame(m.encode()) for m in sent))
        ahead, on_time = _read_acks(sock, 2)
    assert [parse(a).first("MSA").get(1) for a in (ahead, on_time)] == ["AA", "AA"]
    (err,) = [line.split("|") for line in ahead.split("\r") if line.startswith("ERR|")]
    assert err[2:5] == ["MSH^1^7^1", "0^Message accepted^HL70357", "W"] and "ordered as received" in err[8]
    assert "\rERR|" not in on_time


def test_a_late_adt_event_over_mllp_is_replayed_into_the_stay_or_refused_as_over_http(mllp) -> None:
    """MLLP is a replay channel as POST /ingest/hl7v2 is: a late message is never an AA that changes nothing."""
    port, ingest = mllp
    stay = [messages.adt("A01", control="S1", ts="20240301100000", admitted="20240301100000", ward="WARD01"),
            messages.adt("A03", control="S3", ts="20240303100000", admitted="20240301100000", ward="CCU",
                         discharged="20240303100000"),
            messages.adt("A02", control="S2", ts="20240302100000", ward="CCU"),  # late: before the discharge
            messages.adt("A11", control="S0", ts="20240229100000", ward="WARD01")]  # dated before the admission
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(b"".join(frame(m.encode()) for m in stay))
        acks = [parse(a) for a in _read_acks(sock, 4)]
    assert [a.first("MSA").get(1) for a in acks] == ["AA", "AA", "AA", "AE"]
    err = acks[3].first("ERR")
    assert (err.get(2, 1), err.get(2, 3), err.get(3, 1)) == ("PV1", "19", "204")
    (encounter,) = ingest.rows("Encounter")
    assert encounter.body["status"] == "finished"
    assert [(loc["location"]["display"], loc["period"]) for loc in encounter.body["location"]] == [
        ("WARD01", {"start": "2024-03-01T10:00:00+00:00", "end": "2024-03-02T10:00:00+00:00"}),
        ("CCU", {"start": "2024-03-02T10:00:00+00:00", "end": "2024-03-03T10:00:00+00:00"})]


def test_an_oversized_frame_gets_an_ar_and_the_connection_stays_usable(mllp) -> None:
    port, ingest = mllp
    huge = messages.adt("A28", control="BIG") + "NTE|1||" + "x" * 30_000 + "\r"
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(frame(huge.encode()) + frame(messages.adt("A28", control="SMALL").encode()))
        first, second = (parse(a) for a in _read_acks(sock, 2))
    assert first.first("MSA").get(1) == "AR" and "over 20000 bytes" in first.first("MSA").get(3)
    assert second.first("MSA").get(1) == "AA" and second.first("MSA").get(2) == "SMALL"
    assert ingest.count(Resource, Resource.resource_type == "Patient") == 1


def test_a_message_that_cannot_be_archived_is_refused_so_the_sender_sends_it_again(mllp) -> None:
    from sqlalchemy import text

    port, ingest = mllp
    with ingest.sessions.begin() as session:  # a real fault: the archive table is gone
        session.execute(text("ALTER TABLE raw_message RENAME TO raw_message_away"))
    message = frame(messages.adt("A28", control="RETRY-ME").encode())
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(message)
        (refused,) = [parse(a) for a in _read_acks(sock, 1)]
        with ingest.sessions.begin() as session:
            session.execute(text("ALTER TABLE raw_message_away RENAME TO raw_message"))
        sock.sendall(message)  # the same connection, the same message again
        (accepted,) = [parse(a) for a in _read_acks(sock, 1)]
    assert refused.first("MSA").get(1) == "AE" and "send again" in refused.first("MSA").get(3)
    assert accepted.first("MSA").get(1) == "AA" and accepted.first("MSA").get(2) == "RETRY-ME"
    assert ingest.count(Resource, Resource.resource_type == "Patient") == 1


def test_a_batch_in_one_frame_is_archived_refused_and_pointed_to_http(mllp) -> None:
    port, ingest = mllp
    batch = "BHS|^~\\&|PAS|RR8|SCR|ICS|20240301||||B1\r" + messages.adt("A28", control="M1") + "BTS|1\r"
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(frame(batch.encode()))
        (ack,) = [parse(a) for a in _read_acks(sock, 1)]
    assert ack.first("MSA").get(1) == "AR" and "POST /ingest/hl7v2" in ack.first("MSA").get(3)
    assert ingest.count(RawMessage, RawMessage.channel == "mllp", RawMessage.status == "rejected") == 1
    assert ingest.rows("Patient") == []


def test_a_frame_the_sender_abandons_is_dropped_and_the_frame_it_sends_again_is_accepted(mllp) -> None:
    port, ingest = mllp
    full = messages.adt("A28", control="AGAIN", mrn="MRN3", family="WHITE", given="Snow")
    abandoned_before = _dropped("abandoned")
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(START + full.encode()[:full.index("WHITE") + 3])  # cut off in the middle of PID-5
        time.sleep(0.3)
        sock.sendall(frame(full.encode()))  # a new start block: the sender begins again
        sock.sendall(frame(messages.adt("A28", control="NEXT", mrn="MRN4").encode()))
        acks = [parse(a) for a in _read_acks(sock, 2)]
    assert [(a.first("MSA").get(1), a.first("MSA").get(2)) for a in acks] == [("AA", "AGAIN"), ("AA", "NEXT")]
    assert ingest.count(RawMessage, RawMessage.channel == "mllp") == 2  # nothing of the abandoned frame archived
    (white,) = [p for p in ingest.rows("Patient") if p.body["name"][0]["family"] == "WHITE"]
    assert white.body["name"][0]["given"] == ["Snow"]
    assert _dropped("abandoned") == abandoned_before + 1


def test_an_oversized_frame_whose_end_block_is_split_across_sends_does_not_swallow_the_next(mllp) -> None:
    port, ingest = mllp
    huge = frame((messages.adt("A28", control="BIG") + "NTE|1||" + "x" * 30_000 + "\r").encode())
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(huge[:-1])  # ... <FS>
        time.sleep(0.5)
        sock.sendall(huge[-1:] + frame(messages.adt("A28", control="AFTER").encode()))  # <CR>, then the next
        first, second = (parse(a) for a in _read_acks(sock, 2))
    assert (first.first("MSA").get(1), first.first("MSA").get(2)) == ("AR", "BIG")
    assert (second.first("MSA").get(1), second.first("MSA").get(2)) == ("AA", "AFTER")
    assert ingest.count(Resource, Resource.resource_type == "Patient") == 1


def test_a_connection_that_stops_in_the_middle_of_a_frame_is_closed(impatient_mllp) -> None:
    port, ingest = impatient_mllp
    timed_out_before = _dropped("timed-out")
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(START + b"MSH|")
        waited = _closed_after(sock, limit=10)
    assert 0.9 <= waited < 3  # the frame timeout (1 s), not the idle timeout (3 s)
    assert _dropped("timed-out") == timed_out_before + 1
    assert ingest.count(RawMessage) == 0


def test_a_connection_silent_between_messages_is_closed_after_the_idle_timeout(impatient_mllp) -> None:
    port, _ = impatient_mllp
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(frame(messages.adt("A28", control="ONE").encode()))
        (ack,) = [parse(a) for a in _read_acks(sock, 1)]
        waited = _closed_after(sock, limit=10)
    assert ack.first("MSA").get(1) == "AA"
    assert 2 <= waited < 6


def test_a_latin1_message_is_read_as_its_msh18_declares_and_archived_byte_for_byte(mllp) -> None:
    port, ingest = mllp
    message = messages.with_field(messages.adt("A28", control="CS1", given="RENÉ\u00a0LOUIS"), "MSH", 17, "8859/1")
    content = message.encode("latin-1")  # É and the no-break space are C9 A0: valid UTF-8 for another letter
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(frame(content))
        (ack,) = [parse(a) for a in _read_acks(sock, 1)]
    assert ack.first("MSA").get(1) == "AA"
    (patient,) = ingest.rows("Patient")
    assert patient.body["name"][0]["given"] == ["RENÉ\u00a0LOUIS"]
    assert ingest.get(RawMessage, RawMessage.channel == "mllp").content == content


def test_a_character_set_not_read_here_is_refused_naming_msh18(mllp) -> None:
    port, ingest = mllp
    content = messages.with_field(messages.adt("A28", control="CS2"), "MSH", 17, "EBCDIC").encode()
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(frame(content))
        (ack,) = [parse(a) for a in _read_acks(sock, 1)]
    assert (ack.first("MSA").get(1), ack.first("MSA").get(2)) == ("AR", "CS2")
    assert "MSH-18" in ack.first("MSA").get(3) and "EBCDIC" in ack.first("MSA").get(3)
    assert (ack.first("ERR").get(2, 1), ack.first("ERR").get(2, 3)) == ("MSH", "18")
    raw = ingest.get(RawMessage, RawMessage.channel == "mllp")
    assert (raw.status, raw.content) == ("rejected", content)
    assert ingest.rows("Patient") == []


def test_each_message_is_archived_under_msh3_at_msh4_and_unreadable_input_under_none(mllp) -> None:
    port, ingest = mllp
    other_engine = messages.adt("A28", control="M2").replace("|PAS|RR8|", "|EPR^2.16.840.1^ISO|RR8|", 1)
    with open_connection("127.0.0.1", port) as sock:
        sock.sendall(b"".join(frame(m.encode()) for m in [messages.adt("A28", control="M1"), other_engine,
                                                            "garbage that is not HL7"]))
        _read_acks(sock, 3)
    listed = ingest.client.get("/ingest/raw", headers=ingest.admin()).json()
    assert sorted((r["status"], r["sender_org"], r["sender_system"] or "") for r in listed) == [
        ("processed", None, "EPR@RR8"), ("processed", None, "PAS@RR8"), ("rejected", None, "")]
    assert {r.source_system for r in ingest.rows("Patient")} == {"EPR", "PAS"}  # records keep MSH-3 alone
