"""Community CSV and social-care events over HTTP (the embedded default's route for events) into PostgreSQL."""

import json

import pytest

from services.ingest.schemas import EVENT_TYPES
from shared.schema import RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.support import data

pytestmark = pytest.mark.integration


def _post_csv(ingest, content: bytes):
    return ingest.client.post("/ingest/community", content=content,
                              headers=ingest.feed(data.COMMUNITY_ODS, **{"Content-Type": "text/csv",
                                                                          "X-Source-System": "SystmOne"}))


def test_good_rows_are_kept_and_the_bad_row_is_reported_by_number(ingest) -> None:
    response = _post_csv(ingest, messages.text("community_contacts.csv").encode())
    assert response.status_code == 200, response.text
    issues = response.json()["issue"]
    assert issues[0]["severity"] == "information" and issues[0]["diagnostics"].startswith("4 row(s) accepted, 1 row")
    assert {tuple(i["expression"]) for i in issues[1:]} == {("row[5].nhs_number",), ("row[5].birth_date",),
                                                            ("row[5].postcode",), ("row[5].outcome",)}
    assert len(ingest.rows("Encounter")) == 4 and len(ingest.rows("EpisodeOfCare")) == 2
    assert {r.source_system for r in ingest.rows("Encounter")} == {"SystmOne"}
    episode = next(r for r in ingest.rows("EpisodeOfCare") if r.source_key.endswith(":DN"))
    contact = next(r for r in ingest.rows("Encounter") if r.source_key == "contact:RY6-C-1001")
    assert contact.body["episodeOfCare"] == [{"reference": f"EpisodeOfCare/{episode.id}"}]
    assert contact.person_id == episode.person_id
    assert len(ingest.rows("Patient")) == 2



def test_the_archive_names_the_sending_system_of_a_file_from_x_source_system_or_else_the_token_subject(ingest) -> None:
    _post_csv(ingest, messages.text("community_contacts.csv").encode())
    ingest.client.post("/ingest/community", content=b"not,a\ncsv,file\n",
                       headers=ingest.feed(data.COMMUNITY_ODS, **{"Content-Type": "text/csv"}))
    listed = ingest.client.get("/ingest/raw", headers=ingest.admin()).json()
    assert sorted((r["status"], r["sender_system"]) for r in listed) == [
        ("processed", "SystmOne"), ("rejected", f"feed-{data.COMMUNITY_ODS}")]

def test_a_later_file_extends_the_episode_without_duplicating_contacts(ingest) -> None:
    content = messages.text("community_contacts.csv").encode()
    _post_csv(ingest, content)
    _post_csv(ingest, content)
    assert len(ingest.rows("Encounter")) == 4
    assert all(r.version_id == 1 for r in ingest.rows("Encounter") + ingest.rows("EpisodeOfCare"))
    header = content.decode().splitlines()[0]
    earlier = "RY6-C-0900,RY6-P-501,9990000034,01,Nowak,Zofia,1952-03-18,female,LS9 7TF,District nursing,DN," \
              "District nurse,2024-01-15,09:00,attended"
    _post_csv(ingest, f"{header}\n{earlier}\n".encode())
    episode = next(r for r in ingest.rows("EpisodeOfCare") if r.source_key.endswith(":DN"))
    assert episode.version_id == 2
    assert episode.body["period"] == {"start": "2024-01-15", "end": "2024-03-18"}
    assert len(ingest.rows("Encounter")) == 5


def test_a_file_with_no_usable_rows_is_refused(ingest) -> None:
    response = _post_csv(ingest, b"contact_id,local_patient_id\n1,2\n")
    assert response.status_code == 400 and "required columns" in response.json()["issue"][0]["diagnostics"]
    assert ingest.count(Resource) == 0
    assert ingest.get(RawMessage, RawMessage.channel == "community").status == "rejected"


