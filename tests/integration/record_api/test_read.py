"""Read, vread, history and conditional reads; one person, one Patient; merged, deleted and unknown ids."""

from __future__ import annotations

import pytest

from tests.integration.record_api.helpers import audit_rows, ids, resources, says_items_withheld
from tests.support import data

pytestmark = pytest.mark.integration


def test_the_person_patient_merges_demographics_by_precedence_and_links_every_source(api, scenario,
                                                                                     callers) -> None:
    response = api.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute())
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
    patient = response.json()
    assert patient["id"] == scenario.person
    # Every source has a verified NHS number, so the GP's record leads: its name casing and address win.
    assert patient["name"][0]["family"] == "Smith" and patient["address"][0]["postalCode"] == "LS1 4AP"
    identifiers = [(i["system"], i["value"]) for i in patient["identifier"]]
    assert identifiers[0] == ("https://fhir.nhs.uk/Id/nhs-number", scenario.nhs_number)
    assert {("https://fhir.rr8.nhs.uk/Id/mrn", "MRN123"), ("https://emis.example/Id/patient", "E1001"),
            ("https://fhir.ry6.nhs.uk/Id/local", "C-77"), ("https://mosaic.example/Id/person", "M-42")} <= \
        set(identifiers)
    assert len(identifiers) == len(set(identifiers)) == 5  # the NHS number once, not four times
    links = {link["other"]["reference"] for link in patient["link"]}
    assert links == {f"Patient/{p}" for p in (scenario.gp_patient, scenario.acute_patient,
                                              scenario.community_patient, scenario.social_patient)}
    assert all(link["type"] == "seealso" for link in patient["link"])
    source = api.get(f"/fhir/Patient/{scenario.acute_patient}", headers=callers.acute()).json()
    assert source["id"] == scenario.acute_patient and source["address"][0]["postalCode"] == "LS9 7TF"


def test_a_verified_nhs_number_source_outranks_the_gp(api, record_store, callers) -> None:
    nhs = data.NHS_NUMBERS[4]
    person = record_store.person(nhs)
    record_store.source_patient(person, org=data.GP_ODS, system="EMIS", nhs_number=nhs, verified=False,
                                family="Old-Name", postcode="LS6 1AA")
    record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", nhs_number=nhs, verified=True,
                                family="Traced", postcode="LS9 9ZZ")
    patient = api.get(f"/fhir/Patient/{person}", headers=callers.acute()).json()
    assert patient["name"][0]["family"] == "Traced" and patient["address"][0]["postalCode"] == "LS9 9ZZ"


def test_etag_last_modified_and_if_none_match(api, scenario, callers) -> None:
    url = f"/fhir/Condition/{scenario.ids['asthma']}"
    first = api.get(url, headers=callers.acute())
    assert first.headers["etag"] == 'W/"1"' and first.headers["last-modified"].endswith("GMT")
    unchanged = api.get(url, headers=callers.acute() | {"If-None-Match": 'W/"1"'})
    assert unchanged.status_code == 304 and unchanged.content == b""
    scenario.store.update("Condition", scenario.ids["asthma"], {"note": [{"text": "reviewed"}]})
    changed = api.get(url, headers=callers.acute() | {"If-None-Match": 'W/"1"'})
    assert changed.status_code == 200 and changed.headers["etag"] == 'W/"2"'
    person_url = f"/fhir/Patient/{scenario.person}"
    etag = api.get(person_url, headers=callers.acute()).headers["etag"]
    assert api.get(person_url, headers=callers.acute() | {"If-None-Match": etag}).status_code == 304
    scenario.store.update("Patient", scenario.gp_patient, {"gender": "female", "birthDate": "1980-05-02"})
    assert api.get(person_url, headers=callers.acute() | {"If-None-Match": etag}).status_code == 200


