"""The social-care event adapter and its published JSON Schema."""

import copy
import functools
import json
import operator
from pathlib import Path

import jsonschema
import pytest

from services.ingest.feeds import socialcare_events
from services.ingest.feeds.model import AdapterError
from services.ingest.schemas import EVENT_TYPES, socialcare_schema
from shared.fhir import validate_resource
from tests.fixtures.ingest import messages
from tests.support import data

EXPECTED = {
    "assessment.completed": ("Observation", "assessment:ASM-301"),
    "care_package.started": ("EpisodeOfCare", "care-package:CP-900"),
    "care_package.changed": ("EpisodeOfCare", "care-package:CP-900"),
    "care_package.ended": ("EpisodeOfCare", "care-package:CP-900"),
    "safeguarding.concern_raised": ("Flag", "safeguarding:SG-12"),
    "safeguarding.concern_closed": ("Flag", "safeguarding:SG-12"),
    "carer.recorded": ("RelatedPerson", "contact:CON-7"),
    "contact.recorded": ("RelatedPerson", "contact:CON-8"),
    "hospital_discharge_support.requested": ("ServiceRequest", "discharge-support:DS-44"),
}


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_maps_to_valid_uk_core_resources(event_type: str) -> None:
    mapped = socialcare_events.map_event(messages.event(event_type, messages.EVENT_BODIES[event_type]))
    assert (mapped.source_org, mapped.source_system) == (data.SOCIAL_CARE_ODS, "Mosaic")
    patient, first, *rest = mapped.items
    assert patient.resource_type == "Patient" and patient.source_key == "person:MOS-55501"
    assert (first.resource_type, first.source_key) == EXPECTED[event_type]
    for item in mapped.items:
        assert validate_resource(item.resource) == [], item.resource_type
        assert item.source_updated.isoformat() == "2024-05-01T09:00:00+00:00"
    if event_type.startswith("care_package"):
        assert [r.resource_type for r in rest] == ["CarePlan"]


def test_care_package_events_move_the_episode_through_its_states() -> None:
    started = socialcare_events.map_event(messages.event("care_package.started",
                                                         messages.EVENT_BODIES["care_package.started"]))
    ended = socialcare_events.map_event(messages.event("care_package.ended",
                                                       messages.EVENT_BODIES["care_package.ended"]))
    assert started.items[1].resource["status"] == "active" and started.items[2].resource["status"] == "active"
    assert ended.items[1].resource["status"] == "finished"
    assert ended.items[1].resource["period"] == {"start": "2024-05-01", "end": "2024-09-30"}
    assert ended.items[2].resource["status"] == "completed"


def test_a_safeguarding_concern_is_a_safety_flag_that_closes() -> None:
    raised = socialcare_events.map_event(messages.event("safeguarding.concern_raised",
                                                        messages.EVENT_BODIES["safeguarding.concern_raised"]))
    closed = socialcare_events.map_event(messages.event("safeguarding.concern_closed",
                                                        messages.EVENT_BODIES["safeguarding.concern_closed"]))
    assert raised.items[1].resource["status"] == "active"
    assert raised.items[1].resource["code"]["coding"][0]["code"] == "safeguarding-concern"
    assert closed.items[1].resource["status"] == "inactive"
    assert closed.items[1].resource["period"]["end"] == "2024-07-01"


