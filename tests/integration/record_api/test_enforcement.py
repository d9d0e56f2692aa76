"""The one enforcement point: every /fhir route is filtered or denied and audited, consent decisions are
applied as docs/CONTRACTS.md §3 says, and the decision service failing means no data (fail closed)."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select, update

from services.record_api.app import create_app
from services.record_api.enforcement import guard
from shared.db import transaction
from shared.schema import RawMessage, ResourceVersion
from tests.integration.record_api.helpers import audit_rows, ids, resources, says_items_withheld, source_orgs
from tests.support import data
from tests.support.record_store import Scenario

pytestmark = pytest.mark.integration


def _fhir_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every /fhir route the app serves, from its OpenAPI description."""
    return [(method.upper(), path) for path, operations in app.openapi()["paths"].items()
            if path.startswith("/fhir") for method in operations]


def _walk(routes):
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts:
            yield from (c.route if hasattr(c, "route") else c for c in contexts())
        elif hasattr(route, "routes"):
            yield from _walk(route.routes)


def _concrete(path: str, s: Scenario) -> str:
    """A request for each route template that touches the objecting patient's GP-recorded data."""
    fillers = {
        # Includes too: what they add passes the same filter (the GP's Encounter and Provenance stay hidden).
        "/fhir/{resource_type}": f"/fhir/Observation?patient={s.person}&_include=Observation:encounter"
                                 f"&_revinclude=Provenance:target",
        "/fhir/{resource_type}/_history": f"/fhir/Condition/_history?patient={s.person}",
        "/fhir/{resource_type}/{id}": f"/fhir/Condition/{s.ids['asthma']}",
        "/fhir/{resource_type}/{id}/_history": f"/fhir/Condition/{s.ids['asthma']}/_history",
        "/fhir/{resource_type}/{id}/_history/{version}": f"/fhir/Condition/{s.ids['asthma']}/_history/1",
        "/fhir/Patient/{id}/$everything": f"/fhir/Patient/{s.person}/$everything",
        "/fhir/AuditEvent": f"/fhir/AuditEvent?patient={s.person}",
        # Population health (bulk export): system clients only; tests/integration/population covers them.
        "/fhir/$export": "/fhir/$export",
        "/fhir/Patient/$export": "/fhir/Patient/$export",
        "/fhir/Group/{group_id}/$export": f"/fhir/Group/practice-{data.GP_ODS}/$export",
        "/fhir/$export-status/{job_id}": "/fhir/$export-status/some-job",
        "/fhir/$export-file/{job_id}/{file_name}": "/fhir/$export-file/some-job/Patient-1.ndjson",
    }
    assert path in fillers, f"new route {path}: add it here so the suite proves it is enforced"
    return fillers[path]


def test_every_fhir_route_but_metadata_takes_the_enforcement_dependency(api) -> None:
    enforced = {}
    for route in _walk(api.app.routes):
        if route.path.startswith("/fhir"):
            marks = [getattr(d.call, "__scr_enforced__", None) for d in route.dependant.dependencies]
            enforced[route.path] = any(marks)
    assert enforced.pop("/fhir/metadata") is False
    assert enforced and all(enforced.values()), enforced
    assert guard("read").__scr_enforced__ == "read"


def test_every_route_filters_or_denies_an_objecting_patients_data_and_audits_it(api, scenario, callers, pdp,
                                                                                 record_store) -> None:
    pdp.objections.add(scenario.nhs_number)  # the acute trust may now see only what it recorded itself
    routes = _fhir_routes(api.app)
    assert len(routes) >= 7
    for method, template in routes:
        if template == "/fhir/metadata":
            continue
        url = _concrete(template, scenario)
        before = len(audit_rows(record_store))
        headers = callers.privacy_officer() if template == "/fhir/AuditEvent" else callers.acute()
        response = api.request(method, url, headers=headers)
        assert response.status_code in (200, 403), (template, response.text)
        rows = audit_rows(record_store)[before:]
        assert rows, f"{template} wrote no audit row"
        if "$export" in template:  # a clinician may not export: refused and audited, naming nobody
            assert response.status_code == 403 and (rows[-1].action, rows[-1].outcome) == ("export", "denied")
            continue
        if template == "/fhir/AuditEvent":
            assert response.status_code == 200 and rows[-1].action == "audit-search"
            continue
        assert all(r.person_id == scenario.person and r.nhs_number == scenario.nhs_number for r in rows), template
        if response.status_code == 403:
            assert response.json()["resourceType"] == "OperationOutcome"
            assert rows[-1].outcome == "denied"
            continue
        for resource in resources(response.json()):
            assert source_orgs(resource) <= {data.ACUTE_ODS}, (template, resource["resourceType"])
        assert says_items_withheld(response.json()), template