def test_if_modified_since_answers_304_until_the_resource_changes(api, scenario, callers) -> None:
    url = f"/fhir/Condition/{scenario.ids['asthma']}"
    modified = api.get(url, headers=callers.acute()).headers["last-modified"]

    def status(**conditions: str) -> int:
        return api.get(url, headers=callers.acute() | conditions).status_code

    assert status(**{"If-Modified-Since": modified}) == 304
    assert status(**{"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}) == 304
    assert status(**{"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}) == 200
    assert status(**{"If-Modified-Since": "yesterday"}) == 200  # a date that cannot be read is ignored
    # RFC 9110: with If-None-Match present, If-Modified-Since is not looked at.
    assert status(**{"If-None-Match": 'W/"9"', "If-Modified-Since": modified}) == 200
    scenario.store.update("Condition", scenario.ids["asthma"], {"note": [{"text": "reviewed"}]})
    assert status(**{"If-Modified-Since": modified}) == 200
    person_url = f"/fhir/Patient/{scenario.person}"
    person_modified = api.get(person_url, headers=callers.acute()).headers["last-modified"]
    assert api.get(person_url, headers=callers.acute() | {"If-Modified-Since": person_modified}).status_code == 304


def test_vread_and_instance_history(api, scenario, callers) -> None:
    condition = scenario.ids["asthma"]
    scenario.store.update("Condition", condition, {"note": [{"text": "reviewed"}]})
    v1 = api.get(f"/fhir/Condition/{condition}/_history/1", headers=callers.acute())
    assert v1.status_code == 200 and "note" not in v1.json()
    assert api.get(f"/fhir/Condition/{condition}/_history/2", headers=callers.acute()).json()["note"]
    assert api.get(f"/fhir/Condition/{condition}/_history/9", headers=callers.acute()).status_code == 404
    assert api.get(f"/fhir/Condition/{condition}/_history/x", headers=callers.acute()).status_code == 404
    history = api.get(f"/fhir/Condition/{condition}/_history", headers=callers.acute()).json()
    assert history["type"] == "history" and history["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]  # newest first
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "POST"]


def test_history_bundles_are_valid_r4_with_their_issues_as_bundle_tags(api, scenario, callers) -> None:
    """Every history entry is a version, with request and response and no search (bdl-2, bdl-3, bdl-4): the
    withheld-items signal is a tag of the Bundle, not an OperationOutcome entry."""
    history = api.get(f"/fhir/Condition/_history?patient={scenario.person}", headers=callers.acute()).json()
    assert history["entry"] and says_items_withheld(history)  # the HIV and sealed entries are withheld
    assert all("request" in e and "response" in e and "search" not in e for e in history["entry"])
    assert all(e["resource"]["resourceType"] == "Condition" for e in history["entry"])


@pytest.mark.parametrize("url", ["/fhir/Condition/_history?patient={p}&colour=blue",
                                 "/fhir/Condition/{asthma}/_history?colour=blue",
                                 "/fhir/Patient/{p}/_history?colour=blue"])
def test_history_reports_unknown_parameters_as_search_does(api, scenario, callers, url) -> None:
    url = url.format(p=scenario.person, asthma=scenario.ids["asthma"])
    lenient = api.get(url, headers=callers.acute())
    assert lenient.status_code == 200 and lenient.json()["entry"]
    assert {"system": "http://terminology.hl7.org/CodeSystem/operation-outcome", "code": "MSG_PARAM_UNKNOWN",
            "display": 'Parameter "colour" not understood'} in lenient.json()["meta"]["tag"]
    strict = api.get(url, headers=callers.acute() | {"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["issue"][0]["expression"] == ["colour"]


@pytest.mark.parametrize("url", ["/fhir/Condition/_history?patient={p}&_count=0",
                                 "/fhir/Condition/{asthma}/_history?_count=0", "/fhir/Patient/{p}/_history?_count=0",
                                 "/fhir/Patient/{p}/$everything?_count=0"])
def test_count_zero_answers_the_total_only_as_search_does(api, scenario, callers, url) -> None:
    body = api.get(url.format(p=scenario.person, asthma=scenario.ids["asthma"]), headers=callers.acute()).json()
    assert body["total"] >= 1 and resources(body) == []
    assert [link["relation"] for link in body["link"]] == ["self"]


def test_type_history_is_per_patient_and_filtered(api, scenario, callers) -> None:
    history = api.get(f"/fhir/Condition/_history?patient={scenario.person}", headers=callers.acute())
    assert ids(history.json()) == {scenario.ids["asthma"]}
    missing = api.get("/fhir/Condition/_history", headers=callers.acute())
    assert missing.status_code == 400 and missing.json()["issue"][0]["expression"] == ["patient"]


def test_the_person_patient_has_one_current_version(api, scenario, callers) -> None:
    version = api.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute()).json()["meta"]["versionId"]
    assert api.get(f"/fhir/Patient/{scenario.person}/_history/{version}", headers=callers.acute()).status_code == 200
    old = api.get(f"/fhir/Patient/{scenario.person}/_history/1", headers=callers.acute())
    assert old.status_code == 404 and "Patient.link" in old.json()["issue"][0]["diagnostics"]
    history = api.get(f"/fhir/Patient/{scenario.person}/_history", headers=callers.acute()).json()
    assert [e["resource"]["id"] for e in history["entry"]] == [scenario.person]


def test_unknown_deleted_and_merged_ids(api, scenario, record_store, callers) -> None:
    unknown = api.get("/fhir/Condition/does-not-exist", headers=callers.acute())
    assert unknown.status_code == 404 and unknown.json()["issue"][0]["code"] == "not-found"
    assert api.get("/fhir/Patient/no-such-person", headers=callers.acute()).status_code == 404
    assert api.get("/fhir/NotAType/x", headers=callers.acute()).status_code == 404
    record_store.delete("Observation", scenario.ids["bp_1"])
    gone = api.get(f"/fhir/Observation/{scenario.ids['bp_1']}", headers=callers.acute())
    assert gone.status_code == 410 and gone.json()["issue"][0]["code"] == "deleted"
    history = api.get(f"/fhir/Observation/{scenario.ids['bp_1']}/_history", headers=callers.gp()).json()
    assert history["entry"][0]["request"]["method"] == "DELETE"
    other = record_store.person(data.NHS_NUMBERS[5])
    record_store.source_patient(other, org=data.ACUTE_ODS, system="PAS", local_id=("https://fhir.rr8.nhs.uk/Id/mrn",
                                                                                  "DUP1"))
    record_store.merge(other, scenario.person)
    merged = api.get(f"/fhir/Patient/{other}", headers=callers.acute())
    assert merged.status_code == 410
    assert f"Patient/{scenario.person}" in merged.json()["issue"][0]["diagnostics"]
    survivor = api.get("/fhir/Patient?identifier=DUP1", headers=callers.acute()).json()
    assert ids(survivor) == {scenario.person}


def test_writes_are_not_accepted_here(api, scenario, callers) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        response = api.request(method, f"/fhir/Condition/{scenario.ids['asthma']}", headers=callers.acute())
        assert response.status_code == 405 and response.json()["resourceType"] == "OperationOutcome"
    created = api.post("/fhir/Condition", json={"resourceType": "Condition"}, headers=callers.acute())
    assert created.status_code == 405


def test_head_is_answered_as_get_without_a_body_and_audited(api, scenario, record_store, callers) -> None:
    url = f"/fhir/Condition/{scenario.ids['asthma']}"
    got = api.get(url, headers=callers.acute())
    before = len(audit_rows(record_store))
    head = api.head(url, headers=callers.acute())
    assert head.status_code == 200 and head.content == b""
    assert (head.headers["etag"], head.headers["content-length"]) == (got.headers["etag"],
                                                                      got.headers["content-length"])
    assert len(audit_rows(record_store)) == before + 1  # looking at the headers is looking
    assert api.head("/fhir/metadata").status_code == 200
    assert api.head(f"/fhir/Condition?patient={scenario.person}", headers=callers.acute()).status_code == 200
    assert api.head(url).status_code == 401
    assert api.head(f"{url}/_history/9", headers=callers.acute()).status_code == 404


@pytest.mark.parametrize("url", ["/fhir/metadata", "/fhir/Condition/{asthma}", "/fhir/Condition/{asthma}/_history/1",
                                 "/fhir/Condition?patient={p}", "/fhir/Condition/_history?patient={p}",
                                 "/fhir/Patient/{p}/$everything", "/fhir/AuditEvent?patient={p}"])
def test_requests_accepting_only_xml_get_406_on_every_route(api, scenario, callers, url) -> None:
    url = url.format(p=scenario.person, asthma=scenario.ids["asthma"])
    caller = callers.privacy_officer() if "AuditEvent" in url else callers.acute()
    joiner = "&" if "?" in url else "?"
    for refused in (api.get(f"{url}{joiner}_format=xml", headers=caller),
                    api.get(url, headers=caller | {"Accept": "application/fhir+xml"})):
        assert refused.status_code == 406, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert refused.headers["content-type"].startswith("application/fhir+json")
    for accepted in (api.get(url, headers=caller | {"Accept": "application/fhir+xml, application/fhir+json;q=0.5"}),
                     api.get(f"{url}{joiner}_format=json", headers=caller | {"Accept": "application/fhir+xml"})):
        assert accepted.status_code == 200, accepted.text


def test_directory_resources_are_readable_without_a_patient(api, record_store, callers) -> None:
    org = record_store.directory({"resourceType": "Organization", "name": "Leeds Teaching Hospitals",
                                  "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code",
                                                  "value": "RR8"}]}, org=data.ACUTE_ODS, system="PAS")
    response = api.get(f"/fhir/Organization/{org}", headers=callers.acute())
    assert response.status_code == 200 and response.json()["name"] == "Leeds Teaching Hospitals"
    assert [r["resourceType"] for r in resources(response.json())] == ["Organization"]
    history = api.get(f"/fhir/Organization/{org}/_history", headers=callers.acute()).json()
    assert [e["resource"]["id"] for e in history["entry"]] == [org]
    assert api.get(f"/fhir/Organization/{org}/_history/1", headers=callers.acute()).status_code == 200
    assert api.get("/fhir/Organization?name=leeds", headers=callers.acute()).status_code == 400  # read only