def test_the_person_carries_a_verified_nhs_number_and_the_s_flag_when_sent() -> None:
    person = {"local_id": "MOS-1", "nhs_number": "9990000042", "nhs_number_verified": True, "restricted": True}
    mapped = socialcare_events.map_event(messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"],
                                                        person=person))
    patient = mapped.items[0]
    assert patient.restricted
    assert patient.resource["identifier"][0]["value"] == "9990000042"
    assert patient.resource["identifier"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "01"


@pytest.mark.parametrize("change, expression", [
    ({"event_type": "care_package.started", "care_package": {"id": "CP1"}}, "care_package.service"),
    ({"event_type": "nonsense"}, "event_type"),
    ({"person": {"local_id": "x", "nhs_number": data.INVALID_NHS_NUMBER}}, "person.nhs_number"),
    ({"person": {"local_id": "x", "postcode": "NOT A POSTCODE"}}, "person.postcode"),
    ({"occurred_at": "2024-05-01T10:00:00"}, "occurred_at"),
    ({"provider": {"ods_code": "not an ods", "system": "Mosaic"}}, "provider.ods_code"),
    ({"surprise": True}, "surprise"),
    ({"event_type": "care_package.ended", "care_package": {"id": "CP1", "service": "Homecare",
                                                           "start_date": "2024-05-01", "end_date": "2024-04-01"}},
     "care_package.end_date"),
    ({"event_type": "safeguarding.concern_closed", "concern": {"id": "SG1", "raised_on": "2024-06-03",
                                                               "closed_on": "2024-05-01"}}, "concern.closed_on"),
])
def test_bad_events_name_the_field_at_fault(change, expression: str) -> None:
    event = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"]) | change
    with pytest.raises(AdapterError) as caught:
        socialcare_events.map_event(event)
    assert expression in [i.expression for i in caught.value.issues]


@pytest.mark.parametrize("payload", [None, [], "event", 42, {"event_type": None}])
def test_payloads_that_are_not_events_are_refused(payload) -> None:
    with pytest.raises(AdapterError):
        socialcare_events.map_event(payload)


def test_the_published_schema_file_is_the_schema_the_service_validates_against() -> None:
    path = Path(__file__).resolve().parents[3] / "services" / "ingest" / "socialcare.schema.json"
    assert json.loads(path.read_text()) == socialcare_schema()


def test_the_schema_covers_every_event_type_with_its_required_fields() -> None:
    schema = socialcare_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    mapping = schema["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(EVENT_TYPES)
    for event_type, ref in mapping.items():
        definition = schema["$defs"][ref.rsplit("/", 1)[1]]
        assert {"event_id", "event_type", "occurred_at", "provider", "person"} <= set(definition["required"])
        assert event_type in json.dumps(definition["properties"]["event_type"])


def test_an_event_without_restricted_says_nothing_about_the_s_flag() -> None:
    person = {"local_id": "MOS-1", "nhs_number": "9990000042"}
    mapped = socialcare_events.map_event(messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"],
                                                        person=person))
    assert mapped.items[0].restricted is None
    lifted = socialcare_events.map_event(messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"],
                                                        person=person | {"restricted": False}))
    assert lifted.items[0].restricted is False


def _applied(*events: dict) -> dict[str, dict]:
    """Each resource after the events, in the order given, as the writer applies them to what it stored."""
    stored: dict[str, dict] = {}
    for event in events:
        for item in socialcare_events.map_event(event).items[1:]:
            stored[item.source_key] = item.merge(stored.get(item.source_key))
    for resource in stored.values():
        assert validate_resource(resource) == [], resource
    return stored


def _concern(event_type: str, occurred_at: str = "2024-06-03T10:00:00+01:00", **fields) -> dict:
    body = messages.EVENT_BODIES[event_type]
    return messages.event(event_type, {"concern": body["concern"] | fields}, occurred_at=occurred_at)


def _package(event_type: str, occurred_at: str, **fields) -> dict:
    body = {"care_package": {"id": "CP-1", "service": "Reablement", "start_date": "2030-05-01"} | fields}
    return messages.event(event_type, body, occurred_at=occurred_at)


def test_an_end_date_still_to_come_is_the_planned_end_of_an_active_package() -> None:
    stored = _applied(_package("care_package.started", "2030-05-01T09:00:00+01:00", end_date="2030-06-12"))
    episode, plan = stored["care-package:CP-1"], stored["care-plan:CP-1"]
    assert (episode["status"], plan["status"]) == ("active", "active")
    assert episode["period"] == plan["period"] == {"start": "2030-05-01", "end": "2030-06-12"}
    assert plan["activity"][0]["detail"]["status"] == "in-progress"


def test_an_end_date_passed_when_the_event_happened_ends_the_package() -> None:
    stored = _applied(_package("care_package.started", "2030-05-01T09:00:00+01:00", end_date="2030-06-12"),
                      _package("care_package.changed", "2030-06-13T09:00:00+01:00", hours_per_week=3))
    assert stored["care-package:CP-1"]["status"] == "finished"
    assert stored["care-plan:CP-1"]["status"] == "completed"
    assert stored["care-plan:CP-1"]["period"] == {"start": "2030-05-01", "end": "2030-06-12"}


