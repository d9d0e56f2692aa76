"""The decision-service client fails closed on every kind of bad answer and re-reads a rotated token."""

import json
import os

import httpx
import pytest

from services.record_api.consent_client import DecisionUnavailable, HttpDecisionService, TokenFile, parse_decision
from services.record_api.schemas import Actor, DecideRequest, PatientRef

PERMIT = {"decision": "permit", "own_organisation_only": False, "withhold_labels": ["HIV"], "allowed_types": None,
          "obligations": ["redact-location"], "break_glass": False, "break_glass_available": False,
          "rule": "default-share", "consent": {"id": "c1", "version_id": 3, "provision": "p"},
          "reason": "No objection recorded.", "trace": ["ignored extra field"]}
REQUEST = DecideRequest(patient=PatientRef(nhs_number="9990000018", person_id="p1"),
                        actor=Actor(ods_code="RR8", role_code="R8000", user_id="u1"), purpose="TREAT",
                        labels=["HIV"], legitimate_relationship="care")


def test_a_well_formed_answer_parses() -> None:
    decision = parse_decision(json.dumps(PERMIT).encode())
    assert decision.permits and decision.withhold_labels == ["HIV"] and decision.consent.id == "c1"


@pytest.mark.parametrize("change", [
    {"decision": "allow"}, {"own_organisation_only": "false"}, {"withhold_labels": "HIV"}, {"reason": ""},
    {"obligations": ["redact-location", "notify-the-press"]}, {"allowed_types": "Patient"},
])
def test_anything_else_fails_closed(change) -> None:
    with pytest.raises(DecisionUnavailable):
        parse_decision(json.dumps(PERMIT | change).encode())
    for missing in ("decision", "withhold_labels", "break_glass"):
        with pytest.raises(DecisionUnavailable):
            parse_decision(json.dumps({k: v for k, v in PERMIT.items() if k != missing}).encode())
    with pytest.raises(DecisionUnavailable):
        parse_decision(b"<html>502 Bad Gateway</html>")


def _service(tmp_path, handler) -> HttpDecisionService:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    return HttpDecisionService("http://consent.test", str(token), transport=httpx.MockTransport(handler))


def test_requests_carry_the_token_and_the_contract_shape(tmp_path) -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PERMIT)

    service = _service(tmp_path, handler)
    assert service.decide(REQUEST).permits
    assert seen[0].url.path == "/consent/decide"
    assert seen[0].headers["authorization"] == "Bearer first-token"
    body = json.loads(seen[0].content)
    assert body["patient"] == {"nhs_number": "9990000018", "person_id": "p1"}
    assert body["actor"] == {"kind": "clinician", "ods_code": "RR8", "role_code": "R8000", "user_id": "u1"}
    assert body["break_glass_reason"] is None and body["legitimate_relationship"] == "care"


@pytest.mark.parametrize("handler", [
    lambda r: httpx.Response(500, json={"resourceType": "OperationOutcome"}),
    lambda r: httpx.Response(401),
    lambda r: httpx.Response(200, content=b"not json"),
])
def test_error_answers_fail_closed(tmp_path, handler) -> None:
    with pytest.raises(DecisionUnavailable):
        _service(tmp_path, handler).decide(REQUEST)


def test_an_unreachable_service_fails_closed(tmp_path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(DecisionUnavailable, match="unreachable"):
        _service(tmp_path, handler).decide(REQUEST)


def test_the_token_file_is_reread_when_it_changes(tmp_path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    tokens = TokenFile(str(path))
    assert tokens.read() == "one"
    path.write_text("two-rotated")
    os.utime(path, (1, 1))  # a different modification time, as a rotation gives
    assert tokens.read() == "two-rotated"
    path.unlink()
    with pytest.raises(DecisionUnavailable, match="missing"):
        tokens.read()