def test_objection_limits_other_organisations_to_what_they_recorded(api, scenario, callers, pdp) -> None:
    pdp.objections.add(scenario.nhs_number)
    body = api.get(f"/fhir/Patient/{scenario.person}/$everything", headers=callers.acute()).json()
    assert {r["id"] for r in resources(body) if r["resourceType"] != "Patient"} == {
        scenario.ids[k] for k in ("allergy_acute", "med_acute", "bp_2", "admission")}
    patient = next(r for r in resources(body) if r["resourceType"] == "Patient")
    assert patient["link"] == [{"other": {"reference": f"Patient/{scenario.acute_patient}"}, "type": "seealso"}]
    assert says_items_withheld(body)
    # The practice that recorded the rest still sees its own entries.
    direct = api.get(f"/fhir/Condition/{scenario.ids['asthma']}", headers=callers.acute())
    assert direct.status_code == 403 and direct.json()["issue"][0]["code"] == "suppressed"
    assert direct.json()["issue"][1]["details"]["coding"][0]["code"] == "ETREAT"  # break-glass would lift it
    assert "Asthma" not in direct.text
    gp = api.get(f"/fhir/Condition?patient={scenario.person}", headers=callers.gp()).json()
    assert {scenario.ids["asthma"], scenario.ids["hiv"], scenario.ids["sealed"]} <= ids(gp)


def test_sensitive_labels_are_withheld_except_from_the_recording_organisation(api, scenario, callers) -> None:
    acute = api.get(f"/fhir/Condition?patient={scenario.person}", headers=callers.acute())
    assert acute.status_code == 200
    assert ids(acute.json()) == {scenario.ids["asthma"]}
    assert acute.json()["total"] == 1  # the total counts what is shown: withheld items stay hidden
    assert says_items_withheld(acute.json())
    text = acute.text
    assert scenario.ids["hiv"] not in text and "86406008" not in text and "HIV" not in text
    direct = api.get(f"/fhir/Condition/{scenario.ids['hiv']}", headers=callers.acute())
    assert direct.status_code == 403 and "HIV" not in direct.text
    assert len(direct.json()["issue"]) == 1  # break-glass does not lift a sensitivity label: no hint


def test_a_denial_is_a_403_with_the_reason_and_the_break_glass_hint(api, scenario, callers, pdp,
                                                                   record_store) -> None:
    pdp.denied.add(scenario.nhs_number)
    response = api.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute())
    assert response.status_code == 403
    issues = response.json()["issue"]
    assert issues[0]["code"] == "forbidden" and "does not see their record" in issues[0]["diagnostics"]
    hint = issues[1]
    assert hint["code"] == "suppressed"
    assert hint["details"]["coding"][0] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                            "code": "ETREAT", "display": "Emergency treatment"}
    denial = audit_rows(record_store, person_id=scenario.person)[-1]
    assert (denial.outcome, denial.nhs_number, denial.actor_ods) == ("denied", scenario.nhs_number, data.ACUTE_ODS)


def test_no_legitimate_relationship_is_a_clear_403_without_asking_consent(api, scenario, callers, pdp) -> None:
    response = api.get(f"/fhir/Patient/{scenario.person}/$everything", headers=callers.stranger())
    assert response.status_code == 403
    assert "no legitimate relationship" in response.json()["issue"][0]["diagnostics"]
    assert pdp.requests == []