def test_an_ended_package_ends_on_the_day_it_ended_not_on_its_later_planned_end() -> None:
    stored = _applied(_package("care_package.started", "2030-05-01T09:00:00+01:00", end_date="2030-06-12"),
                      _package("care_package.ended", "2030-05-20T09:00:00+01:00"))
    assert stored["care-package:CP-1"]["status"] == "finished"
    assert stored["care-package:CP-1"]["period"] == {"start": "2030-05-01", "end": "2030-05-20"}


def test_a_newer_change_to_an_ended_package_updates_its_details_and_keeps_it_ended() -> None:
    stored = _applied(_package("care_package.started", "2030-05-01T09:00:00+01:00", supplier="Care Ltd"),
                      _package("care_package.ended", "2030-10-01T09:00:00+01:00", end_reason="Moved"),
                      _package("care_package.changed", "2030-10-02T09:00:00+01:00", frequency="daily"))
    episode, plan = stored["care-package:CP-1"], stored["care-plan:CP-1"]
    assert (episode["status"], plan["status"]) == ("finished", "completed")
    assert episode["period"] == plan["period"] == {"start": "2030-05-01", "end": "2030-10-01"}
    assert plan["activity"][0]["detail"]["scheduledString"] == "daily"


def test_an_ended_event_keeps_the_details_it_leaves_out() -> None:
    stored = _applied(messages.event("care_package.started", messages.EVENT_BODIES["care_package.started"]),
                      messages.event("care_package.ended", messages.EVENT_BODIES["care_package.ended"],
                                     occurred_at="2024-10-01T10:00:00+01:00"))
    plan = stored["care-plan:CP-900"]
    assert plan["activity"][0]["detail"] == {"status": "completed", "description": "Homecare",
                                             "scheduledString": "4 visits daily",
                                             "performer": [{"display": "Bradford Care Ltd"}]}
    assert plan["note"] == [{"text": "14 hours per week"}, {"text": "Ended: Moved to residential care"}]


def test_a_detail_sent_as_null_is_removed() -> None:
    stored = _applied(_package("care_package.started", "2030-05-01T09:00:00+01:00", supplier="Care Ltd",
                               hours_per_week=7),
                      _package("care_package.changed", "2030-05-02T09:00:00+01:00", supplier=None))
    plan = stored["care-plan:CP-1"]
    assert "performer" not in plan["activity"][0]["detail"] and plan["note"] == [{"text": "7 hours per week"}]


def test_a_closed_concern_is_not_reopened_by_a_newer_resend_of_concern_raised() -> None:
    stored = _applied(_concern("safeguarding.concern_raised"),
                      _concern("safeguarding.concern_closed", "2024-07-01T10:00:00+01:00"),
                      _concern("safeguarding.concern_raised", "2024-07-02T10:00:00+01:00", category="neglect"))
    flag = stored["safeguarding:SG-12"]
    assert flag["status"] == "inactive" and flag["period"] == {"start": "2024-06-03", "end": "2024-07-01"}
    assert flag["code"]["text"] == "Safeguarding concern: neglect"


def test_a_closed_concern_keeps_its_category_and_records_its_outcome() -> None:
    stored = _applied(_concern("safeguarding.concern_raised"),
                      _concern("safeguarding.concern_closed", "2024-07-01T10:00:00+01:00"))
    flag = stored["safeguarding:SG-12"]
    assert flag["code"]["text"] == "Safeguarding concern: self-neglect"
    assert flag["extension"] == [{"url": socialcare_events.OUTCOME_EXT, "valueString": "No further action"}]



