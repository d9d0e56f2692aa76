"""The fast HL7 v2 segment reader: on the messages PAS systems send it reads exactly the segments the hl7apy path
reads; on damaged messages it never accepts what hl7apy refuses and the adapter's answer (the resources, or the
ACK's error location, code and words) is the same with it switched off; anything unusual goes to hl7apy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.feeds import hl7v2, hl7v2_message
from services.ingest.feeds.hl7v2_message import Segment, fast_segments, full_segments
from services.ingest.feeds.model import AdapterError
from tests.fixtures.ingest import messages
from tests.unit.ingest.test_fuzz import HL7_ALPHABET, mutated
from tools.synth import ics

BASES = [messages.text("adt_a01_itk.hl7"), *(messages.adt(e) for e in ("A01", "A02", "A03", "A08", "A28", "A40")),
         messages.adt("A28", family="O\\S\\BRIEN", given="Mary\\T\\Jo"),
         messages.with_field(messages.adt("A13", discharged='""', given='""'), "PID", 29, '""')]  # HL7 nulls


def _normalised(text: str) -> str:
    return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r \t\x00")


def _as_read(segments: list[Segment]) -> list[tuple[str, int, dict[int, list[list[str]]]]]:
    """What the adapter can see: per field, each non-empty repetition's components without trailing blanks."""
    view = []
    for segment in segments:
        fields = {}
        for number in segment.fields:
            reps = []
            for rep in segment.repetitions(number):
                while rep and rep[-1] == "":
                    rep.pop()
                if rep:
                    reps.append(rep)
            if reps:
                fields[number] = reps
        view.append((segment.name, segment.index, fields))
    return view


def _same_or_declined(text: str) -> bool:
    """True when the fast path took the message (and then it reads exactly what the full path reads)."""
    normalised = _normalised(text)
    fast = fast_segments(normalised)
    if fast is None:
        return False
    assert _as_read(fast) == _as_read(full_segments(normalised))  # full_segments raising would fail the test
    return True


def _outcome(text: str) -> object:
    try:
        return [item.resource for item in hl7v2.map_adt(text).items]
    except AdapterError as exc:
        return exc.hl7_location, exc.hl7_code, [i.diagnostics for i in exc.issues]


def _full_path_outcome(text: str) -> object:
    real = hl7v2_message.fast_segments
    hl7v2_message.fast_segments = lambda _text: None
    try:
        return _outcome(text)
    finally:
        hl7v2_message.fast_segments = real


def test_every_synthetic_and_fixture_message_takes_the_fast_path_with_the_same_segments() -> None:
    synthetic = [m for batch in ics.adt_messages(ics.plan(3_000)) for m in batch]
    assert all(_same_or_declined(m) for m in BASES + synthetic)


@settings(max_examples=300)
@given(st.sampled_from(BASES).flatmap(lambda base: mutated(base, HL7_ALPHABET)))
def test_damaged_messages_get_the_same_answer_either_way(text: str) -> None:
    normalised = _normalised(text)
    if normalised.startswith("MSH") and "\x00" not in normalised and fast_segments(normalised) is not None:
        full_segments(normalised)  # hl7apy accepts whatever the fast path accepts
    assert _outcome(text) == _full_path_outcome(text)


@pytest.mark.parametrize("text", [
    "MSH|^~\\&|PAS|RR8\rFOO|bar",  # an unknown segment: hl7apy decides (and refuses)
    "MSH|^~\\&|PAS|RR8|SCR|ICS|20240301101500||ADT^A01|1|P|2.9",  # a version hl7apy may not know
    "MSH|#~\\&|PAS|RR8|SCR|ICS|20240301101500||ADT^A01|1|P|2.4",  # other encoding characters
    messages.adt("A01").replace("EVN|A01|", "EVN|A01|\x0b"),  # a control character inside
    messages.adt("A01").replace("\rPID|", "PID|"),  # two segments run together: too many fields
    messages.adt("A01").replace("|A01|", "| A01|"),  # padded values: hl7apy trims some by data type
])
def test_unusual_messages_are_handed_to_hl7apy(text: str) -> None:
    assert fast_segments(_normalised(text)) is None


def test_the_adapter_answers_the_same_with_the_fast_path_off() -> None:
    texts = [*BASES, "MSH|^~\\&|PAS|RR8\rFOO|bar", messages.adt("A01", nhs="9990000019")]
    assert [_outcome(t) for t in texts] == [_full_path_outcome(t) for t in texts]
