"""Acute ADT through POST /ingest/hl7v2 into PostgreSQL: ACKs, the encounter's journey, late messages,
dissent, the S-flag, and A40 merges that can be undone."""

import pytest
from sqlalchemy import select, text

from services.ingest.feeds.hl7v2_message import parse
from services.ingest.service import Pipeline
from shared.db import create_db_engine, make_session_factory
from shared.schema import PatientMerge, Person, PersonLink, RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import ingest_settings
from tests.support import data

pytestmark = pytest.mark.integration


def _ack(response):
    message = parse(response.text)
    return message.first("MSA"), message.first("ERR")


def test_an_admission_is_stored_and_acknowledged(ingest) -> None:
    response = ingest.post_hl7(messages.text("adt_a01_itk.hl7"))
    msa, err = _ack(response)
    assert response.status_code == 200 and msa.get(1) == "AA" and msa.get(2) == "MSG00001" and err is None
    (patient,) = ingest.rows("Patient")
    assert patient.labels == ["R"]  # ZU8-4 = 2: the national S-flag
    assert patient.source_system == "PAS" and patient.source_org == data.ACUTE_ODS
    (encounter,) = ingest.rows("Encounter")
    assert encounter.body["status"] == "in-progress"
    assert encounter.body["subject"] == {"reference": f"Patient/{patient.person_id}"}
    hiv = next(c for c in ingest.rows("Condition") if c.body["code"]["coding"][0]["code"] == "B20")
    assert hiv.labels == ["HIV", "V"]  # ICD-10 code list, and DG1-18 confidential
    assert hiv.body["encounter"] == {"reference": f"Encounter/{encounter.id}"}
    (consent,) = ingest.rows("Consent")
    assert consent.body["provision"]["type"] == "deny" and consent.person_id == patient.person_id
    assert {"RelatedPerson", "AllergyIntolerance"} <= {e["resource_type"] for e in ingest.events()}



def test_the_archive_names_the_sender_of_each_message_by_msh3_at_msh4_refused_or_not(ingest) -> None:
    unsupported = messages.adt("A28", control="C2").replace("ADT^A28^ADT_A05", "ORU^R01", 1)
    for message in (messages.adt("A28", control="C1"), unsupported, "garbage that is not HL7"):
        ingest.post_hl7(message)
    listed = ingest.client.get("/ingest/raw", headers=ingest.admin()).json()
    assert sorted((r["status"], r["sender_system"] or "") for r in listed) == [
        ("processed", "PAS@RR8"), ("rejected", ""), ("rejected", "PAS@RR8")]


def test_a_message_without_msh3_keeps_the_channel_as_its_records_source_system(ingest) -> None:
    """The archive's `@RR8` is for operators: the key of the records a message writes is what it always was."""
    response = ingest.post_hl7(messages.adt("A28").replace("|PAS|RR8|", "||RR8|", 1))
    assert response.status_code == 200, response.text
    assert ingest.get(RawMessage, RawMessage.id == response.headers["x-raw-message-id"]).sender_system == "@RR8"
    (patient,) = ingest.rows("Patient")
    assert patient.source_system == "hl7v2"

def test_the_encounter_follows_admit_transfer_discharge_and_cancellations(ingest) -> None:
    steps = [("A01", "20240301100000", {"ward": "WARD01"}), ("A02", "20240302090000", {"ward": "CCU"}),
             ("A12", "20240302093000", {"ward": "WARD01"}),
             ("A03", "20240305160000", {"ward": "WARD01", "discharged": "20240305160000"}),
             ("A13", "20240305170000", {"ward": "WARD01"})]
    statuses = []
    for number, (event, ts, extra) in enumerate(steps):
        response = ingest.post_hl7(messages.adt(event, ts=ts, control=f"C{number}", **extra))
        assert _ack(response)[0].get(1) == "AA", response.text
        (encounter,) = ingest.rows("Encounter")
        statuses.append(encounter.body["status"])
    assert statuses == ["in-progress", "in-progress", "in-progress", "finished", "in-progress"]
    (encounter,) = ingest.rows("Encounter")
    assert "end" not in encounter.body["period"] and encounter.version_id == 5
    assert [loc["location"]["display"] for loc in encounter.body["location"]] == ["WARD01"]


def test_a_cancel_discharge_sending_the_hl7_null_reopens_the_stay_and_deletes_the_discharge_method(ingest) -> None:
    ingest.post_hl7(messages.adt("A01", ts="20240401100000", control="C1", admitted="20240401100000"))
    discharge = messages.adt("A03", ts="20240405100000", control="C2", discharged="20240405100000")
    ingest.post_hl7(messages.with_field(discharge, "PV1", 36, "19"))
    cancel = messages.adt("A13", ts="20240405120000", control="C3", discharged='""')  # as PAS systems send it
    response = ingest.post_hl7(messages.with_field(cancel, "PV1", 36, '""'))
    assert _ack(response)[0].get(1) == "AA", response.text
    (encounter,) = ingest.rows("Encounter")
    assert encounter.body["status"] == "in-progress" and encounter.version_id == 3
    assert "end" not in encounter.body["period"] and "hospitalization" not in encounter.body


