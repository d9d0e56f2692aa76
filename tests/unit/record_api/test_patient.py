"""One person, one Patient: demographic precedence, identifiers, links and versions."""

from datetime import UTC, datetime

from services.record_api.patient import in_precedence_order, person_patient, source_kind, version_of
from shared.fhir import NHS_NUMBER_SYSTEM, NHS_VERIFICATION_ENGLAND, NHS_VERIFICATION_EXT
from shared.schema import Person, Resource

NHS = "9990000018"


def _person() -> Person:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Person(id="person-1", nhs_number=NHS, status="active", version=1, created=now, updated=now)


def _source(pid: str, org: str, *, verified: bool = True, family: str = "Smith", updated: int = 1,
            extra: dict | None = None, identifiers: list | None = None) -> Resource:
    nhs = {"system": NHS_NUMBER_SYSTEM, "value": NHS, "extension": [{"url": NHS_VERIFICATION_EXT,
           "valueCodeableConcept": {"coding": [{"system": NHS_VERIFICATION_ENGLAND,
                                                "code": "01" if verified else "02"}]}}]}
    body = {"resourceType": "Patient", "id": pid, "identifier": [nhs, *(identifiers or [])],
            "name": [{"family": family}]} | (extra or {})
    stamp = datetime(2026, 1, updated, tzinfo=UTC)
    return Resource(resource_type="Patient", id=pid, version_id=1, person_id="person-1", source_org=org,
                    source_system="x", labels=[], last_updated=stamp, source_updated=stamp, body=body)


def test_source_kinds_from_channel_and_ods_code() -> None:
    assert source_kind(_source("a", "Y12345"), "fhir") == "gp"
    assert source_kind(_source("a", "RR8"), "hl7v2") == "acute"
    assert source_kind(_source("a", "RR8"), "mllp") == "acute"
    assert source_kind(_source("a", "RY6"), "community") == "community"
    assert source_kind(_source("a", "RY6"), "fhir") == "community"
    assert source_kind(_source("a", "A1B2C"), "socialcare") == "social-care"
    assert source_kind(_source("a", "ZZZ"), None) == "other"


def test_precedence_verified_then_kind_then_most_recent() -> None:
    gp_unverified = _source("gp", "Y12345", verified=False)
    acute = _source("acute", "RR8")
    social_new = _source("social-new", "A1B2C", updated=9)
    social_old = _source("social-old", "A1B2C", updated=2)
    channels = {"acute": "hl7v2", "social-new": "socialcare", "social-old": "socialcare", "gp": "fhir"}
    ordered = in_precedence_order(_person(), [social_old, gp_unverified, social_new, acute], channels)
    assert [r.id for r in ordered] == ["acute", "social-new", "social-old", "gp"]


def test_each_element_comes_whole_from_the_first_source_that_has_it() -> None:
    gp = _source("gp", "Y12345", family="Smith", extra={"gender": "female"})
    acute = _source("acute", "RR8", family="SMITH", extra={"address": [{"postalCode": "LS9 7TF"}],
                                                            "deceasedDateTime": "2026-01-01"})
    patient = person_patient(_person(), [acute, gp], {"gp": "fhir", "acute": "hl7v2"})
    assert patient["name"] == [{"family": "Smith"}] and patient["gender"] == "female"
    assert patient["address"] == [{"postalCode": "LS9 7TF"}]  # the GP has none, so the next source's
    assert patient["deceasedDateTime"] == "2026-01-01"
    assert patient["link"] == [{"other": {"reference": "Patient/gp"}, "type": "seealso"},
                               {"other": {"reference": "Patient/acute"}, "type": "seealso"}]
    assert patient["id"] == "person-1" and patient["active"] is True


def test_identifiers_are_the_union_with_the_nhs_number_first_and_legacy_systems_normalised() -> None:
    gp = _source("gp", "Y12345", identifiers=[{"system": "https://emis.example/Id", "value": "E1"}])
    acute = _source("acute", "RR8", identifiers=[{"system": "https://rr8/mrn", "value": "M1"},
                                                 {"system": "http://fhir.nhs.net/Id/nhs-number", "value": NHS}])
    patient = person_patient(_person(), [acute, gp], {"gp": "fhir", "acute": "hl7v2"})
    assert [(i["system"], i["value"]) for i in patient["identifier"]] == [
        (NHS_NUMBER_SYSTEM, NHS), ("https://emis.example/Id", "E1"), ("https://rr8/mrn", "M1")]


def test_the_version_changes_with_the_person_or_any_source() -> None:
    gp, acute = _source("gp", "Y12345"), _source("acute", "RR8")
    person = _person()
    first = version_of(person, [gp, acute])
    assert first == version_of(person, [acute, gp])
    acute.version_id = 2
    assert version_of(person, [gp, acute]) != first
    assert version_of(person, [gp]) != version_of(person, [gp, acute])
    person.version = 2
    assert version_of(person, [gp]) != first


def test_a_source_dated_ahead_of_when_it_was_stored_ranks_as_stored() -> None:
    """A PAS clock set to 2099 does not make its record the most recent for ever: the acute record stored later,
    with its own sender's time, gives the person's name."""
    wrong_clock = _source("wrong-clock", "RR8", family="Twentyninetynine", updated=2)
    wrong_clock.source_updated = datetime(2099, 1, 1, tzinfo=UTC)
    later = _source("later", "RX1", family="Corrected", updated=5)
    channels = {"wrong-clock": "hl7v2", "later": "hl7v2"}
    assert [r.id for r in in_precedence_order(_person(), [wrong_clock, later], channels)] == ["later", "wrong-clock"]
    assert person_patient(_person(), [wrong_clock, later], channels)["name"] == [{"family": "Corrected"}]
    # Without a sender's time, or with naive times as SQLite gives them, when stored ranks.
    unsent = _source("unsent", "RX1", updated=9)
    unsent.source_updated = None
    naive = _source("naive", "RR8", updated=7)
    naive.source_updated, naive.last_updated = datetime(2099, 1, 1), datetime(2026, 1, 7)
    ordered = in_precedence_order(_person(), [later, naive, unsent], channels | {"unsent": "hl7v2", "naive": "hl7v2"})
    assert [r.id for r in ordered] == ["unsent", "naive", "later"]
