"""What a response must not give away about what is withheld: included types the token cannot read, the Provenance
of withheld items, earlier versions of records sealed later, matches on withheld source records, 410 for what
the caller could not read, and whether a stranger's patient is on the record at all."""

from __future__ import annotations

from typing import Any

import pytest

from shared.fhir import NHS_NUMBER_SYSTEM
from tests.integration.record_api.helpers import audit_rows, ids, outcome_issues, resources, says_items_withheld
from tests.support import data
from tests.support.record_store import encounter

pytestmark = pytest.mark.integration

SEALED_CLINIC = "RX1"
CLINIC_NUMBER = "https://lilie.example/Id/clinic-number"


def _types(body: dict[str, Any]) -> set[str]:
    return {r["resourceType"] for r in resources(body)}


def _agents(body: dict[str, Any]) -> set[str]:
    return {r["agent"][0]["who"]["identifier"]["value"] for r in resources(body) if r["resourceType"] == "Provenance"}


def _provenances(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in resources(body) if r["resourceType"] == "Provenance"]


def _sealed_source(scenario) -> str:
    """A sealed (V) source record at a sexual-health clinic, with its own identifier and another surname."""
    return scenario.store.source_patient(scenario.person, org=SEALED_CLINIC, system="Lilie",
                                         nhs_number=scenario.nhs_number, family="Zedworth",
                                         local_id=(CLINIC_NUMBER, "GUM-555"), labels=("V",))


# ---------------------------------------------------------------- _include and SMART scopes


def test_included_types_the_token_cannot_read_are_left_out_and_said_so(api, scenario, callers) -> None:
    observation = scenario.store.clinical(scenario.person, {
        "resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org",
                                                                               "code": "8310-5"}]},
        "encounter": {"reference": f"Encounter/{scenario.ids['admission']}"}}, org=data.ACUTE_ODS, system="PAS")
    url = (f"/fhir/Observation?patient={scenario.person}&_include=Observation:encounter"
           f"&_include=Observation:patient&_revinclude=Provenance:target")
    narrow = api.get(url, headers=callers.acute(scope="user/Observation.rs")).json()
    assert _types(narrow) == {"Observation"} and observation in ids(narrow)
    said = [i for i in outcome_issues(narrow) if i["code"] == "suppressed" and "SMART" in i["diagnostics"]]
    assert said and all(t in said[0]["diagnostics"] for t in ("Encounter", "Patient", "Provenance"))
    wide = api.get(url, headers=callers.acute()).json()
    assert {"Observation", "Encounter", "Patient", "Provenance"} <= _types(wide)

    patients = api.get("/fhir/Patient?identifier=MRN123&_revinclude=Condition:patient&_revinclude=Encounter:subject",
                       headers=callers.acute(scope="user/Patient.rs")).json()
    assert _types(patients) == {"Patient"}
    assert any("Condition" in i["diagnostics"] and "Encounter" in i["diagnostics"] for i in outcome_issues(patients))


def test_a_withheld_include_target_is_signalled(api, scenario, callers) -> None:
    sealed = scenario.store.clinical(scenario.person, encounter("2025-03-01T10:00:00Z"), org=data.GP_ODS,
                                     system="EMIS", labels=("V",))
    observation = scenario.store.clinical(scenario.person, {
        "resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org",
                                                                               "code": "8867-4"}]},
        "encounter": {"reference": f"Encounter/{sealed}"}}, org=data.ACUTE_ODS, system="PAS")
    body = api.get(f"/fhir/Observation?patient={scenario.person}&_id={observation}"
                   f"&_include=Observation:encounter", headers=callers.acute()).json()
    assert ids(body) == {observation}
    assert says_items_withheld(body)


# ---------------------------------------------------------------- Provenance