def test_every_social_care_event_type_is_stored_labelled_social_care(ingest) -> None:
    events = [messages.event(t, messages.EVENT_BODIES[t], event_id=f"evt-{n}",
                             occurred_at=f"2024-05-{n + 1:02d}T10:00:00+01:00") for n, t in enumerate(EVENT_TYPES)]
    response = ingest.client.post("/ingest/socialcare", json=events, headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert response.status_code == 200, response.text
    assert ingest.count(RawMessage, RawMessage.channel == "socialcare") == len(events)
    (patient,) = ingest.rows("Patient")
    stored = {r.resource_type: r for t in ("EpisodeOfCare", "CarePlan", "Flag", "RelatedPerson", "Observation",
                                           "ServiceRequest") for r in ingest.rows(t)}
    assert set(stored) == {"EpisodeOfCare", "CarePlan", "Flag", "RelatedPerson", "Observation", "ServiceRequest"}
    assert all("SOC" in r.labels and r.person_id == patient.person_id for r in stored.values())
    assert "SDV" in stored["Flag"].labels
    episode = next(r for r in ingest.rows("EpisodeOfCare"))
    # The episode itself does not change with the package's frequency; the care plan does.
    assert episode.body["status"] == "finished" and episode.version_id == 2
    care_plan = ingest.rows("CarePlan")[0]
    assert care_plan.version_id == 3 and care_plan.body["status"] == "completed"
    flag = ingest.rows("Flag")[0]
    assert flag.body["status"] == "inactive"
    assert len(ingest.rows("RelatedPerson")) == 2


def test_a_late_care_package_change_does_not_reopen_an_ended_package(ingest) -> None:
    ended = messages.event("care_package.ended", messages.EVENT_BODIES["care_package.ended"], event_id="e2",
                           occurred_at="2024-10-01T10:00:00+01:00")
    late = messages.event("care_package.changed", messages.EVENT_BODIES["care_package.changed"], event_id="e1",
                          occurred_at="2024-06-01T10:00:00+01:00")
    for event in (ended, late):
        assert ingest.client.post("/ingest/socialcare", json=event,
                                  headers=ingest.feed(data.SOCIAL_CARE_ODS)).status_code == 200
    (episode,) = ingest.rows("EpisodeOfCare")
    assert episode.body["status"] == "finished" and episode.version_id == 1


def test_bad_events_are_answered_field_by_field_and_good_ones_in_the_same_request_kept(ingest) -> None:
    good = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"])
    bad = messages.event("care_package.started", {"care_package": {"id": "CP-1"}}, event_id="evt-bad")
    response = ingest.client.post("/ingest/socialcare", json=[good, bad], headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert response.status_code == 207
    errors = [i for i in response.json()["issue"] if i["severity"] == "error"]
    assert {tuple(i["expression"]) for i in errors} == {("event[1].care_package.service",),
                                                        ("event[1].care_package.start_date",)}
    assert len(ingest.rows("RelatedPerson")) == 1 and ingest.rows("EpisodeOfCare") == []
    raw_ids = response.headers["x-raw-message-id"].split(", ")  # one archived message per event, in order
    assert [ingest.get(RawMessage, RawMessage.id == i).status for i in raw_ids] == ["processed", "rejected"]
    assert sorted(raw_ids) == sorted(r.id for r in _raws(ingest))


def test_the_archive_names_the_provider_system_of_each_event_that_names_one_refused_or_not(ingest) -> None:
    good = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"])
    refused = messages.event("care_package.started", {"care_package": {"id": "CP-1"}}, event_id="evt-bad")
    refused["provider"]["system"] = " LiquidLogic LAS "
    ingest.client.post("/ingest/socialcare", json=[good, refused], headers=ingest.feed(data.SOCIAL_CARE_ODS))
    ingest.client.post("/ingest/socialcare", content=b"{not json", headers=ingest.feed(data.SOCIAL_CARE_ODS))
    listed = ingest.client.get("/ingest/raw", headers=ingest.admin()).json()
    assert sorted((r["status"], r["sender_system"] or "") for r in listed) == [
        ("processed", "Mosaic"), ("rejected", ""), ("rejected", "LiquidLogic LAS")]


def test_a_grouped_nhs_number_and_a_time_to_the_minute_are_stored_and_bad_ones_refused_by_name(ingest) -> None:
    person = {"local_id": "MOS-77", "nhs_number": "999 000 0034", "nhs_number_verified": True}
    good = messages.event("hospital_discharge_support.requested",
                          messages.EVENT_BODIES["hospital_discharge_support.requested"],
                          occurred_at="2026-03-01T10:15Z", person=person)
    local = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"], event_id="evt-local",
                           occurred_at="2026-03-01T10:15")
    wrong = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"], event_id="evt-wrong",
                           person=person | {"nhs_number": "999 000 0035"})
    response = ingest.client.post("/ingest/socialcare", json=[good, local, wrong],
                                  headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert response.status_code == 207, response.text
    errors = {i["expression"][0]: i["diagnostics"] for i in response.json()["issue"] if i["severity"] == "error"}
    assert errors == {"event[1].occurred_at": "Value error, has no UTC offset: add Z or the offset in force "
                                              "(+01:00 in British Summer Time)",
                      "event[2].person.nhs_number": "Value error, NHS number fails the Modulus 11 check digit"}
    (patient,) = ingest.rows("Patient")
    assert patient.body["identifier"][0]["value"] == "9990000034"
    (request,) = ingest.rows("ServiceRequest")
    assert request.body["authoredOn"] == "2026-03-01T10:15:00+00:00"


def _raws(ingest):
    from sqlalchemy import select

    with ingest.sessions() as session:
        return list(session.scalars(select(RawMessage)))


def test_an_event_claiming_another_provider_is_refused(ingest) -> None:
    event = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"])
    response = ingest.client.post("/ingest/socialcare", json=event, headers=ingest.feed(data.GP_ODS))
    assert response.status_code == 403
    assert ingest.count(Resource) == 0


def test_the_event_schema_is_published(ingest) -> None:
    response = ingest.client.get("/ingest/socialcare/schema", headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    path = messages.HERE.parents[2] / "services" / "ingest" / "socialcare.schema.json"
    assert schema == json.loads(path.read_text())


def test_an_event_that_leaves_out_restricted_keeps_the_s_flag(ingest) -> None:
    person = {"local_id": "MOS-7001", "nhs_number": data.NHS_NUMBERS[3], "nhs_number_verified": True,
              "family_name": "Khan", "given_name": "Aisha", "birth_date": "1990-02-14", "postcode": "LS1 4AP"}
    restricted = messages.event("safeguarding.concern_raised", messages.EVENT_BODIES["safeguarding.concern_raised"],
                                event_id="e1", person=person | {"restricted": True})
    silent = messages.event("carer.recorded", messages.EVENT_BODIES["carer.recorded"], event_id="e2",
                            occurred_at="2024-05-02T10:00:00+01:00", person=person | {"given_name": "Aisha B"})
    lifted = messages.event("carer.recorded", messages.EVENT_BODIES["carer.recorded"], event_id="e3",
                            occurred_at="2024-05-03T10:00:00+01:00", person=person | {"restricted": False})
    (patient,) = _post_and_read_patients(ingest, restricted)
    assert "R" in patient.labels
    (patient,) = _post_and_read_patients(ingest, silent)
    assert patient.version_id == 2 and "R" in patient.labels
    (patient,) = _post_and_read_patients(ingest, lifted)
    assert "R" not in patient.labels


def _post_and_read_patients(ingest, event):
    response = ingest.client.post("/ingest/socialcare", json=event, headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert response.status_code == 200, response.text
    return ingest.rows("Patient")


def _post(ingest, event) -> None:
    response = ingest.client.post("/ingest/socialcare", json=event, headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert response.status_code == 200, response.text


def test_a_planned_end_date_does_not_close_the_package_it_starts(ingest) -> None:
    body = {"care_package": {"id": "CP-REAB-1", "service": "Reablement", "start_date": "2030-05-01",
                             "end_date": "2030-06-12"}}
    _post(ingest, messages.event("care_package.started", body, occurred_at="2030-05-01T09:00:00+01:00"))
    (episode,), (plan,) = ingest.rows("EpisodeOfCare"), ingest.rows("CarePlan")
    assert (episode.body["status"], plan.body["status"]) == ("active", "active")
    assert episode.body["period"] == {"start": "2030-05-01", "end": "2030-06-12"}


def test_a_newer_change_does_not_reopen_an_ended_package(ingest) -> None:
    for n, (event_type, day) in enumerate([("care_package.started", "05-01"), ("care_package.ended", "10-01"),
                                           ("care_package.changed", "10-02")]):
        _post(ingest, messages.event(event_type, messages.EVENT_BODIES[event_type], event_id=f"e{n}",
                                     occurred_at=f"2024-{day}T10:00:00+01:00"))
    (episode,), (plan,) = ingest.rows("EpisodeOfCare"), ingest.rows("CarePlan")
    assert episode.body["status"] == "finished" and episode.body["period"]["end"] == "2024-09-30"
    assert plan.body["status"] == "completed" and plan.body["activity"][0]["detail"]["scheduledString"] == \
        "3 visits daily"


def test_a_resent_concern_raised_does_not_reopen_a_closed_concern(ingest) -> None:
    raised = messages.EVENT_BODIES["safeguarding.concern_raised"]
    _post(ingest, messages.event("safeguarding.concern_raised", raised, event_id="s1"))
    _post(ingest, messages.event("safeguarding.concern_closed", messages.EVENT_BODIES["safeguarding.concern_closed"],
                                 event_id="s2", occurred_at="2024-07-01T10:00:00+01:00"))
    _post(ingest, messages.event("safeguarding.concern_raised", raised, event_id="s3",
                                 occurred_at="2024-07-02T10:00:00+01:00"))
    (flag,) = ingest.rows("Flag")
    assert flag.body["status"] == "inactive" and flag.body["period"]["end"] == "2024-07-01"


def test_ending_events_keep_what_they_leave_out_and_record_the_outcome(ingest) -> None:
    for n, (event_type, day) in enumerate([("care_package.started", "05-01"), ("care_package.ended", "10-01"),
                                           ("safeguarding.concern_raised", "06-03"),
                                           ("safeguarding.concern_closed", "07-01")]):
        _post(ingest, messages.event(event_type, messages.EVENT_BODIES[event_type], event_id=f"e{n}",
                                     occurred_at=f"2024-{day}T10:00:00+01:00"))
    (plan,), (flag,) = ingest.rows("CarePlan"), ingest.rows("Flag")
    assert plan.body["activity"][0]["detail"]["performer"] == [{"display": "Bradford Care Ltd"}]
    assert plan.body["activity"][0]["detail"]["scheduledString"] == "4 visits daily"
    assert [n["text"] for n in plan.body["note"]] == ["14 hours per week", "Ended: Moved to residential care"]
    assert flag.body["code"]["text"] == "Safeguarding concern: self-neglect"
    assert "No further action" in json.dumps(flag.body)


@pytest.mark.parametrize("event_type, body, field", [
    ("care_package.ended", {"care_package": {"id": "CP-2", "service": "Homecare", "start_date": "2024-05-01",
                                             "end_date": "2024-04-01"}}, "care_package.end_date"),
    ("safeguarding.concern_closed", {"concern": {"id": "SG-9", "raised_on": "2024-06-03", "closed_on": "2024-05-01"}},
     "concern.closed_on"),
])
def test_a_period_that_ends_before_it_starts_is_refused_naming_the_field(ingest, event_type, body, field) -> None:
    response = ingest.client.post("/ingest/socialcare", json=messages.event(event_type, body),
                                  headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert response.status_code == 400
    assert [i["expression"] for i in response.json()["issue"]] == [[f"event.{field}"]]
    assert ingest.count(Resource) == 0


def test_an_event_with_an_unpaired_surrogate_is_refused_alone_and_the_rest_of_the_array_kept(ingest) -> None:
    good = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"], event_id="e1")
    bad = messages.event("carer.recorded", messages.EVENT_BODIES["carer.recorded"], event_id="e2")
    body = json.dumps([good, bad]).replace('"Nasreen"', '"Nas\\ud800reen"')
    response = ingest.client.post("/ingest/socialcare", content=body.encode(), headers=ingest.feed(
        data.SOCIAL_CARE_ODS, **{"Content-Type": "application/json"}))
    assert response.status_code == 207, response.text
    errors = [i for i in response.json()["issue"] if i["severity"] == "error"]
    assert [(i["expression"], i["diagnostics"]) for i in errors] == [
        (["event[1]"], "the JSON contains an unpaired UTF-16 surrogate")]
    assert len(ingest.rows("RelatedPerson")) == 1


def test_an_event_id_reused_for_a_different_event_is_refused_and_an_identical_resend_is_harmless(ingest) -> None:
    first = messages.event("care_package.started", messages.EVENT_BODIES["care_package.started"], event_id="evt-42")
    _post(ingest, first)
    resent = json.dumps(dict(reversed(list(first.items()))), indent=1)  # the same event in other bytes
    response = ingest.client.post("/ingest/socialcare", content=resent.encode(), headers=ingest.feed(
        data.SOCIAL_CARE_ODS, **{"Content-Type": "application/json"}))
    assert response.status_code == 200, response.text
    assert "a re-send of raw message" in response.json()["issue"][0]["diagnostics"]
    changed = first | {"care_package": first["care_package"] | {"hours_per_week": 28}}
    other = messages.event("safeguarding.concern_raised", messages.EVENT_BODIES["safeguarding.concern_raised"],
                           event_id="evt-42")
    for event in (changed, other):
        response = ingest.client.post("/ingest/socialcare", json=event, headers=ingest.feed(data.SOCIAL_CARE_ODS))
        assert response.status_code == 400, response.text
        (issue,) = response.json()["issue"]
        assert issue["expression"] == ["event.event_id"]
        assert issue["diagnostics"].startswith("event_id already used for a different event")
    assert [r.version_id for r in ingest.rows("CarePlan")] == [1] and ingest.rows("Flag") == []
    assert ingest.count(RawMessage, RawMessage.status == "rejected") == 2


def test_an_event_id_is_unique_per_provider_and_within_one_array(ingest) -> None:
    first = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"], event_id="evt-7")
    again = first | {"contact": first["contact"] | {"phone": "01274 999999"}}
    response = ingest.client.post("/ingest/socialcare", json=[first, again], headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert response.status_code == 207
    assert [i["expression"] for i in response.json()["issue"] if i["severity"] == "error"] == [["event[1].event_id"]]
    elsewhere = messages.event("contact.recorded", messages.EVENT_BODIES["contact.recorded"], event_id="evt-7",
                               ods=data.GP_ODS)
    assert ingest.client.post("/ingest/socialcare", json=elsewhere,
                              headers=ingest.feed(data.GP_ODS)).status_code == 200


def _renamed(event: dict, system: str) -> dict:
    return event | {"provider": event["provider"] | {"system": system}}


def test_a_renamed_provider_system_is_a_new_source_until_the_old_name_is_sent_again(ingest) -> None:
    """What docs/INGEST.md says of `provider.system`: records are keyed by it, so a rename starts new records beside
    the old (one person still), an old event re-sent under the new name is refused, and the remedy is the old name."""
    started = messages.event("care_package.started", messages.EVENT_BODIES["care_package.started"], event_id="evt-1")
    ended = messages.event("care_package.ended", messages.EVENT_BODIES["care_package.ended"], event_id="evt-2",
                           occurred_at="2024-10-01T10:00:00+01:00")
    _post(ingest, started)
    _post(ingest, _renamed(ended, "Mosaic 7.2"))
    by_system = {row.source_system: row.body["status"] for row in ingest.rows("EpisodeOfCare")}
    assert by_system == {"Mosaic": "active", "Mosaic 7.2": "finished"}
    assert len({row.person_id for row in ingest.rows("Patient")}) == 1 and len(ingest.rows("Patient")) == 2
    resent = ingest.client.post("/ingest/socialcare", json=_renamed(started, "Mosaic 7.2"),
                                headers=ingest.feed(data.SOCIAL_CARE_ODS))
    assert resent.status_code == 400 and resent.json()["issue"][0]["expression"] == ["event.event_id"]
    _post(ingest, ended | {"event_id": "evt-2-again"})  # the remedy: the old name, and a new id for the event
    by_system = {row.source_system: row.body["status"] for row in ingest.rows("EpisodeOfCare")}
    assert by_system == {"Mosaic": "finished", "Mosaic 7.2": "finished"}
