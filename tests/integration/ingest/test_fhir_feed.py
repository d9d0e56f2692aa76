"""GP FHIR Bundles through the HTTP API into PostgreSQL: the stored record, provenance, idempotent re-sends,
new versions, late updates, all-or-nothing transactions, and record.changed after each commit."""

import copy

import pytest
from sqlalchemy import select

from shared.fhir import ODS_ORG_SYSTEM
from shared.schema import Person, PersonLink, RawMessage, Resource, SearchParam
from tests.fixtures.ingest import messages
from tests.support import data

pytestmark = pytest.mark.integration


def _locations(response) -> list[str]:
    return [e["response"].get("location", "") for e in response.json()["entry"]]


def test_a_gp_record_is_stored_linked_to_one_person_with_provenance(ingest) -> None:
    bundle = messages.load_json("gp_record_bundle.json")
    response = ingest.post_fhir(bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created"] * len(bundle["entry"])

    (patient,) = ingest.rows("Patient")
    person = ingest.get(Person, Person.id == patient.person_id)
    assert person.nhs_number == data.NHS_NUMBERS[0]  # a verified NHS number established the person
    assert ingest.get(PersonLink, PersonLink.source_patient_id == patient.id).method == "new-person"
    assert patient.source_patient_id == patient.id and patient.source_org == data.GP_ODS
    assert patient.body["meta"]["source"] == f"urn:scr:ods:{data.GP_ODS}:feed-{data.GP_ODS}"
    assert {"system": ODS_ORG_SYSTEM, "code": data.GP_ODS} in patient.body["meta"]["tag"]

    (observation,) = ingest.rows("Observation")
    assert observation.person_id == person.id and observation.source_patient_id == patient.id
    assert observation.body["subject"] == {"reference": f"Patient/{person.id}"}
    (encounter,) = ingest.rows("Encounter")
    assert observation.body["encounter"] == {"reference": f"Encounter/{encounter.id}"}
    (organization,) = ingest.rows("Organization")
    assert encounter.body["serviceProvider"] == {"reference": f"Organization/{organization.id}"}
    assert organization.person_id is None

    depression = next(c for c in ingest.rows("Condition") if c.body["code"]["coding"][0]["code"] == "35489007")
    assert depression.labels == ["PSY"]
    assert depression.body["meta"]["security"] == [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                    "code": "PSY"}]
    search = ingest.count(SearchParam, SearchParam.resource_id == observation.id, SearchParam.param == "patient",
                          SearchParam.ref_id == person.id, SearchParam.person_id == person.id)
    assert search == 1

    (provenance,) = ingest.rows("Provenance")
    targets = {t["reference"] for t in provenance.body["target"]}
    assert f"Observation/{observation.id}/_history/1" in targets and len(targets) == len(bundle["entry"])
    raw = ingest.get(RawMessage, RawMessage.status == "processed")
    assert provenance.body["entity"][0]["what"]["reference"] == f"urn:scr:raw:{raw.id}"
    assert provenance.body["agent"][0]["who"]["identifier"]["value"] == data.GP_ODS
    assert provenance.person_id == person.id

    changed = ingest.events()
    assert {(e["resource_type"], e["id"]) for e in changed} >= {("Observation", observation.id),
                                                                ("Patient", patient.id)}
    assert all(e["change"] == "create" and e["person_id"] in (person.id, None) and e["version_id"] == 1
               for e in changed)
    assert all(e["resource_type"] != "Provenance" for e in changed)


def test_resending_the_same_bundle_makes_no_new_version_and_no_event(ingest) -> None:
    bundle = messages.load_json("gp_record_bundle.json")
    first = ingest.post_fhir(bundle)
    events_before = len(ingest.events())
    second = ingest.post_fhir(bundle)
    assert second.status_code == 200
    assert _locations(second) == _locations(first)
    assert all(e["response"]["status"] == "200 OK" for e in second.json()["entry"])
    assert all(r.version_id == 1 for r in ingest.rows("Condition") + ingest.rows("Patient"))
    assert len(ingest.events()) == events_before
    assert ingest.count(Resource, Resource.resource_type == "Provenance") == 1
    assert ingest.count(RawMessage) == 2  # both archived


def test_a_changed_record_makes_a_new_version_and_an_update_event(ingest) -> None:
    bundle = messages.load_json("gp_record_bundle.json")
    ingest.post_fhir(bundle)
    changed = copy.deepcopy(bundle)
    changed["meta"]["lastUpdated"] = "2024-03-01T09:00:00+00:00"
    observation = next(e for e in changed["entry"] if e["resource"]["resourceType"] == "Observation")
    observation["resource"]["valueQuantity"]["value"] = 128
    response = ingest.post_fhir(changed)
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses.count("200 OK") == len(statuses)
    (stored,) = ingest.rows("Observation")
    assert stored.version_id == 2 and stored.body["valueQuantity"]["value"] == 128
    assert [v.body["valueQuantity"]["value"] for v in ingest.versions("Observation", stored.id)] == [142, 128]
    assert ingest.events()[-1] | {} == {"person_id": stored.person_id, "resource_type": "Observation",
                                        "id": stored.id, "version_id": 2, "change": "update",
                                        "source_org": data.GP_ODS}


