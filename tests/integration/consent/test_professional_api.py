"""FHIR Consent recorded by professionals on a patient's behalf, against real PostgreSQL: dissent, consent,
objection reviews (safety overrides) and who may record each; reads and searches; all audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from services.consent import codes, store
from shared.local_time import LONDON
from shared.schema import AuditEventRow
from tests.integration.consent.conftest import (
    DOC,
    add_person,
    add_source_patient,
    bearer,
    decide_body,
    register_with_practice,
    version_count,
)
from tests.support import data
from tests.unit.consent.builders import denied_organisation_nested, professional_body, review_body

pytestmark = pytest.mark.integration
A = data.NHS_NUMBERS[0]
WRITE = "user/Consent.cruds"


def _gp(tokens, role="R0260", scope=WRITE, ods=data.GP_ODS):
    return bearer(tokens.clinician(ods=ods, role=f"S8000:G8000:{role}", scope=scope, sub="555000000077"))


def _record(client, tokens, body, role="R0260", scope=WRITE, ods=data.GP_ODS):
    return client.post("/fhir/Consent", json=body, headers=_gp(tokens, role, scope, ods))


def _decide(client, tokens, **kwargs):
    return client.post("/consent/decide", json=decide_body(A, **kwargs), headers=bearer(tokens.system())).json()


def test_a_gp_records_dissent_and_every_other_organisation_sees_only_its_own_items(client, tokens, db) -> None:
    add_person(db, "person-a", A)
    response = _record(client, tokens, professional_body("deny", code="416409005"))
    assert response.status_code == 201
    stored = response.json()
    assert response.headers["location"].endswith(f"/fhir/Consent/{stored['id']}/_history/1")
    assert stored["meta"]["versionId"] == "1"
    assert stored["patient"]["reference"] == "Patient/person-a"
    decision = _decide(client, tokens)
    assert (decision["rule"], decision["own_organisation_only"]) == ("objection", True)
    assert decision["consent"] == {"id": stored["id"], "version_id": 1, "provision": "Consent.provision"}
    audit = db.scalars(select(AuditEventRow).where(AuditEventRow.action == "consent-change")).one()
    assert (audit.actor_ods, audit.actor_role, audit.nhs_number, audit.person_id) == (data.GP_ODS, "R0260", A,
                                                                                      "person-a")
    me = client.get("/consent/me", headers=bearer(tokens.citizen(A))).json()
    assert me["direct_care"] == "object"  # the citizen sees the objection recorded for them


def test_absolute_urls_use_the_public_base_url_not_the_host_header(make_client, pg_url, tokens, db) -> None:
    public = "https://scr.example.nhs.uk/consent"
    client = make_client(pg_url, public_base_url=f"{public}/")
    add_person(db, "person-a", A)
    hostile = {"Host": "evil.example"}
    created = client.post("/fhir/Consent", json=professional_body("deny", code="416409005"),
                          headers=_gp(tokens) | hostile)
    assert created.status_code == 201
    assert created.headers["location"].startswith(f"{public}/fhir/Consent/")
    found = client.get(f"/fhir/Consent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{A}",
                       headers=_gp(tokens) | hostile)
    assert found.status_code == 200, found.text
    bundle = found.json()
    assert bundle["entry"] and all(e["fullUrl"].startswith(f"{public}/fhir/Consent/") for e in bundle["entry"])
    assert bundle["link"][0]["url"].startswith(f"{public}/fhir/Consent?") and "evil" not in found.text


@pytest.mark.parametrize(("role", "status"), [("R8000", 201), ("R8009", 201), ("R5105", 201), ("R8014", 403),
                                              ("R5100", 403)])
def test_who_may_record_dissent_on_a_patients_behalf(client, tokens, role, status) -> None:
    assert _record(client, tokens, professional_body(), role=role).status_code == status


def test_recording_needs_a_consent_write_scope(client, tokens, db) -> None:
    assert _record(client, tokens, professional_body(), scope="user/*.read").status_code == 403
    assert version_count(db, A) == 0


def test_a_safety_override_needs_a_gp_or_caldicott_guardian_and_an_objection_to_decline(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)
    no_objection = _record(client, tokens, review_body(codes.DECLINED))
    assert no_objection.status_code == 409
    _record(client, tokens, professional_body("deny"))
    nurse = _record(client, tokens, review_body(codes.DECLINED), role="R8001")
    assert nurse.status_code == 403 and "GP or a Caldicott Guardian" in nurse.json()["issue"][0]["diagnostics"]
    assert version_count(db, A) == 1
    declined = _record(client, tokens, review_body(codes.DECLINED), role="R5105")
    assert declined.status_code == 201
    decision = _decide(client, tokens)
    assert (decision["rule"], decision["own_organisation_only"]) == ("safety-override", False)
    research = _decide(client, tokens, purpose="HRESCH")
    assert research["rule"] == "objection-secondary-use"  # the override covers direct care only
    summary = client.get("/consent/me/summary", headers=bearer(tokens.citizen(A))).json()
    assert summary["direct_care"]["state"] == "declined"
    assert "for your safety" in summary["statements"][0]


def test_editing_other_choices_does_not_reopen_a_declined_objection_but_a_fresh_one_does(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)
    citizen = bearer(tokens.citizen(A))
    client.put("/consent/me", headers=citizen, json=DOC | {"direct_care": "object"})
    _record(client, tokens, review_body(codes.DECLINED))
    assert _decide(client, tokens)["rule"] == "safety-override"
    edited = client.put("/consent/me", headers=citizen | {"If-Match": 'W/"1"'},
                        json=DOC | {"direct_care": "object", "withheld_categories": ["SOC"]})
    assert edited.status_code == 200
    assert _decide(client, tokens)["rule"] == "safety-override"
    client.put("/consent/me", headers=citizen | {"If-Match": 'W/"2"'}, json=DOC)  # withdraws the objection
    assert _decide(client, tokens)["rule"] == "share"
    client.put("/consent/me", headers=citizen | {"If-Match": 'W/"3"'}, json=DOC | {"direct_care": "object"})
    assert _decide(client, tokens)["rule"] == "objection"  # a fresh objection waits for its own review


def test_a_citizen_can_withdraw_a_gp_recorded_objection(client, tokens) -> None:
    _record(client, tokens, professional_body("deny"))
    citizen = bearer(tokens.citizen(A))
    shown = client.get("/consent/me", headers=citizen)
    assert shown.json()["direct_care"] == "object"
    client.put("/consent/me", headers=citizen | {"If-Match": shown.headers["etag"]}, json=DOC)
    assert _decide(client, tokens)["rule"] == "share"
    history = client.get("/consent/me/history", headers=citizen).json()["entries"]
    assert [e["kind"] for e in history] == ["preferences", "dissent"]
    assert "Refused consent for upload" in history[1]["summary"]


def test_bad_resources_are_refused_precisely_and_nothing_is_stored(client, tokens, db) -> None:
    body = professional_body(nested=[{"type": "deny", "securityLabel": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "NOPE"}]}])
    response = _record(client, tokens, body)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Consent.provision.provision[0].securityLabel[0]"]
    assert _record(client, tokens, {"resourceType": "Consent", "status": 7}).status_code == 400
    assert version_count(db, A) == 0


def test_read_and_search_are_audited(client, tokens, db) -> None:
    stored = _record(client, tokens, professional_body()).json()
    reader = bearer(tokens.clinician(scope="user/Consent.rs"))
    read = client.get(f"/fhir/Consent/{stored['id']}", headers=reader)
    assert read.status_code == 200 and read.json()["id"] == stored["id"]
    assert read.headers["content-type"].startswith("application/fhir+json")
    assert client.get("/fhir/Consent/no-such-id", headers=reader).status_code == 404
    found = client.get(f"/fhir/Consent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{A}", headers=reader)
    assert found.status_code == 200
    bundle = found.json()
    assert bundle["type"] == "searchset" and [e["resource"]["id"] for e in bundle["entry"]] == [stored["id"]]
    other = client.get(f"/fhir/Consent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{data.NHS_NUMBERS[1]}",
                       headers=reader).json()
    assert other["total"] == 0
    for bad in ("?patient=123", f"?patient:identifier=urn:other|{A}", "",
                f"?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{data.INVALID_NHS_NUMBER}"):
        assert client.get(f"/fhir/Consent{bad}", headers=reader).status_code == 400, bad
    reads = db.scalars(select(AuditEventRow).where(AuditEventRow.action == "consent-read")).all()
    assert len(reads) == 3 and {r.actor_ods for r in reads} == {"RR8"}


def test_only_a_gp_at_the_registered_practice_or_a_caldicott_guardian_may_review(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)
    client.put("/consent/me", headers=bearer(tokens.citizen(A)),
               json=DOC | {"direct_care": "object", "denied_organisations": ["RH8"]})
    declined = review_body(codes.DECLINED)
    for ods, role in (("RH8", "R0260"), ("rh8", "R0260"), ("Y99999", "R0260"), ("RH8", "R5105")):
        refused = _record(client, tokens, declined, role=role, ods=ods)
        assert refused.status_code == 403, (ods, role)
    assert "registered practice" in _record(client, tokens, declined, ods="Y99999").json()["issue"][0]["diagnostics"]
    assert _decide(client, tokens)["rule"] == "objection"
    assert version_count(db, A) == 1
    assert _record(client, tokens, declined, role="R5105", ods="RR8").status_code == 201
    assert _decide(client, tokens)["rule"] == "safety-override"
    assert _record(client, tokens, review_body(codes.UPHELD), ods=data.GP_ODS.lower()).status_code == 201
    assert _decide(client, tokens)["rule"] == "objection"


def test_no_gp_may_review_when_the_registered_practice_is_unknown(client, tokens) -> None:
    _record(client, tokens, professional_body("deny"))
    refused = _record(client, tokens, review_body(codes.DECLINED))
    assert refused.status_code == 403
    assert "no registered practice is known" in refused.json()["issue"][0]["diagnostics"]


def test_a_denied_organisation_can_neither_record_nor_read_the_persons_consents(client, tokens, db) -> None:
    client.put("/consent/me", headers=bearer(tokens.citizen(A)),
               json=DOC | {"withheld_categories": ["PSY"], "denied_organisations": ["RH8"]})
    assert _record(client, tokens, professional_body("permit", code="425691002"), ods="RH8").status_code == 403
    consent_id = client.get("/consent/me/history", headers=bearer(tokens.citizen(A))).json()["entries"][0]["consent_id"]
    search = f"/fhir/Consent?patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{A}"
    for ods in ("RH8", "rh8"):
        denied = bearer(tokens.clinician(ods=ods, role="S0:G0:R8000", scope="user/Consent.rs"))
        assert client.get(search, headers=denied).status_code == 403
        assert client.get(f"/fhir/Consent/{consent_id}", headers=denied).status_code == 403
    other = bearer(tokens.clinician(ods="RR8", role="S0:G0:R8000", scope="user/Consent.rs"))
    assert client.get(search, headers=other).json()["total"] == 1
    reads = db.scalars(select(AuditEventRow).where(AuditEventRow.action == "consent-read")
                       .order_by(AuditEventRow.id)).all()
    # The token's code is normalised where it is read (shared.auth), so the audit names one organisation.
    assert [(r.actor_ods, r.outcome) for r in reads] == [("RH8", "denied")] * 4 + [("RR8", "success")]
    assert version_count(db, A) == 1


def test_a_date_only_dissent_recorded_after_the_citizens_share_today_is_the_newer(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)  # the consent after it ends an objection: see below
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC)
    dated_today = professional_body("deny", code="9Nd1.", system=codes.READ_V2)
    dated_today["dateTime"] = datetime.now(LONDON).date().isoformat()  # a date is a day in England
    assert _record(client, tokens, dated_today).status_code == 201
    assert _decide(client, tokens)["rule"] == "objection"
    then_consent = professional_body("permit", code="9Nd7.", system=codes.READ_V2)
    then_consent["dateTime"] = dated_today["dateTime"]
    assert _record(client, tokens, then_consent).status_code == 201
    assert _decide(client, tokens)["rule"] == "share"  # the later-recorded of two same-day records, every time


# ---------------------------------------------------------------- ending an objection needs standing


def _share_now() -> dict:
    """A share stated now (the builders' default date is a fixed day in the past, i.e. back-dated)."""
    return professional_body("permit", code=None, stated=datetime.now(UTC))


def _share_shapes() -> dict[str, dict]:
    now = datetime.now(UTC)
    future = professional_body("permit", code=None, stated=now)
    future["provision"]["period"] = {"start": (now + timedelta(days=1)).isoformat()}
    covering = professional_body("permit", code="425691002", stated=now)
    covering["provision"]["period"] = {"start": now.isoformat(), "end": (now + timedelta(days=365)).isoformat()}
    return {
        "consent code": professional_body("permit", code="425691002", stated=now),
        "consent code, type deny": professional_body("deny", code="9Nd7.", system=codes.READ_V2, stated=now),
        "permit with nested restrictions": professional_body("permit", code=None, stated=now,
                                                             nested=[denied_organisation_nested("RH8")]),
        "dated next year": professional_body("permit", code=None, stated=now + timedelta(days=365)),
        "starting tomorrow": future,
        "period covering now": covering,
    }


@pytest.mark.parametrize("shape", list(_share_shapes()))
def test_a_clinician_elsewhere_cannot_lift_the_citizens_objection_whatever_the_shape(client, tokens, db,
                                                                                   shape) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"direct_care": "object"})
    refused = _record(client, tokens, _share_shapes()[shape], role="R8000", ods="RR8")
    assert refused.status_code == 403, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "forbidden"
    assert "registered GP practice or a Caldicott Guardian" in outcome["issue"][0]["diagnostics"]
    assert version_count(db, A) == 1
    assert _decide(client, tokens)["rule"] == "objection"
    audit = db.scalars(select(AuditEventRow).where(AuditEventRow.action == "consent-change",
                                                   AuditEventRow.outcome == "denied")).one()
    assert (audit.actor_ods, audit.actor_role, audit.nhs_number, audit.person_id) == ("RR8", "R8000", A, "person-a")
    log = client.get("/consent/me/access-log", headers=bearer(tokens.citizen(A))).json()["entries"]
    assert (log[0]["action"], log[0]["outcome"]) == ("consent-change", "denied")
    assert not [what for what in log[0]["what"] if what.startswith("Consent/")]  # nothing was recorded


