"""Search: Patient by identifiers and demographics (one person, one Patient), clinical types by patient plus
their parameters, paging that stays stable, _include/_revinclude, _summary, _elements, and bad input."""

from __future__ import annotations

import pytest

from tests.integration.record_api.helpers import audit_rows, ids, outcome_issues, resources
from tests.support import data

pytestmark = pytest.mark.integration
NHS = "https://fhir.nhs.uk/Id/nhs-number"
STRICT = {"Prefer": "handling=strict"}


def _links(body: dict) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in body["link"]}


@pytest.mark.parametrize("query", [
    f"identifier={NHS}|9990000018", "identifier=9990000018", "identifier=https://fhir.rr8.nhs.uk/Id/mrn|MRN123",
    "identifier=https://mosaic.example/Id/person|M-42", "family=smith", "family:exact=Smith", "given=oliv",
    "birthdate=1980-05-01", "birthdate=ge1980&birthdate=lt1981", "gender=female", "address-postalcode=LS14AP",
    "address-postalcode=ls9 7tf", "name=olivia", "_id={person}", "_id={acute}",
    "general-practitioner=Y12345", "family:exact=SMITH", "gender=http://hl7.org/fhir/administrative-gender|female",
    "gender=http://hl7.org/fhir/administrative-gender|", "address-postalcode:exact=LS9 7TF",
])
def test_patient_search_finds_the_one_person(api, scenario, callers, query) -> None:
    query = query.format(person=scenario.person, acute=scenario.acute_patient)
    response = api.get(f"/fhir/Patient?{query}", headers=callers.acute() | STRICT)
    assert response.status_code == 200, response.text
    found = resources(response.json())
    assert [p["id"] for p in found] == [scenario.person]  # never the four source records
    assert found[0]["resourceType"] == "Patient"


@pytest.mark.parametrize("query", [f"identifier={NHS}|9990000026", "identifier=https://other|MRN123",
                                   "family=jones", "birthdate=1981", "gender=male", "given:exact=Oliv",
                                   "family:exact=smith", "given:exact=OLIVIA", "address-postalcode:exact=LS97TF",
                                   "gender=http://hl7.org/fhir/administrative-gender|male", "gender=http://other|female"])
def test_patient_search_does_not_find_what_does_not_match(api, scenario, callers, query) -> None:
    response = api.get(f"/fhir/Patient?{query}", headers=callers.acute())
    assert response.status_code == 200 and ids(response.json()) == set()


@pytest.mark.parametrize("query", ["", "_count=50", "_summary=count", "_sort=_id"])
def test_a_patient_search_without_criteria_is_refused_not_a_trawl_of_the_population(api, scenario, callers,
                                                                                     query) -> None:
    response = api.get(f"/fhir/Patient?{query}", headers=callers.acute())
    assert response.status_code == 400
    assert "at least one search parameter" in response.json()["issue"][0]["diagnostics"]


def test_persons_the_caller_has_no_relationship_with_are_left_out(api, scenario, record_store, callers) -> None:
    stranger = record_store.person(data.NHS_NUMBERS[6])
    record_store.source_patient(stranger, org=data.OTHER_TRUST_ODS, system="PAS", family="Smith")
    body = api.get("/fhir/Patient?family=smith", headers=callers.acute()).json()
    assert ids(body) == {scenario.person}
    # Not signalled as withheld: that would tell a stranger the person is on the record (docs/RECORD_API.md).
    assert not any(i["code"] == "suppressed" for i in outcome_issues(body))
    assert [r.outcome for r in audit_rows(record_store, person_id=stranger)] == ["denied"]