def test_an_older_update_arriving_late_never_overwrites_a_newer_one(ingest) -> None:
    newer = messages.bundle([messages.patient(), messages.condition("44054006", "Diabetes", ident="P1")],
                            last_updated="2024-06-01T12:00:00+00:00")
    newer["entry"][1]["resource"]["clinicalStatus"]["coding"][0]["code"] = "resolved"
    older = messages.bundle([messages.patient(), messages.condition("44054006", "Diabetes", ident="P1")],
                            last_updated="2024-05-01T12:00:00+00:00")
    ingest.post_fhir(newer)
    response = ingest.post_fhir(older)
    assert response.status_code == 200
    outcome = response.json()["entry"][1]["response"]["outcome"]
    assert "older than the stored version" in outcome["issue"][0]["diagnostics"]
    (condition,) = ingest.rows("Condition")
    assert condition.version_id == 1 and condition.body["clinicalStatus"]["coding"][0]["code"] == "resolved"


def test_a_transaction_with_a_bad_entry_stores_nothing_but_the_raw_message(ingest) -> None:
    bundle = messages.bundle([messages.patient(), messages.condition("44054006", "Diabetes", ident="P1"),
                              messages.condition("1", "x", ident="P2", patient_ref="Patient/no-such-person")])
    response = ingest.post_fhir(bundle)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert "names no stored Patient" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[2].resource"]
    assert ingest.count(Resource) == 0 and ingest.count(Person) == 0 and ingest.count(SearchParam) == 0
    raw = ingest.get(RawMessage, RawMessage.id == response.headers["x-raw-message-id"])
    assert raw.status == "rejected" and "no stored Patient" in raw.error
    assert ingest.events() == []


def test_a_batch_keeps_its_good_entries_and_answers_each(ingest) -> None:
    bundle = messages.bundle([messages.patient(), messages.condition("44054006", "Diabetes", ident="P1"),
                              {"resourceType": "Observation", "status": "finished", "code": {"text": "x"},
                               "subject": {"reference": "urn:uuid:patient-1"}}], kind="batch")
    response = ingest.post_fhir(bundle)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert response.json()["type"] == "batch-response"
    assert [e["response"]["status"] for e in entries] == ["201 Created", "201 Created", "400 Bad Request"]
    assert entries[2]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[2].resource.status"]
    assert ingest.count(Resource, Resource.resource_type == "Condition") == 1
    assert ingest.count(Resource, Resource.resource_type == "Observation") == 0


def test_a_batch_refuses_what_refers_to_a_refused_entry_and_keeps_the_rest(ingest) -> None:
    """An entry naming no stored Patient is refused when the pipeline looks it up; an entry referring to it goes
    with it (its reference would point at nothing) instead of failing the whole batch."""
    orphan = messages.condition("1", "x", ident="P2", patient_ref="Patient/no-such-person")
    dependant = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                 "subject": {"reference": "urn:uuid:patient-1"}, "focus": [{"reference": "urn:uuid:entry-2"}]}
    bundle = messages.bundle([messages.patient(), messages.condition("44054006", "Diabetes", ident="P1"),
                              orphan, dependant], kind="batch")
    response = ingest.post_fhir(bundle)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "201 Created", "400 Bad Request",
                                                          "400 Bad Request"]
    assert "refers to Bundle.entry[2]" in entries[3]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert ingest.count(Resource, Resource.resource_type == "Condition") == 1
    assert ingest.count(Resource, Resource.resource_type == "Observation") == 0
    raw = ingest.get(RawMessage, RawMessage.id == response.headers["x-raw-message-id"])
    assert raw.status == "processed"


def test_a_record_dated_at_the_end_of_the_calendar_is_stored_with_a_clamped_search_date(ingest) -> None:
    far = messages.condition("195967001", "Asthma", ident="P9")
    far["recordedDate"] = "9999-12-31"  # valid FHIR: its day reaches the last instant there is
    response = ingest.post_fhir(messages.bundle([messages.patient(), far]))
    assert response.status_code == 200, response.text
    (condition,) = ingest.rows("Condition")
    date = ingest.get(SearchParam, SearchParam.resource_id == condition.id, SearchParam.param == "date")
    assert (date.date_low.year, date.date_high.year, date.date_high.month, date.date_high.day) == (9999, 9999, 12, 31)


