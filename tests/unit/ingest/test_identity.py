"""The matcher's near misses: twins, name changes, transposed dates, typos, conflicting and unverified NHS
numbers. Each decision is explainable field by field."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.identity import (
    INDEXED_PARAMS,
    Demographics,
    Indexed,
    best_possible,
    decide,
    demographics,
    indexed,
    nhs_identity,
    score,
)
from shared.search import extract
from tests.fixtures.ingest import messages
from tests.support import data

LINK, REVIEW = 13.0, 7.0
BASE = dict(family="okafor", given="chidi", birth_date=None, sex="male", postcode="LS62QT")


def _person(**changes) -> Demographics:
    from datetime import date

    values = BASE | {"birth_date": date(1961, 7, 4)} | changes
    return Demographics(**values)


def _decision(a: Demographics, b: Demographics) -> str:
    return decide({"person-b": score(a, b)}, link_threshold=LINK, review_threshold=REVIEW).action


@pytest.mark.parametrize("name, incoming, expected", [
    ("identical demographics, no NHS number", _person(), "link"),
    ("a typo in the given name", _person(given="chdi"), "link"),
    ("twin: other given name, same sex", _person(given="emeka"), "review"),
    ("twin: other given name and sex", _person(given="adaeze", sex="female"), "new"),
    ("day and month transposed", _person(birth_date=__import__("datetime").date(1961, 4, 7)), "review"),
    ("a name change (new family name)", _person(family="smith"), "review"),
    ("a short form of the given name", _person(given="chi"), "review"),
    ("moved house within the district", _person(postcode="LS61AA"), "link"),
    ("different person, same surname", _person(given="john", birth_date=__import__("datetime").date(1990, 1, 1)),
     "new"),
])
def test_near_misses(name: str, incoming: Demographics, expected: str) -> None:
    assert _decision(incoming, _person()) == expected, name


def test_conflicting_nhs_numbers_never_link_however_alike() -> None:
    a = _person(nhs_number=data.NHS_NUMBERS[0])
    b = _person(nhs_number=data.NHS_NUMBERS[1])
    result = score(a, b)
    assert result.conflict == "different NHS numbers"
    decision = decide({"p": result}, link_threshold=LINK, review_threshold=REVIEW)
    assert decision.action == "new" and decision.explanation["conflicting_candidates"] == ["p"]


def test_an_unverified_nhs_number_is_strong_evidence_but_not_enough_alone() -> None:
    from datetime import date

    same_number = _person(nhs_number=data.NHS_NUMBERS[0], family="smith", given="john", birth_date=date(1990, 1, 1),
                          sex="female", postcode=None)
    assert _decision(same_number, _person(nhs_number=data.NHS_NUMBERS[0])) == "new"
    name_change = _person(nhs_number=data.NHS_NUMBERS[0], family="smith")
    assert _decision(name_change, _person(nhs_number=data.NHS_NUMBERS[0])) == "link"


def test_two_strong_candidates_go_to_review_not_to_a_link() -> None:
    decision = decide({"a": score(_person(), _person()), "b": score(_person(), _person())},
                      link_threshold=LINK, review_threshold=REVIEW)
    assert decision.action == "review" and decision.explanation["ambiguous_with"] == ["b"]


def test_the_explanation_gives_each_field_its_outcome_and_weight() -> None:
    from datetime import date

    explanation = score(_person(birth_date=date(1961, 4, 7)), _person()).explanation()
    assert explanation["fields"]["birth_date"] == {"outcome": "day and month transposed", "weight": 1.0}
    assert explanation["fields"]["family"] == {"outcome": "agree", "weight": 4.0}
    assert explanation["score"] == sum(f["weight"] for f in explanation["fields"].values())


def test_demographics_are_read_from_a_uk_core_patient() -> None:
    demo = demographics(messages.patient(family="Ó'Brien-Smith", given="Siân", postcode="ls6 2qt"))
    assert demo.family == "obrien smith" and demo.given == "sian" and demo.postcode == "LS62QT"
    assert demo.nhs_number == data.NHS_NUMBERS[0] and demo.verified


@pytest.mark.parametrize("system, code, verified", [
    ("https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland", "01", True),
    ("https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland", "02", False),
    ("https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus", "number-present-and-verified", True),
    ("https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus", "01", True),
    ("https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1", "01", True),
])
def test_verification_status_is_read_from_current_and_retired_code_systems(system: str, code: str,
                                                                             verified: bool) -> None:
    patient = messages.patient()
    patient["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0] |= {"system": system, "code": code}
    assert nhs_identity(patient) == (data.NHS_NUMBERS[0], verified)


def test_an_invalid_nhs_number_is_no_nhs_number() -> None:
    assert nhs_identity(messages.patient(nhs=data.INVALID_NHS_NUMBER)) == (None, False)


@pytest.mark.parametrize("pseudo", ["ZZ99 3VZ", "zz99 3wz", "ZZ993CZ", "ZZ99 6CZ"])
def test_a_pseudo_postcode_is_no_postcode_for_matching(pseudo: str) -> None:
    # No fixed abode, not known, England unspecified, a country abroad: thousands share each.
    demo = demographics(messages.patient(postcode=pseudo))
    assert demo.postcode is None
    result = score(demo, demographics(messages.patient(postcode=pseudo)))
    assert result.fields["postcode"] == {"outcome": "missing", "weight": 0.0}


# ---------------------------------------------------------------------- the bound that sifts a large block

_FAMILIES = st.sampled_from(["Okafor", "OKAFOR", "Okafour", "O'Kafor", "Smith", "Smyth", "Ó'Brien-Smith", "Siân"])
_GIVENS = st.sampled_from(["Chidi", "chidi", "Chi", "Chdi", "Emeka", "C", "Siân"])
_POSTCODES = st.sampled_from(["LS6 2QT", "ls62qt", "LS6  1AA", "LS6\t2QT", "ZZ99 3VZ", "M1 1AE", "LS62QT "])
_DATES = st.sampled_from(["1961-07-04", "1961-04-07", "1961-07-05", "1962-07-04", "1961-07", "1961", "bad"])
_NUMBERS = st.sampled_from([*data.NHS_NUMBERS[:2], "999 000 0018", data.INVALID_NHS_NUMBER])


def _text(pool: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(pool, st.text(max_size=12), st.text(min_size=250, max_size=300))


@st.composite
def _patients(draw: st.DrawFn) -> dict:
    names = draw(st.lists(st.fixed_dictionaries(
        {"family": _text(_FAMILIES), "given": st.lists(_text(_GIVENS), max_size=2)},
        optional={"use": st.sampled_from(["official", "usual", "old", "maiden"])}), max_size=3))
    patient = {"resourceType": "Patient", "name": names,
               "address": draw(st.lists(st.fixed_dictionaries({"postalCode": _text(_POSTCODES)}), max_size=2)),
               "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": number}
                              for number in draw(st.lists(_NUMBERS, max_size=2))]}
    for key, value in (("birthDate", draw(st.none() | _DATES)),
                       ("gender", draw(st.none() | st.sampled_from(["male", "female", "unknown"])))):
        if value is not None:
            patient[key] = value
    return patient


def _indexed(patient: dict) -> Indexed:
    rows = [("id", r.param, r.system, r.code, r.text, r.date_low) for r in extract(patient)
            if r.param in INDEXED_PARAMS]
    return indexed(rows).get("id", Indexed())


@settings(max_examples=600, deadline=None)
@given(ours=_patients(), theirs=_patients())
def test_no_patient_scores_above_the_bound_its_search_rows_give(ours: dict, theirs: dict) -> None:
    # The sift of a large birth-date block drops a candidate only when this bound is below the threshold, so it
    # must never be below the score the candidate's Patient itself would get.
    mine = demographics(ours)
    assert best_possible(mine, _indexed(theirs)) >= score(mine, demographics(theirs)).total


def test_the_bound_is_the_score_for_a_patient_with_one_of_each_and_low_for_a_stranger() -> None:
    chidi = messages.patient(nhs=None)
    assert best_possible(demographics(chidi), _indexed(chidi)) == score(demographics(chidi), demographics(chidi)).total
    stranger = messages.patient(nhs=None, family="Wojcik", given="Ewa", gender="female", postcode="M1 1AE")
    # Born the same day and nothing else alike: below the review threshold, so the sift drops it unread.
    assert best_possible(demographics(chidi), _indexed(stranger)) == 4.0 < REVIEW


@pytest.mark.parametrize("former", [{"use": "old"}, {"period": {"start": "2001-01-01", "end": "2019-06-30"}}])
def test_a_former_address_listed_first_is_not_the_postcode_compared(former: dict) -> None:
    patient = messages.patient(postcode="LS6 2QT")
    patient["address"].insert(0, {"postalCode": "M1 1AE"} | former)
    assert demographics(patient).postcode == "LS62QT"
    patient["address"] = patient["address"][:1]  # only the former one: no postcode to compare
    assert demographics(patient).postcode is None


def test_an_address_ending_in_the_future_is_current() -> None:
    patient = messages.patient(postcode="LS6 2QT")
    patient["address"][0]["period"] = {"start": "2020-01-01", "end": "2999-12-31"}
    assert demographics(patient).postcode == "LS62QT"
