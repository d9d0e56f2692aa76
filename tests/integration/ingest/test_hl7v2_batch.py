"""HL7 v2 batches through POST /ingest/hl7v2 into PostgreSQL: every message archived and stored in order, an
acknowledgment batch with one ACK per message, and an envelope that does not add up refused whole."""

import pytest
from sqlalchemy import select

from services.ingest.feeds.hl7v2_message import parse
from shared.schema import RawMessage
from tests.fixtures.ingest import messages

pytestmark = pytest.mark.integration

FILE_HEADER = "FHS|^~\\&|PAS|RR8|SCR|ICS|20240301120000||||FILE-7\r"
BATCH_HEADER = "BHS|^~\\&|PAS|RR8|SCR|ICS|20240301120000||||BATCH-7\r"
NO_PATIENT = "MSH|^~\\&|PAS|RR8|SCR|ICS|20240301120000||ADT^A01^ADT_A01|BAD-1|P|2.4\rEVN|A01|20240301120000\r"


def _batch(*items: str, count: int | None = None, file: bool = False) -> str:
    trailer = f"BTS|{len(items) if count is None else count}\r"
    text = BATCH_HEADER + "".join(items) + trailer
    return FILE_HEADER + text + "FTS|1\r" if file else text


def _segments(response) -> list[list[str]]:
    return [segment.split("|") for segment in response.text.split("\r") if segment]


def _acks(response) -> list[tuple[str, str]]:
    """(MSA-1, MSA-2) of each ACK in the acknowledgment batch, in order."""
    return [(s[1], s[2]) for s in _segments(response) if s[0] == "MSA"]


def _ack_messages(response) -> list[str]:
    """Each ACK of the acknowledgment batch as a message of its own."""
    lines = [line for line in response.text.split("\r") if line and line[:3] not in ("FHS", "BHS", "BTS", "FTS")]
    starts = [n for n, line in enumerate(lines) if line.startswith("MSH|")]
    return ["\r".join(lines[a:b]) + "\r" for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]


def test_a_stay_sent_as_a_batch_is_stored_in_order_and_each_message_acknowledged(ingest) -> None:
    stay = [messages.adt("A01", control="C1", ts="20240301101500"),
            messages.adt("A02", control="C2", ts="20240302090000", ward="WARD07^BAY1^BED1"),
            messages.adt("A03", control="C3", ts="20240305160000", discharged="20240305160000")]
    response = ingest.post_hl7(_batch(*stay, file=True))
    assert response.status_code == 200, response.text
    names = [s[0] for s in _segments(response)]
    assert names == ["FHS", "BHS", "MSH", "MSA", "MSH", "MSA", "MSH", "MSA", "BTS", "FTS"]
    header = next(s for s in _segments(response) if s[0] == "BHS")
    assert header[4:6] == ["PAS", "RR8"] and header[11] == "BATCH-7"  # to the sender, referring to its batch
    assert _acks(response) == [("AA", "C1"), ("AA", "C2"), ("AA", "C3")]
    assert next(s for s in _segments(response) if s[0] == "BTS")[1] == "3"
    (encounter,) = ingest.rows("Encounter")
    assert encounter.body["status"] == "finished" and encounter.body["period"]["end"].startswith("2024-03-05")
    assert ingest.count(RawMessage, RawMessage.channel == "hl7v2", RawMessage.status == "processed") == 3


def test_a_bad_message_in_a_batch_is_refused_alone_and_the_others_are_kept(ingest) -> None:
    response = ingest.post_hl7(_batch(messages.adt("A28", control="C1"), NO_PATIENT,
                                      messages.adt("A01", control="C2", visit="V9")))
    assert response.status_code == 207, response.text
    (first, bad, last) = _acks(response)
    assert first == ("AA", "C1") and last == ("AA", "C2") and bad[0] == "AR" and bad[1] == "BAD-1"
    err = parse(_ack_messages(response)[1]).first("ERR")
    assert err is not None and err.get(1) == "PID"  # the segment at fault
    assert [e.body["status"] for e in ingest.rows("Encounter")] == ["in-progress"]
    assert ingest.count(RawMessage, RawMessage.status == "rejected") == 1  # archived all the same
    assert ingest.count(RawMessage, RawMessage.status == "processed") == 2