def test_a_late_discharge_dated_before_a_cancel_admit_ends_the_stay_as_in_event_time_order(ingest) -> None:
    ingest.post_hl7(messages.adt("A01", ts="20240301100000", control="C1"))
    ingest.post_hl7(messages.adt("A11", ts="20240301120000", control="C2"))
    late = ingest.post_hl7(messages.adt("A03", ts="20240301110000", control="C3", discharged="20240301110000"))
    assert _ack(late)[0].get(1) == "AA"
    (encounter,) = ingest.rows("Encounter")
    # Replayed in event-time order (admit, discharge, cancel): in that order the cancel of a discharged admission is
    # refused (cancel the discharge first), so it is passed over and the stay ends as the discharge says, not
    # `cancelled` with an end and a closed bed that say it happened. The cancelled version stays in the history.
    assert encounter.body["status"] == "finished" and encounter.version_id == 3
    assert encounter.body["period"]["end"] == "2024-03-01T11:00:00+00:00"
    assert _wards(encounter) == [("WARD01 BAY2 BED3", "completed")]
    assert [v.body["status"] for v in ingest.versions("Encounter", encounter.id)] == \
        ["in-progress", "cancelled", "finished"]


def test_an_update_after_the_discharge_corrects_its_time_and_one_sent_before_it_does_not(ingest) -> None:
    ingest.post_hl7(messages.adt("A01", ts="20240401100000", control="C1", admitted="20240401100000"))
    ingest.post_hl7(messages.adt("A03", ts="20240405100000", control="C2", admitted="20240401100000",
                                 discharged="20240405100000"))
    corrected = ingest.post_hl7(messages.adt("A08", ts="20240405170000", control="C3", admitted="20240401100000",
                                             discharged="20240405163000"))
    assert _ack(corrected)[0].get(1) == "AA"
    (encounter,) = ingest.rows("Encounter")
    assert encounter.body["period"]["end"] == "2024-04-05T15:30:00+00:00" and encounter.version_id == 3
    assert encounter.body["location"][-1]["period"]["end"] == "2024-04-05T15:30:00+00:00"
    # An A08 the PAS sent before the A03, arriving now: replayed before the discharge, so it cannot end the stay.
    late = ingest.post_hl7(messages.adt("A08", ts="20240404120000", control="C4", admitted="20240401100000",
                                        discharged="20240404110000"))
    assert _ack(late)[0].get(1) == "AA"
    (after,) = ingest.rows("Encounter")
    assert after.body["period"] == encounter.body["period"] and after.version_id == 3


def test_an_admission_after_a_cancel_reopens_the_visit_but_a_late_one_does_not(ingest) -> None:
    ingest.post_hl7(messages.adt("A01", ts="20240401100000", control="C1", admitted="20240401100000",
                                 ward="WARD01^BAY1^BED1"))
    ingest.post_hl7(messages.adt("A11", ts="20240401103000", control="C2", admitted="20240401100000",
                                 ward="WARD01^BAY1^BED1"))
    (cancelled,) = ingest.rows("Encounter")
    assert cancelled.body["status"] == "cancelled"
    assert [loc["status"] for loc in cancelled.body["location"]] == ["completed"]  # the bed is released
    # An admit the PAS sent before its cancel, arriving late: replayed before the A11, the visit stays cancelled.
    ingest.post_hl7(messages.adt("A01", ts="20240401095000", control="C3", admitted="20240401095000",
                                 ward="WARD01^BAY1^BED1"))
    (still,) = ingest.rows("Encounter")
    assert still.body["status"] == "cancelled"
    readmit = ingest.post_hl7(messages.adt("A01", ts="20240401110000", control="C4", admitted="20240401110000",
                                           ward="WARD02^BAY3^BED4"))
    assert _ack(readmit)[0].get(1) == "AA"
    (reopened,) = ingest.rows("Encounter")
    assert reopened.body["status"] == "in-progress"
    assert reopened.body["period"] == {"start": "2024-04-01T10:00:00+00:00"}
    assert [(loc["location"]["display"], loc["status"]) for loc in reopened.body["location"]] == \
        [("WARD02 BAY3 BED4", "active")]


def _wards(encounter) -> list[tuple[str, str]]:
    return [(loc["location"]["display"], loc["status"]) for loc in encounter.body.get("location", [])]


