"""Absolute URLs in answers (Bundle links, fullUrl, the CapabilityStatement's) come from SCR_PUBLIC_BASE_URL when it
is set, never from the caller's Host header; unset (one machine), from the request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.record_api.app import create_app
from tests.integration.record_api.conftest import record_settings
from tests.integration.record_api.pdp import DecisionDouble
from tests.support.tokens import TokenFactory

pytestmark = pytest.mark.integration
PUBLIC = "https://scr.example.nhs.uk/record"
HOSTILE = {"Host": "evil.example"}


@pytest.fixture
def published_api(tokens: TokenFactory, pg_url: str, pdp: DecisionDouble, pdp_token: Path) -> Iterator[TestClient]:
    app = create_app(record_settings(tokens, pg_url, pdp, pdp_token, public_base_url=f"{PUBLIC}/"))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _urls(bundle: dict) -> list[str]:
    return [link["url"] for link in bundle["link"]] + [e["fullUrl"] for e in bundle["entry"]
                                                        if not e["fullUrl"].startswith("urn:")]


def test_links_and_full_urls_use_the_public_base_url_whatever_the_host_header(published_api, scenario,
                                                                               callers) -> None:
    headers = callers.acute() | HOSTILE
    person = scenario.person
    for path in (f"/fhir/Observation?patient={person}&_count=1", f"/fhir/Patient/{person}/$everything",
                 f"/fhir/Patient/{person}/_history"):
        response = published_api.get(path, headers=headers)
        assert response.status_code == 200, response.text
        urls = _urls(response.json())
        assert urls and all(url.startswith(f"{PUBLIC}/fhir/") for url in urls), (path, urls)
        assert "evil.example" not in response.text
    metadata = published_api.get("/fhir/metadata", headers=HOSTILE).json()
    assert metadata["implementation"]["url"] == f"{PUBLIC}/fhir"


def test_unset_the_request_base_is_used(api, scenario, callers) -> None:
    bundle = api.get(f"/fhir/Observation?patient={scenario.person}", headers=callers.acute()).json()
    assert all(url.startswith("http://testserver/fhir/") for url in _urls(bundle))