@pytest.mark.parametrize("query,expected", [
    ("code=http://snomed.info/sct|195967001", {"asthma"}),
    ("code=195967001", {"asthma"}),
    ("code=http://other|195967001", set()),
    ("category=problem-list-item", {"asthma"}),
    ("status=active", {"asthma"}),
    # clinicalStatus is a CodeableConcept: it carries its own system, and only that one matches.
    ("clinical-status=http://terminology.hl7.org/CodeSystem/condition-clinical|active", {"asthma"}),
    ("status=http://terminology.hl7.org/CodeSystem/condition-clinical|", {"asthma"}),
    ("clinical-status=http://hl7.org/fhir/condition-clinical|active", set()),
    ("clinical-status=|active", set()),
    ("date=2023-06", {"asthma"}),
    ("date=gt2024-01-01", set()),
    ("_lastUpdated=ge2020-01-01", {"asthma"}),
    ("_id={asthma}", {"asthma"}),
])
def test_condition_search(api, scenario, callers, query, expected) -> None:
    query = query.format(asthma=scenario.ids["asthma"])
    response = api.get(f"/fhir/Condition?subject=Patient/{scenario.person}&{query}", headers=callers.acute())
    assert response.status_code == 200, response.text
    assert ids(response.json()) == {scenario.ids[k] for k in expected}


@pytest.mark.parametrize("query", [
    "Condition?patient={p}&date=9999-12-31", "Condition?patient={p}&date=gt9999-12-31",
    "Condition?patient={p}&date=9999", "Condition?patient={p}&date=lt0001-01-01T00:30:00%2B01:00",
    "Condition?patient={p}&_lastUpdated=gt9999-12-31T23:59:59Z", "Patient?birthdate=9999",
    "Condition/_history?patient={p}&_since=9999-12-31", "Patient/{p}/$everything?_since=9999-12-31",
])
def test_dates_at_the_ends_of_the_calendar_are_answered_not_a_500(api, scenario, callers, query) -> None:
    response = api.get(f"/fhir/{query.format(p=scenario.person)}", headers=callers.acute())
    assert response.status_code == 200, response.text


def test_a_record_dated_at_the_end_of_the_calendar_is_found_by_its_date(api, scenario, record_store,
                                                                         callers) -> None:
    from tests.support.record_store import condition

    far = record_store.clinical(scenario.person, condition("195967001", "Asthma", onset="9999-12-31"),
                                org=data.ACUTE_ODS, system="PAS")
    base = f"/fhir/Condition?patient={scenario.person}"
    assert ids(api.get(f"{base}&date=9999-12-31", headers=callers.acute()).json()) == {far}
    assert ids(api.get(f"{base}&date=ge9999", headers=callers.acute()).json()) == {far}


def test_observation_search_by_date_and_sort(api, scenario, callers) -> None:
    base = f"/fhir/Observation?patient={scenario.person}"
    early = api.get(f"{base}&date=lt2025-03-01", headers=callers.acute()).json()
    assert ids(early) == {scenario.ids["bp_1"]}
    ascending = api.get(f"{base}&_sort=date", headers=callers.acute()).json()
    assert [r["id"] for r in resources(ascending)] == [scenario.ids["bp_1"], scenario.ids["bp_2"]]
    descending = api.get(f"{base}&_sort=-date", headers=callers.acute()).json()
    assert [r["id"] for r in resources(descending)] == [scenario.ids["bp_2"], scenario.ids["bp_1"]]
    by_update = api.get(f"{base}&_sort=_lastUpdated", headers=callers.acute()).json()
    assert [r["id"] for r in resources(by_update)] == [scenario.ids["bp_1"], scenario.ids["bp_2"]]