@pytest.mark.parametrize("envelope, field", [
    (_batch(messages.adt("A28", control="C1"), count=2), "BTS"),  # a truncated file
    (BATCH_HEADER + messages.adt("A28", control="C1") + "BTS|1\r" + messages.adt("A28", control="C2"), "MSH"),
    (BATCH_HEADER + "PID|1\r" + messages.adt("A28", control="C1") + "BTS|1\r", "PID"),
    (_batch(messages.adt("A28", control="C1")) + BATCH_HEADER + "BTS|0\r", "BHS"),  # two batches
])
def test_an_envelope_that_does_not_add_up_is_refused_whole_and_nothing_is_stored(ingest, envelope: str,
                                                                                 field: str) -> None:
    response = ingest.post_hl7(envelope)
    assert response.status_code == 400, response.text
    msa, err = parse(response.text).first("MSA"), parse(response.text).first("ERR")
    assert msa.get(1) == "AR" and msa.get(2) == "BATCH-7" and err.get(1) == field
    assert ingest.count(RawMessage) == 0 and ingest.rows("Patient") == []


def test_an_empty_batch_is_acknowledged_empty(ingest) -> None:
    response = ingest.post_hl7(_batch())
    assert response.status_code == 200 and [s[0] for s in _segments(response)] == ["BHS", "BTS"]
    assert _segments(response)[-1] == ["BTS", "0"]


def test_a_batch_over_the_message_limit_is_refused_whole(ingest) -> None:
    from services.ingest.api import MAX_MESSAGES_PER_REQUEST

    tiny = "MSH|^~\\&|PAS|RR8|SCR|ICS|20240301120000||ADT^A28^ADT_A05|X|P|2.4\r"
    response = ingest.post_hl7(_batch(*[tiny] * (MAX_MESSAGES_PER_REQUEST + 1)))
    assert response.status_code == 413 and parse(response.text).first("MSA").get(1) == "AR"
    assert ingest.count(RawMessage) == 0


def test_each_message_of_a_batch_is_read_in_the_character_set_its_own_msh18_declares(ingest) -> None:
    latin = messages.with_field(messages.adt("A28", control="C1", mrn="MRN1", given="RENÉ\u00a0LOUIS"), "MSH", 17,
                                "8859/1")
    utf8 = messages.with_field(messages.adt("A28", control="C2", mrn="MRN2", given="Zoë"), "MSH", 17, "UNICODE UTF-8")
    content = BATCH_HEADER.encode() + latin.encode("latin-1") + utf8.encode("utf-8") + b"BTS|2\r"
    response = ingest.client.post("/ingest/hl7v2", content=content, headers=ingest.feed("RR8"))
    assert response.status_code == 200 and _acks(response) == [("AA", "C1"), ("AA", "C2")], response.text
    assert sorted(p.body["name"][0]["given"][0] for p in ingest.rows("Patient")) == ["RENÉ\u00a0LOUIS", "Zoë"]
    with ingest.sessions() as session:
        archived = {raw.content for raw in session.scalars(select(RawMessage))}
    assert archived == {latin.encode("latin-1"), utf8.encode("utf-8")}


def test_each_message_of_a_batch_is_archived_under_its_own_msh3_at_msh4(ingest) -> None:
    epr = messages.adt("A28", control="C2", mrn="RR8000999").replace("|PAS|RR8|", "|EPR|RR8|", 1)
    response = ingest.post_hl7(_batch(messages.adt("A28", control="C1"), epr, NO_PATIENT))
    assert response.status_code == 207, response.text
    with ingest.sessions() as session:
        archived = session.execute(select(RawMessage.status, RawMessage.sender_system)
                                   .order_by(RawMessage.received_at)).all()
    assert archived == [("processed", "PAS@RR8"), ("processed", "EPR@RR8"), ("rejected", "PAS@RR8")]
