"""Malformed input thrown at every adapter: each answers with AdapterError (an answer for the sender) or a
mapping, never any other exception. The pipeline-level twin (tests/integration/ingest/test_fuzz_pipeline.py)
shows a refused message writes nothing."""

import json

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.feeds import community_csv, gp_fhir, hl7v2, socialcare_events
from services.ingest.feeds.model import AdapterError, MappedMessage
from tests.fixtures.ingest import messages
from tests.support import data

VALID_ADT = messages.text("adt_a01_itk.hl7")
VALID_CSV = messages.text("community_contacts.csv")
VALID_BUNDLE = json.dumps(messages.load_json("gp_record_bundle.json"))
VALID_EVENT = json.dumps(messages.event("care_package.started", messages.EVENT_BODIES["care_package.started"]))
HL7_ALPHABET = st.sampled_from(list("|^~\\&\r\n0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ .-\x00\x0b\x1cé"))


@st.composite
def mutated(draw, text: str, alphabet=None):
    """The text with a few characters deleted, replaced or inserted, and perhaps truncated."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, max(0, len(chars) - 1)))
        action = draw(st.sampled_from(["delete", "replace", "insert"]))
        char = draw(alphabet if alphabet is not None else st.characters(codec="utf-8"))
        if action == "delete" and chars:
            del chars[position]
        elif action == "replace" and chars:
            chars[position] = char
        else:
            chars.insert(position, char)
    if draw(st.booleans()):
        chars = chars[: draw(st.integers(0, len(chars)))]
    return "".join(chars)


def _answers(call, *args, **kwargs) -> object:
    try:
        result = call(*args, **kwargs)
    except AdapterError as exc:
        assert exc.issues and all(i.diagnostics for i in exc.issues)
        return exc
    assert isinstance(result, MappedMessage)
    return result


@given(mutated(VALID_ADT, HL7_ALPHABET))
def test_mutated_adt_messages_get_an_answer(text: str) -> None:
    _answers(hl7v2.map_adt, text)


@given(st.text(max_size=300).filter(lambda t: not t.lstrip("\r\n \t\x00").startswith("MSH")))
def test_text_that_is_not_hl7_is_always_refused(text: str) -> None:
    assert isinstance(_answers(hl7v2.map_adt, text), AdapterError)


@given(mutated(VALID_BUNDLE))
def test_mutated_bundles_get_an_answer(text: str) -> None:
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return  # the pipeline refuses non-JSON before the adapter (tested in integration)
    _answers(gp_fhir.map_bundle, body, max_entries=100)


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=12), inner, max_size=4), max_leaves=20)


@given(JSON_VALUES)
def test_arbitrary_json_is_refused_as_a_bundle_and_as_an_event(value) -> None:
    assert isinstance(_answers(gp_fhir.map_bundle, value, max_entries=100), AdapterError)
    assert isinstance(_answers(socialcare_events.map_event, value), AdapterError)


@given(st.dictionaries(st.sampled_from(["resourceType", "type", "entry", "meta"]), JSON_VALUES, max_size=4))
def test_bundle_shaped_json_gets_an_answer(value) -> None:
    _answers(gp_fhir.map_bundle, value | {"resourceType": "Bundle"}, max_entries=100)


@given(mutated(VALID_EVENT))
def test_mutated_events_get_an_answer(text: str) -> None:
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return
    _answers(socialcare_events.map_event, body)


@given(mutated(VALID_CSV, st.sampled_from(list(',"\r\n\x00abc019-/:'))))
def test_mutated_csv_gets_an_answer(text: str) -> None:
    _answers(community_csv.map_csv, text.encode(), org=data.COMMUNITY_ODS, max_rows=100)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_as_csv_get_an_answer(content: bytes) -> None:
    _answers(community_csv.map_csv, content, org=data.COMMUNITY_ODS, max_rows=100)