@pytest.mark.parametrize("where, value", [
    ("care_package.hours_per_week", "14"),
    ("person.restricted", "yes"),
    ("confidential", 1),
    ("occurred_at", 1714554000),
    ("occurred_at", "2024-05-01T10:00:00"),
    ("occurred_at", "2024-05-01"),
    ("occurred_at", "2024-05-01T10+01:00"),
    ("occurred_at", "2024-05-01T24:00Z"),
    ("occurred_at", "2024-05-01T10:00:00+1:00"),
    ("care_package.start_date", "2024-05-01T00:00:00"),
    ("person.nhs_number", ""),
    ("person.nhs_number", "999\t000\t0034"),
    ("person.nhs_number", "999 000 003"),
    ("person.nhs_number", "999.000.0034"),
    ("person.nhs_number", "9990000035"),
    ("person.postcode", "N/A"),
])
def test_what_the_published_schema_refuses_the_service_refuses_and_the_reverse(where: str, value) -> None:
    """Each value breaks the schema's types or patterns (the check digit its description), and is refused."""
    event = copy.deepcopy(messages.event("care_package.started", messages.EVENT_BODIES["care_package.started"]))
    *path, name = where.split(".")
    functools.reduce(operator.getitem, path, event)[name] = value
    with pytest.raises(AdapterError) as caught:
        socialcare_events.map_event(event)
    assert where in [i.expression for i in caught.value.issues]
    if where != "person.nhs_number" or value != "9990000035":
        assert not _schema_validator().is_valid(event)
    assert _schema_validator().is_valid(messages.event("care_package.started",
                                                       messages.EVENT_BODIES["care_package.started"]))


def _schema_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(socialcare_schema(),
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("sent, stored", [
    ("9990000034", "9990000034"),
    ("999 000 0034", "9990000034"),
    ("999-000-0034", "9990000034"),
    (" 999 000 0034 ", "9990000034"),
])
def test_an_nhs_number_grouped_by_spaces_or_dashes_is_accepted_and_stored_as_ten_digits(sent: str, stored: str
                                                                                         ) -> None:
    event = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"],
                           person={"local_id": "MOS-1", "nhs_number": sent})
    mapped = socialcare_events.map_event(event)
    assert mapped.items[0].resource["identifier"][0]["value"] == stored
    plain = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"],
                           person={"local_id": "MOS-1", "nhs_number": stored})
    assert mapped.message_id == socialcare_events.map_event(plain).message_id  # the same event: a re-send
    if sent == sent.strip():
        assert _schema_validator().is_valid(event)


@pytest.mark.parametrize("sent, authored_on, instant", [
    ("2026-03-01T10:15:30+00:00", "2026-03-01T10:15:30+00:00", "2026-03-01T10:15:30+00:00"),
    ("2026-03-01T10:15Z", "2026-03-01T10:15:00+00:00", "2026-03-01T10:15:00+00:00"),
    ("2026-03-01T10:15+00:00", "2026-03-01T10:15:00+00:00", "2026-03-01T10:15:00+00:00"),
    ("2026-06-01T10:15+01:00", "2026-06-01T10:15:00+01:00", "2026-06-01T09:15:00+00:00"),
    ("2026-06-01T10:15+0100", "2026-06-01T10:15:00+01:00", "2026-06-01T09:15:00+00:00"),
    ("2026-06-01 10:15:00+01", "2026-06-01T10:15:00+01:00", "2026-06-01T09:15:00+00:00"),
    ("2026-03-01t10:15z", "2026-03-01T10:15:00+00:00", "2026-03-01T10:15:00+00:00"),
    ("2026-03-01T10:15:30.250Z", "2026-03-01T10:15:30.250+00:00", "2026-03-01T10:15:30.250000+00:00"),
    # The fraction as sent, trailing zeros and digits beyond the microseconds an instant keeps included.
    ("2026-06-01T10:00:00.120+01:00", "2026-06-01T10:00:00.120+01:00", "2026-06-01T09:00:00.120000+00:00"),
    ("2026-06-01T10:00:00.000+01:00", "2026-06-01T10:00:00.000+01:00", "2026-06-01T09:00:00+00:00"),
    ("2026-03-01 10:15:30.1234567+0000", "2026-03-01T10:15:30.1234567+00:00", "2026-03-01T10:15:30.123456+00:00"),
])
def test_a_date_time_without_seconds_or_in_another_iso_form_is_accepted_at_the_precision_sent(
        sent: str, authored_on: str, instant: str) -> None:
    event = messages.event("hospital_discharge_support.requested",
                           messages.EVENT_BODIES["hospital_discharge_support.requested"], occurred_at=sent)
    assert _schema_validator().is_valid(event)
    mapped = socialcare_events.map_event(event)
    request = mapped.items[1]
    assert request.resource["authoredOn"] == authored_on  # FHIR dateTime: seconds required once there is a time
    assert validate_resource(request.resource) == []
    assert request.source_updated.isoformat() == instant