def test_a_self_claimed_relationship_is_sent_to_consent_and_audited(api, scenario, callers, pdp,
                                                                    record_store) -> None:
    claim = {"basis": "self_claimed", "reason": "patient attending our walk-in centre"}
    response = api.get(f"/fhir/Patient/{scenario.person}", headers=callers.stranger(legitimate_relationship=claim))
    assert response.status_code == 200
    assert pdp.requests[-1]["legitimate_relationship"] == "self-claimed"
    row = audit_rows(record_store, person_id=scenario.person)[-1]
    assert "self-claimed" in row.body["outcomeDesc"] and "walk-in" in row.body["outcomeDesc"]


def test_relationships_are_computed_from_the_store(api, scenario, callers, pdp) -> None:
    api.get(f"/fhir/Patient/{scenario.person}", headers=callers.gp())
    api.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute())
    assert [r["legitimate_relationship"] for r in pdp.requests] == ["registered", "care"]
    request = pdp.requests[-1]
    assert request["patient"] == {"nhs_number": scenario.nhs_number, "person_id": scenario.person}
    assert request["actor"] == {"kind": "clinician", "ods_code": data.ACUTE_ODS, "role_code": "R8000",
                                "user_id": "555000000001"}
    assert request["purpose"] == "TREAT" and {"HIV", "V", "SOC"} <= set(request["labels"])


def test_registration_by_a_reference_to_a_stored_organization_is_found(api, record_store, callers, pdp) -> None:
    """A registered GP named only by a reference to a stored Organization is looked up by its ODS identifier (one
    that names its ODS code itself needs no look-up)."""
    practice = record_store.directory({"resourceType": "Organization", "identifier": [
        {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": data.GP_ODS}]},
        org=data.GP_ODS, system="EMIS")
    person = record_store.person(data.NHS_NUMBERS[4])
    patient = record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", nhs_number=data.NHS_NUMBERS[4])
    record_store.update("Patient", patient, {"generalPractitioner": [{"reference": f"Organization/{practice}"}]})
    assert api.get(f"/fhir/Patient/{person}", headers=callers.gp()).status_code == 200
    assert ids(api.get(f"/fhir/Patient?identifier={data.NHS_NUMBERS[4]}", headers=callers.gp()).json()) == {person}
    assert [r["legitimate_relationship"] for r in pdp.requests] == ["registered"]  # the search: a cached decision


def test_registered_means_the_practice_the_newest_source_record_names(api, record_store, callers, tokens,
                                                                      pdp) -> None:
    # The hospital's older record keeps the practice of its day; the community record sent since names the new one.
    nhs = data.NHS_NUMBERS[4]
    person = record_store.person(nhs)
    record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", nhs_number=nhs, gp_ods="B86001",
                                local_id=("https://fhir.rr8.nhs.uk/Id/mrn", "M1"))
    record_store.source_patient(person, org=data.COMMUNITY_ODS, system="SystmOne", nhs_number=nhs,
                                gp_ods=data.GP_ODS, local_id=("https://fhir.ry6.nhs.uk/Id/patient", "C1"))
    left = {"Authorization": f"Bearer {tokens.clinician(ods='B86001')}"}
    assert api.get(f"/fhir/Patient/{person}", headers=left).status_code == 403  # a practice the person left
    assert api.get(f"/fhir/Patient/{person}", headers=callers.gp()).status_code == 200
    assert [r["legitimate_relationship"] for r in pdp.requests] == ["registered"]


def test_a_newer_hospital_record_does_not_take_registered_from_the_practices_own_record(api, record_store, callers,
                                                                                        tokens, pdp) -> None:
    # The practice's own record says "registered here"; the hospital's record sent since names an old GP (PD1-3).
    nhs = data.NHS_NUMBERS[4]
    person = record_store.person(nhs)
    record_store.source_patient(person, org=data.GP_ODS, system="EMIS", nhs_number=nhs, gp_ods=data.GP_ODS,
                                local_id=("https://fhir.nhs.uk/Id/emis-patient", "E1"))
    record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", nhs_number=nhs, gp_ods="B86001",
                                local_id=("https://fhir.rr8.nhs.uk/Id/mrn", "M1"))
    named = {"Authorization": f"Bearer {tokens.clinician(ods='B86001')}"}
    assert api.get(f"/fhir/Patient/{person}", headers=callers.gp()).status_code == 200
    assert api.get(f"/fhir/Patient/{person}", headers=named).status_code == 200  # the newer claim counts too
    assert [r["legitimate_relationship"] for r in pdp.requests] == ["registered", "registered"]


def test_a_practices_own_record_registers_it_only_if_vouched_for_and_not_since_superseded(api, record_store, callers,
                                                                                          tokens, pdp) -> None:
    nhs = data.NHS_NUMBERS[4]
    person = record_store.person(nhs)
    own = record_store.source_patient(person, org=data.GP_ODS, system="EMIS", nhs_number=nhs, gp_ods=data.GP_ODS,
                                      local_id=("https://fhir.nhs.uk/Id/emis-patient", "E1"))
    record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", nhs_number=nhs, gp_ods="B86001",
                                local_id=("https://fhir.rr8.nhs.uk/Id/mrn", "M1"))
    _feed_token(record_store, own, None)  # as over MLLP: MSH-4 is only the message's own claim
    assert api.get(f"/fhir/Patient/{person}", headers=callers.gp()).status_code == 200
    # The person has since registered at another practice, whose own record says so: the first practice has left.
    record_store.source_patient(person, org="A81001", system="EMIS", nhs_number=nhs, gp_ods="A81001",
                                local_id=("https://fhir.nhs.uk/Id/emis-patient", "E2"))
    _feed_token(record_store, own, data.GP_ODS)
    assert api.get(f"/fhir/Patient/{person}", headers=callers.gp()).status_code == 200
    moved_to = {"Authorization": f"Bearer {tokens.clinician(ods='A81001')}"}
    assert api.get(f"/fhir/Patient/{person}", headers=moved_to).status_code == 200
    # The practice's second read is `care` again, so its cached decision: no request of its own.
    assert [r["legitimate_relationship"] for r in pdp.requests] == ["care", "registered"]


