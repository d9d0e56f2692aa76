"""POST /consent/decide over HTTP against real PostgreSQL: who may call it, precise 400s, decisions that follow
the citizen's latest choice at once, and the decision metrics."""

from __future__ import annotations

import pytest

from tests.integration.consent.conftest import DOC, bearer, decide_body
from tests.support import data

pytestmark = pytest.mark.integration
A = data.NHS_NUMBERS[0]


def _decide(client, tokens, body, token=None):
    return client.post("/consent/decide", json=body, headers=bearer(token or tokens.system()))


@pytest.mark.parametrize("scope", ["system/Consent.rs", "system/*.read", "system/Consent.read"])
def test_system_tokens_that_may_read_consent_are_answered(client, tokens, scope) -> None:
    response = _decide(client, tokens, decide_body(A), tokens.system(scope=scope))
    assert response.status_code == 200
    assert response.json()["rule"] == "default-share"


@pytest.mark.parametrize("caller", ["feed", "clinician", "citizen", "system-write-only"])
def test_other_callers_are_refused(client, tokens, caller) -> None:
    token = {"feed": tokens.feed(), "clinician": tokens.clinician(scope="user/*.read"), "citizen": tokens.citizen(),
             "system-write-only": tokens.system(scope="system/Consent.cud")}[caller]
    response = _decide(client, tokens, decide_body(A), token)
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"


@pytest.mark.parametrize(("change", "expression"), [
    ({"purpose": "MARKETING"}, "body.purpose"),
    ({"patient": {"nhs_number": data.INVALID_NHS_NUMBER}}, "patient.nhs_number"),
    ({"patient": {}}, "patient"),
    ({"labels": ["HIV", "ZZZ"]}, "labels[1]"),
    ({"break_glass_reason": "just curious"}, "break_glass_reason"),
    ({"legitimate_relationship": "friend"}, "body.legitimate_relationship"),
    ({"actor": {"kind": "clinician", "role_code": "R8000"}}, "actor.ods_code"),
    ({"actor": None}, "body.actor"),
])
def test_malformed_requests_are_400_naming_the_field(client, tokens, change, expression) -> None:
    response = _decide(client, tokens, decide_body(A) | change)
    assert response.status_code == 400, response.text
    expressions = [e for issue in response.json()["issue"] for e in issue.get("expression", [])]
    assert expression in expressions


def test_a_decision_follows_the_citizens_latest_choice_at_once(client, tokens) -> None:
    citizen = bearer(tokens.citizen(A))
    labels = ["HIV", "PSY", "R"]
    first = _decide(client, tokens, decide_body(A, labels=labels)).json()
    assert (first["decision"], first["own_organisation_only"], first["withhold_labels"]) == ("permit", False, ["HIV"])
    assert first["obligations"] == ["redact-location"]
    client.put("/consent/me", headers=citizen, json=DOC | {"direct_care": "object", "withheld_categories": ["PSY"]})
    cached_then_changed = _decide(client, tokens, decide_body(A, labels=labels)).json()
    assert cached_then_changed["rule"] == "objection" and cached_then_changed["own_organisation_only"] is True
    assert cached_then_changed["withhold_labels"] == ["HIV", "PSY"]
    assert cached_then_changed["consent"]["version_id"] == 1
    assert cached_then_changed["break_glass_available"] is True
    glass = _decide(client, tokens, decide_body(A, purpose="ETREAT", relationship="none",
                                                reason="Unconscious, no history available")).json()
    assert (glass["decision"], glass["rule"], glass["break_glass"]) == ("permit", "break-glass", True)
    client.put("/consent/me", headers=citizen | {"If-Match": 'W/"1"'}, json=DOC)
    assert _decide(client, tokens, decide_body(A)).json()["rule"] == "share"


def test_the_policy_switch_turns_off_break_glass_over_an_objection(make_client, pg_url, tokens) -> None:
    client = make_client(pg_url, break_glass_overrides_objection=False)
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"direct_care": "object"})
    glass = _decide(client, tokens, decide_body(A, purpose="ETREAT", reason="Collapsed")).json()
    assert (glass["rule"], glass["own_organisation_only"], glass["break_glass"]) == ("objection", True, False)


def test_decisions_are_counted_and_timed(client, tokens) -> None:
    def count() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith('scr_consent_decisions_total{decision="deny",rule="no-legitimate-relationship"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    _decide(client, tokens, decide_body(A, relationship="none"))
    _decide(client, tokens, decide_body(A, relationship="none"))
    assert count() == before + 2
    assert "scr_consent_decision_seconds_bucket" in client.get("/metrics").text


def test_a_person_without_an_nhs_number_gets_the_defaults(client, tokens) -> None:
    body = decide_body(A)
    body["patient"] = {"nhs_number": None, "person_id": "p-without-number"}
    assert _decide(client, tokens, body).json()["rule"] == "default-share"


@pytest.mark.parametrize("asking", ["rh8", " RH8", "RH8 ", "Rh8"])
@pytest.mark.parametrize("purpose", ["TREAT", "ETREAT", "HRESCH"])
def test_a_denied_organisation_is_denied_however_the_caller_writes_its_code(client, tokens, asking, purpose) -> None:
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"denied_organisations": ["RH8"]})
    glass = purpose == "ETREAT"
    body = decide_body(A, ods=asking, purpose=purpose, relationship="none" if glass else "registered",
                       reason="Unconscious in the emergency department" if glass else None)
    decision = _decide(client, tokens, body).json()
    assert (decision["decision"], decision["rule"]) == ("deny", "denied-organisation")


def test_a_blank_organisation_code_is_no_organisation(client, tokens) -> None:
    response = _decide(client, tokens, decide_body(A, ods="   "))
    assert response.status_code == 400
    assert "actor.ods_code" in response.json()["issue"][0]["expression"]
