"""Content negotiation: which requests can take the JSON this API serves (the rest get 406)."""

import pytest

from services.record_api.negotiation import accepts_json


def _scope(query: str = "", accept: str | None = None) -> dict:
    headers = [(b"accept", accept.encode())] if accept is not None else []
    return {"query_string": query.encode(), "headers": headers}


@pytest.mark.parametrize("query,accept", [
    ("", None), ("", ""), ("", "*/*"), ("", "application/fhir+json"), ("", "application/json; charset=utf-8"),
    ("", "application/fhir+json;fhirVersion=4.0"), ("", "text/html,application/xhtml+xml,*/*;q=0.8"),
    ("", "application/fhir+xml, application/fhir+json;q=0.5"), ("", "application/fhir+ndjson"),
    ("_format=json", "application/fhir+xml"), ("_format=application/fhir%2Bjson", None),
])
def test_requests_that_can_take_json(query: str, accept: str | None) -> None:
    assert accepts_json(_scope(query, accept))


@pytest.mark.parametrize("query,accept", [
    ("_format=xml", None), ("_format=application/fhir%2Bxml", "application/fhir+json"), ("_format=ttl", None),
    ("", "application/fhir+xml"), ("", "application/xml, text/xml"), ("", "text/html"),
    ("", "application/fhir+json;q=0, application/fhir+xml"), ("_format=json&_format=xml", None),
])
def test_requests_that_accept_only_something_else(query: str, accept: str | None) -> None:
    assert not accepts_json(_scope(query, accept))