def _feed_token(record_store, patient_id: str, sender_org: str | None) -> None:
    """Every message that wrote this record came with a feed token naming `sender_org` (None: no token)."""
    with transaction(record_store.sessions) as session:
        written_by = select(ResourceVersion.raw_message_id).where(ResourceVersion.resource_type == "Patient",
                                                                  ResourceVersion.id == patient_id)
        session.execute(update(RawMessage).where(RawMessage.id.in_(written_by)).values(sender_org=sender_org))


def test_allowed_types_limit_what_a_role_sees(api, scenario, callers, pdp) -> None:
    pdp.policy = lambda r: pdp.default_policy(r) | {"allowed_types": ["Patient", "Encounter"]}
    body = api.get(f"/fhir/Patient/{scenario.person}/$everything", headers=callers.acute()).json()
    assert {r["resourceType"] for r in resources(body)} == {"Patient", "Encounter"}
    assert says_items_withheld(body)


def test_s_flag_patients_never_show_address_telecom_or_gp(api, record_store, callers) -> None:
    person = record_store.person(data.NHS_NUMBERS[3])
    record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", nhs_number=data.NHS_NUMBERS[3],
                                gp_ods=data.GP_ODS, labels=("R",), local_id=("https://fhir.rr8.nhs.uk/Id/mrn", "S1"))
    record_store.clinical(person, {"resourceType": "Encounter", "status": "finished",
                                   "class": {"code": "IMP"}, "location": [{"location": {"display": "Ward 3"}}]},
                          org=data.ACUTE_ODS, system="PAS")
    for url in (f"/fhir/Patient/{person}", f"/fhir/Patient/{person}/$everything",
                f"/fhir/Patient?identifier={data.NHS_NUMBERS[3]}", f"/fhir/Encounter?patient={person}"):
        response = api.get(url, headers=callers.acute())
        assert response.status_code == 200, url
        for resource in resources(response.json()):
            assert not {"address", "telecom", "generalPractitioner", "contact", "location"} & set(resource), url
            assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"} in \
                resource["meta"]["security"]
        assert "LS1 4AP" not in response.text and "0113" not in response.text and "Ward 3" not in response.text
    # Nor can the patient be found by where they live.
    by_postcode = api.get("/fhir/Patient?address-postalcode=LS1 4AP", headers=callers.acute()).json()
    assert person not in ids(by_postcode)


