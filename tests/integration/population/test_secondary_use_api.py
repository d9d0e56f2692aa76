"""The consent service's bulk secondary-use answer (`GET /consent/secondary-use/excluded`), against real
PostgreSQL: the same rules engine as the decision API decides each person, pages walk everyone with consents,
and only system callers allowed to read Consent may ask."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.schema import AuditEventRow
from tests.integration.consent.conftest import bearer, decide_body
from tests.integration.population.conftest import Consents, ServedApp
from tests.support import data

pytestmark = pytest.mark.integration
N = data.NHS_NUMBERS
PATH = "/consent/secondary-use/excluded"


@pytest.fixture
def consent_client(consent: ServedApp) -> Iterator[httpx.Client]:
    """The consent service over real HTTP."""
    with httpx.Client(base_url=consent.url, timeout=30) as client:
        yield client


@pytest.fixture
def db(consent: ServedApp) -> Iterator[Session]:
    with consent.app.state.runtime.sessions() as session:
        yield session


@pytest.fixture
def recorded(consents: Consents) -> Consents:
    people = consents
    people.preferences(N[0], opt_out=True)
    people.preferences(N[1], direct_care="object")
    people.gp_dissent(N[2])
    people.preferences(N[3], denied=("QWO",))
    people.preferences(N[4], withheld=("PSY", "SOC"))
    people.preferences(N[5])  # shares, nothing restricted
    people.preferences(N[6], direct_care="object")
    people.preferences(N[6], direct_care="share")  # withdrew the objection: used again
    return people


def _get(client: httpx.Client, tokens: Any, query: str = "") -> Any:
    return client.get(f"{PATH}?{query}", headers=bearer(tokens.system()))


def test_each_person_is_decided_by_the_rules_engine(consent_client, recorded, tokens) -> None:
    body = _get(consent_client, tokens, "purpose=HOPERAT&organisation=QWO").json()
    assert {e["nhs_number"]: e["rule"] for e in body["excluded"]} == {
        N[0]: "national-data-opt-out", N[1]: "objection-secondary-use", N[2]: "objection-secondary-use",
        N[3]: "denied-organisation"}
    assert body["withheld"] == [{"nhs_number": N[4], "labels": ["PSY", "SOC"]}]
    assert body["next_after"] is None
    # The decision API says the same for each person (one rules engine, not a copy of it).
    for entry in body["excluded"]:
        decision = consent_client.post("/consent/decide", headers=bearer(tokens.system()), json=decide_body(
            entry["nhs_number"], ods="QWO", purpose="HOPERAT")).json()
        assert (decision["decision"], decision["rule"]) == ("deny", entry["rule"])


def test_a_denied_organisation_only_keeps_the_person_from_that_organisation(consent_client, recorded,
                                                                           tokens) -> None:
    other = _get(consent_client, tokens, "purpose=HRESCH&organisation=X26").json()
    assert N[3] not in {e["nhs_number"] for e in other["excluded"]}
    assert {e["nhs_number"] for e in other["excluded"]} == {N[0], N[1], N[2]}


def test_pages_walk_everyone_with_consents_exactly_once(consent_client, recorded, tokens) -> None:
    seen: list[str] = []
    after, pages = "", 0
    while True:
        body = _get(consent_client, tokens, f"_count=2&organisation=QWO{'&after=' + after if after else ''}").json()
        seen += [e["nhs_number"] for e in body["excluded"]]
        pages += 1
        after = body["next_after"]
        if not after:
            break
    assert pages == 4  # seven people with consents, two per page
    assert sorted(seen) == [N[0], N[1], N[2], N[3]]


def test_only_system_callers_allowed_to_read_consent_may_ask(consent_client, recorded, tokens) -> None:
    for token in (tokens.clinician(scope="user/*.read"), tokens.citizen(N[0]), tokens.feed()):
        response = consent_client.get(PATH, headers=bearer(token))
        assert response.status_code == 403, token
        assert N[0] not in response.text
    assert consent_client.get(PATH).status_code == 401


def test_bad_parameters_are_refused(consent_client, tokens) -> None:
    for query in ("purpose=TREAT", "purpose=ETREAT", "organisation=qwo", "after=123", "_count=0",
                  "_count=10001", "nhs_number=9990000018"):
        assert _get(consent_client, tokens, query).status_code == 400, query


def test_each_page_is_audited_without_naming_anyone(consent_client, recorded, tokens, db) -> None:
    _get(consent_client, tokens, "organisation=QWO")
    rows = list(db.scalars(select(AuditEventRow).where(AuditEventRow.service == "consent",
                                                       AuditEventRow.action == "decide")))
    assert len(rows) == 1
    assert rows[0].person_id is None and rows[0].nhs_number is None and rows[0].purpose == "HOPERAT"
    assert "4 refused" in rows[0].body["outcomeDesc"]