def _refused_at_pv1_19(ingest, response, code: str, field: str = "19") -> str:
    """The ACK's words, after checking it is an AE naming PV1-19 (or `field`) with `code` and the message is archived
    rejected."""
    msa, err = _ack(response)
    assert response.status_code == 400 and msa.get(1) == "AE", response.text
    assert (err.get(2, 1), err.get(2, 3), err.get(3, 1)) == ("PV1", field, code)
    assert ingest.get(RawMessage, RawMessage.id == response.headers["x-raw-message-id"]).status == "rejected"
    return msa.get(3)


def test_a_transfer_discharge_or_cancel_discharge_on_a_cancelled_visit_is_refused_naming_pv1_19(ingest) -> None:
    ingest.post_hl7(messages.adt("A01", ts="20240401100000", control="C1", admitted="20240401100000", ward="WARD01"))
    ingest.post_hl7(messages.adt("A11", ts="20240401103000", control="C2", admitted="20240401100000", ward="WARD01"))
    (cancelled,) = ingest.rows("Encounter")
    later = [("A02", {"ward": "CCU"}), ("A03", {"ward": "WARD01", "discharged": "20240402100000"}),
             ("A13", {"ward": "WARD01"})]
    for number, (event, extra) in enumerate(later):
        response = ingest.post_hl7(messages.adt(event, ts=f"2024040210{number}000", control=f"L{number}",
                                                admitted="20240401100000", **extra))
        assert "visit V2024000123 is cancelled (A11)" in _refused_at_pv1_19(ingest, response, "204")
    (after,) = ingest.rows("Encounter")
    assert after.version_id == cancelled.version_id and after.body == cancelled.body
    assert after.body["status"] == "cancelled" and _wards(after) == [("WARD01", "completed")]
    # The PAS admits the patient after all: the visit begins again, and then it takes a transfer.
    ingest.post_hl7(messages.adt("A01", ts="20240402110000", control="C3", admitted="20240402110000", ward="WARD02"))
    moved = ingest.post_hl7(messages.adt("A02", ts="20240402120000", control="C4", ward="CCU"))
    assert _ack(moved)[0].get(1) == "AA", moved.text
    (readmitted,) = ingest.rows("Encounter")
    assert readmitted.body["status"] == "in-progress" and _wards(readmitted) == [("WARD02", "completed"),
                                                                                   ("CCU", "active")]


def test_a_cancel_arriving_late_passes_over_the_transfer_and_discharge_sent_after_it(ingest) -> None:
    for control, event, ts, extra in [("C1", "A01", "20240401100000", {"ward": "WARD01"}),
                                      ("C3", "A02", "20240401120000", {"ward": "CCU"}),
                                      ("C4", "A03", "20240403100000", {"ward": "CCU", "discharged": "20240403100000"})]:
        response = ingest.post_hl7(messages.adt(event, ts=ts, control=control, admitted="20240401100000", **extra))
        assert _ack(response)[0].get(1) == "AA", response.text
    late = ingest.post_hl7(messages.adt("A11", ts="20240401110000", control="C2", admitted="20240401100000",
                                        ward="WARD01"))
    assert _ack(late)[0].get(1) == "AA", late.text
    (encounter,) = ingest.rows("Encounter")
    # As in event-time order: admitted, cancelled, and the transfer and discharge after the cancel refused.
    assert encounter.body["status"] == "cancelled" and "end" not in encounter.body["period"]
    assert encounter.body["location"] == [{"location": {"display": "WARD01"}, "status": "completed",
                                           "period": {"start": "2024-04-01T09:00:00+00:00",
                                                      "end": "2024-04-01T10:00:00+00:00"}}]
    assert [v.body["status"] for v in ingest.versions("Encounter", encounter.id)] == \
        ["in-progress", "in-progress", "finished", "cancelled"]  # what was shown before stays in the history
    # A late message that itself falls after the cancel is refused, as it would have been in order.
    refused = ingest.post_hl7(messages.adt("A13", ts="20240402100000", control="C5", ward="CCU"))
    _refused_at_pv1_19(ingest, refused, "204")
    assert ingest.rows("Encounter")[0].version_id == encounter.version_id


def test_an_admission_after_the_discharge_is_taken_as_sent_again_or_refused_as_a_readmission(ingest) -> None:
    ingest.post_hl7(messages.adt("A01", ts="20240401100000", control="C1", admitted="20240401100000", ward="WARD01"))
    ingest.post_hl7(messages.adt("A03", ts="20240405100000", control="C2", admitted="20240401100000", ward="WARD01",
                                 discharged="20240405100000"))
    (discharged,) = ingest.rows("Encounter")
    again = ingest.post_hl7(messages.adt("A01", ts="20240405120000", control="C3", admitted="20240401100000",
                                         ward="WARD01"))
    assert _ack(again)[0].get(1) == "AA", again.text
    assert ingest.rows("Encounter")[0].version_id == discharged.version_id  # nothing to change: the stay is over
    readmission = ingest.post_hl7(messages.adt("A01", ts="20240410090000", control="C4", admitted="20240410090000",
                                               ward="WARD02"))
    assert "discharged at 2024-04-05T09:00:00+00:00" in _refused_at_pv1_19(ingest, readmission, "205")
    (after,) = ingest.rows("Encounter")
    assert after.body == discharged.body and after.body["status"] == "finished"
    assert _wards(after) == [("WARD01", "completed")]