@pytest.mark.parametrize("answer", [
    {"decision": "maybe"},
    {"decision": "permit"},
    "not json at all",
    {"decision": "permit", "own_organisation_only": "no", "withhold_labels": [], "allowed_types": None,
     "obligations": [], "break_glass": False, "break_glass_available": False, "rule": "r", "reason": "x"},
    {"decision": "permit", "own_organisation_only": False, "withhold_labels": [], "allowed_types": None,
     "obligations": ["notify-the-press"], "break_glass": False, "break_glass_available": False, "rule": "r",
     "reason": "an obligation we cannot honour"},
])
def test_an_answer_the_record_api_cannot_honour_fails_closed(api, scenario, callers, pdp, record_store,
                                                            answer) -> None:
    pdp.policy = lambda _r: answer
    response = api.get(f"/fhir/Patient/{scenario.person}/$everything", headers=callers.acute())
    assert response.status_code == 503
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "Smith" not in response.text
    assert audit_rows(record_store, person_id=scenario.person)[-1].outcome == "error"


def test_an_unreachable_decision_service_fails_closed(tokens, pg_url, scenario, callers, pdp_token) -> None:
    from fastapi.testclient import TestClient

    from services.record_api.settings import RecordApiSettings
    from tests.support.services import settings_for
    from tools.peers.ports import free_port

    settings = settings_for(RecordApiSettings, tokens, pg_url, consent_url=f"http://127.0.0.1:{free_port()}",
                            consent_token_file=str(pdp_token), consent_timeout_seconds=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute())
    assert response.status_code == 503
    assert "unreachable" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("kind", ["citizen", "system", "feed"])
def test_citizen_and_system_tokens_may_not_read_clinical_records(api, scenario, tokens, kind) -> None:
    token = getattr(tokens, kind)() if kind != "citizen" else tokens.citizen(scenario.nhs_number)
    response = api.get(f"/fhir/Patient/{scenario.person}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"


def test_smart_scopes_are_enforced_per_type_and_interaction(api, scenario, tokens) -> None:
    def get(url: str, scope: str) -> int:
        token = tokens.clinician(scope=scope)
        return api.get(url, headers={"Authorization": f"Bearer {token}"}).status_code

    condition = f"/fhir/Condition/{scenario.ids['asthma']}"
    assert get(condition, "user/Condition.r") == 200
    assert get(condition, "user/Observation.rs") == 403
    assert get(f"/fhir/Condition?patient={scenario.person}", "user/Condition.r") == 403  # search needs s
    assert get(f"/fhir/Condition?patient={scenario.person}", "user/Condition.s") == 200
    assert get(f"/fhir/Condition/{scenario.ids['asthma']}/_history", "user/Condition.s") == 403
    assert get(condition, "patient/Condition.read") == 403  # no launch context here: user scopes only


def test_everything_leaves_out_types_the_token_cannot_read(api, scenario, tokens) -> None:
    token = tokens.clinician(scope="user/Patient.r user/AllergyIntolerance.r")
    body = api.get(f"/fhir/Patient/{scenario.person}/$everything",
                   headers={"Authorization": f"Bearer {token}"}).json()
    assert {r["resourceType"] for r in resources(body)} == {"Patient", "AllergyIntolerance"}
    assert not says_items_withheld(body)  # not withheld by consent: simply not asked for


def test_route_templates_are_whole_in_the_metrics(api, scenario, callers) -> None:
    api.get(f"/fhir/Condition/{scenario.ids['asthma']}", headers=callers.acute())
    metrics = api.get("/metrics").text
    assert re.search(r'route="/fhir/\{resource_type\}/\{id\}"', metrics)
    assert scenario.ids["asthma"] not in metrics