def test_provenance_of_withheld_items_is_withheld_itself(api, scenario, callers) -> None:
    hiv, sealed = scenario.ids["hiv"], scenario.ids["sealed"]
    body = api.get(f"/fhir/Provenance?patient={scenario.person}&_count=100", headers=callers.acute()).json()
    shown = _provenances(body)
    assert shown and all(p["target"] for p in shown)  # none shown only to say something was recorded
    assert body["total"] == len(shown) and says_items_withheld(body)
    assert hiv not in str(body) and sealed not in str(body)
    by_target = api.get(f"/fhir/Provenance?patient={scenario.person}&target=Condition/{hiv}",
                        headers=callers.acute()).json()
    assert by_target["total"] == 0 and ids(by_target) == set()
    gp = api.get(f"/fhir/Provenance?patient={scenario.person}&target=Condition/{hiv}", headers=callers.gp()).json()
    assert gp["total"] == 1  # the practice that recorded it still sees where it came from
    provenance = next(iter(ids(gp)))
    assert api.get(f"/fhir/Provenance/{provenance}", headers=callers.acute()).status_code == 403
    assert api.get(f"/fhir/Provenance/{provenance}", headers=callers.gp()).status_code == 200


def test_a_sealed_sources_provenance_does_not_name_its_organisation(api, scenario, callers) -> None:
    _sealed_source(scenario)
    urls = [f"/fhir/Patient?identifier={scenario.nhs_number}&_revinclude=Provenance:target",
            f"/fhir/Provenance?patient={scenario.person}&_count=100",
            f"/fhir/Patient/{scenario.person}/$everything?_type=Provenance&_count=200"]
    for url in urls:
        body = api.get(url, headers=callers.acute()).json()
        assert _agents(body) and SEALED_CLINIC not in _agents(body), url
        assert all(p["target"] for p in _provenances(body)), url


def test_versioned_provenance_targets_are_shown_to_whom_may_see_them(api, scenario, callers) -> None:
    """Ingest targets the version it wrote (`Condition/<id>/_history/1`), and so does the seeded store."""
    body = api.get(f"/fhir/Condition?patient={scenario.person}&_revinclude=Provenance:target",
                   headers=callers.gp()).json()
    targets = {t["reference"] for p in _provenances(body) for t in p["target"]}
    assert f"Condition/{scenario.ids['hiv']}/_history/1" in targets
    assert f"Condition/{scenario.ids['asthma']}/_history/1" in targets


# ---------------------------------------------------------------- history


@pytest.mark.parametrize("kind,labels", [("asthma", ("V",)), ("bp_1", ("HIV",))])
def test_earlier_versions_of_a_record_sealed_or_labelled_later_are_withheld(api, scenario, callers, kind,
                                                                            labels) -> None:
    resource_id = scenario.ids[kind]
    resource_type = "Condition" if kind == "asthma" else "Observation"
    scenario.store.update(resource_type, resource_id, {"note": [{"text": "keep this confidential"}]}, labels=labels)
    acute = callers.acute()
    assert api.get(f"/fhir/{resource_type}/{resource_id}", headers=acute).status_code == 403
    assert api.get(f"/fhir/{resource_type}/{resource_id}/_history/1", headers=acute).status_code == 403
    instance = api.get(f"/fhir/{resource_type}/{resource_id}/_history", headers=acute).json()
    assert instance["total"] == 0 and says_items_withheld(instance)
    typed = api.get(f"/fhir/{resource_type}/_history?patient={scenario.person}", headers=acute).json()
    assert resource_id not in ids(typed) and says_items_withheld(typed)
    # The recording practice still reads every version.
    assert api.get(f"/fhir/{resource_type}/{resource_id}/_history/1", headers=callers.gp()).status_code == 200


# ---------------------------------------------------------------- Patient search


@pytest.mark.parametrize("query", [f"identifier={CLINIC_NUMBER}|GUM-555", "identifier=GUM-555", "family=zedworth",
                                   "family=zedworth&_summary=count"])