def test_a_readmission_stored_before_a_late_discharge_is_passed_over_when_the_stay_is_replayed(ingest) -> None:
    ingest.post_hl7(messages.adt("A01", ts="20240401100000", control="C1", admitted="20240401100000", ward="WARD01"))
    ingest.post_hl7(messages.adt("A01", ts="20240410090000", control="C3", admitted="20240410090000", ward="WARD02"))
    late = ingest.post_hl7(messages.adt("A03", ts="20240405100000", control="C2", admitted="20240401100000",
                                        ward="WARD01", discharged="20240405100000"))
    assert _ack(late)[0].get(1) == "AA", late.text
    (encounter,) = ingest.rows("Encounter")
    assert encounter.body["status"] == "finished"
    assert encounter.body["period"] == {"start": "2024-04-01T09:00:00+00:00", "end": "2024-04-05T09:00:00+00:00"}
    assert _wards(encounter) == [("WARD01", "completed")]


def test_an_update_naming_a_ward_keeps_a_planned_visit_planned_in_either_order(ingest) -> None:
    ingest.post_hl7(messages.adt("A05", ts="20240320090000", control="C1", patient_class="P",
                                 admitted="20240401100000", ward="WARD01"))
    ingest.post_hl7(messages.adt("A08", ts="20240321090000", control="C2", patient_class="P",
                                 admitted="20240401100000", ward="WARD02^BAY1^BED4"))
    (planned,) = ingest.rows("Encounter")
    assert planned.body["status"] == "planned" and _wards(planned) == [("WARD02 BAY1 BED4", "planned")]
    # The A01 names no bed; an A08 the PAS sent before it arrives after it: replayed, the corrected bed is taken up.
    ingest.post_hl7(messages.adt("A05", ts="20240320090000", control="D1", visit="V2", admitted="20240401100000",
                                 ward="WARD01", patient_class="P"))
    ingest.post_hl7(messages.adt("A01", ts="20240401100000", control="D3", visit="V2", admitted="20240401100000",
                                 ward=""))
    late = ingest.post_hl7(messages.adt("A08", ts="20240321090000", control="D2", visit="V2", patient_class="P",
                                        admitted="20240401100000", ward="WARD02^BAY1^BED4"))
    assert _ack(late)[0].get(1) == "AA", late.text
    admitted = next(e for e in ingest.rows("Encounter") if e.source_key == "visit:V2")
    assert admitted.body["status"] == "in-progress" and _wards(admitted) == [("WARD02 BAY1 BED4", "active")]


def _adt(ingest, event: str, ts: str, control: str, **extra) -> None:
    response = ingest.post_hl7(messages.adt(event, ts=ts, control=control, **extra))
    assert _ack(response)[0].get(1) == "AA", response.text


def test_a_cancel_admit_of_a_discharged_visit_is_refused_until_the_discharge_is_cancelled(ingest) -> None:
    _adt(ingest, "A01", "20240401100000", "C1", admitted="20240401100000", ward="WARD01")
    _adt(ingest, "A03", "20240405100000", "C2", admitted="20240401100000", ward="WARD01", discharged="20240405100000")
    (discharged,) = ingest.rows("Encounter")
    refused = ingest.post_hl7(messages.adt("A11", ts="20240405120000", control="C3", ward="WARD01"))
    assert "cancel the discharge (A13) first" in _refused_at_pv1_19(ingest, refused, "204")
    assert ingest.rows("Encounter")[0].version_id == discharged.version_id
    _adt(ingest, "A13", "20240405130000", "C4", ward="WARD01", discharged='""')
    _adt(ingest, "A11", "20240405140000", "C5", ward="WARD01")
    (cancelled,) = ingest.rows("Encounter")
    assert cancelled.body["status"] == "cancelled" and "end" not in cancelled.body["period"]
    assert _wards(cancelled) == [("WARD01", "completed")]


