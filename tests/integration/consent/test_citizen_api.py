"""The citizen's endpoints against real PostgreSQL: preferences with ETag/If-Match, precise refusals that leave
the stored preferences unchanged, history, access log, summary, and isolation between citizens."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from shared.audit import AuditRecord, verify_chain, write_audit
from shared.auth import Principal
from shared.schema import AuditEventRow
from tests.integration.consent.conftest import DOC, add_person, bearer, decide_body, version_count
from tests.support import data

pytestmark = pytest.mark.integration
A, B = data.NHS_NUMBERS[0], data.NHS_NUMBERS[1]
OBJECT = DOC | {"direct_care": "object", "withheld_categories": ["PSY"], "denied_organisations": ["RH8"],
                "national_data_opt_out": True}


def _put(client, tokens, document, etag=None, nhs=A, **token_claims):
    headers = bearer(tokens.citizen(nhs, **token_claims))
    if etag is not None:
        headers["If-Match"] = etag
    return client.put("/consent/me", json=document, headers=headers)


def _get(client, tokens, nhs=A, path="/consent/me"):
    return client.get(path, headers=bearer(tokens.citizen(nhs)))


def test_nothing_recorded_reads_as_the_defaults_at_version_zero(client, tokens) -> None:
    response = _get(client, tokens)
    assert response.status_code == 200
    assert response.json() == DOC
    assert response.headers["etag"] == 'W/"0"'
    assert response.headers["cache-control"] == "no-store"


def test_create_then_update_with_if_match(client, tokens, db) -> None:
    created = _put(client, tokens, OBJECT)
    assert created.status_code == 201 and created.headers["etag"] == 'W/"1"'
    assert created.json() == OBJECT
    assert _get(client, tokens).json() == OBJECT
    updated = _put(client, tokens, OBJECT | {"direct_care": "share"}, 'W/"1"')
    assert updated.status_code == 200 and updated.headers["etag"] == 'W/"2"'
    assert _get(client, tokens).json()["direct_care"] == "share"
    assert version_count(db, A) == 2


def test_saving_the_same_choices_again_makes_no_new_version(client, tokens, db) -> None:
    _put(client, tokens, OBJECT)
    again = _put(client, tokens, OBJECT, 'W/"1"')
    assert again.status_code == 200 and again.headers["etag"] == 'W/"1"'
    assert version_count(db, A) == 1


def test_update_without_if_match_is_428_and_stale_if_match_is_412_and_nothing_changes(client, tokens, db) -> None:
    _put(client, tokens, OBJECT)
    missing = _put(client, tokens, DOC)
    assert missing.status_code == 428
    assert missing.json()["issue"][0]["expression"] == ["If-Match"]
    _put(client, tokens, OBJECT | {"national_data_opt_out": False}, 'W/"1"')  # another device saves: version 2
    stale = _put(client, tokens, DOC, 'W/"1"')
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert _get(client, tokens).json() == OBJECT | {"national_data_opt_out": False}
    assert version_count(db, A) == 2


def test_creating_over_a_record_someone_else_just_created_is_412(client, tokens) -> None:
    _put(client, tokens, OBJECT)
    second_device = _put(client, tokens, DOC, 'W/"0"')  # it read "nothing recorded" before the first save
    assert second_device.status_code == 412
    assert _get(client, tokens).json() == OBJECT


@pytest.mark.parametrize(("document", "status", "expression"), [
    (DOC | {"withheld_categories": ["XYZ"]}, 422, "withheld_categories[0]"),
    (DOC | {"denied_organisations": ["r-8"]}, 422, "denied_organisations[0]"),
    (DOC | {"denied_organisations": ["RH8", "rh8"]}, 422, "denied_organisations[1]"),
    (DOC | {"denied_organisations": ["RH8", "RH8"]}, 422, "denied_organisations[1]"),
    (DOC | {"direct_care": "sometimes"}, 422, "direct_care"),
    (DOC | {"nhs_number": B}, 400, "nhs_number"),
    ({"direct_care": "share"}, 400, "withheld_categories"),
    (DOC | {"national_data_opt_out": "no"}, 400, "national_data_opt_out"),
])
def test_bad_input_gets_a_precise_outcome_and_leaves_the_preferences_unchanged(client, tokens, db, document,
                                                                               status, expression) -> None:
    _put(client, tokens, OBJECT)
    response = _put(client, tokens, document, 'W/"1"')
    assert response.status_code == status
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert expression in [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    assert _get(client, tokens).json() == OBJECT
    assert version_count(db, A) == 1


def test_a_body_that_is_not_json_is_400(client, tokens) -> None:
    response = client.put("/consent/me", content=b"{not json", headers=bearer(tokens.citizen(A)) | {
        "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_changing_choices_needs_p9_but_reading_them_does_not(client, tokens, db) -> None:
    refused = _put(client, tokens, OBJECT, level="P5")
    assert refused.status_code == 403 and "P9" in refused.json()["issue"][0]["diagnostics"]
    assert version_count(db, A) == 0
    assert client.get("/consent/me", headers=bearer(tokens.citizen(A, level="P5"))).status_code == 200
    below = client.get("/consent/me/summary", headers=bearer(tokens.citizen(A, level="P5"))).json()["changes"]
    assert below["allowed"] is False and "P9" in below["reason"]
    assert _get(client, tokens, path="/consent/me/summary").json()["changes"] == {"allowed": True, "reason": None}


def test_organisation_codes_are_saved_in_capitals_however_they_are_typed(client, tokens) -> None:
    saved = _put(client, tokens, DOC | {"denied_organisations": ["rh8", " y12345 "]})
    assert saved.status_code == 201
    assert saved.json()["denied_organisations"] == ["RH8", "Y12345"]


def test_an_nhs_number_claim_with_spaces_reaches_the_same_choices_as_decisions(client, tokens, db) -> None:
    spaced = f"{A[:3]} {A[3:6]} {A[6:]}"
    assert _put(client, tokens, DOC | {"direct_care": "object"}, nhs=spaced).status_code == 201
    assert _get(client, tokens).json()["direct_care"] == "object"
    assert _get(client, tokens, nhs=spaced).json()["direct_care"] == "object"
    assert version_count(db, A) == 1
    decision = client.post("/consent/decide", json=decide_body(A), headers=bearer(tokens.system())).json()
    assert (decision["rule"], decision["own_organisation_only"]) == ("objection", True)


@pytest.mark.parametrize("path", ["/consent/me", "/consent/me/history", "/consent/me/access-log",
                                  "/consent/me/summary"])
def test_only_citizen_tokens_with_a_valid_nhs_number_are_served(client, tokens, path) -> None:
    assert client.get(path, headers=bearer(tokens.clinician())).status_code == 403
    assert client.get(path, headers=bearer(tokens.system())).status_code == 403
    bad = client.get(path, headers=bearer(tokens.citizen(data.INVALID_NHS_NUMBER)))
    assert bad.status_code == 403


def test_a_citizen_can_never_read_or_change_anyone_elses_choices_or_access_log(client, tokens, db) -> None:
    _put(client, tokens, OBJECT, nhs=A)
    with db.begin():
        write_audit(db, AuditRecord("record_api", "read", "success", _clinician(), nhs_number=A,
                                    entities=["Condition/1"], purpose="TREAT"))
    for path in ("/consent/me", "/consent/me/history", "/consent/me/access-log", "/consent/me/summary"):
        for query in (f"?nhs_number={A}", f"?patient={A}", f"?identifier={A}"):
            response = client.get(path + query, headers=bearer(tokens.citizen(B)))
            assert response.status_code == 400, (path, query)
            assert "sign-in" in response.json()["issue"][0]["diagnostics"]
    assert _get(client, tokens, B).json() == DOC
    assert _get(client, tokens, B, "/consent/me/history").json()["entries"] == []
    assert _get(client, tokens, B, "/consent/me/access-log").json()["entries"] == []
    refused = _put(client, tokens, OBJECT | {"nhs_number": A}, nhs=B)
    assert refused.status_code == 400
    # B's own write lands on B, whatever A has.
    assert _put(client, tokens, DOC | {"withheld_categories": ["SOC"]}, nhs=B).status_code == 201
    assert _get(client, tokens, A).json() == OBJECT
    assert version_count(db, A) == 1


def test_history_newest_first_with_who_recorded_each_version(client, tokens) -> None:
    _put(client, tokens, OBJECT)
    _put(client, tokens, OBJECT | {"direct_care": "share"}, 'W/"1"')
    entries = _get(client, tokens, path="/consent/me/history").json()["entries"]
    assert [e["version"] for e in entries] == [2, 1]
    assert [e["preferences"]["direct_care"] for e in entries] == ["share", "object"]
    assert entries[0]["recorded_by"]["kind"] == "citizen" and entries[0]["recorded_at"].endswith("+00:00")
    page = _get(client, tokens, path="/consent/me/history?_count=1&page=2").json()
    assert [e["version"] for e in page["entries"]] == [1] and page["next_page"] is None
    assert _get(client, tokens, path="/consent/me/history?_count=0").status_code == 400


def _clinician(ods: str = "RR8", role: str = "R8000", sub: str = "555000000001") -> Principal:
    return Principal("clinician", sub, ods_code=ods, role=role)


def test_access_log_shows_who_looked_at_what_and_every_break_glass_newest_first(client, tokens, db) -> None:
    add_person(db, "person-a", A)
    with db.begin():
        write_audit(db, AuditRecord("record_api", "read", "success", _clinician(), person_id="person-a",
                                    nhs_number=A, entities=["Condition/c1"], purpose="TREAT"))
        write_audit(db, AuditRecord("record_api", "everything", "success", _clinician("RH8", "R8001", "nurse-1"),
                                    person_id="person-a", nhs_number=A, purpose="ETREAT",
                                    break_glass_reason="Collapsed in A&E", withheld_count=2))
        write_audit(db, AuditRecord("record_api", "read", "denied", _clinician("A1B2C", "R8014"),
                                    person_id="person-a", nhs_number=A, purpose="TREAT"))
        write_audit(db, AuditRecord("record_api", "read", "success", _clinician(), nhs_number=B,
                                    entities=["Condition/other"], purpose="TREAT"))
    log = _get(client, tokens, path="/consent/me/access-log").json()
    entries = log["entries"]
    assert [e["who"]["organisation"] for e in entries] == ["A1B2C", "RH8", "RR8"]
    assert [e["outcome"] for e in entries] == ["denied", "success", "success"]
    glass = entries[1]
    assert glass["break_glass"] is True and glass["break_glass_reason"] == "Collapsed in A&E"
    assert glass["who"] == {"kind": "clinician", "organisation": "RH8", "role": "R8001", "role_name": "Nurse",
                            "user": "nurse-1"}
    assert glass["purpose"] == "ETREAT" and "2 item(s) withheld" in glass["withheld"][0]
    assert entries[2]["what"] == ["Patient/person-a", "Condition/c1"]
    assert all("Condition/other" not in e["what"] for e in entries)
    first = _get(client, tokens, path="/consent/me/access-log?_count=2").json()
    assert len(first["entries"]) == 2 and first["next_before"] == entries[1]["id"]
    rest = _get(client, tokens, path=f"/consent/me/access-log?_count=2&before={first['next_before']}").json()
    assert [e["id"] for e in rest["entries"]] == [entries[2]["id"]] and rest["next_before"] is None


def test_every_change_is_audited_in_the_persons_hash_chain(client, tokens, db) -> None:
    add_person(db, "person-a", A)
    _put(client, tokens, OBJECT)
    _put(client, tokens, DOC, 'W/"1"')
    rows = list(db.scalars(select(AuditEventRow).where(AuditEventRow.nhs_number == A).order_by(AuditEventRow.id)))
    assert [(r.action, r.actor_kind, r.person_id) for r in rows] == [("consent-change", "citizen", "person-a")] * 2
    assert verify_chain(rows)
    log = _get(client, tokens, path="/consent/me/access-log").json()["entries"]
    assert log[0]["who"]["kind"] == "citizen" and log[0]["action_name"] == "changed sharing choices"


def test_summary_says_in_plain_english_what_is_shared(client, tokens) -> None:
    before = _get(client, tokens, path="/consent/me/summary").json()
    assert before["direct_care"]["state"] == "share"
    assert "can see your shared care record" in before["statements"][0]
    assert {c["code"] for c in before["categories"] if c["always_withheld"]} == {"HIV", "STD", "SEX", "TBOO"}
    _put(client, tokens, OBJECT)
    after = _get(client, tokens, path="/consent/me/summary").json()
    assert after["direct_care"]["state"] == "objection"
    text = " ".join(after["statements"])
    assert "You have objected to sharing" in text and "RH8" in text and "not used for research" in text


def test_two_devices_saving_at_once_cannot_both_win(client, tokens, db) -> None:
    _put(client, tokens, OBJECT)
    results: list[int] = []
    barrier = threading.Barrier(4)

    def save(n: int) -> None:
        barrier.wait()
        results.append(_put(client, tokens, DOC | {"withheld_categories": [["PSY", "SOC", "ETH", "SDV"][n]]},
                            'W/"1"').status_code)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [200, 412, 412, 412]
    assert version_count(db, A) == 2


def test_two_devices_making_the_first_save_at_once_cannot_both_win(client, tokens, db) -> None:
    results: list[int] = []
    barrier = threading.Barrier(4)

    def save(n: int) -> None:
        barrier.wait()
        results.append(_put(client, tokens, DOC | {"withheld_categories": [["PSY", "SOC", "ETH", "SDV"][n]]},
                            'W/"0"').status_code)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [201, 412, 412, 412]
    assert version_count(db, A) == 1
