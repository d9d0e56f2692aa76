"""FHIR Bulk Data `$export` against real PostgreSQL and the real consent service: nobody refused secondary use
appears (by NHS number or by pseudonym), nothing sensitive leaves, identifiers are gone, pseudonyms are keyed per
recipient, `_type`/`_since`/Group are honoured, and the job fails closed without the consent service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.record_api.population.deidentify import person_pseudonym, recipient_of, resource_pseudonym
from services.record_api.population.models import ExportChunk, ExportJob
from services.record_api.population.pseudonym import Pseudonymiser
from shared.fhir import ETHNIC_CATEGORY_ENGLAND, ETHNIC_CATEGORY_EXT
from shared.schema import AuditEventRow
from tests.integration.population import world as population
from tests.integration.population.conftest import (
    OTHER_RECIPIENT_ODS,
    RECIPIENT_ODS,
    bearer,
    kick_off_headers,
    recipient_token,
    run_export,
    wait_for,
)
from tests.support import data
from tests.support.record_store import encounter, observation
from tools.peers.ports import free_port

pytestmark = pytest.mark.integration


def _resources(files: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(line) for text in files.values() for line in text.splitlines() if line]


def _pseudonymiser(key_file: Path, sub: str = "ics-planning", ods: str = RECIPIENT_ODS) -> Pseudonymiser:
    return Pseudonymiser(key_file.read_bytes().strip(), recipient_of(sub, ods))


@pytest.fixture
def world(record_store, consents) -> population.World:
    return population.build(record_store, consents)


def test_nobody_refused_secondary_use_appears_by_nhs_number_or_pseudonym(api, world, tokens, key_file,
                                                                         record_store) -> None:
    token = recipient_token(tokens)
    manifest, files = run_export(api, token)
    everything = "\n".join(files.values())
    pseudonyms = _pseudonymiser(key_file)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/fhir/$export")
    for why, (person_id, nhs) in world.excluded.items():
        if nhs:
            assert nhs not in everything, why
            assert person_pseudonym(pseudonyms, person_id, nhs) not in everything, why
        assert person_pseudonym(pseudonyms, person_id, None) not in everything, why
        assert person_id not in everything, why
    for why, (resource_type, resource_id) in world.excluded_resources.items():
        assert resource_pseudonym(pseudonyms, resource_type, resource_id) not in everything, why
        assert resource_id not in everything, why
    assert "86406008" not in everything and "35489007" not in everything  # HIV, and the sealed/PSY diagnosis

    # The people who may be used are there, under their pseudonyms, with their (de-identified) records.
    olivia = world.included["olivia"]
    patients = {r["id"]: r for r in _resources(files) if r["resourceType"] == "Patient"}
    assert person_pseudonym(pseudonyms, olivia.person, olivia.nhs_number) in patients
    asthma = resource_pseudonym(pseudonyms, "Condition", olivia.ids["asthma"])
    conditions = {r["id"]: r for r in _resources(files) if r["resourceType"] == "Condition"}
    assert conditions[asthma]["subject"] == {
        "reference": f"Patient/{person_pseudonym(pseudonyms, olivia.person, olivia.nhs_number)}"}
    assert conditions[asthma]["code"]["coding"][0]["code"] == "195967001"
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    assert counts["Patient"] == len(patients) == 3  # Olivia, the S-flagged person, the one who withheld SOC
    assert all(len(r["id"]) == 26 for r in _resources(files) if r["resourceType"] != "Organization")


def test_identifiers_names_and_contacts_are_removed_and_planning_fields_kept(api, world, tokens, key_file) -> None:
    _manifest, files = run_export(api, recipient_token(tokens))
    everything = "\n".join(files.values())
    for identifying in ("Smith", "SMITH", "Olivia", "Park Row", "LS1 4AP", "LS9 7TF", "0113 496 0000",
                        "07700 900123", "E1001", "MRN123", "C-77", "M-42", "nhs-number"):
        assert identifying not in everything, identifying
    olivia = world.included["olivia"]
    patient = next(r for r in _resources(files) if r["resourceType"] == "Patient" and
                   r["id"] == person_pseudonym(_pseudonymiser(key_file), olivia.person, olivia.nhs_number))
    assert patient["gender"] == "female" and patient["birthDate"] == "1980"
    assert patient["address"] == [{"use": "home", "postalCode": "LS1"}]
    assert patient["generalPractitioner"][0]["identifier"]["value"] == data.GP_ODS
    extensions = {e["url"]: e for e in patient["extension"]}
    assert extensions["urn:scr:fhir:StructureDefinition:imd-decile"]["valueInteger"] == 6  # LS1 4 in the table
    assert extensions["urn:scr:fhir:StructureDefinition:lsoa"]["valueCode"] == "E01002542"
    assert {"identifier", "name", "telecom", "link", "contact"}.isdisjoint(patient)
    assert not any("identifier" in r or "text" in r for r in _resources(files) if r["resourceType"] != "Organization")
    assert all(r["meta"]["security"][0]["code"] == "PSEUDED" for r in _resources(files))


def test_a_person_who_withheld_social_care_keeps_everything_else(api, world, tokens, key_file) -> None:
    _manifest, files = run_export(api, recipient_token(tokens))
    subject = f"Patient/{person_pseudonym(_pseudonymiser(key_file), world.soc_withheld_person, data.NHS_NUMBERS[5])}"
    theirs = [r for r in _resources(files) if subject in json.dumps(r)]
    assert {r["resourceType"] for r in theirs} == {"Encounter"}  # their social-care episode stayed behind
    olivia_episodes = [r for r in _resources(files) if r["resourceType"] == "EpisodeOfCare"]
    assert len(olivia_episodes) == 1  # SOC alone is not sensitive: Olivia's social-care episode is exported


def test_an_s_flagged_person_has_no_location_data_at_all(api, world, tokens, key_file) -> None:
    _manifest, files = run_export(api, recipient_token(tokens))
    pseudonyms = _pseudonymiser(key_file)
    patient = next(r for r in _resources(files) if r["id"] == person_pseudonym(pseudonyms, world.restricted_person,
                                                                               data.NHS_NUMBERS[6]))
    assert {"address", "generalPractitioner"}.isdisjoint(patient)
    assert all("lsoa" not in e["url"] and "imd" not in e["url"] for e in patient.get("extension", []))
    visit = next(r for r in _resources(files)
                 if r["id"] == resource_pseudonym(pseudonyms, "Encounter", world.restricted_encounter))
    assert "location" not in visit and "tag" not in visit["meta"]
    assert "LS6" not in json.dumps(patient)


def test_references_never_point_at_what_was_left_out_and_resolve_to_exported_patients(api, world, tokens, key_file,
                                                                                     record_store) -> None:
    olivia = world.included["olivia"]
    opted_out, _nhs = world.excluded["national data opt-out"]
    focus = observation("8480-6", "Systolic BP", "2025-02-01T10:00:00Z", 120)
    focus["focus"] = [{"reference": f"Patient/{opted_out}"},
                      {"reference": f"Patient/{world.soc_withheld_person}"}]
    focused = record_store.clinical(olivia.person, focus, org=data.GP_ODS, system="EMIS")
    visit = encounter("2025-03-01T10:00:00Z")
    visit["diagnosis"] = [{"condition": {"reference": f"Condition/{olivia.ids['hiv']}"}},
                          {"condition": {"reference": f"Condition/{olivia.ids['asthma']}"}}]
    visit_id = record_store.clinical(olivia.person, visit, org=data.ACUTE_ODS, system="PAS")
    _manifest, files = run_export(api, recipient_token(tokens))
    pseudonyms = _pseudonymiser(key_file)
    by_id = {r["id"]: r for r in _resources(files)}
    withheld_soc_patient = person_pseudonym(pseudonyms, world.soc_withheld_person, data.NHS_NUMBERS[5])
    assert withheld_soc_patient in by_id  # that person's Patient, which the reference must resolve to
    assert by_id[resource_pseudonym(pseudonyms, "Observation", focused)]["focus"] == [
        {}, {"reference": f"Patient/{withheld_soc_patient}"}]
    assert by_id[resource_pseudonym(pseudonyms, "Encounter", visit_id)]["diagnosis"] == [
        {"condition": {}},
        {"condition": {"reference": f"Condition/{resource_pseudonym(pseudonyms, 'Condition', olivia.ids['asthma'])}"}}]


def test_demographics_never_come_from_a_source_record_that_is_itself_left_out(api, tokens, key_file, record_store,
                                                                           consents) -> None:
    n = data.synthetic_nhs_numbers(2, start=999_400_000)
    # D withheld social care; only their social-care record has a postcode and an ethnic category.
    d = record_store.person(n[0])
    record_store.source_patient(d, org=data.GP_ODS, system="EMIS", nhs_number=n[0], postcode="", gp_ods=data.GP_ODS,
                                gender="male", local_id=("https://emis.example/Id/patient", "E-D"))
    social = record_store.source_patient(d, org=data.SOCIAL_CARE_ODS, system="Mosaic", nhs_number=n[0],
                                         postcode="LS9 7TF", gender="male", labels=("SOC",),
                                         local_id=("https://mosaic.example/Id/person", "M-D"))
    record_store.update("Patient", social, {"extension": [{"url": ETHNIC_CATEGORY_EXT, "valueCodeableConcept": {
        "coding": [{"system": ETHNIC_CATEGORY_ENGLAND, "code": "M"}]}}]})
    consents.preferences(n[0], withheld=("SOC",))
    # E's only record with a gender carries a sensitive label (gender reassignment).
    e = record_store.person(n[1])
    record_store.source_patient(e, org=data.ACUTE_ODS, system="PAS", nhs_number=n[1], gender="", postcode="LS1 4AP",
                                local_id=("https://fhir.rr8.nhs.uk/Id/mrn", "MRN-E"))
    record_store.source_patient(e, org=data.GP_ODS, system="EMIS", nhs_number=n[1], gender="female",
                                labels=("TBOO",), local_id=("https://emis.example/Id/patient", "E-E"))
    token = recipient_token(tokens)
    patients = {r["id"]: r for r in _resources(run_export(api, token, "/fhir/$export?_type=Patient")[1])}
    pseudonyms = _pseudonymiser(key_file)
    d_patient, e_patient = (patients[person_pseudonym(pseudonyms, d, n[0])],
                            patients[person_pseudonym(pseudonyms, e, n[1])])
    assert "address" not in d_patient and "extension" not in d_patient
    assert "gender" not in e_patient
    body = api.get("/population/aggregates?dimension=ethnic_category", headers=bearer(token)).json()
    assert {c["ethnic_category"]: c["count"] for c in body["measures"]["persons"]["cells"]}["M"] == 0


def test_someone_who_opts_out_after_the_job_ran_is_not_delivered(make_api, world, tokens, key_file, record_store,
                                                                  consents) -> None:
    later = data.synthetic_nhs_numbers(1, start=999_500_000)[0]
    person = record_store.person(later)
    record_store.source_patient(person, org=data.GP_ODS, system="EMIS", nhs_number=later, gp_ods=data.GP_ODS,
                                local_id=("https://emis.example/Id/patient", "E-LATER"))
    record_store.clinical(person, encounter("2025-04-01T10:00:00Z"), org=data.ACUTE_ODS, system="PAS")
    api = make_api()
    token = recipient_token(tokens)
    kicked = api.get("/fhir/$export?_type=Patient,Encounter", headers=kick_off_headers(token))
    manifest = wait_for(api, kicked.headers["Content-Location"], bearer(token)).json()
    pseudonym = person_pseudonym(_pseudonymiser(key_file), person, later)
    urls = [o["url"] for o in manifest["output"]]
    consents.preferences(later, opt_out=True)  # after the job ran, before the files are fetched
    delivered = "".join(api.get(url, headers=bearer(token)).text for url in urls)
    assert pseudonym not in delivered
    olivia = person_pseudonym(_pseudonymiser(key_file), world.included["olivia"].person, data.NHS_NUMBERS[0])
    assert f'"id":"{olivia}"' in delivered  # everyone else still is
    unreachable = make_api(consent_url=f"http://127.0.0.1:{free_port()}")  # another replica, no consent service
    refused = unreachable.get(urls[0], headers=bearer(token))
    assert refused.status_code == 503 and refused.json()["resourceType"] == "OperationOutcome"


def test_pseudonyms_are_stable_within_a_recipient_and_differ_across_recipients(api, world, tokens) -> None:
    first = {r["id"] for r in _resources(run_export(api, recipient_token(tokens))[1])}
    again = {r["id"] for r in _resources(run_export(api, recipient_token(tokens))[1])}
    other_files = run_export(api, recipient_token(tokens, sub="university-study", ods=OTHER_RECIPIENT_ODS))[1]
    other = {r["id"] for r in _resources(other_files)}
    directory = {r["id"] for r in _resources(other_files) if r["resourceType"] == "Organization"}
    assert first == again
    assert (first & other) == directory  # only directory ids (not patient data) are shared
    # The person who denied the first recipient's organisation is used by the second recipient only.
    person, nhs = world.denied_recipient_person
    assert nhs not in "\n".join(other_files.values())
    assert any(r["resourceType"] == "Patient" for r in _resources(other_files))
    assert len([r for r in _resources(other_files) if r["resourceType"] == "Patient"]) == 4
    assert person not in "\n".join(other_files.values())


def test_type_and_since_are_honoured(api, world, tokens, record_store) -> None:
    token = recipient_token(tokens)
    manifest, files = run_export(api, token, "/fhir/$export?_type=Patient,Encounter")
    assert {o["type"] for o in manifest["output"]} == {"Patient", "Encounter"}
    assert manifest["request"].endswith("_type=Patient,Encounter")
    everything = _resources(run_export(api, token)[1])
    since = max(r["meta"]["lastUpdated"] for r in everything if r["resourceType"] == "Encounter")
    olivia = world.included["olivia"]
    record_store.update("Encounter", olivia.ids["admission"], {"status": "finished"})
    late = record_store.clinical(olivia.person, encounter("2026-02-01T10:00:00Z"), org=data.ACUTE_ODS, system="PAS")
    manifest, files = run_export(api, token, f"/fhir/$export?_type=Encounter&_since={since}")
    assert [o["count"] for o in manifest["output"]] == [2]
    assert late not in "\n".join(files.values())  # its id is pseudonymised too


def test_group_export_is_the_practices_registered_patients(api, world, tokens, record_store, key_file) -> None:
    elsewhere = record_store.person(data.NHS_NUMBERS[9])
    record_store.source_patient(elsewhere, org="B86001", system="EMIS", nhs_number=data.NHS_NUMBERS[9],
                                gp_ods="B86001", local_id=("https://emis.example/Id/patient", "E-B"))
    token = recipient_token(tokens)
    manifest, files = run_export(api, token, f"/fhir/Group/practice-{data.GP_ODS}/$export")
    pseudonyms = _pseudonymiser(key_file)
    patients = {r["id"] for r in _resources(files) if r["resourceType"] == "Patient"}
    olivia = world.included["olivia"]
    assert patients == {person_pseudonym(pseudonyms, olivia.person, olivia.nhs_number),
                        person_pseudonym(pseudonyms, world.soc_withheld_person, data.NHS_NUMBERS[5])}
    assert "Organization" not in {o["type"] for o in manifest["output"]}  # patient-compartment data only
    other = run_export(api, token, "/fhir/Group/practice-B86001/$export")[1]
    assert {r["id"] for r in _resources(other) if r["resourceType"] == "Patient"} == {
        person_pseudonym(pseudonyms, elsewhere, data.NHS_NUMBERS[9])}
    assert api.get("/fhir/Group/all-patients/$export", headers=kick_off_headers(token)).status_code == 404


def test_output_is_written_in_bounded_chunks_and_split_files(make_api, world, tokens, record_store) -> None:
    for day in range(1, 8):
        record_store.clinical(world.included["olivia"].person, encounter(f"2025-11-0{day}T10:00:00Z"),
                              org=data.ACUTE_ODS, system="PAS")
    api = make_api(export_chunk_rows=3, export_file_max_resources=5)
    manifest, files = run_export(api, recipient_token(tokens), "/fhir/$export?_type=Condition,Encounter")
    parts = [o for o in manifest["output"] if o["type"] == "Encounter"]
    assert [o["count"] for o in parts] == [5, 5, 1]  # 11 encounters may leave: files of at most 5
    assert sum(o["count"] for o in manifest["output"]) == sum(len(t.splitlines()) for t in files.values())
    with api.app.state.population.sessions() as session:
        chunks = list(session.scalars(select(ExportChunk)))
    assert chunks and max(c.lines for c in chunks) == 3
    assert all(c.data.count("\n") == c.lines for c in chunks)


def test_the_export_fails_closed_when_the_consent_service_cannot_be_reached(make_api, world, tokens) -> None:
    api = make_api(consent_url=f"http://127.0.0.1:{free_port()}")
    token = recipient_token(tokens)
    kicked = api.get("/fhir/$export", headers=kick_off_headers(token))
    assert kicked.status_code == 202
    failed = wait_for(api, kicked.headers["Content-Location"], bearer(token))
    assert failed.status_code == 500
    issue = failed.json()["issue"][0]
    assert "consent service is unreachable" in issue["diagnostics"] and "nothing was exported" in issue["diagnostics"]
    with api.app.state.population.sessions() as session:
        assert session.scalars(select(ExportChunk)).first() is None
        job = session.scalars(select(ExportJob)).one()
        assert job.status == "failed"
        audit = session.scalars(select(AuditEventRow).where(AuditEventRow.action == "export",
                                                            AuditEventRow.outcome == "error")).one()
    assert "failed" in audit.body["outcomeDesc"]


def test_only_system_clients_may_export_and_every_refusal_is_audited(api, world, tokens, pg_url) -> None:
    for token in (tokens.clinician(scope="user/*.read"), tokens.citizen(data.NHS_NUMBERS[0])):
        response = api.get("/fhir/$export", headers=kick_off_headers(token))
        assert response.status_code == 403 and response.json()["resourceType"] == "OperationOutcome"
    feed = api.get("/fhir/$export", headers=kick_off_headers(tokens.feed()))  # system/*.write reads nothing
    assert feed.status_code == 403
    narrow = recipient_token(tokens, scope="system/Observation.rs")
    assert api.get("/fhir/$export?_type=Patient", headers=kick_off_headers(narrow)).status_code == 403
    with api.app.state.population.sessions() as session:
        denied = list(session.scalars(select(AuditEventRow).where(AuditEventRow.action == "export",
                                                                  AuditEventRow.outcome == "denied")))
    assert len(denied) == 4
    assert {row.actor_kind for row in denied} == {"clinician", "citizen", "system"}
    assert all(row.person_id is None and row.nhs_number is None for row in denied)


def test_a_file_is_served_only_to_a_token_that_may_read_its_type(api, world, tokens) -> None:
    manifest, _files = run_export(api, recipient_token(tokens))
    patient_file = next(o["url"] for o in manifest["output"] if o["type"] == "Patient")
    narrow = recipient_token(tokens, scope="system/Observation.rs")  # the same recipient, without Patient
    refused = api.get(patient_file, headers=bearer(narrow))
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    with api.app.state.population.sessions() as session:
        denied = list(session.scalars(select(AuditEventRow).where(AuditEventRow.action == "export",
                                                                  AuditEventRow.outcome == "denied")))
    assert any("no system read scope on Patient" in json.dumps(row.body) for row in denied)


def test_kick_off_checks_its_parameters(api, tokens) -> None:
    token = recipient_token(tokens)
    assert api.get("/fhir/$export", headers=bearer(token)).status_code == 400  # no Prefer: respond-async
    for query in ("_type=Banana", "_type=Provenance", "_type=DocumentReference", "_outputFormat=text/csv",
                  "_since=yesterday", "_purpose=TREAT", "patient=x",
                  "_type=Organization&x=1", "_since=lt2030-01-01", "_since=gt2025-01-01", "_since=eb2030-01-01",
                  "_since=2025-01-01T10:00", "_since=2025-01-01&_since=2030-01-01",
                  "_purpose=HOPERAT&_purpose=HRESCH"):
        response = api.get(f"/fhir/$export?{query}", headers=kick_off_headers(token))
        assert response.status_code == 400, query
        assert response.json()["resourceType"] == "OperationOutcome", query
    assert api.get("/fhir/Patient/$export?_type=Organization", headers=kick_off_headers(token)).status_code == 400


def test_a_job_is_visible_only_to_its_recipient_and_delete_removes_it(api, world, tokens) -> None:
    token = recipient_token(tokens)
    manifest, _files = run_export(api, token)
    status_url = manifest["output"][0]["url"].split("/$export-file/")[0] + "/$export-status/" + \
        manifest["output"][0]["url"].split("/$export-file/")[1].split("/")[0]
    other = recipient_token(tokens, sub="someone-else")
    assert api.get(status_url, headers=bearer(other)).status_code == 404
    assert api.get(manifest["output"][0]["url"], headers=bearer(other)).status_code == 404
    assert api.delete(status_url, headers=bearer(token)).status_code == 202
    assert api.get(status_url, headers=bearer(token)).status_code == 404
    assert api.get(manifest["output"][0]["url"], headers=bearer(token)).status_code == 404


def test_every_export_step_is_audited_without_naming_anyone(api, world, tokens) -> None:
    token = recipient_token(tokens)
    run_export(api, token, "/fhir/$export?_type=Patient")
    with api.app.state.population.sessions() as session:
        rows = list(session.scalars(select(AuditEventRow).where(AuditEventRow.action == "export")
                                    .order_by(AuditEventRow.id)))
    descriptions = [row.body.get("outcomeDesc", "") for row in rows]
    assert any("requested" in d for d in descriptions)
    assert any("completed" in d for d in descriptions)
    assert any("downloaded" in d for d in descriptions)
    assert all(row.person_id is None and row.nhs_number is None for row in rows)
    assert all(row.actor_user == "ics-planning" and row.actor_ods == RECIPIENT_ODS for row in rows)
    assert all(row.purpose == "HOPERAT" for row in rows)


def test_status_and_file_urls_use_the_public_base_url_whatever_the_host_header(make_api, world, tokens) -> None:
    public = "https://scr.example.nhs.uk/record"
    api, token = make_api(public_base_url=public), recipient_token(tokens)
    kicked = api.get("/fhir/$export?_type=Patient", headers=kick_off_headers(token) | {"Host": "evil.example"})
    assert kicked.status_code == 202, kicked.text
    status_url = kicked.headers["Content-Location"]
    assert status_url.startswith(f"{public}/fhir/$export-status/") and "evil" not in kicked.text
    done = wait_for(api, status_url.removeprefix(public), bearer(token, Host="evil.example"))
    assert done.status_code == 200, done.text
    assert [o["url"].startswith(f"{public}/fhir/$export-file/") for o in done.json()["output"]] == [True]
    assert done.json()["request"] == f"{public}/fhir/$export?_type=Patient" and "evil" not in done.text


def test_a_job_id_with_anything_after_it_names_no_job(api, world, tokens) -> None:
    token = recipient_token(tokens)
    kicked = api.get("/fhir/$export?_type=Patient", headers=kick_off_headers(token))
    status_url = kicked.headers["Content-Location"]
    assert wait_for(api, status_url, bearer(token)).status_code == 200
    for junk in ("' OR '1'='1", "x", "%20", "0"):
        assert api.get(status_url + junk, headers=bearer(token)).status_code == 404, junk
    job_id = status_url.rsplit("/", 1)[1]
    for other in (job_id.upper(), job_id.replace("-", ""), "%", "_" * 36):
        assert api.get(status_url.replace(job_id, other), headers=bearer(token)).status_code == 404, other
    refused = api.delete(status_url + "' OR '1'='1", headers=bearer(token))
    assert refused.status_code == 404
    assert api.get(status_url, headers=bearer(token)).status_code == 200  # the junk cancelled nothing
    with api.app.state.population.sessions() as session:
        descriptions = [row.body.get("outcomeDesc", "") for row in session.scalars(
            select(AuditEventRow).where(AuditEventRow.action == "export"))]
    assert not any("OR '1'" in d for d in descriptions)
    assert api.delete(status_url, headers=bearer(token)).status_code == 202