def test_the_same_instant_written_with_and_without_seconds_is_the_same_event() -> None:
    body = messages.EVENT_BODIES["contact.recorded"]
    short = socialcare_events.map_event(messages.event("contact.recorded", body, occurred_at="2026-03-01T10:15Z"))
    full = socialcare_events.map_event(messages.event("contact.recorded", body, occurred_at="2026-03-01T10:15:00Z"))
    assert short.message_id == full.message_id


def test_a_local_time_is_refused_for_want_of_an_offset_and_a_day_its_month_lacks_by_name() -> None:
    body = messages.EVENT_BODIES["contact.recorded"]
    with pytest.raises(AdapterError) as local:
        socialcare_events.map_event(messages.event("contact.recorded", body, occurred_at="2026-03-01T10:15"))
    assert "has no UTC offset" in local.value.issues[0].diagnostics
    no_such_day = messages.event("contact.recorded", body, occurred_at="2026-02-30T10:15Z")
    with pytest.raises(AdapterError) as caught:
        socialcare_events.map_event(no_such_day)
    assert caught.value.issues[0].expression == "occurred_at"
    assert _schema_validator().is_valid(no_such_day)  # the one thing about a date-time the pattern cannot say


# Every date field of an event: (event type, path to the field, where the date ends up in the mapped resource).
_DATE_FIELDS = [
    ("contact.recorded", ("person", "birth_date"), lambda m: m.items[0].resource["birthDate"]),
    ("assessment.completed", ("assessment", "completed_on"), lambda m: m.items[1].resource["effectiveDateTime"]),
    ("care_package.ended", ("care_package", "start_date"), lambda m: m.items[1].resource["period"]["start"]),
    ("care_package.ended", ("care_package", "end_date"), lambda m: m.items[1].resource["period"]["end"]),
    ("safeguarding.concern_closed", ("concern", "raised_on"), lambda m: m.items[1].resource["period"]["start"]),
    ("safeguarding.concern_closed", ("concern", "closed_on"), lambda m: m.items[1].resource["period"]["end"]),
    ("hospital_discharge_support.requested", ("request", "expected_discharge_date"),
     lambda m: m.items[1].resource["occurrenceDateTime"]),
]


@pytest.mark.parametrize(("event_type", "path", "stored"), _DATE_FIELDS, ids=[p[1] for _, p, _ in _DATE_FIELDS])
def test_spaces_around_a_date_are_ignored_as_around_any_string_of_an_event(event_type, path, stored) -> None:
    event = messages.event(event_type, copy.deepcopy(messages.EVENT_BODIES[event_type]))
    holder = event[path[0]]
    plain = holder[path[1]]
    holder[path[1]] = f"  {plain}\t"
    padded = socialcare_events.map_event(event)
    holder[path[1]] = plain
    assert stored(padded) == plain
    assert padded.message_id == socialcare_events.map_event(event).message_id  # the same event, re-sent


def test_a_date_with_other_text_around_it_is_still_refused_by_name() -> None:
    event = messages.event("assessment.completed", copy.deepcopy(messages.EVENT_BODIES["assessment.completed"]))
    event["assessment"]["completed_on"] = "on 2024-04-30"
    with pytest.raises(AdapterError) as caught:
        socialcare_events.map_event(event)
    assert caught.value.issues[0].expression == "assessment.completed_on"


@pytest.mark.parametrize(("payload", "system"), [
    ({"provider": {"ods_code": "A1B2C", "system": "Mosaic"}}, "Mosaic"),
    ({"provider": {"system": "  LiquidLogic LAS "}}, "LiquidLogic LAS"),  # read before the event is checked
    ({"provider": {"system": "x" * 300}}, "x" * 128),  # what the archive column holds
    ({"provider": {"system": "   "}}, None),
    ({"provider": {"system": 7}}, None),
    ({"provider": {"system": "Mos\x00aic"}}, None),  # PostgreSQL text holds no NUL
    ({"provider": {"system": "Mos\ud800aic"}}, None),  # no UTF-8 form
    ({"provider": "Mosaic"}, None),
    ({}, None),
    ([{"provider": {"system": "Mosaic"}}], None),
    (None, None),  # not JSON
])
def test_the_sending_system_for_the_archive_is_provider_system_when_the_event_names_one(payload, system) -> None:
    assert socialcare_events.provider_system(payload) == system
