"""Splitting an HL7 v2 batch file and answering it: the envelope's rules, the acknowledgment batch's shape."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import hl7_batch
from tests.fixtures.ingest import messages

ONE, TWO = messages.adt("A28", control="C1"), messages.adt("A31", control="C2")
HEADER = "BHS|^~\\&|PAS|RR8|SCR|ICS|20240301120000||||B-1"


def test_line_feeds_and_framing_bytes_around_a_batch_are_tolerated_and_messages_kept_whole() -> None:
    text = "\x0b" + "\n".join([HEADER, ONE.rstrip("\r").replace("\r", "\n"), TWO.rstrip("\r"), "BTS|2"]) + "\n\x1c"
    batch = hl7_batch.split(text, max_messages=10)
    assert batch.messages == [ONE, TWO] and batch.control_id() == "B-1"
    assert hl7_batch.is_batch(text.encode("latin-1")) and not hl7_batch.is_batch(ONE.encode())


def test_a_batch_without_a_trailer_count_is_taken_as_it_is() -> None:
    assert len(hl7_batch.split(f"{HEADER}\r{ONE}{TWO}BTS\r", max_messages=10).messages) == 2


@pytest.mark.parametrize("text, segment, field", [
    (f"FHS|^~\\&\r{ONE}", "MSH", 0),  # a file with no batch header
    (f"{HEADER}\r{ONE}BTS|1\rFTS|2\r", "FTS", 0),  # FTS without FHS
    (f"FHS|^~\\&\r{HEADER}\r{ONE}BTS|1\rFTS|2\r", "FTS", 1),
    (f"{HEADER}\r{ONE}BTS|one\r", "BTS", 1),
    (f"{HEADER}\r{ONE}BTS|1\rBTS|1\r", "BTS", 0),
    (f"{HEADER}\rFHS|^~\\&\r{ONE}BTS|1\r", "FHS", 0),
    (f"{HEADER}\r{ONE}{TWO}", "BTS", 0),  # cut short: no trailer
    (f"FHS|^~\\&\r{HEADER}\r{ONE}BTS|1\r", "FTS", 0),
])
def test_envelope_faults_name_the_segment_and_field(text: str, segment: str, field: int) -> None:
    with pytest.raises(hl7_batch.BatchError) as caught:
        hl7_batch.split(text, max_messages=10)
    assert caught.value.location[:2] == (segment, field)


def test_too_many_messages_is_too_large_not_malformed() -> None:
    with pytest.raises(hl7_batch.BatchTooLarge):
        hl7_batch.split(f"{HEADER}\r{ONE}{TWO}BTS|2\r", max_messages=1)


def test_the_acknowledgment_batch_mirrors_the_envelope_and_keeps_the_acks_in_order() -> None:
    batch = hl7_batch.split(f"FHS|^~\\&|PAS|RR8|||||||F-1\r{HEADER}\r{ONE}{TWO}BTS|2\rFTS|1\r", max_messages=10)
    answer = hl7_batch.acknowledgment(batch, ["MSH|^~\\&|SCR\rMSA|AA|C1\r", "MSH|^~\\&|SCR\rMSA|AE|C2\r"])
    segments = [s.split("|") for s in answer.split("\r") if s]
    assert [s[0] for s in segments] == ["FHS", "BHS", "MSH", "MSA", "MSH", "MSA", "BTS", "FTS"]
    assert segments[0][11] == "F-1" and segments[1][11] == "B-1" and segments[1][4] == "PAS"
    assert [s[2] for s in segments if s[0] == "MSA"] == ["C1", "C2"] and segments[-2] == ["BTS", "2"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["FHS|^~\\&", HEADER, ONE.rstrip("\r"), "PID|1", "BTS|1", "BTS|x", "BTS|", "FTS|1",
                                 "MSH|", ""]), max_size=8), st.text(max_size=20))
def test_any_arrangement_of_segments_is_split_or_refused_with_a_location(lines: list[str], noise: str) -> None:
    text = "\r".join([*lines, noise])
    try:
        batch = hl7_batch.split(text, max_messages=5)
    except hl7_batch.BatchError as refused:
        assert refused.location[0] and hl7_batch.refusal(text, refused).startswith("MSH|")
    else:
        assert all(m.startswith("MSH") and m.endswith("\r") for m in batch.messages)
        assert hl7_batch.acknowledgment(batch, []).startswith(("FHS|", "BHS|"))
