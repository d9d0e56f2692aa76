"""Hostile and malformed input against every service: size limits answered 413 before anything is stored, deeply
nested JSON, huge strings, invalid UTF-8, and SQL and script injection in every search parameter. Never a 5xx, never
a crash, never a partial write."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from services.record_api.resource_types import searchable_types
from shared.search import SEARCH_PARAMS
from tests.fixtures.ingest import messages
from tests.security.conftest import Platform, bearer
from tests.support import data

pytestmark = pytest.mark.integration

SQL = ["' OR '1'='1", "1; DROP TABLE resource; --", "x' UNION SELECT body::text FROM resource --",
       "Smith'); DELETE FROM audit_event; --"]
SCRIPT = ["<script>alert(1)</script>", "\"><img src=x onerror=alert(document.cookie)>"]
ODD = ["\x00", "a" * 20_000, "|||", "Patient/../../etc/passwd", "ŻÓŁĆ\u202e\u200b"]
PAYLOADS = SQL + SCRIPT + ODD
COMMON_PARAMS = ("_id", "_lastUpdated", "_count", "_sort", "_include", "_revinclude", "_elements", "_summary",
                 "_total", "_cursor", "_format")
MB = 1024 * 1024
PATIENT_CRITERIA = {p.name for p in SEARCH_PARAMS["Patient"]} | {"_id"}


def _clinician(platform: Platform) -> dict[str, str]:
    return bearer(platform.tokens.clinician(ods=data.ACUTE_ODS))


def _feed(platform: Platform, ods: str = data.GP_ODS) -> dict[str, str]:
    return bearer(platform.tokens.feed(ods=ods))


def _fine(response: Any) -> bool:
    """A deliberate answer: below 500, and FHIR JSON (or an HL7 ACK), never an HTML or text stack trace."""
    kind = response.headers.get("content-type", "")
    return response.status_code < 500 and ("json" in kind or "hl7" in kind)


# ------------------------------------------------------------------------------------------------ injection

def _search_cases(platform: Platform) -> Iterator[tuple[str, dict[str, str]]]:
    person = platform.scenario.person
    for resource_type in searchable_types():
        names = [p.name for p in SEARCH_PARAMS[resource_type]] + list(COMMON_PARAMS)
        for name in names:
            for payload in PAYLOADS:
                params = {name: payload}
                if resource_type != "Patient" and name not in ("patient", "subject"):
                    params["patient"] = person  # clinical searches are per person; the payload rides alongside
                yield resource_type, params


def test_sql_and_script_injection_in_every_search_parameter_is_refused_or_harmless(platform: Platform) -> None:
    before = platform.footprint()
    headers = _clinician(platform)
    wrong, sent = [], 0
    for resource_type, params in _search_cases(platform):
        response = platform.record.get(f"/fhir/{resource_type}", params=params, headers=headers)
        sent += 1
        if not _fine(response):
            wrong.append(f"{resource_type}?{params}: {response.status_code} {response.text[:200]}")
            continue
        body = response.json()
        criterion = resource_type == "Patient" and next(iter(params)) in PATIENT_CRITERIA
        if criterion and response.status_code == 200 and any(
                e.get("resource", {}).get("resourceType") == "Patient" for e in body.get("entry", [])):
            wrong.append(f"Patient?{params} matched records")  # an injected condition must never match
    assert sent > 1000
    assert not wrong, "\n".join(wrong[:30])
    assert platform.footprint() == before  # every table still there, nothing written or removed


def test_injection_in_the_other_services_query_parameters_is_refused(platform: Platform) -> None:
    citizen = bearer(platform.tokens.citizen())
    admin = bearer(platform.tokens.feed(scope="system/IngestAdmin.*"))
    recorder = bearer(platform.tokens.clinician(ods=data.GP_ODS, role="S8000:G8000:R0260", scope="user/Consent.rs"))
    before = platform.footprint()
    for payload in PAYLOADS:
        answers = [
            platform.consent.get("/consent/me/history", params={"_count": payload}, headers=citizen),
            platform.consent.get("/consent/me/access-log", params={"before": payload}, headers=citizen),
            platform.consent.get("/fhir/Consent", params={"patient:identifier": payload}, headers=recorder),
            platform.consent.get("/fhir/Consent", params={
                "patient:identifier": f"https://fhir.nhs.uk/Id/nhs-number|{payload}"}, headers=recorder),
            platform.ingest.get("/ingest/raw", params={"status": payload}, headers=admin),
            platform.ingest.get("/ingest/reviews", params={"status": payload, "limit": payload}, headers=admin),
            platform.record.get(f"/fhir/Patient/{quote(payload, safe='')}", headers=_clinician(platform)),
            platform.record.get("/fhir/Patient", params={"identifier": f"https://fhir.nhs.uk/Id/nhs-number|{payload}"},
                                headers=_clinician(platform)),
        ]
        for response in answers:
            assert _fine(response), (payload, response.request.url, response.status_code, response.text[:300])
            assert response.status_code != 200 or "entry" not in response.json() or not response.json()["entry"] \
                or response.request.url.path.startswith("/ingest"), (payload, response.text[:300])
    assert platform.footprint() == before


def test_invalid_utf8_in_query_strings_and_paths_is_refused_without_a_5xx(platform: Platform) -> None:
    headers = _clinician(platform)
    for url in ("/fhir/Patient?family=%FF%FE%FD", "/fhir/Patient?name=Sm%C3%28th", f"/fhir/Condition?patient="
                f"{platform.scenario.person}&code=%80%81", "/fhir/Patient/%FF%FE", "/fhir/%C0%AF/x"):
        response = platform.record.get(url, headers=headers)
        assert _fine(response), (url, response.status_code, response.text[:200])
    response = platform.consent.get("/consent/me/history?_count=%FF", headers=bearer(platform.tokens.citizen()))
    assert _fine(response) and response.status_code == 400


# ------------------------------------------------------------------------------------------------ size limits

def test_bodies_over_the_limit_are_refused_with_413_before_anything_is_stored(platform: Platform) -> None:
    before = platform.footprint()
    big = b"{" + b" " * (10 * MB) + b"}"
    for path, ods in (("/ingest/fhir", data.GP_ODS), ("/ingest/community", data.COMMUNITY_ODS),
                      ("/ingest/socialcare", data.SOCIAL_CARE_ODS)):
        response = platform.ingest.post(path, content=big, headers=_feed(platform, ods))
        assert response.status_code == 413, (path, response.text[:200])
        assert response.json()["issue"][0]["code"] == "too-costly"

        def stream() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            for _ in range(11):
                yield b" " * MB

        streamed = platform.ingest.post(path, content=stream(), headers=_feed(platform, ods))
        assert streamed.status_code == 413, (path, "streamed", streamed.text[:200])
    hl7 = messages.adt("A01", control="BIG") + "NTE|1||" + "x" * MB + "\r"
    response = platform.ingest.post("/ingest/hl7v2", content=hl7.encode(), headers=_feed(platform, data.ACUTE_ODS))
    assert response.status_code == 413 and "MSA|AR" in response.text
    assert platform.footprint() == before


def test_too_many_bundle_entries_csv_rows_or_events_are_refused_with_413(platform: Platform) -> None:
    before = platform.footprint()
    patient = messages.patient(nhs=None, local_id="SIZE-1")
    bundle = messages.bundle([patient] + [messages.condition("195967001", "Asthma", ident=f"S{i}")
                                          for i in range(5000)], kind="batch")
    response = platform.ingest.post("/ingest/fhir", json=bundle, headers=_feed(platform))
    assert response.status_code == 413 and response.json()["issue"][0]["code"] == "too-costly", response.text[:300]
    header, row = messages.text("community_contacts.csv").splitlines()[:2]
    csv = "\n".join([header] + [row.replace("RY6-C-1001", f"RY6-C-{i}") for i in range(50_001)])
    response = platform.ingest.post("/ingest/community", content=csv.encode(),
                                    headers=_feed(platform, data.COMMUNITY_ODS))
    assert response.status_code == 413, response.text[:300]
    events = [messages.event("contact.recorded", {"contact": {"id": f"C{i}", "relationship": "son"}},
                             event_id=f"e{i}") for i in range(1001)]
    response = platform.ingest.post("/ingest/socialcare", json=events, headers=_feed(platform, data.SOCIAL_CARE_ODS))
    assert response.status_code == 413, response.text[:300]
    assert platform.footprint() == before


def test_consent_bodies_over_the_limit_are_refused_with_413(platform: Platform) -> None:
    before = platform.footprint()
    big = b'{"direct_care": "' + b"x" * (2 * MB) + b'"}'
    citizen = bearer(platform.tokens.citizen(data.NHS_NUMBERS[3]))
    recorder = bearer(platform.tokens.clinician(ods=data.GP_ODS, role="S8000:G8000:R0260", scope="user/Consent.cruds"))
    for method, path, headers in (("PUT", "/consent/me", citizen), ("POST", "/fhir/Consent", recorder),
                                  ("POST", "/consent/decide", bearer(platform.tokens.system()))):
        response = platform.consent.request(method, path, content=big, headers=headers |
                                            {"Content-Type": "application/json"})
        assert response.status_code == 413, (path, response.status_code, response.text[:200])
        assert response.json()["resourceType"] == "OperationOutcome"
    assert platform.footprint() == before


# ------------------------------------------------------------------------------------------------ malformed JSON

def _json_endpoints(platform: Platform) -> list[tuple[Any, str, str, dict[str, str]]]:
    recorder = bearer(platform.tokens.clinician(ods=data.GP_ODS, role="S8000:G8000:R0260", scope="user/Consent.cruds"))
    return [(platform.ingest, "POST", "/ingest/fhir", _feed(platform)),
            (platform.ingest, "POST", "/ingest/socialcare", _feed(platform, data.SOCIAL_CARE_ODS)),
            (platform.ingest, "POST", "/ingest/reviews/x", bearer(platform.tokens.feed(scope="system/IngestAdmin.*"))),
            (platform.consent, "PUT", "/consent/me", bearer(platform.tokens.citizen(data.NHS_NUMBERS[4]))),
            (platform.consent, "POST", "/fhir/Consent", recorder),
            (platform.consent, "POST", "/consent/decide", bearer(platform.tokens.system()))]


@pytest.mark.parametrize("body", [
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested-array"),
    pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deeply-nested-object"),
    pytest.param(b'{"resourceType": "Bundle", "type": "batch", "entry": [{"resource": {"resourceType": "Patient", '
                 b'"name": [{"family": "' + b"A" * (3 * MB) + b'"}]}}]}', id="huge-string"),
    pytest.param(b'{"direct_care": "\xff\xfe share"}', id="invalid-utf8"),
    pytest.param(b'{"direct_care": "\\ud800"}', id="lone-surrogate"),
    pytest.param(b'{"direct_care": "sh\\u0000are"}', id="nul-character"),
    pytest.param(b"\xef\xbb\xbf\x00\x00\x00", id="bom-and-nuls"),
    pytest.param(b'{"a": 1e999999, "b": -0, "c": NaN}', id="odd-numbers"),
    pytest.param(b'{"a": 1, "a": 2}', id="duplicate-keys"),
])
def test_malformed_json_is_refused_with_a_4xx_everywhere_and_writes_nothing(platform: Platform, body: bytes) -> None:
    before = platform.footprint()
    for client, method, path, headers in _json_endpoints(platform):
        response = client.request(method, path, content=body, headers=headers | {"Content-Type": "application/json"})
        answer = response.json()
        if answer.get("type") == "batch-response":  # a batch answers per entry: every entry must be refused
            assert response.status_code == 200 and all(e["response"]["status"].startswith("4")
                                                       for e in answer["entry"]), (path, response.text[:300])
            continue
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:300])
        assert answer["resourceType"] == "OperationOutcome", (path, response.text[:300])
    assert platform.footprint() == before


def test_the_citizen_page_reflects_nothing_and_forbids_inline_script(platform: Platform) -> None:
    for payload in SCRIPT:
        response = platform.consent.get("/", params={"q": payload, "next": payload})
        assert response.status_code == 200 and payload not in response.text
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        missing = platform.consent.get(f"/static/{payload}")
        assert missing.status_code == 404 and payload not in missing.text
    script = platform.consent.get("/static/app.js").text
    # The page writes what the API returns (names of organisations, break-glass reasons) as text, never as HTML.
    code = re.sub(r"//[^\n]*|/\*.*?\*/", "", script, flags=re.S)  # comments may name what the code avoids
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in code, sink
