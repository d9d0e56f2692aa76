"""Stored JSON is parsed fast (orjson) and exactly: numbers orjson would bend are read the way `json` reads them."""

from __future__ import annotations

import json

import pytest

from shared.db import load_stored_json


@pytest.mark.parametrize("text", [
    '{"resourceType": "Observation", "valueQuantity": {"value": 120.5, "unit": "mmHg"}, "note": [{"text": "é"}]}',
    '{"valueInteger": 2147483647, "valueInteger64": -9223372036854775808, "big": 18446744073709551615}',
    '{"valueDecimal": 123456789012345678901234567890}',  # beyond 64 bits: orjson would make it a float
    '{"valueDecimal": -9223372036854775809}',
    '{"valueDecimal": 1e400}',  # beyond a double: orjson refuses it, json reads infinity as it always did
    '{"identifier": [{"value": "12345678901234567890123"}]}',
])
def test_stored_json_reads_exactly_as_json_does(text: str) -> None:
    expected = json.loads(text)
    for given in (text, text.encode()):  # body::text arrives as str, JSONB columns as bytes
        parsed = load_stored_json(given)
        assert parsed == expected
        assert json.dumps(parsed) == json.dumps(expected)  # same types: an int stays an int


def test_malformed_stored_json_is_still_an_error() -> None:
    with pytest.raises(ValueError):
        load_stored_json('{"resourceType": ')