def test_paging_is_stable_with_next_previous_and_past_the_end(api, scenario, record_store, callers) -> None:
    from tests.support.record_store import observation

    extra = [record_store.clinical(scenario.person, observation("8480-6", "Systolic BP", f"2024-0{m}-01", 120 + m),
                                   org=data.ACUTE_ODS, system="PAS") for m in range(1, 6)]
    url = f"/fhir/Observation?patient={scenario.person}&_count=3&_sort=_lastUpdated"
    first = api.get(url, headers=callers.acute()).json()
    assert first["total"] == 7 and "previous" not in _links(first)
    # A record arriving while the caller pages does not shift or repeat what they see.
    record_store.clinical(scenario.person, observation("8480-6", "Systolic BP", "2026-01-01", 150),
                          org=data.ACUTE_ODS, system="PAS")
    second = api.get(_links(first)["next"], headers=callers.acute()).json()
    third = api.get(_links(second)["next"], headers=callers.acute()).json()
    seen = [r["id"] for page in (first, second, third) for r in resources(page)]
    assert len(seen) == len(set(seen)) == 8
    assert set(seen) >= set(extra) | {scenario.ids["bp_1"], scenario.ids["bp_2"]}
    back = api.get(_links(second)["previous"], headers=callers.acute()).json()
    assert [r["id"] for r in resources(back)] == [r["id"] for r in resources(first)]
    assert "next" not in _links(third)
    past = api.get(_links(second)["next"], headers=callers.acute())  # the same cursor again: same page
    assert [r["id"] for r in resources(past.json())] == [r["id"] for r in resources(third)]


def test_a_page_past_the_end_is_empty_and_bad_cursors_are_refused(api, scenario, callers) -> None:
    from services.record_api.paging import Cursor, fingerprint

    url = f"/fhir/Observation?patient={scenario.person}&_count=1"
    stamp = fingerprint([("patient", scenario.person), ("_count", "1")])
    beyond = Cursor("n", ("0000", "", ""), stamp).encode()  # before every key in descending order: past the end
    response = api.get(f"{url}&_cursor={beyond}", headers=callers.acute())
    assert response.status_code == 200 and resources(response.json()) == []
    assert "previous" in _links(response.json())
    tampered = api.get(f"{url}&_cursor=not-a-cursor", headers=callers.acute())
    assert tampered.status_code == 400 and tampered.json()["issue"][0]["expression"] == ["_cursor"]
    reused = api.get(f"/fhir/Observation?patient={scenario.person}&_count=2&_cursor={beyond}",
                     headers=callers.acute())
    assert reused.status_code == 400 and "different search" in reused.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("url,officer", [
    ("Patient?family=smith", False), ("Observation?patient={p}&_sort=date", False),
    ("Observation?patient={p}&_sort=_id", False), ("Observation?patient={p}", False),
    ("Observation/_history?patient={p}", False), ("Observation/{bp}/_history", False),
    ("Patient/{p}/$everything", False), ("AuditEvent?patient={p}", True),
])
def test_cursors_with_keys_of_a_shape_never_issued_are_400_on_every_kind_of_search(api, scenario, callers, url,
                                                                                   officer) -> None:
    from urllib.parse import parse_qsl

    from services.record_api.paging import Cursor, fingerprint

    url = f"/fhir/{url.format(p=scenario.person, bp=scenario.ids['bp_1'])}"
    url += ("&" if "?" in url else "?") + "_count=1"
    caller = callers.privacy_officer() if officer else callers.acute()
    api.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute())  # something for the audit trail to page
    api.get(f"/fhir/Patient/{scenario.person}", headers=callers.acute())
    genuine = api.get(url, headers=caller)
    assert genuine.status_code == 200, genuine.text
    if "next" in _links(genuine.json()):  # the cursors issued still work
        assert api.get(_links(genuine.json())["next"], headers=caller).status_code == 200
    stamp = fingerprint(parse_qsl(url.split("?", 1)[1]))
    for key in [(), ("a",) * 5]:
        forged = api.get(f"{url}&_cursor={Cursor('n', key, stamp).encode()}", headers=caller)
        assert forged.status_code == 400, (key, forged.text)
        assert forged.json()["issue"][0]["expression"] == ["_cursor"]


def test_summary_count_and_elements(api, scenario, callers) -> None:
    counted = api.get(f"/fhir/Observation?patient={scenario.person}&_summary=count", headers=callers.acute()).json()
    assert counted["total"] == 2 and resources(counted) == []
    zero = api.get(f"/fhir/Observation?patient={scenario.person}&_count=0", headers=callers.acute()).json()
    assert zero["total"] == 2 and resources(zero) == []
    slim = api.get(f"/fhir/Observation?patient={scenario.person}&_elements=code,status", headers=callers.acute())
    for resource in resources(slim.json()):
        assert set(resource) == {"resourceType", "id", "meta", "code", "status"}
        assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in \
            resource["meta"]["tag"]
        assert resource["meta"]["source"]  # provenance survives subsetting
    counted_patients = api.get("/fhir/Patient?family=smith&_summary=count", headers=callers.acute()).json()
    assert counted_patients["total"] == 1


