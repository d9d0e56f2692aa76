"""The CapabilityStatement tells the truth: every search parameter it advertises works (strict mode), nothing
it does not advertise is accepted in strict mode, and it is served without a token."""

from __future__ import annotations

import pytest

from tests.integration.record_api.helpers import ids

pytestmark = pytest.mark.integration
STRICT = {"Prefer": "handling=strict"}
VALUES = {"token": "http://snomed.info/sct|195967001", "string": "smith", "date": "ge2020-01-01"}


def _value(param: dict, scenario) -> str:
    if param["name"] in ("patient", "subject"):
        return f"Patient/{scenario.person}"
    if param["type"] == "reference":
        return "Encounter/some-id"
    return VALUES[param["type"]]


def test_metadata_needs_no_token_and_describes_the_server(api) -> None:
    response = api.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert "Consent" not in types  # the consent service serves Consent
    assert {i["code"] for i in types["Patient"]["interaction"]} == {"read", "vread", "history-instance",
                                                                    "history-type", "search-type"}
    assert types["Patient"]["operation"][0]["name"] == "everything"
    assert {i["code"] for i in types["Organization"]["interaction"]} == {"read", "vread", "history-instance"}
    assert {p["name"] for p in types["AuditEvent"]["searchParam"]} >= {"patient", "agent", "organization", "date"}
    assert "Observation:patient" in types["Observation"]["searchInclude"]
    assert "Provenance:target" in types["Observation"]["searchRevInclude"]
    sorts = {t: r["extension"][0]["valueString"] for t, r in types.items() if r.get("extension")}
    assert "_sort (_id, '-' for descending)" in sorts["Patient"]
    assert "_sort (_lastUpdated, _id, date, '-' for descending)" in sorts["Observation"]


def test_every_advertised_search_parameter_works_in_strict_mode(api, scenario, callers) -> None:
    statement = api.get("/fhir/metadata").json()
    checked = 0
    for resource in statement["rest"][0]["resource"]:
        if "search-type" not in {i["code"] for i in resource["interaction"]} or resource["type"] == "AuditEvent":
            continue
        rtype = resource["type"]
        base = "" if rtype == "Patient" else f"patient={scenario.person}&"
        for param in resource["searchParam"]:
            url = f"/fhir/{rtype}?{base}{param['name']}={_value(param, scenario)}"
            response = api.get(url, headers=callers.acute() | STRICT)
            assert response.status_code == 200, (url, response.text)
            checked += 1
        for include in resource.get("searchInclude", []) + resource.get("searchRevInclude", []):
            kind = "_include" if include in resource.get("searchInclude", []) else "_revinclude"
            url = f"/fhir/{rtype}?{base}{kind}={include}" if rtype != "Patient" else \
                f"/fhir/Patient?_id={scenario.person}&{kind}={include}"
            assert api.get(url, headers=callers.acute() | STRICT).status_code == 200, url
    assert checked > 100
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    for param in audit["searchParam"]:
        value = {"reference": f"Patient/{scenario.person}", "token": "x", "date": "ge2020"}[param["type"]]
        if param["name"] == "outcome":
            value = "0"
        response = api.get(f"/fhir/AuditEvent?{param['name']}={value}", headers=callers.privacy_officer() | STRICT)
        assert response.status_code == 200, (param, response.text)


def test_nothing_unadvertised_is_accepted_in_strict_mode(api, scenario, callers) -> None:
    statement = api.get("/fhir/metadata").json()
    every_name = {p["name"] for r in statement["rest"][0]["resource"] for p in r.get("searchParam", [])}
    for resource in statement["rest"][0]["resource"]:
        if "search-type" not in {i["code"] for i in resource["interaction"]} or resource["type"] == "AuditEvent":
            continue
        rtype = resource["type"]
        advertised = {p["name"] for p in resource["searchParam"]}
        base = "" if rtype == "Patient" else f"patient={scenario.person}&"
        for name in [*sorted(every_name - advertised)[:6], "not-a-parameter"]:
            response = api.get(f"/fhir/{rtype}?{base}{name}=x", headers=callers.acute() | STRICT)
            assert response.status_code == 400, (rtype, name)
            assert response.json()["issue"][0]["expression"] == [name]
    found = api.get(f"/fhir/Patient?family=smith&_id={scenario.person}", headers=callers.acute() | STRICT)
    assert ids(found.json()) == {scenario.person}