def test_a_pre_admission_plans_a_cancelled_visit_again_and_is_refused_on_an_admitted_one(ingest) -> None:
    _adt(ingest, "A01", "20240401100000", "C1", admitted="20240401100000", ward="WARD01")
    _adt(ingest, "A11", "20240401110000", "C2", ward="WARD01")
    _adt(ingest, "A05", "20240402100000", "C3", admitted="20240410090000", ward="WARD04", patient_class="P")
    (planned,) = ingest.rows("Encounter")
    assert planned.body["status"] == "planned" and _wards(planned) == [("WARD04", "planned")]
    assert planned.body["period"] == {"start": "2024-04-10T08:00:00+00:00"}
    _adt(ingest, "A01", "20240401100000", "D1", visit="V2", admitted="20240401100000", ward="WARD01")
    refused = ingest.post_hl7(messages.adt("A05", ts="20240402100000", control="D2", visit="V2",
                                           admitted="20240410090000", patient_class="P"))
    assert "a pre-admission (A05) plans a stay not yet begun" in _refused_at_pv1_19(ingest, refused, "205")
    # Out of order (the A05 first, then the A01 dated before it): the A05 is passed over, as it is refused in order.
    _adt(ingest, "A05", "20240402100000", "E2", visit="V3", admitted="20240410090000", patient_class="P")
    _adt(ingest, "A01", "20240401100000", "E1", visit="V3", admitted="20240401100000", ward="WARD01")
    admitted = next(e for e in ingest.rows("Encounter") if e.source_key == "visit:V3")
    assert admitted.body["status"] == "in-progress" and admitted.body["class"]["code"] == "IMP"
    assert admitted.body["period"] == {"start": "2024-04-01T09:00:00+00:00"}
    assert _wards(admitted) == [("WARD01", "active")]


def test_a_cancel_transfer_sent_again_changes_nothing_and_one_without_pv1_3_is_refused(ingest) -> None:
    _adt(ingest, "A01", "20240401100000", "C1", admitted="20240401100000", ward="WARD01")
    _adt(ingest, "A02", "20240402100000", "C2", ward="CCU")
    _adt(ingest, "A02", "20240403100000", "C3", ward="WARD05")
    _adt(ingest, "A12", "20240403110000", "C4", ward="CCU")
    (back,) = ingest.rows("Encounter")
    _adt(ingest, "A12", "20240403113000", "C5", ward="CCU")  # the same cancel, sent again with a new control id
    assert ingest.rows("Encounter")[0].version_id == back.version_id
    unnamed = ingest.post_hl7(messages.adt("A12", ts="20240403120000", control="C6", ward=""))
    assert "PV1-3, the location the patient goes back to" in _refused_at_pv1_19(ingest, unnamed, "101", "3")
    (after,) = ingest.rows("Encounter")
    assert after.version_id == back.version_id and _wards(after) == [("WARD01", "completed"), ("CCU", "active")]
    _adt(ingest, "A12", "20240403130000", "C7", ward="WARD01")  # the transfer before, cancelled by name
    nothing_left = ingest.post_hl7(messages.adt("A12", ts="20240403140000", control="C8", ward="CCU"))
    assert "has no transfer to cancel" in _refused_at_pv1_19(ingest, nothing_left, "204")
    assert _wards(ingest.rows("Encounter")[0]) == [("WARD01", "active")]
    # Late (after a transfer the PAS sent after it): replayed where it was sent, it undoes the transfer before it.
    _adt(ingest, "A01", "20240401100000", "D1", visit="V2", admitted="20240401100000", ward="WARD01")
    _adt(ingest, "A02", "20240402100000", "D2", visit="V2", ward="CCU")
    _adt(ingest, "A02", "20240404100000", "D4", visit="V2", ward="WARD05")
    _adt(ingest, "A12", "20240403100000", "D3", visit="V2", ward="WARD01")
    late = next(e for e in ingest.rows("Encounter") if e.source_key == "visit:V2")
    assert late.body["location"] == [
        {"location": {"display": "WARD01"}, "status": "completed",
         "period": {"start": "2024-04-01T09:00:00+00:00", "end": "2024-04-04T09:00:00+00:00"}},
        {"location": {"display": "WARD05"}, "status": "active", "period": {"start": "2024-04-04T09:00:00+00:00"}}]


def test_an_admission_sent_again_during_the_stay_corrects_its_start_and_is_no_transfer(ingest) -> None:
    _adt(ingest, "A01", "20240401100000", "C1", admitted="20240401100000", ward="WARD01")
    _adt(ingest, "A01", "20240401120000", "C2", admitted="20240401103000", ward="WARD01^BAY2")
    (corrected,) = ingest.rows("Encounter")
    assert corrected.body["status"] == "in-progress"
    assert corrected.body["period"] == {"start": "2024-04-01T09:30:00+00:00"}
    assert corrected.body["location"] == [{"location": {"display": "WARD01 BAY2"}, "status": "active",
                                           "period": {"start": "2024-04-01T09:30:00+00:00"}}]
    _adt(ingest, "A02", "20240402100000", "C3", ward="CCU")
    _adt(ingest, "A01", "20240402120000", "C4", admitted="20240401100000", ward="WARD07")
    (after,) = ingest.rows("Encounter")
    assert after.body["period"] == {"start": "2024-04-01T09:00:00+00:00"}
    assert _wards(after) == [("WARD01 BAY2", "completed"), ("CCU", "active")]
    # The correction arriving after the transfer the PAS sent after it: replayed before it, the same stay.
    _adt(ingest, "A01", "20240401100000", "D1", visit="V2", admitted="20240401100000", ward="WARD01")
    _adt(ingest, "A02", "20240402100000", "D3", visit="V2", ward="CCU")
    _adt(ingest, "A01", "20240401120000", "D2", visit="V2", admitted="20240401103000", ward="WARD01^BAY2")
    late = next(e for e in ingest.rows("Encounter") if e.source_key == "visit:V2")
    assert late.body["period"] == {"start": "2024-04-01T09:30:00+00:00"}
    assert late.body["location"] == [
        {"location": {"display": "WARD01 BAY2"}, "status": "completed",
         "period": {"start": "2024-04-01T09:30:00+00:00", "end": "2024-04-02T09:00:00+00:00"}},
        {"location": {"display": "CCU"}, "status": "active", "period": {"start": "2024-04-02T09:00:00+00:00"}}]