def test_include_and_revinclude(api, scenario, callers) -> None:
    included = api.get(f"/fhir/Observation?patient={scenario.person}&_include=Observation:patient",
                       headers=callers.acute()).json()
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in included["entry"]}
    assert ("Patient", "include") in modes and ("Observation", "match") in modes
    rev = api.get("/fhir/Patient?identifier=MRN123&_revinclude=AllergyIntolerance:patient",
                  headers=callers.acute()).json()
    assert ids(rev) == {scenario.person, scenario.ids["allergy_gp"], scenario.ids["allergy_acute"]}
    provenance = api.get(f"/fhir/Condition?patient={scenario.person}&_revinclude=Provenance:target",
                         headers=callers.acute()).json()
    provs = [r for r in resources(provenance) if r["resourceType"] == "Provenance"]
    assert provs and all(t["reference"] == f"Condition/{scenario.ids['asthma']}/_history/1"
                         for p in provs for t in p["target"])
    hidden = api.get(f"/fhir/Condition?patient={scenario.person}&_revinclude=Provenance:target",
                     headers=callers.acute()).text
    assert scenario.ids["hiv"] not in hidden  # the provenance of a withheld item is withheld too


def test_unknown_parameters_strict_and_lenient(api, scenario, callers) -> None:
    url = f"/fhir/Condition?patient={scenario.person}&colour=blue"
    lenient = api.get(url, headers=callers.acute())
    assert lenient.status_code == 200 and ids(lenient.json()) == {scenario.ids["asthma"]}
    warning = [i for i in outcome_issues(lenient.json()) if i["severity"] == "warning"]
    assert warning and warning[0]["expression"] == ["colour"]
    strict = api.get(url, headers=callers.acute() | STRICT)
    assert strict.status_code == 400 and strict.json()["issue"][0]["expression"] == ["colour"]
    assert api.get(f"/fhir/Condition?patient={scenario.person}&_include=Condition:nope",
                   headers=callers.acute() | STRICT).status_code == 400


@pytest.mark.parametrize("query,parameter", [
    ("date=2024-13-45", "date"), ("date=xx2024", "date"), ("date=ap2024", "date"), ("_count=ten", "_count"),
    ("_count=-1", "_count"), ("_sort=colour", "_sort"), ("code=|", "code"), ("_lastUpdated=yesterday", "_lastUpdated"),
    ("code:text=asthma", "code:text"), ("_summary=true", "_summary"), ("code=", "code"),
])
def test_malformed_values_are_400_naming_the_parameter(api, scenario, callers, query, parameter) -> None:
    response = api.get(f"/fhir/Condition?patient={scenario.person}&{query}", headers=callers.acute())
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"][0] == parameter and parameter.split(":")[0] in issue["diagnostics"]


def test_clinical_searches_name_one_patient(api, scenario, callers) -> None:
    assert api.get("/fhir/Condition?code=195967001", headers=callers.acute()).status_code == 400
    two = api.get(f"/fhir/Condition?patient={scenario.person},other", headers=callers.acute())
    assert two.status_code == 400
    unknown = api.get("/fhir/Condition?patient=nobody-here", headers=callers.acute())
    assert unknown.status_code == 200 and unknown.json()["total"] == 0
    by_source = api.get(f"/fhir/Condition?patient={scenario.acute_patient}", headers=callers.acute()).json()
    assert ids(by_source) == {scenario.ids["asthma"]}  # a source Patient id stands for its person


def test_count_is_capped_at_the_advertised_maximum(api, scenario, callers) -> None:
    response = api.get(f"/fhir/Condition?patient={scenario.person}&_count=100000", headers=callers.acute())
    assert response.status_code == 200