def test_patient_search_does_not_match_on_a_source_the_caller_may_not_see(api, scenario, callers, query) -> None:
    _sealed_source(scenario)
    body = api.get(f"/fhir/Patient?{query}", headers=callers.acute()).json()
    assert ids(body) == set() and body.get("total", 0) == 0
    assert not says_items_withheld(body)  # not "left out": no match
    assert ids(api.get(f"/fhir/Patient?identifier={scenario.nhs_number}", headers=callers.acute()).json()) == {
        scenario.person}


def test_under_an_objection_another_organisations_identifier_finds_nobody(api, scenario, callers, pdp) -> None:
    pdp.objections.add(scenario.nhs_number)
    gp_local = api.get("/fhir/Patient?identifier=https://emis.example/Id/patient|E1001", headers=callers.acute())
    assert ids(gp_local.json()) == set()
    own = api.get("/fhir/Patient?identifier=https://fhir.rr8.nhs.uk/Id/mrn|MRN123", headers=callers.acute())
    assert ids(own.json()) == {scenario.person}


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    """A searchset without what differs between any two requests (its time and its own URL)."""
    return {"total": body.get("total"), "entry": body["entry"], "links": [x["relation"] for x in body["link"]]}


@pytest.mark.parametrize("summary", ["", "&_summary=count"])
def test_a_stranger_cannot_tell_whether_a_person_is_on_the_record(api, scenario, callers, record_store,
                                                                  summary) -> None:
    absent = data.NHS_NUMBERS[7]
    before = len(audit_rows(record_store, person_id=scenario.person))
    on_record = api.get(f"/fhir/Patient?identifier={NHS_NUMBER_SYSTEM}|{scenario.nhs_number}{summary}",
                        headers=callers.stranger())
    nobody = api.get(f"/fhir/Patient?identifier={NHS_NUMBER_SYSTEM}|{absent}{summary}", headers=callers.stranger())
    assert on_record.status_code == nobody.status_code == 200
    assert _answer(on_record.json()) == _answer(nobody.json())
    assert ids(on_record.json()) == set()
    # The look-up is still in the citizen's access log, as a refusal.
    refused = audit_rows(record_store, person_id=scenario.person)[before:]
    assert [r.outcome for r in refused] == ["denied"]
    assert "no legitimate relationship" in refused[0].body["outcomeDesc"]


# ---------------------------------------------------------------- 410 Gone


def test_gone_is_only_said_to_whom_the_live_record_would_be_shown_and_is_audited(api, scenario, callers,
                                                                                 record_store) -> None:
    hiv = scenario.ids["hiv"]
    record_store.delete("Condition", hiv)
    for headers, status in ((callers.stranger(), 403), (callers.acute(), 403), (callers.gp(), 410)):
        for url in (f"/fhir/Condition/{hiv}", f"/fhir/Condition/{hiv}/_history/2"):
            before = len(audit_rows(record_store))
            response = api.get(url, headers=headers)
            assert response.status_code == status, (url, response.text)
            rows = audit_rows(record_store)[before:]
            assert [r.person_id for r in rows] == [scenario.person], url
            assert rows[0].outcome == ("success" if status == 410 else "denied")


def test_a_merged_person_is_gone_only_to_whom_may_read_the_survivor(api, scenario, callers, record_store) -> None:
    retired = record_store.person(data.NHS_NUMBERS[5])
    record_store.source_patient(retired, org=data.ACUTE_ODS, system="PAS", nhs_number=data.NHS_NUMBERS[5],
                                local_id=("https://fhir.rr8.nhs.uk/Id/mrn", "DUP9"))
    record_store.merge(retired, scenario.person)
    for url in (f"/fhir/Patient/{retired}", f"/fhir/Patient/{retired}/$everything",
                f"/fhir/Condition?patient={retired}"):
        stranger = api.get(url, headers=callers.stranger())
        assert stranger.status_code == 403 and scenario.person not in stranger.text, url
        before = len(audit_rows(record_store, person_id=scenario.person))
        acute = api.get(url, headers=callers.acute())
        assert acute.status_code == 410 and f"Patient/{scenario.person}" in acute.text, url
        assert len(audit_rows(record_store, person_id=scenario.person)) == before + 1, url