def test_a_late_ending_dated_before_the_stay_began_is_refused(ingest) -> None:
    _adt(ingest, "A01", "20240401100000", "C1", admitted="20240401100000", ward="WARD01")
    (admitted,) = ingest.rows("Encounter")
    late = ingest.post_hl7(messages.adt("A03", ts="20240331100000", control="C0", admitted="20240401100000",
                                        ward="WARD01", discharged="20240331100000"))
    words = _refused_at_pv1_19(ingest, late, "204")
    assert "no stay under way to end or undo at 2024-03-31T09:00:00+00:00" in words
    assert "first message is dated 2024-04-01T09:00:00+00:00" in words
    assert ingest.rows("Encounter")[0].version_id == admitted.version_id


def test_a_visit_an_update_first_tells_of_starts_when_expected(ingest) -> None:
    _adt(ingest, "A08", "20240320090000", "C1", admitted="", ward="WARD02", patient_class="P")
    _adt(ingest, "A08", "20240320090000", "D1", visit="V2", admitted="", ward="WARD02", patient_class="P",
         segments=("PV2||||||||20240410090000",))
    visits = {e.source_key: e for e in ingest.rows("Encounter")}
    undated, expected = visits["visit:V2024000123"], visits["visit:V2"]
    assert undated.body["status"] == "planned" and "period" not in undated.body
    assert expected.body["status"] == "planned" and expected.body["period"] == {"start": "2024-04-10T08:00:00+00:00"}


def test_a_pre_admission_planned_bed_is_taken_up_on_admission_and_closed_on_discharge(ingest) -> None:
    steps = [("A05", "20240301090000", {"admitted": "20240305090000", "ward": "WARD01"}),
             ("A01", "20240305100000", {"admitted": "20240305100000", "ward": "WARD02^BAY1^BED1"}),
             ("A03", "20240310150000", {"admitted": "20240305100000", "ward": "WARD02^BAY1^BED1",
                                        "discharged": "20240310150000"})]
    seen = []
    for number, (event, ts, extra) in enumerate(steps):
        assert _ack(ingest.post_hl7(messages.adt(event, ts=ts, control=f"C{number}", **extra)))[0].get(1) == "AA"
        (encounter,) = ingest.rows("Encounter")
        seen.append([(loc["location"]["display"], loc["status"]) for loc in encounter.body["location"]])
    assert seen == [[("WARD01", "planned")], [("WARD02 BAY1 BED1", "active")], [("WARD02 BAY1 BED1", "completed")]]


def test_the_s_flag_and_dissent_stand_until_a_zu8_says_otherwise(ingest) -> None:
    ingest.post_hl7(messages.adt("A01", ts="20240401100000", control="C1", zu8="|2|No|2"))
    ingest.post_hl7(messages.adt("A02", ts="20240402100000", control="C2", ward="WARD09^BAY1^BED1"))  # no ZU8
    (patient,) = ingest.rows("Patient")
    assert patient.labels == ["R"] and patient.version_id == 1
    assert ingest.rows("Consent")[0].body["provision"]["type"] == "deny"
    ingest.post_hl7(messages.adt("A08", ts="20240403100000", control="C3", zu8="|2|No|1"))  # local hiding only
    (patient,) = ingest.rows("Patient")
    assert patient.labels == [] and patient.version_id == 2


def test_an_exact_resend_is_acknowledged_and_changes_nothing(ingest) -> None:
    message = messages.adt("A02", ts="20240302090000", ward="CCU")
    ingest.post_hl7(messages.adt("A01", ts="20240301100000", ward="WARD01", control="C0"))
    ingest.post_hl7(message)
    before = {(r.resource_type, r.id): r.version_id for r in ingest.rows("Encounter") + ingest.rows("Patient")}
    response = ingest.post_hl7(message)
    assert _ack(response)[0].get(1) == "AA" and "duplicate" in _ack(response)[0].get(3)
    after = {(r.resource_type, r.id): r.version_id for r in ingest.rows("Encounter") + ingest.rows("Patient")}
    assert after == before
    assert ingest.count(RawMessage) == 3


