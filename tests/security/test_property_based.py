"""Property-based fuzzing (hypothesis) of the inputs people type or systems send: search parameters of any name
and value, citizens' preference documents of any shape, and decision requests of any shape. Whatever arrives:
never a 5xx, always an OperationOutcome or a Bundle, and a refused change leaves the store as it was."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.search import SEARCH_PARAMS
from tests.security.conftest import Platform, bearer
from tests.support import data

pytestmark = pytest.mark.integration

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
                    max_leaves=25)
PATIENT_PARAMS = [p.name for p in SEARCH_PARAMS["Patient"]] + ["_id", "_count", "_sort", "_summary", "_elements"]
OBSERVATION_PARAMS = [p.name for p in SEARCH_PARAMS["Observation"]] + ["_count", "_sort", "_include", "_revinclude"]
MODIFIERS = st.sampled_from(["", ":exact", ":contains", ":missing", ":not", ":text", ":identifier", ":above", ":x"])


@settings(max_examples=60)
@given(params=st.lists(st.tuples(st.sampled_from(PATIENT_PARAMS), MODIFIERS, TEXT), min_size=1, max_size=4))
def test_any_patient_search_is_answered_without_a_5xx(platform: Platform, params: list[tuple[str, str, str]]) -> None:
    response = platform.record.get("/fhir/Patient", params=[(n + m, v) for n, m, v in params],
                                   headers=bearer(platform.tokens.clinician()))
    assert response.status_code < 500, response.text[:300]
    assert response.json()["resourceType"] in ("Bundle", "OperationOutcome")


@settings(max_examples=60)
@given(params=st.lists(st.tuples(st.sampled_from(OBSERVATION_PARAMS), MODIFIERS, TEXT), min_size=1, max_size=4))
def test_any_clinical_search_is_answered_without_a_5xx(platform: Platform, params: list[tuple[str, str, str]]) -> None:
    query = [("patient", platform.scenario.person)] + [(n + m, v) for n, m, v in params]
    response = platform.record.get("/fhir/Observation", params=query, headers=bearer(platform.tokens.clinician()))
    assert response.status_code < 500, response.text[:300]
    assert response.json()["resourceType"] in ("Bundle", "OperationOutcome")


DOCUMENT = st.fixed_dictionaries({}, optional={
    "direct_care": st.sampled_from(["share", "object", "SHARE", "", None, 1]) | TEXT,
    "withheld_categories": st.lists(st.sampled_from(["HIV", "PSY", "R", "V", "psy", "SOC"]) | TEXT, max_size=4) | JSON,
    "denied_organisations": st.lists(st.sampled_from(["RH8", "Y12345", "rh8", "R"]) | TEXT, max_size=4) | JSON,
    "national_data_opt_out": st.booleans() | JSON,
    "nhs_number": st.just(data.NHS_NUMBERS[1]),
})


@settings(max_examples=60)
@given(document=DOCUMENT | JSON)
def test_any_preferences_document_is_stored_whole_or_refused_leaving_nothing(platform: Platform,
                                                                            document: Any) -> None:
    citizen = bearer(platform.tokens.citizen(data.NHS_NUMBERS[5]))
    before_body = platform.consent.get("/consent/me", headers=citizen)
    before = platform.footprint()
    response = platform.consent.put("/consent/me", json=document,
                                     headers=citizen | {"If-Match": before_body.headers["etag"]})
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        assert response.json()["resourceType"] == "OperationOutcome"
        assert platform.footprint() == before
        assert platform.consent.get("/consent/me", headers=citizen).json() == before_body.json()
    else:
        assert set(response.json()) == {"direct_care", "withheld_categories", "denied_organisations",
                                        "national_data_opt_out"}


@settings(max_examples=60)
@given(body=JSON | st.fixed_dictionaries({"patient": JSON, "actor": JSON, "purpose": JSON, "labels": JSON}))
def test_any_decision_request_is_answered_without_a_5xx(platform: Platform, body: Any) -> None:
    response = platform.consent.post("/consent/decide", json=body, headers=bearer(platform.tokens.system()))
    assert response.status_code < 500, response.text[:300]
    if response.status_code != 200:
        assert response.json()["resourceType"] == "OperationOutcome"
