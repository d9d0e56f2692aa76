"""Schemathesis against each service's own OpenAPI schema (in-process: app.openapi(), the docs routes being off in
real mode): requests generated from the schema, valid and deliberately invalid, each carrying a token of a caller
the endpoint admits, never get a 5xx, and every answer is FHIR JSON or an HL7 ACK."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from tests.security.access_rules import RULES, token_for
from tests.security.conftest import Platform

pytestmark = pytest.mark.integration


def _rule_for(service: str, method: str, path: str) -> Any:
    for (rule_method, template), rule in RULES[service].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if rule_method == method and re.match(pattern, path):
            return rule
    raise AssertionError(f"no access rule matches {method} {path}")


def _send(platform: Platform, service: str, case: Any) -> Any:
    request = case.as_transport_kwargs(base_url="http://testserver")
    path = request["url"].removeprefix("http://testserver")
    rule = _rule_for(service, request["method"], path.split("?", 1)[0])
    caller = next(iter(rule.admits), "none")
    token = token_for(platform.tokens, caller, rule.feed_ods)
    headers = {k: str(v) for k, v in (request.get("headers") or {}).items()}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body: dict[str, Any] = {}
    if "json" in request:
        body["json"] = request["json"]
    elif request.get("data") is not None:
        data = request["data"]
        body["content"] = data if isinstance(data, bytes | str) else str(data)
    return platform.client(service).request(request["method"], path, headers=headers,
                                            params=request.get("params"), **body)


@pytest.mark.parametrize("service", sorted(RULES))
def test_requests_generated_from_the_openapi_schema_never_get_a_5xx(platform: Platform, service: str) -> None:
    schema = schemathesis.openapi.from_dict(platform.client(service).app.openapi())
    sent: list[str] = []
    # Valid requests, and invalid ones wherever the schema constrains something that can be broken.
    cases = st.one_of(schema.as_strategy(generation_mode=GenerationMode.POSITIVE),
                      schema.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    def check(case: Any) -> None:
        response = _send(platform, service, case)
        sent.append(f"{case.method} {case.path}")
        kind = response.headers.get("content-type", "")
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
        assert "json" in kind or "hl7" in kind or "html" in kind, (case.method, case.path, kind)

    check()
    assert len(set(sent)) >= 3, f"schemathesis reached too few operations of {service}: {sorted(set(sent))}"