def test_an_updated_patient_makes_a_new_version_of_the_source_patient_only(ingest) -> None:
    ingest.post_hl7(messages.adt("A28", ts="20240301100000", control="C1"))
    ingest.post_hl7(messages.adt("A31", ts="20240401100000", control="C2", postcode="LS2 9JT"))
    (patient,) = ingest.rows("Patient")
    assert patient.version_id == 2 and patient.body["address"][0]["postalCode"] == "LS2 9JT"
    assert ingest.count(Person) == 1


@pytest.mark.parametrize("message, code, field", [
    (messages.adt("A01", nhs=data.INVALID_NHS_NUMBER), "AE", ("PID", "3")),
    (messages.adt("A01", dob="19801301"), "AE", ("PID", "7")),
    (messages.adt("A01").replace("ADT^A01^ADT_A01", "ORU^R01^ORU_R01"), "AR", ("MSH", "9")),
    ("this is not an HL7 message", "AR", ("MSH", "0")),
    (messages.with_field(messages.adt("A01"), "MSH", 17, "EBCDIC"), "AR", ("MSH", "18")),
])
def test_bad_messages_get_ae_or_ar_naming_the_field_and_store_nothing(ingest, message: str, code: str,
                                                                      field) -> None:
    response = ingest.post_hl7(message)
    msa, err = _ack(response)
    assert response.status_code == 400 and msa.get(1) == code
    assert (err.get(2, 1), err.get(2, 3)) == field
    assert ingest.count(Resource) == 0
    assert ingest.get(RawMessage, RawMessage.id == response.headers["x-raw-message-id"]).status == "rejected"


def test_a_latin1_message_is_read_as_its_msh18_declares_and_archived_byte_for_byte(ingest) -> None:
    message = messages.with_field(messages.adt("A28", given="RENÉ\u00a0LOUIS"), "MSH", 17, "8859/1")
    content = message.encode("latin-1")  # É and the no-break space are C9 A0: valid UTF-8 for another letter
    response = ingest.client.post("/ingest/hl7v2", content=content, headers=ingest.feed(data.ACUTE_ODS))
    assert response.status_code == 200 and _ack(response)[0].get(1) == "AA"
    (patient,) = ingest.rows("Patient")
    assert patient.body["name"][0]["given"] == ["RENÉ\u00a0LOUIS"]
    assert ingest.get(RawMessage, RawMessage.id == response.headers["x-raw-message-id"]).content == content


def test_msh4_must_be_the_organisation_the_token_was_issued_to(ingest) -> None:
    response = ingest.post_hl7(messages.adt("A28"), ods=data.OTHER_TRUST_ODS)
    msa, err = _ack(response)
    assert msa.get(1) == "AE" and err.get(2, 1) == "MSH" and err.get(2, 3) == "4"
    assert ingest.count(Resource) == 0


def test_an_a40_merge_repoints_the_retired_record_and_can_be_undone(ingest) -> None:
    # Two records the PAS later finds are one person: no NHS number on the duplicate, so they stay apart.
    ingest.post_hl7(messages.adt("A01", ts="20240301100000", control="C1", mrn="RR8000123", visit="V1"))
    ingest.post_hl7(messages.adt("A01", ts="20240302100000", control="C2", mrn="RR8000999", nhs=None,
                                 given="Blossom", family="ORANJE", dob="19800110", visit="V2"))
    survivor, retired = sorted(ingest.rows("Patient"), key=lambda r: r.source_key)
    assert survivor.source_key == "mrn:RR8|RR8000123" and survivor.person_id != retired.person_id
    retired_person = retired.person_id
    visit2 = next(e for e in ingest.rows("Encounter") if e.source_key == "visit:V2")

    response = ingest.post_hl7(messages.adt("A40", ts="20240303100000", control="C3", mrn="RR8000123",
                                            mrg="RR8000999^^^RR8^MR"))
    assert _ack(response)[0].get(1) == "AA", response.text
    moved = ingest.get(Resource, Resource.id == visit2.id)
    assert moved.person_id == survivor.person_id
    assert moved.body["subject"] == {"reference": f"Patient/{survivor.person_id}"}
    assert moved.version_id == visit2.version_id + 1
    assert [v.body["subject"]["reference"] for v in ingest.versions("Encounter", visit2.id)] == [
        f"Patient/{retired_person}", f"Patient/{survivor.person_id}"]  # history kept
    survivor_now = ingest.get(Resource, Resource.id == survivor.id)
    retired_now = ingest.get(Resource, Resource.id == retired.id)
    assert {"other": {"reference": f"Patient/{retired.id}"}, "type": "replaces"} in survivor_now.body["link"]
    assert retired_now.body["link"] == [{"other": {"reference": f"Patient/{survivor.id}"}, "type": "replaced-by"}]
    assert retired_now.body["active"] is False
    old_person = ingest.get(Person, Person.id == retired_person)
    assert (old_person.status, old_person.merged_into) == ("merged", survivor.person_id)
    assert ingest.get(PersonLink, PersonLink.source_patient_id == retired.id).method == "merge"
    relinks = [e for e in ingest.events() if e["change"] == "relink"]
    assert {e["id"] for e in relinks} >= {visit2.id, retired.id}

    merge = ingest.get(PatientMerge, PatientMerge.retired_patient_id == retired.id)
    undo = ingest.client.post(f"/ingest/merges/{merge.id}/undo", headers=ingest.admin())
    assert undo.status_code == 200, undo.text
    back = ingest.get(Resource, Resource.id == visit2.id)
    assert back.person_id == retired_person and back.body["subject"] == {"reference": f"Patient/{retired_person}"}
    assert "link" not in ingest.get(Resource, Resource.id == retired.id).body
    assert "link" not in ingest.get(Resource, Resource.id == survivor.id).body
    assert ingest.get(Person, Person.id == retired_person).status == "active"
    assert ingest.get(PatientMerge, PatientMerge.id == merge.id).undone_at is not None
    again = ingest.client.post(f"/ingest/merges/{merge.id}/undo", headers=ingest.admin())
    assert again.status_code == 409