def test_a_gp_dissent_is_the_persons_objection_too_and_a_share_dated_before_it_changes_nothing(client, tokens,
                                                                                            db) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)
    assert _record(client, tokens, professional_body("deny", stated=datetime.now(UTC)), role="R8000",
                   ods="RR8").status_code == 201  # recording an objection stays open
    assert _record(client, tokens, _share_now(), role="R8000",
                   ods="RR8").status_code == 403  # even by the organisation that recorded it
    old = professional_body("permit", code="425691002", stated=datetime(2015, 3, 1, tzinfo=UTC))
    assert _record(client, tokens, old, role="R8000", ods="RR8").status_code == 201  # a 2015 form, back-entered
    assert _decide(client, tokens)["rule"] == "objection"


@pytest.mark.parametrize(("role", "ods"), [("R8009", data.GP_ODS), ("R0260", data.GP_ODS.lower()),
                                           ("R5105", "RR8")])
def test_the_registered_practice_or_a_caldicott_guardian_may_record_the_withdrawal(client, tokens, db, role,
                                                                                  ods) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"direct_care": "object"})
    withdrawal = professional_body("permit", code="425691002", stated=datetime.now(UTC))
    assert _record(client, tokens, withdrawal, role=role, ods=ods).status_code == 201
    assert _decide(client, tokens)["rule"] == "share"