def test_a_later_bundle_may_reference_the_stored_person(ingest) -> None:
    ingest.post_fhir(messages.bundle([messages.patient()]))
    (patient,) = ingest.rows("Patient")
    follow_up = messages.bundle([messages.condition("195967001", "Asthma", ident="P9",
                                                    patient_ref=f"Patient/{patient.person_id}")])
    assert ingest.post_fhir(follow_up).status_code == 200
    (condition,) = ingest.rows("Condition")
    assert condition.person_id == patient.person_id and condition.source_patient_id is None


def test_source_marked_confidential_and_s_flag_reach_the_labels(ingest) -> None:
    restricted = [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]
    sealed = [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}]
    ingest.post_fhir(messages.bundle([messages.patient(security=restricted),
                                      messages.condition("86406008", "HIV infection", ident="P1", security=sealed)]))
    (patient,) = ingest.rows("Patient")
    (condition,) = ingest.rows("Condition")
    assert patient.labels == ["R"] and condition.labels == ["HIV", "V"]


def test_a_gp_dissent_consent_is_stored_against_the_person_and_published(ingest) -> None:
    ingest.post_fhir(messages.load_json("gp_record_bundle.json"))
    (consent,) = ingest.rows("Consent")
    assert consent.body["patient"] == {"reference": f"Patient/{consent.person_id}"}
    assert consent.body["provision"]["type"] == "deny"
    assert any(e["resource_type"] == "Consent" and e["id"] == consent.id for e in ingest.events())


@pytest.mark.parametrize("body, status", [(b"{not json", 400), (b'{"resourceType": "Patient"}', 400),
                                          (b"", 400)])
def test_bodies_that_are_not_bundles_are_refused_with_an_operation_outcome(ingest, body: bytes, status: int) -> None:
    response = ingest.client.post("/ingest/fhir", content=body, headers=ingest.feed())
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert ingest.count(Resource) == 0


def test_a_bundle_over_the_size_limit_gets_413(pg_url, tokens) -> None:
    from fastapi.testclient import TestClient

    from services.ingest.app import create_app
    from tests.integration.ingest.conftest import ingest_settings

    app = create_app(ingest_settings(tokens, pg_url, max_body_bytes=2048))
    with TestClient(app) as client:
        response = client.post("/ingest/fhir", json=messages.load_json("gp_record_bundle.json"),
                               headers={"Authorization": f"Bearer {tokens.feed()}"})
    assert response.status_code == 413 and response.json()["issue"][0]["code"] == "too-costly"


def test_feed_endpoints_need_a_system_token_with_a_create_scope_and_an_ods_code(ingest) -> None:
    bundle = messages.bundle([messages.patient()])
    clinician = {"Authorization": f"Bearer {ingest.tokens.clinician()}"}
    read_only = {"Authorization": f"Bearer {ingest.tokens.system(scope='system/*.read')}"}
    no_ods = {"Authorization": f"Bearer {ingest.tokens.token({'sub': 'feed', 'scope': 'system/*.write'})}"}
    for headers in (clinician, read_only, no_ods):
        assert ingest.client.post("/ingest/fhir", json=bundle, headers=headers).status_code == 403
    narrow = {"Authorization": f"Bearer {ingest.tokens.feed(scope='system/Bundle.c')}"}
    assert ingest.client.post("/ingest/fhir", json=bundle, headers=narrow).status_code == 200
    assert ingest.client.get("/ingest/raw", headers=ingest.feed()).status_code == 403  # admin needs its own scope
    assert ingest.client.get("/ingest/raw", headers=ingest.admin()).status_code == 200
    with ingest.sessions() as session:
        assert session.scalar(select(Resource.source_org)) == data.GP_ODS


def test_the_archive_names_the_sending_system_from_x_source_system_or_else_the_token_subject(ingest) -> None:
    bundle = messages.load_json("gp_record_bundle.json")
    named = ingest.client.post("/ingest/fhir", json=bundle, headers=ingest.feed(**{"X-Source-System": "EMIS Web"}))
    unnamed = ingest.post_fhir(bundle)
    refused = ingest.client.post("/ingest/fhir", content=b"{not json", headers=ingest.feed())
    senders = {r.id: r.sender_system for r in _raws(ingest)}
    assert senders[named.headers["x-raw-message-id"]] == "EMIS Web"
    assert senders[unnamed.headers["x-raw-message-id"]] == f"feed-{data.GP_ODS}"  # the token's sub
    assert senders[refused.headers["x-raw-message-id"]] == f"feed-{data.GP_ODS}"
    assert {r.source_system for r in ingest.rows("Patient")} == {"EMIS Web", f"feed-{data.GP_ODS}"}


def _raws(ingest) -> list[RawMessage]:
    with ingest.sessions() as session:
        return list(session.scalars(select(RawMessage)))