def test_a_merge_naming_an_unknown_record_is_an_error_at_mrg1(ingest) -> None:
    ingest.post_hl7(messages.adt("A28", control="C1"))
    response = ingest.post_hl7(messages.adt("A40", control="C2", mrg="NOPE^^^RR8^MR"))
    msa, err = _ack(response)
    assert msa.get(1) == "AE" and err.get(2, 1) == "MRG"
    assert ingest.count(PatientMerge) == 0


def test_processing_that_fails_leaves_the_raw_message_archived_and_a_retry_stores_it(ingest) -> None:
    with ingest.sessions.begin() as session:  # a real fault: the search table is gone
        session.execute(text("ALTER TABLE search_param RENAME TO search_param_away"))
    response = ingest.post_hl7(messages.text("adt_a01_itk.hl7"))
    msa, _err = _ack(response)
    assert response.status_code == 500 and msa.get(1) == "AE" and "retry" in msa.get(3)
    raw_id = response.headers["x-raw-message-id"]
    raw = ingest.get(RawMessage, RawMessage.id == raw_id)
    assert raw.status == "failed" and raw.content == messages.text("adt_a01_itk.hl7").encode()
    assert ingest.count(Resource) == 0
    failed = ingest.client.get("/ingest/raw?status=failed", headers=ingest.admin()).json()
    assert [r["id"] for r in failed] == [raw_id]
    metrics = ingest.client.get("/metrics").text
    assert "scr_ingest_raw_failed 1.0" in metrics

    with ingest.sessions.begin() as session:
        session.execute(text("ALTER TABLE search_param_away RENAME TO search_param"))
    retried = ingest.client.post(f"/ingest/raw/{raw_id}/retry", headers=ingest.admin())
    assert retried.status_code == 200 and retried.json()["status"] == "processed"
    assert ingest.count(Resource, Resource.resource_type == "Encounter") == 1
    raw = ingest.get(RawMessage, RawMessage.id == raw_id)
    assert raw.status == "processed" and raw.attempts == 2
    assert "scr_ingest_raw_failed 0.0" in ingest.client.get("/metrics").text
    assert ingest.client.post(f"/ingest/raw/{raw_id}/retry", headers=ingest.admin()).status_code == 409


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_the_archive_records_each_outcome_with_its_summary(database: str, request, tokens) -> None:
    url = request.getfixturevalue("pg_url" if database == "postgresql" else "sqlite_url")
    engine = create_db_engine(url)
    sessions = make_session_factory(engine)
    pipeline = Pipeline(sessions, None, ingest_settings(tokens, url))
    admit = messages.adt("A01", ts="20240301100000", ward="WARD01", control="S1")
    first, resend, bad = (pipeline.receive("hl7v2", m.encode(), content_type="x-application/hl7-v2+er7",
                                           sender_org=data.ACUTE_ODS, sender_system="PAS")
                          for m in (admit, admit, admit.replace("PID|", "PIX|")))
    with sessions() as session:
        raws = {raw.id: raw for raw in session.scalars(select(RawMessage))}
    engine.dispose()
    stored = raws[first.raw_id]
    assert (stored.status, stored.attempts, stored.error) == ("processed", 1, None)
    assert [c.resource_type for c in first.changes] == ["Patient", "Encounter"]
    assert stored.detail["changes"] == {"create": 2} and stored.processed_at is not None
    assert (raws[resend.raw_id].status, raws[resend.raw_id].detail["duplicate_of"]) == ("processed", first.raw_id)
    assert (raws[bad.raw_id].status, raws[bad.raw_id].attempts) == ("rejected", 1) and raws[bad.raw_id].error
