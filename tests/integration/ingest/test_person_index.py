"""The person index on PostgreSQL across feeds: deterministic links on verified NHS numbers, near misses that
must not link, review and its resolution moving a record's resources."""

import pytest

from shared.schema import MatchReview, Person, PersonLink
from tests.fixtures.ingest import messages
from tests.support import data

pytestmark = pytest.mark.integration


def _person_of(ingest, source_key_part: str) -> str:
    return next(r.person_id for r in ingest.rows("Patient") if source_key_part in r.source_key)


def test_a_verified_nhs_number_links_records_from_different_feeds_to_one_person(ingest) -> None:
    ingest.post_fhir(messages.bundle([messages.patient(family="Orange", given="Blossom", birth="1980-01-01")]))
    ingest.post_hl7(messages.adt("A01"))  # same verified NHS number, PAS spells the name in capitals
    event = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"],
                           person={"local_id": "MOS-1", "nhs_number": data.NHS_NUMBERS[0],
                                   "nhs_number_verified": True, "family_name": "Smith"})  # a name change too
    ingest.client.post("/ingest/socialcare", json=event, headers=ingest.feed(data.SOCIAL_CARE_ODS))
    persons = {r.person_id for r in ingest.rows("Patient")}
    assert len(ingest.rows("Patient")) == 3 and len(persons) == 1
    methods = sorted(link.method for link in [ingest.get(PersonLink, PersonLink.source_patient_id == r.id)
                                              for r in ingest.rows("Patient")])
    assert methods == ["new-person", "nhs-number", "nhs-number"]
    (encounter,) = ingest.rows("Encounter")
    assert encounter.person_id in persons


def test_twins_are_never_linked_automatically(ingest) -> None:
    ingest.post_hl7(messages.adt("A28", nhs=None, mrn="T1", given="Amara", control="C1"))
    ingest.post_hl7(messages.adt("A28", nhs=None, mrn="T2", given="Ada", control="C2"))
    assert _person_of(ingest, "T1") != _person_of(ingest, "T2")
    review = ingest.get(MatchReview, MatchReview.status == "open")
    assert review is not None and review.explanation["fields"]["given"]["outcome"] == "disagree"


def test_twins_with_their_own_verified_nhs_numbers_are_not_even_reviewed(ingest) -> None:
    ingest.post_hl7(messages.adt("A28", nhs=data.NHS_NUMBERS[0], mrn="T1", given="Amara", control="C1"))
    ingest.post_hl7(messages.adt("A28", nhs=data.NHS_NUMBERS[1], mrn="T2", given="Amara", control="C2"))
    assert _person_of(ingest, "T1") != _person_of(ingest, "T2")
    assert ingest.count(MatchReview) == 0


def test_a_strong_demographic_match_without_nhs_numbers_links(ingest) -> None:
    ingest.post_hl7(messages.adt("A28", nhs=None, mrn="A1", control="C1"))
    ingest.post_fhir(messages.bundle([messages.patient(nhs=None, family="Orange", given="Blossom",
                                                       birth="1980-01-01", gender="female", postcode="LS1 4AB")]))
    assert len({r.person_id for r in ingest.rows("Patient")}) == 1
    link = next(ingest.get(PersonLink, PersonLink.source_patient_id == r.id) for r in ingest.rows("Patient")
                if r.source_org == data.GP_ODS)
    assert link.method == "demographic" and link.score >= 13
    assert set(link.explanation["fields"]) == {"family", "given", "birth_date", "sex", "postcode"}