@pytest.mark.parametrize("sort", ["_lastUpdated", "-_lastUpdated", "birthdate", "_id,family"])
def test_patient_search_refuses_an_order_it_cannot_give(api, scenario, callers, sort) -> None:
    refused = api.get(f"/fhir/Patient?family=smith&_sort={sort}", headers=callers.acute())
    assert refused.status_code == 400 and refused.json()["issue"][0]["expression"] == ["_sort"]
    assert refused.json()["issue"][0]["code"] == "invalid"


def _pagewood(record_store) -> list[str]:
    """Twelve persons called Pagewood in a known id order, seven of them strangers to the acute trust (left out of
    its searches), two at either end: the persons the acute trust finds, in id order."""
    visible = []
    for n in range(12):
        person = record_store.person(person_id=f"pagewood-{n:02d}")
        stranger = n in (0, 1, 4, 6, 7, 10, 11)
        record_store.source_patient(person, org=data.OTHER_TRUST_ODS if stranger else data.ACUTE_ODS, system="PAS",
                                    family="Pagewood", given=f"P{n}")
        if not stranger:
            visible.append(person)
    return visible


def _walk(api, url: str, relation: str, headers: dict) -> list[list[str]]:
    pages = [api.get(url, headers=headers).json()]
    while relation in _links(pages[-1]):
        pages.append(api.get(_links(pages[-1])[relation], headers=headers).json())
        assert len(pages) < 20
    return [[r["id"] for r in resources(page)] for page in pages]


@pytest.mark.parametrize("sort", ["_id", "-_id"])
def test_patient_search_pages_both_ways_in_either_order(api, record_store, callers, sort) -> None:
    visible = _pagewood(record_store)
    expected = visible[::-1] if sort.startswith("-") else visible
    url = f"/fhir/Patient?family=pagewood&_count=2&_sort={sort}"
    forwards = _walk(api, url, "next", callers.acute())
    assert [p for page in forwards for p in page] == expected
    assert forwards == [expected[i:i + 2] for i in range(0, len(expected), 2)]  # full pages but the last
    last = api.get(url, headers=callers.acute()).json()
    while "next" in _links(last):
        last = api.get(_links(last)["next"], headers=callers.acute()).json()
    assert "previous" in _links(last)
    backwards = _walk(api, _links(last)["previous"], "previous", callers.acute())
    # Each previous page is the page before, in the search's order; the walk back ends on an empty page, as only
    # strangers lie before the first (deciding them is what a page does not do beyond its own persons).
    assert backwards == [*forwards[-2::-1], []]
    first = api.get(url, headers=callers.acute()).json()
    assert "previous" not in _links(first)