def test_no_one_but_a_caldicott_guardian_may_record_a_withdrawal_when_no_practice_is_known(client, tokens) -> None:
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"direct_care": "object"})
    assert _record(client, tokens, _share_now()).status_code == 403
    assert _record(client, tokens, _share_now(), role="R5105").status_code == 201


def test_a_share_is_open_to_any_recorder_when_there_is_no_objection_to_end(client, tokens, db) -> None:
    assert _record(client, tokens, _share_now(), role="R8000", ods="RR8").status_code == 201
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC)
    assert _record(client, tokens, _share_now(), role="R8000", ods="RR8").status_code == 201


def test_a_share_between_an_objection_and_its_review_needs_standing(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"direct_care": "object"})
    assert _record(client, tokens, review_body(codes.DECLINED)).status_code == 201
    assert _decide(client, tokens, purpose="HRESCH")["rule"] == "objection-secondary-use"
    # The declined objection still keeps the person out of research: a share may not end it either.
    assert _record(client, tokens, _share_now(), role="R8000", ods="RR8").status_code == 403


# ------------------------------------------ the registered practice is the newest one a practice's own record names


def _older_then_newer_practice_record(db, *, older_practice: str, newer_practice: str | None, **newer) -> None:
    """Each practice's own record naming it (or the newer naming no practice: sent by Y11111)."""
    add_person(db, "person-a", A)
    add_source_patient(db, "person-a", "gp-0", older_practice, source_org=older_practice,
                       updated=datetime(2019, 4, 1, tzinfo=UTC))
    add_source_patient(db, "person-a", "gp-1", newer_practice, source_org=newer_practice or "Y11111",
                       updated=datetime(2025, 9, 1, tzinfo=UTC), **newer)


