"""Token search on `code` elements (status, intent, AllergyIntolerance category): indexed without a system, so
`system|code` matches when the system is the one the element's required binding implies, and only then."""

from __future__ import annotations

import pytest

from shared.search import IMPLIED_SYSTEMS, SEARCH_PARAMS
from tests.integration.record_api.helpers import ids
from tests.support import data

pytestmark = pytest.mark.integration
STRICT = {"Prefer": "handling=strict"}
# Two valid codes of each element's code system: the first is searched for, the second must not be found by it.
CODES = {
    ("Encounter", "status"): ("finished", "planned"),
    ("Observation", "status"): ("final", "preliminary"),
    ("AllergyIntolerance", "category"): ("food", "medication"),
    ("MedicationStatement", "status"): ("active", "completed"),
    ("MedicationRequest", "status"): ("active", "stopped"),
    ("MedicationRequest", "intent"): ("order", "plan"),
    ("Immunization", "status"): ("completed", "not-done"),
    ("Procedure", "status"): ("completed", "in-progress"),
    ("CarePlan", "status"): ("active", "draft"),
    ("CarePlan", "intent"): ("plan", "proposal"),
    ("Flag", "status"): ("active", "inactive"),
    ("DocumentReference", "status"): ("current", "superseded"),
    ("EpisodeOfCare", "status"): ("active", "finished"),
    ("ServiceRequest", "status"): ("active", "completed"),
    ("ServiceRequest", "intent"): ("order", "plan"),
    ("DiagnosticReport", "status"): ("final", "preliminary"),
    ("Appointment", "status"): ("booked", "cancelled"),
}


def test_every_served_code_element_has_codes_here() -> None:
    served = {k for k in IMPLIED_SYSTEMS if k[0] not in ("Patient", "Consent")}  # Patient: test_search.py
    assert served == set(CODES)


def _body(resource_type: str, param: str, code: str) -> dict:
    definition = next(d for d in SEARCH_PARAMS[resource_type] if d.name == param)
    path = definition.paths[0]
    return {"resourceType": resource_type, path: [code] if path == "category" else code}


@pytest.mark.parametrize("resource_type,param", sorted(CODES))
def test_a_code_element_matches_with_its_implied_system_and_no_other(api, scenario, record_store, callers,
                                                                     resource_type, param) -> None:
    wanted, other = CODES[(resource_type, param)]
    system = IMPLIED_SYSTEMS[(resource_type, param)]
    found, not_found = (record_store.clinical(scenario.person, _body(resource_type, param, code),
                                              org=data.ACUTE_ODS, system="PAS") for code in (wanted, other))
    base = f"/fhir/{resource_type}?patient={scenario.person}&{param}="

    def search(value: str) -> set[str]:
        response = api.get(base + value, headers=callers.acute() | STRICT)
        assert response.status_code == 200, response.text
        return ids(response.json()) & {found, not_found}

    assert search(f"{system}|{wanted}") == {found}
    assert search(wanted) == {found} and search(f"|{wanted}") == {found}
    assert search(f"{system}|") == {found, not_found}  # any code of the implied system
    assert search(f"{system}|{wanted},{system}|{other}") == {found, not_found}
    assert search(f"http://snomed.info/sct|{wanted}") == set()  # another system: the element is not in it
    assert search("http://snomed.info/sct|") == set()
    assert search(f"{system}-other|{wanted}") == set()
