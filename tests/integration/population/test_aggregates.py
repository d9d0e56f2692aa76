"""Population aggregates against real PostgreSQL and the real consent service: the definitions of each measure,
every dimension, people refused secondary use left out, small numbers and their partners suppressed, two-way
tables with margins, failing closed, and who may ask."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import select

from shared.fhir import ETHNIC_CATEGORY_ENGLAND, ETHNIC_CATEGORY_EXT
from shared.schema import AuditEventRow
from tests.integration.population.conftest import Consents, bearer, recipient_token
from tests.support import data
from tests.support.record_store import RecordStore, encounter, episode_of_care

pytestmark = pytest.mark.integration
PEOPLE = data.synthetic_nhs_numbers(20, start=999_300_000)
ON = "date=2026-06-01"


def _person(store: RecordStore, nhs: str, *, born: str, sex: str, ethnic: str | None, postcode: str,
            labels: tuple[str, ...] = ()) -> str:
    person = store.person(nhs)
    patient = store.source_patient(person, org=data.GP_ODS, system="EMIS", nhs_number=nhs, birth_date=born,
                                   gender=sex, postcode=postcode, gp_ods=data.GP_ODS, labels=labels,
                                   local_id=("https://emis.example/Id/patient", f"E-{nhs}"))
    if ethnic:
        store.update("Patient", patient, {"extension": [{"url": ETHNIC_CATEGORY_EXT, "valueCodeableConcept": {
            "coding": [{"system": ETHNIC_CATEGORY_ENGLAND, "code": ethnic}]}}]})
    return person


def _request(status: str) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": status, "intent": "order", "authoredOn": "2026-03-01"}


def _episode(status: str) -> dict[str, Any]:
    return episode_of_care() | {"status": status}


@pytest.fixture
def people(record_store: RecordStore, consents: Consents) -> dict[str, Any]:
    """13 people who count, two who do not (opted out, objected)."""
    acute, social, community = (dict(org=data.ACUTE_ODS, system="PAS"),
                                dict(org=data.SOCIAL_CARE_ODS, system="Mosaic"),
                                dict(org=data.COMMUNITY_ODS, system="SystmOne"))
    older = [_person(record_store, PEOPLE[i], born="1950-03-01", sex="female", ethnic="A", postcode="LS1 2AB")
             for i in range(4)]
    for person in older:  # each: an open social-care package and a planned visit (waiting)
        record_store.clinical(person, _episode("active"), labels=("SOC",), **social)
        record_store.clinical(person, encounter("2026-07-01T10:00:00Z", status="planned"), **acute)
    younger = [_person(record_store, PEOPLE[4 + i], born="1990-01-15", sex="male", ethnic="H", postcode="LS6 3CD")
               for i in range(7)]
    for person in younger:
        record_store.clinical(person, encounter("2025-05-01T10:00:00Z"), **acute)
    busy = younger[0]
    record_store.clinical(busy, _request("active"), **acute)  # waiting
    record_store.clinical(busy, _request("completed"), **acute)  # not waiting
    record_store.clinical(busy, encounter("2025-06-01T10:00:00Z"), labels=("PSY",), **acute)  # sensitive: uncounted
    record_store.clinical(busy, encounter("2025-06-02T10:00:00Z", status="cancelled"), **acute)
    record_store.clinical(busy, _episode("finished"), labels=("SOC",), **social)  # closed package
    record_store.clinical(busy, _episode("active"), **community)  # district nursing: not social care
    record_store.clinical(busy, _episode("waitlist"), **community)  # waiting
    child = _person(record_store, PEOPLE[11], born="2020-07-01", sex="female", ethnic=None, postcode="ZZ9 9ZZ")
    restricted = _person(record_store, PEOPLE[12], born="1990-01-15", sex="male", ethnic=None, postcode="LS1 2AB",
                         labels=("R",))
    record_store.clinical(restricted, encounter("2025-05-02T10:00:00Z"), **acute)
    opted_out = _person(record_store, PEOPLE[13], born="2020-07-01", sex="female", ethnic="A", postcode="LS1 2AB")
    record_store.clinical(opted_out, encounter("2025-05-03T10:00:00Z"), **acute)
    consents.preferences(PEOPLE[13], opt_out=True)
    objector = _person(record_store, PEOPLE[14], born="1950-03-01", sex="female", ethnic="A", postcode="LS1 2AB")
    record_store.clinical(objector, _episode("active"), labels=("SOC",), **social)
    consents.preferences(PEOPLE[14], direct_care="object")
    return {"child": child, "restricted": restricted}


def _get(api: Any, tokens: Any, query: str) -> dict[str, Any]:
    response = api.get(f"/population/aggregates?{query}&{ON}", headers=bearer(recipient_token(tokens)))
    assert response.status_code == 200, response.text
    return response.json()


def _cells(body: dict[str, Any], measure: str) -> dict[Any, int | None]:
    dims = body["dimensions"]
    return {tuple(c[d] for d in dims) if len(dims) > 1 else c[dims[0]]: c["count"]
            for c in body["measures"][measure]["cells"]}


def test_counts_by_age_band_leave_out_refused_people_and_suppress_small_numbers(api, people, tokens) -> None:
    body = _get(api, tokens, "dimension=age_band")
    assert body["threshold"] == 3 and body["purpose"] == "HOPERAT" and body["reference_date"] == "2026-06-01"
    persons = _cells(body, "persons")
    # 5-17 holds one person (the opted-out child is not counted): hidden; 75-84 (4) is hidden with it, so the
    # published total cannot give the 1 away.
    assert persons["5-17"] is None and persons["75-84"] is None
    assert persons["35-44"] == 8 and persons["0-4"] == 0
    assert body["measures"]["persons"]["total"] == 13
    assert _cells(body, "encounters")["35-44"] == 8 and body["measures"]["encounters"]["total"] == 8
    # Where the persons are hidden, so are their events (75-84's four packages, and 5-17's none).
    social = _cells(body, "open_social_care_episodes")
    assert social["75-84"] is None and social["5-17"] is None
    assert body["measures"]["open_social_care_episodes"]["total"] == 4
    waiting = _cells(body, "waiting_items")
    assert waiting["35-44"] is None and waiting["75-84"] is None  # 2 and its partner
    assert body["measures"]["waiting_items"]["total"] == 6  # 4 planned visits, 1 referral, 1 waitlist episode


def test_every_dimension_counts_every_counted_person_once(api, people, tokens) -> None:
    expected = {
        "sex": {"female": 5, "male": 8, "other": 0, "unknown": 0},
        "deprivation_decile": {"1": None, "10": 7, "unknown": None},  # LS1 2 is decile 1; LS6 3 decile 10
        "ethnic_category": {"A": None, "H": 7, "unknown": None},
        "postcode_district": {"LS1": 4, "LS6": 7, "ZZ9": None, "unknown": None},  # S-flag: no place
        "lsoa": {"E01007468": None, "E01002013": 7, "unknown": None},  # 2 unknown, and its partner
        "gp_practice": {data.GP_ODS: None, "unknown": None},  # a line of two: one small cell hides both
    }
    for dimension, wanted in expected.items():
        body = _get(api, tokens, f"dimension={dimension}")
        persons = _cells(body, "persons")
        assert {k: persons[k] for k in wanted} == wanted, dimension
        assert all(v == 0 for k, v in persons.items() if k not in wanted), dimension
        assert body["measures"]["persons"]["total"] == 13
    values = _get(api, tokens, "dimension=ethnic_category")["values"]["ethnic_category"]
    labels = {v["code"]: v["label"] for v in values}
    assert labels["A"] == "A White: British" and labels["unknown"] == "Not stated/unknown"


def test_two_way_tables_keep_every_line_safe_and_carry_suppressed_margins(api, people, tokens) -> None:
    body = _get(api, tokens, "dimension=age_band,sex")
    persons = _cells(body, "persons")
    assert persons[("35-44", "male")] == 8 and persons[("5-17", "female")] is None
    measure = body["measures"]["persons"]
    margins = {d: {m["value"]: m["count"] for m in measure["margins"][d]} for d in ("age_band", "sex")}
    # Margins are cells of the same table: every line, a margin line included, hides none or at least two.
    lines: dict[tuple[int, str], list[int | None]] = defaultdict(list)
    for (age, sex), count in persons.items():
        lines[(0, sex)].append(count)
        lines[(1, age)].append(count)
    for age, count in margins["age_band"].items():
        lines[(1, age)].append(count)
        lines[(0, "all")].append(count)
    for sex, count in margins["sex"].items():
        lines[(0, sex)].append(count)
        lines[(1, "all")].append(count)
    lines[(0, "all")].append(measure["total"])
    lines[(1, "all")].append(measure["total"])
    assert all(sum(c is None for c in line) != 1 for line in lines.values())  # secondary suppression held
    assert margins["sex"] == {"female": 5, "male": 8, "other": 0, "unknown": 0}
    assert margins["age_band"]["35-44"] == 8 and margins["age_band"]["5-17"] is None


def test_aggregates_fail_closed_without_the_consent_service(make_api, people, tokens) -> None:
    from tools.peers.ports import free_port

    api = make_api(consent_url=f"http://127.0.0.1:{free_port()}")
    response = api.get(f"/population/aggregates?dimension=sex&{ON}", headers=bearer(recipient_token(tokens)))
    assert response.status_code == 503 and "consent service is unreachable" in response.text
    assert "13" not in response.text
    with api.app.state.population.sessions() as session:
        row = session.scalars(select(AuditEventRow).where(AuditEventRow.action == "export")).one()
    assert row.outcome == "error" and row.person_id is None


def test_who_may_ask_and_what_is_audited(api, people, tokens) -> None:
    assert api.get("/population/aggregates", headers=bearer(tokens.clinician())).status_code == 403
    narrow = recipient_token(tokens, scope="system/Patient.rs")  # cannot read what is counted
    assert api.get("/population/aggregates", headers=bearer(narrow)).status_code == 403
    for query in ("dimension=shoe_size", "dimension=sex,sex", "dimension=sex,age_band,lsoa", "_purpose=TREAT",
                  "date=June", "nhs_number=9990000018"):
        assert api.get(f"/population/aggregates?{query}", headers=bearer(recipient_token(tokens))).status_code == 400
    _get(api, tokens, "dimension=sex&_purpose=HRESCH")
    with api.app.state.population.sessions() as session:
        rows = list(session.scalars(select(AuditEventRow).where(AuditEventRow.action == "export")
                                    .order_by(AuditEventRow.id)))
    assert [(r.outcome, r.actor_kind) for r in rows] == [("denied", "clinician"), ("denied", "system"),
                                                         ("success", "system")]
    assert rows[-1].purpose == "HRESCH" and "by sex" in rows[-1].body["outcomeDesc"]
    assert all(r.person_id is None and r.nhs_number is None for r in rows)