def _objection_and_review(client, tokens, ods: str) -> int:
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"direct_care": "object"})
    return _record(client, tokens, review_body(codes.DECLINED), ods=ods).status_code


def test_a_practice_the_person_has_left_may_not_review_or_lift_their_objection(client, tokens, db) -> None:
    _older_then_newer_practice_record(db, older_practice="A81001", newer_practice=data.GP_ODS)
    assert _objection_and_review(client, tokens, "A81001") == 403
    assert _record(client, tokens, _share_now(), ods="A81001").status_code == 403
    assert _record(client, tokens, review_body(codes.DECLINED), ods=data.GP_ODS).status_code == 201


def test_a_newer_record_naming_no_practice_leaves_the_last_one_named(client, tokens, db) -> None:
    _older_then_newer_practice_record(db, older_practice=data.GP_ODS, newer_practice=None)
    assert _objection_and_review(client, tokens, data.GP_ODS) == 201


def test_an_inactive_record_names_no_practice(client, tokens, db) -> None:
    _older_then_newer_practice_record(db, older_practice=data.GP_ODS, newer_practice="A81001", active=False)
    assert _objection_and_review(client, tokens, data.GP_ODS) == 201


def test_a_newest_practice_that_cannot_be_identified_is_not_replaced_by_an_older_one(client, tokens, db) -> None:
    _older_then_newer_practice_record(db, older_practice=data.GP_ODS, newer_practice=None,
                                    gp={"reference": "Organization/not-stored"})
    client.put("/consent/me", headers=bearer(tokens.citizen(A)), json=DOC | {"direct_care": "object"})
    refused = _record(client, tokens, review_body(codes.DECLINED), ods=data.GP_ODS)
    assert refused.status_code == 403
    assert "no registered practice is known" in refused.json()["issue"][0]["diagnostics"]