def test_a_transposed_birth_date_waits_for_review_and_a_reviewer_can_link_it(ingest) -> None:
    ingest.post_hl7(messages.adt("A01", nhs=None, mrn="A1", dob="19800305", control="C1", visit="V1"))
    ingest.post_hl7(messages.adt("A01", nhs=None, mrn="A2", dob="19800503", control="C2", visit="V2"))
    first, second = _person_of(ingest, "A1"), _person_of(ingest, "A2")
    assert first != second
    reviews = ingest.client.get("/ingest/reviews", headers=ingest.admin()).json()
    assert len(reviews) == 1 and reviews[0]["candidate_person_id"] == first
    assert reviews[0]["explanation"]["fields"]["birth_date"]["outcome"] == "day and month transposed"
    assert "scr_ingest_match_reviews_open 1.0" in ingest.client.get("/metrics").text

    response = ingest.client.post(f"/ingest/reviews/{reviews[0]['id']}", json={"decision": "link",
                                                                               "reviewer": "555000000042"},
                                  headers=ingest.admin())
    assert response.status_code == 200, response.text
    assert _person_of(ingest, "A2") == first
    visit2 = next(r for r in ingest.rows("Encounter") if r.source_key == "visit:V2")
    assert visit2.person_id == first and visit2.body["subject"] == {"reference": f"Patient/{first}"}
    assert ingest.get(Person, Person.id == second).status == "merged"
    assert ingest.get(PersonLink, PersonLink.source_patient_id == visit2.source_patient_id).method == "manual"
    assert ingest.get(MatchReview, MatchReview.id == reviews[0]["id"]).resolved_by == "555000000042"
    assert "scr_ingest_match_reviews_open 0.0" in ingest.client.get("/metrics").text
    assert ingest.client.post(f"/ingest/reviews/{reviews[0]['id']}", json={"decision": "reject", "reviewer": "x"},
                              headers=ingest.admin()).status_code == 409


def test_a_rejected_review_leaves_the_records_apart(ingest) -> None:
    ingest.post_hl7(messages.adt("A28", nhs=None, mrn="A1", dob="19800305", control="C1"))
    ingest.post_hl7(messages.adt("A28", nhs=None, mrn="A2", dob="19800503", control="C2"))
    (review,) = ingest.client.get("/ingest/reviews", headers=ingest.admin()).json()
    response = ingest.client.post(f"/ingest/reviews/{review['id']}", json={"decision": "reject", "reviewer": "u1"},
                                  headers=ingest.admin())
    assert response.status_code == 200 and response.json()["changes"] == []
    assert _person_of(ingest, "A1") != _person_of(ingest, "A2")
    assert ingest.client.get("/ingest/reviews", headers=ingest.admin()).json() == []


def test_an_unverified_nhs_number_alone_does_not_link(ingest) -> None:
    ingest.post_hl7(messages.adt("A28", nsts="NSTS02", mrn="A1", control="C1"))
    ingest.post_hl7(messages.adt("A28", nsts="NSTS02", mrn="A2", control="C2", family="KHAN", given="Imran",
                                 sex="M", dob="19990909", postcode="YO1 7HH"))
    assert _person_of(ingest, "A1") != _person_of(ingest, "A2")
    assert ingest.count(Person, Person.nhs_number.is_not(None)) == 0  # never established by unverified numbers
    ingest.post_hl7(messages.adt("A28", nsts="NSTS02", mrn="A3", control="C3", family="ORANGE", given="Blossom"))
    assert _person_of(ingest, "A3") == _person_of(ingest, "A1")  # same number and demographics: strong enough


def test_a_record_that_gains_a_verified_nhs_number_joins_the_person_it_names(ingest) -> None:
    ingest.post_hl7(messages.adt("A28", mrn="A1", control="C1"))
    ingest.post_hl7(messages.adt("A01", nhs=None, mrn="A2", control="C2", family="KHAN", given="Imran", sex="M",
                                 dob="19990909", postcode="YO1 7HH", ts="20240301101500"))
    assert _person_of(ingest, "A1") != _person_of(ingest, "A2")
    ingest.post_hl7(messages.adt("A31", mrn="A2", control="C3", family="KHAN", given="Imran", sex="M",
                                 dob="19990909", postcode="YO1 7HH", ts="20240401101500"))
    assert _person_of(ingest, "A2") == _person_of(ingest, "A1")
    (encounter,) = ingest.rows("Encounter")
    assert encounter.person_id == _person_of(ingest, "A1")


def test_a_record_found_only_by_family_name_and_postcode_is_still_scored(ingest) -> None:
    # A mistyped birth year: the birth-date block misses it; the family-name-and-postcode block finds it,
    # punctuation and all.
    ingest.post_hl7(messages.adt("A28", nhs=None, mrn="A1", family="O'BRIEN", dob="19800101", control="C1"))
    ingest.post_hl7(messages.adt("A28", nhs=None, mrn="A2", family="O'Brien", dob="19810101", control="C2"))
    review = ingest.get(MatchReview, MatchReview.status == "open")
    assert review is not None and review.candidate_person_id == _person_of(ingest, "A1")
    assert review.explanation["fields"]["birth_date"]["outcome"] == "one part differs"
