"""Stored JSON goes out as it was stored: spliced into the response unparsed, with the rest encoded compactly."""

from __future__ import annotations

import json

import pytest

from services.record_api.bundles import StoredJson, encode, stored_entry


def test_stored_bodies_are_spliced_in_as_their_text_and_the_whole_is_one_valid_document() -> None:
    stored = '{"id": "o1", "note": [{"text": "BP \\"high\\" — recheck"}], "resourceType": "Observation"}'
    payload = {"resourceType": "Bundle", "entry": [stored_entry("https://x/fhir", "Observation", "o1",
                                                                StoredJson(stored)),
                                                   stored_entry("https://x/fhir", "Observation", "o2",
                                                                {"resourceType": "Observation", "id": "o2"})]}
    text = encode(payload).decode()
    assert stored in text  # byte for byte: never parsed and re-serialised
    parsed = json.loads(text)
    assert parsed["entry"][0]["resource"] == json.loads(stored)
    assert parsed["entry"][0]["fullUrl"] == "https://x/fhir/Observation/o1"
    assert parsed["entry"][1]["resource"] == {"resourceType": "Observation", "id": "o2"}


def test_what_orjson_will_not_write_is_written_by_json_with_the_stored_text_still_spliced_in() -> None:
    """An integer beyond 64 bits (JSONB's numeric holds one) sends the whole payload the `json` way."""
    stored = '{"id": "s", "valueInteger": 123456789012345678901234567890}'
    payload = {"entry": [{"resource": {"id": "p", "valueDecimal": 2**70}}, {"resource": StoredJson(stored)}]}
    text = encode(payload).decode()
    assert stored in text
    assert json.loads(text) == {"entry": [{"resource": {"id": "p", "valueDecimal": 2**70}},
                                          {"resource": json.loads(stored)}]}


def test_a_stored_value_shaped_like_a_placeholder_is_left_alone() -> None:
    """On the `json` way, placeholders carry a nonce drawn per response, so text a sender stored cannot be
    mistaken for one."""
    lookalike = {"resourceType": "Basic", "id": "b", "text": "0000000000000000:0", "valueInteger": 2**70}
    payload = {"entry": [{"resource": lookalike}, {"resource": StoredJson('{"id": "s"}')}]}
    assert json.loads(encode(payload)) == {"entry": [{"resource": lookalike}, {"resource": {"id": "s"}}]}


def test_anything_else_that_is_not_json_is_still_refused() -> None:
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        encode({"entry": {1, 2}})