def test_a_hospital_naming_itself_as_the_practice_may_not_review_or_lift_an_objection(client, tokens, db) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)
    add_source_patient(db, "person-a", "pas-1", "RR8", source_org="RR8", updated=datetime.now(UTC))
    assert _objection_and_review(client, tokens, "RR8") == 403
    assert _record(client, tokens, _share_now(), ods="RR8").status_code == 403
    assert _record(client, tokens, review_body(codes.DECLINED), ods=data.GP_ODS).status_code == 201


def test_only_a_practices_own_record_vouched_for_by_its_feed_token_registers_the_person(db) -> None:
    register_with_practice(db, "person-a", A, data.GP_ODS)
    now = datetime.now(UTC)
    add_source_patient(db, "person-a", "pas-1", "A81001", source_org="RR8", updated=now)  # the hospital's claim
    add_source_patient(db, "person-a", "mllp-1", "B86001", source_org="B86001", updated=now, vouched=False)
    assert store.registered_practices(db, A) == {data.GP_ODS}


def test_a_record_dated_ahead_of_when_it_was_stored_is_not_newest_for_ever(db) -> None:
    add_person(db, "person-a", A)
    add_source_patient(db, "person-a", "gp-1", data.GP_ODS, source_org=data.GP_ODS,
                       updated=datetime(2099, 1, 1, tzinfo=UTC))
    # Sent after the first was stored, by the practice the person moved to.
    add_source_patient(db, "person-a", "gp-2", "A81001", source_org="A81001", updated=datetime.now(UTC))
    assert store.registered_practices(db, A) == {"A81001"}


# ---------------------------------------------------------------- ODS codes are normalised as a citizen's are


def test_organisation_codes_in_nested_provisions_are_saved_in_capitals(client, tokens, db) -> None:
    body = professional_body("deny", nested=[denied_organisation_nested(" rh8 ")])
    stored = _record(client, tokens, body)
    assert stored.status_code == 201, stored.text
    assert stored.json()["provision"]["provision"][0]["actor"][0]["reference"]["identifier"]["value"] == "RH8"
    assert _decide(client, tokens, ods="RH8")["rule"] == "denied-organisation"
    assert _record(client, tokens, professional_body("deny", nested=[denied_organisation_nested("r-8")])
                   ).status_code == 422
