"""Break-glass (clinical roles, with a reason, always audited and counted) and the audit trail: a row for every
access and denial, written before the answer leaves, and searchable by privacy officers."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from shared.audit import verify_chain
from tests.integration.record_api.helpers import audit_rows, ids, resources
from tests.support import data

pytestmark = pytest.mark.integration
REASON = "Unconscious in ED, anaphylaxis suspected"


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_break_glass_lifts_an_objection_and_is_audited_and_counted(api, scenario, callers, pdp,
                                                                    record_store) -> None:
    pdp.objections.add(scenario.nhs_number)
    before = _metric("scr_break_glass_total", role="R8000")
    normal = api.get(f"/fhir/Patient/{scenario.person}/$everything", headers=callers.acute()).json()
    assert scenario.ids["asthma"] not in ids(normal)
    glass = api.get(f"/fhir/Patient/{scenario.person}/$everything",
                    headers=callers.acute() | {"X-Break-Glass-Reason": f"  {REASON} "})
    assert glass.status_code == 200
    assert scenario.ids["asthma"] in ids(glass.json())
    assert scenario.ids["hiv"] not in ids(glass.json())  # break-glass lifts the objection, not the labels
    assert pdp.requests[-1]["purpose"] == "ETREAT" and pdp.requests[-1]["break_glass_reason"] == REASON
    assert _metric("scr_break_glass_total", role="R8000") == before + 1
    row = audit_rows(record_store, person_id=scenario.person)[-1]
    assert (row.purpose, row.break_glass_reason, row.nhs_number) == ("ETREAT", REASON, scenario.nhs_number)
    assert {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110127",
            "display": "Emergency Override Started"} in row.body["subtype"]
    assert "permitted only by break-glass" in row.body["outcomeDesc"]
    assert f"Condition/{scenario.ids['asthma']}" in [e["what"]["reference"] for e in row.body["entity"]
                                                     if "what" in e]


def test_break_glass_also_opens_a_record_with_no_relationship(api, scenario, callers) -> None:
    response = api.get(f"/fhir/Patient/{scenario.person}",
                       headers=callers.stranger() | {"X-Break-Glass-Reason": REASON})
    assert response.status_code == 200


@pytest.mark.parametrize("role,reason,why", [
    ("S8000:G8000:R8009", REASON, "only to clinical roles"),  # receptionist
    ("S8000:G8000:R8014", REASON, "only to clinical roles"),  # social worker
    ("S8000:G8000:R8000", "   ", "needs a reason"),
    ("S8000:G8000:R8000", "", "needs a reason"),
])
def test_break_glass_is_refused_for_non_clinical_roles_and_empty_reasons(api, scenario, tokens, record_store,
                                                                         role, reason, why) -> None:
    headers = {"Authorization": f"Bearer {tokens.clinician(role=role)}", "X-Break-Glass-Reason": reason}
    response = api.get(f"/fhir/Patient/{scenario.person}", headers=headers)
    assert response.status_code == 403
    assert why in response.json()["issue"][0]["diagnostics"]
    refusal = audit_rows(record_store)[-1]
    assert refusal.outcome == "denied" and why in refusal.body["outcomeDesc"]


def test_every_access_and_denial_is_audited_with_who_where_why_and_what(api, scenario, callers, pdp,
                                                                      record_store) -> None:
    api.get(f"/fhir/Condition?patient={scenario.person}", headers=callers.acute())
    pdp.denied.add(scenario.nhs_number)  # decisions are cached per user: a colleague gets the new answer
    api.get(f"/fhir/Condition?patient={scenario.person}", headers=callers.acute(sub="555000000002"))
    access, denial = audit_rows(record_store, person_id=scenario.person)[-2:]
    assert (access.outcome, denial.outcome) == ("success", "denied")
    for row, user in ((access, "555000000001"), (denial, "555000000002")):
        assert (row.actor_user, row.actor_ods, row.actor_role, row.purpose, row.nhs_number) == (
            user, data.ACUTE_ODS, "R8000", "TREAT", scenario.nhs_number)
        assert row.action == "search"
    returned = [e["what"]["reference"] for e in access.body["entity"] if "what" in e]
    assert f"Condition/{scenario.ids['asthma']}" in returned
    assert f"Condition/{scenario.ids['hiv']}" not in str(access.body)  # what was withheld is not named...
    assert "2 item(s) withheld" in str(access.body["entity"])  # ...only how many
    rows = audit_rows(record_store, person_id=scenario.person)
    assert verify_chain(rows)


def test_an_access_whose_audit_cannot_be_written_returns_nothing(api, scenario, callers, pg_url) -> None:
    before = _metric("scr_audit_write_failures_total", service="record_api")
    engine = create_engine(pg_url.replace("postgresql+psycopg", "postgresql+psycopg"))
    with engine.begin() as conn:  # a real failure of the audit store: every insert is refused
        conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                          "RAISE EXCEPTION 'audit store unavailable'; END $$ LANGUAGE plpgsql"))
        conn.execute(text("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_event "
                          "FOR EACH ROW EXECUTE FUNCTION refuse()"))
    try:
        response = api.get(f"/fhir/Patient/{scenario.person}/$everything", headers=callers.acute())
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_audit ON audit_event"))
        engine.dispose()
    assert response.status_code == 503
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "could not be audited" in response.json()["issue"][0]["diagnostics"]
    assert "Smith" not in response.text and scenario.ids["asthma"] not in response.text
    assert _metric("scr_audit_write_failures_total", service="record_api") == before + 1


def test_privacy_officers_search_the_trail_by_patient_user_organisation_and_date(api, scenario, callers,
                                                                                 tokens) -> None:
    api.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute())
    api.get(f"/fhir/Patient/{scenario.person}", headers=callers.gp())
    api.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute() | {"X-Break-Glass-Reason": REASON})
    officer = callers.privacy_officer()

    def search(query: str) -> list[dict]:
        response = api.get(f"/fhir/AuditEvent?{query}", headers=officer)
        assert response.status_code == 200, response.text
        return resources(response.json())

    mine = search(f"patient=Patient/{scenario.person}")
    assert len(mine) == 3 and all(e["resourceType"] == "AuditEvent" for e in mine)
    by_gp = search(f"patient={scenario.person}&organization={data.GP_ODS}")
    assert len(by_gp) == 1 and by_gp[0]["agent"][1]["who"]["identifier"]["value"] == data.GP_ODS
    assert len(search("agent=555000000001&outcome=0")) == 3
    glass = search("subtype=http://dicom.nema.org/resources/ontology/DCM|110127")
    assert len(glass) == 1 and glass[0]["agent"][0]["purposeOfUse"][0]["text"] == REASON
    assert len(search("date=ge2020-01-01&date=le2999-12-31")) >= 3
    assert search("date=lt2000-01-01") == []
    newest_first = search(f"patient={scenario.person}&_count=2")
    assert len(newest_first) == 2 and int(newest_first[0]["id"]) > int(newest_first[1]["id"])


def test_the_audit_trail_is_only_for_privacy_officers(api, callers, tokens) -> None:
    assert api.get("/fhir/AuditEvent", headers=callers.acute()).status_code == 403
    wrong_scope = tokens.clinician(role="S8002:G8003:R5100", scope="user/Patient.rs")
    assert api.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {wrong_scope}"}).status_code == 403
    assert api.get("/fhir/AuditEvent?date=notadate", headers=callers.privacy_officer()).status_code == 400


def test_audit_search_pages_with_next_and_previous(api, scenario, callers) -> None:
    for _ in range(5):
        api.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute())
    officer = callers.privacy_officer()
    first = api.get(f"/fhir/AuditEvent?patient={scenario.person}&_count=2", headers=officer).json()
    links = {link["relation"]: link["url"] for link in first["link"]}
    second = api.get(links["next"], headers=officer).json()
    back = api.get({lk["relation"]: lk["url"] for lk in second["link"]}["previous"], headers=officer).json()
    assert ids(back) == ids(first)
    assert not ids(first) & ids(second)