@pytest.mark.parametrize("sort", ["_id", "-_id"])
def test_patient_search_short_pages_page_both_ways(tokens, pg_url, pdp, pdp_token, record_store, callers,
                                                   sort) -> None:
    """A scan limit smaller than the page: pages may be short or empty (strangers examined and skipped: here the
    first and the last), and never repeat or lose anyone, either way."""
    from fastapi.testclient import TestClient

    from services.record_api.app import create_app
    from tests.integration.record_api.conftest import record_settings

    visible = _pagewood(record_store)
    expected = visible[::-1] if sort.startswith("-") else visible
    settings = record_settings(tokens, pg_url, pdp, pdp_token, patient_search_scan_limit=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        url = f"/fhir/Patient?family=pagewood&_count=3&_sort={sort}"
        forwards = _walk(api, url, "next", callers.acute())
        assert [p for page in forwards for p in page] == expected
        last = api.get(url, headers=callers.acute()).json()
        while "next" in _links(last):
            last = api.get(_links(last)["next"], headers=callers.acute()).json()
        assert forwards[0] == forwards[-1] == []
        backwards = _walk(api, _links(last)["previous"], "previous", callers.acute())
        assert [p for page in backwards[::-1] for p in page] == expected


def test_patient_search_pages_over_persons(api, record_store, callers) -> None:
    people = []
    for n in range(5):
        person = record_store.person()
        record_store.source_patient(person, org=data.ACUTE_ODS, system="PAS", family="Pagewood", given=f"P{n}")
        people.append(person)
    first = api.get("/fhir/Patient?family=pagewood&_count=2", headers=callers.acute()).json()
    pages = [first]
    while "next" in _links(pages[-1]):
        pages.append(api.get(_links(pages[-1])["next"], headers=callers.acute()).json())
    seen = [r["id"] for page in pages for r in resources(page)]
    assert sorted(seen) == sorted(people) and len(seen) == 5
    back = api.get(_links(pages[1])["previous"], headers=callers.acute()).json()
    assert ids(back) == ids(first)


def test_exact_on_search_rows_written_before_they_kept_the_text_finds_them_once_reindexed(api, scenario,
                                                                                         record_store,
                                                                                         callers) -> None:
    """String rows written before `:exact` existed have no text as written (code is NULL): `:exact` cannot match
    them (it never matches wrongly), and the operator's reindex (docs/RECORD_API.md) fills them in."""
    from sqlalchemy import update

    from services.ingest.maintenance import reindex
    from shared.schema import SearchParam

    with record_store.sessions.begin() as session:
        session.execute(update(SearchParam).where(SearchParam.resource_type == "Patient",
                                                  SearchParam.text.is_not(None)).values(code=None))
    url = "/fhir/Patient?family:exact=Smith"
    assert ids(api.get(url, headers=callers.acute()).json()) == set()
    assert ids(api.get("/fhir/Patient?family=smith", headers=callers.acute()).json()) == {scenario.person}
    report = reindex(record_store.sessions, resource_type="Patient")
    assert report.resources == 4
    assert ids(api.get(url, headers=callers.acute()).json()) == {scenario.person}
    assert ids(api.get("/fhir/Patient?family:exact=smith", headers=callers.acute()).json()) == set()


def test_a_patient_search_by_nhs_number_reads_the_store_twice(api, scenario, callers) -> None:
    """Candidates come with their source Patients (one query), then the record's summary for the decision: no
    round trip per candidate, and no Organization look-up for a GP reference that names its ODS code."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    url = f"/fhir/Patient?identifier={NHS}|{scenario.nhs_number}"
    assert ids(api.get(url, headers=callers.acute()).json()) == {scenario.person}  # the decision is cached now
    reads: list[str] = []

    def count(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "audit_event" not in statement \
                and ("FROM person" in statement or "FROM resource" in statement):
            reads.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        assert ids(api.get(url, headers=callers.acute()).json()) == {scenario.person}
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert len(reads) == 2, reads


@pytest.mark.parametrize("sort", ["date", "-date", "_lastUpdated", "-_lastUpdated", "_id", "-_id"])
def test_clinical_sorts_page_stably_both_ways(api, scenario, record_store, callers, sort) -> None:
    """Ties on the sort key (the same date) and missing keys (no date) still page without repeats or gaps, and
    each previous page is the page before."""
    from tests.support.record_store import observation

    for value in range(4):
        record_store.clinical(scenario.person, observation("8480-6", "Systolic BP", "2025-03-01", 120 + value),
                              org=data.ACUTE_ODS, system="PAS")
    undated = observation("8480-6", "Systolic BP", "2025-03-01", 119)
    del undated["effectiveDateTime"]
    record_store.clinical(scenario.person, undated, org=data.ACUTE_ODS, system="PAS")
    base = f"/fhir/Observation?patient={scenario.person}&_sort={sort}"
    everything = [r["id"] for r in resources(api.get(base, headers=callers.acute()).json())]
    assert len(everything) == 7
    forwards = _walk(api, f"{base}&_count=2", "next", callers.acute())
    assert [i for page in forwards for i in page] == everything
    last = api.get(f"{base}&_count=2", headers=callers.acute()).json()
    while "next" in _links(last):
        last = api.get(_links(last)["next"], headers=callers.acute()).json()
    assert _walk(api, _links(last)["previous"], "previous", callers.acute()) == forwards[-2::-1]
