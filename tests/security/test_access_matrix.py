"""Access control as a matrix: every endpoint of every service (enumerated from the apps, hidden routes included)
times every kind of caller (no token, expired, wrong issuer, audience or key, `alg: none`, each role, a citizen
for another person, a feed token on a read endpoint, a clinician token on an ingest endpoint) gets the documented
answer of tests/security/access_rules.py. A route without a rule fails the suite."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.routing import _IncludedRouter  # FastAPI keeps included routers nested; walk them for every route

from tests.security.access_rules import CALLERS, RULES, token_for
from tests.security.conftest import Platform, bearer
from tests.support import data

pytestmark = pytest.mark.integration


def routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path template) of every route the app serves, whether or not it is in the OpenAPI schema."""

    def walk(found: list, prefix: str) -> Iterator[tuple[str, str]]:
        for route in found:
            if isinstance(route, _IncludedRouter):
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            else:
                for method in sorted(getattr(route, "methods", None) or {"GET"}):
                    if method != "HEAD":
                        yield method, prefix + route.path

    yield from walk(app.routes, "")


@pytest.mark.parametrize("service", sorted(RULES))
def test_every_route_of_every_service_has_a_documented_rule(platform: Platform, service: str) -> None:
    served = set(routes(platform.client(service).app))
    assert served, f"{service} serves no routes"
    missing = served - set(RULES[service])
    assert not missing, f"routes without an access rule in tests/security/access_rules.py: {sorted(missing)}"
    stale = set(RULES[service]) - served
    assert not stale, f"rules for routes {service} no longer serves: {sorted(stale)}"


# The citizen page's static files choose their own policy (no-cache: public, revalidated); every other answer,
# refusals included, is no-store (shared/service.py NoStore).
CITIZEN_PAGE = {"/", "/static/{name}"}


@pytest.mark.parametrize("service", sorted(RULES))
def test_every_caller_gets_the_documented_answer_on_every_endpoint(platform: Platform, service: str) -> None:
    client = platform.client(service)
    wrong: list[str] = []
    checked = 0
    for (method, template), rule in sorted(RULES[service].items()):
        for caller in CALLERS:
            request = rule.request(platform)  # the same request from everyone: refusals come from who asks
            path = request.pop("path", re.sub(r"\{[^}]+\}", "x", template))
            token = token_for(platform.tokens, caller, rule.feed_ods)
            headers = (bearer(token) if token else {}) | request.pop("headers", {})
            response = client.request(method, path, headers=headers, **request)
            checked += 1
            expected = rule.expected(caller)
            if response.status_code not in expected:
                wrong.append(f"{method} {template} as {caller}: {response.status_code}, expected {sorted(expected)[:4]}"
                             f" ({response.text[:160]})")
                continue
            cache = response.headers.get("cache-control")
            if cache != ("no-cache" if template in CITIZEN_PAGE else "no-store"):
                wrong.append(f"{method} {template} as {caller}: {response.status_code} with Cache-Control {cache!r}")
            if response.status_code in (401, 403):
                body = response.json()
                if body.get("resourceType") != "OperationOutcome":
                    wrong.append(f"{method} {template} as {caller}: refusal is not an OperationOutcome")
                challenge = response.headers.get("www-authenticate")
                if response.status_code == 401 and challenge != _challenge(caller):
                    wrong.append(f"{method} {template} as {caller}: 401 with WWW-Authenticate {challenge!r}")
    assert checked == len(RULES[service]) * len(CALLERS)
    assert not wrong, "\n".join(wrong)


def _challenge(caller: str) -> str:
    """RFC 6750 §3.1: no error code when no token was sent; invalid_token when one was and failed."""
    return 'Bearer realm="scr"' if caller == "none" else 'Bearer realm="scr", error="invalid_token"'


def test_a_citizen_cannot_point_the_citizen_api_at_another_person(platform: Platform) -> None:
    other = bearer(platform.tokens.citizen(data.NHS_NUMBERS[1]))
    for path in ("/consent/me", "/consent/me/history", "/consent/me/access-log", "/consent/me/summary"):
        for name in ("nhs_number", "patient", "identifier"):
            response = platform.consent.get(path, params={name: data.NHS_NUMBERS[0]}, headers=other)
            assert response.status_code == 400, (path, name, response.text)
    # The access log a citizen sees is theirs alone: after a clinician reads person 0, person 1 sees nothing of it.
    clinician = bearer(platform.tokens.clinician(ods=data.ACUTE_ODS))
    assert platform.record.get(f"/fhir/Patient/{platform.scenario.person}/$everything",
                               headers=clinician).status_code == 200
    own = platform.consent.get("/consent/me/access-log", headers=bearer(platform.tokens.citizen(data.NHS_NUMBERS[0])))
    theirs = platform.consent.get("/consent/me/access-log", headers=other)
    assert own.status_code == theirs.status_code == 200
    assert own.json().get("entry") or own.json().get("entries") or own.json().get("items"), own.json()
    assert platform.scenario.person not in theirs.text and data.NHS_NUMBERS[0] not in theirs.text


def test_a_citizen_token_cannot_read_any_record_through_the_clinicians_api(platform: Platform) -> None:
    for number in (data.NHS_NUMBERS[0], data.NHS_NUMBERS[1]):  # their own record, and someone else's
        headers = bearer(platform.tokens.citizen(number))
        response = platform.record.get(f"/fhir/Patient/{platform.scenario.person}", headers=headers)
        assert response.status_code == 403 and response.json()["resourceType"] == "OperationOutcome"
        search = platform.record.get("/fhir/Patient", params={
            "identifier": f"https://fhir.nhs.uk/Id/nhs-number|{data.NHS_NUMBERS[0]}"}, headers=headers)
        assert search.status_code == 403
