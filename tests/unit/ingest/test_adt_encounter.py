"""How ADT events move an Encounter, applied in order, as the pipeline applies them to the stored one."""

import pytest

from services.ingest.feeds import hl7v2
from services.ingest.feeds.model import StateConflict
from tests.fixtures.ingest import messages


def _event(event: str, ts: str, **kwargs):
    mapped = hl7v2.map_adt(messages.adt(event, ts=ts, **kwargs))
    return next(item.merge for item in mapped.items if item.resource_type == "Encounter")


def _run(*events):
    encounter = None
    for change in events:
        encounter = change(encounter)
    return encounter


def _active(encounter):
    return [loc["location"]["display"] for loc in encounter["location"] if loc["status"] == "active"]


ADMIT = ("A01", "20240301100000")


def test_admit_transfer_discharge_follow_the_visit() -> None:
    encounter = _run(_event(*ADMIT, ward="WARD01"), _event("A02", "20240302090000", ward="CCU"),
                     _event("A03", "20240305160000", ward="CCU", discharged="20240305160000"))
    assert encounter["status"] == "finished"
    assert encounter["period"] == {"start": "2024-03-01T10:15:00+00:00", "end": "2024-03-05T16:00:00+00:00"}
    assert [loc["location"]["display"] for loc in encounter["location"]] == ["WARD01", "CCU"]
    assert all(loc["status"] == "completed" for loc in encounter["location"])
    assert encounter["location"][0]["period"]["end"] == "2024-03-02T09:00:00+00:00"


def test_a_transfer_moves_the_active_location_and_keeps_the_visit_in_progress() -> None:
    encounter = _run(_event(*ADMIT, ward="WARD01"), _event("A02", "20240302090000", ward="CCU"))
    assert encounter["status"] == "in-progress" and _active(encounter) == ["CCU"]


def test_cancel_transfer_returns_to_the_previous_location() -> None:
    transferred = _run(_event(*ADMIT, ward="WARD01"), _event("A02", "20240302090000", ward="CCU"))
    cancelled = _event("A12", "20240302093000", ward="WARD01")(transferred)
    assert _active(cancelled) == ["WARD01"] and len(cancelled["location"]) == 1
    assert "end" not in cancelled["location"][0]["period"]
    assert _event("A12", "20240302093000", ward="WARD01")(cancelled) == cancelled  # a re-send changes nothing


def test_cancel_discharge_reopens_the_visit() -> None:
    discharged = _run(_event(*ADMIT, ward="WARD01"), _event("A03", "20240305160000", discharged="20240305160000",
                                                              ward="WARD01"))
    reopened = _event("A13", "20240305170000", ward="WARD01")(discharged)
    assert reopened["status"] == "in-progress" and "end" not in reopened["period"]
    assert _active(reopened) == ["WARD01"]


def test_cancel_admit_cancels_the_visit() -> None:
    cancelled = _run(_event(*ADMIT), _event("A11", "20240301110000"))
    assert cancelled["status"] == "cancelled"


def test_update_corrects_details_without_moving_the_state() -> None:
    admitted = _run(_event(*ADMIT, ward="WARD01"))
    updated = _event("A08", "20240301120000", ward="WARD01A")(admitted)
    assert updated["status"] == "in-progress" and _active(updated) == ["WARD01A"] and len(updated["location"]) == 1


def test_pre_admission_is_planned_and_becomes_in_progress_on_admission() -> None:
    planned = _run(_event("A05", "20240220090000", admitted="20240301100000"))
    assert planned["status"] == "planned"
    admitted = _event(*ADMIT, ward="WARD01")(planned)
    assert admitted["status"] == "in-progress" and _active(admitted) == ["WARD01"]


def test_every_event_applied_twice_gives_the_same_encounter() -> None:
    events = [_event(*ADMIT, ward="WARD01"), _event("A02", "20240302090000", ward="CCU"),
              _event("A08", "20240302100000", ward="CCU"), _event("A03", "20240305160000", ward="CCU",
                                                                   discharged="20240305160000"),
              _event("A13", "20240305170000", ward="CCU"), _event("A11", "20240305180000")]
    encounter = None
    for change in events:
        once = change(encounter)
        assert change(once) == once
        encounter = once


def _locations(encounter):
    return [(loc["location"]["display"], loc["status"], loc.get("period")) for loc in encounter.get("location", [])]


DISCHARGE = ("A03", "20240305100000")


def test_an_update_after_the_discharge_corrects_the_discharge_time() -> None:
    discharged = _run(_event(*ADMIT, ward="WARD01"), _event(*DISCHARGE, ward="WARD01", discharged="20240305100000"))
    corrected = _event("A08", "20240305170000", ward="WARD01", discharged="20240305163000")(discharged)
    assert corrected["status"] == "finished"
    assert corrected["period"] == {"start": "2024-03-01T10:15:00+00:00", "end": "2024-03-05T16:30:00+00:00"}
    assert _locations(corrected) == [("WARD01", "completed", {"start": "2024-03-01T10:15:00+00:00",
                                                              "end": "2024-03-05T16:30:00+00:00"})]
    assert _event("A08", "20240305170000", ward="WARD01", discharged="20240305163000")(corrected) == corrected


def test_an_update_sent_before_the_discharge_does_not_end_the_visit() -> None:
    """PV1-45 on an A08 of a visit in progress is not a discharge; replayed before a late A03, the A03's time wins."""
    update = _event("A08", "20240304120000", ward="WARD01", discharged="20240304110000")
    updated = _run(_event(*ADMIT, ward="WARD01"), update)
    assert updated["status"] == "in-progress" and "end" not in updated["period"] and _active(updated) == ["WARD01"]
    replayed = _run(_event(*ADMIT, ward="WARD01"), update,
                    _event(*DISCHARGE, ward="WARD01", discharged="20240305100000"))
    assert replayed["period"]["end"] == "2024-03-05T10:00:00+00:00"


def test_cancel_admit_releases_the_bed() -> None:
    cancelled = _run(_event(*ADMIT, ward="WARD01"), _event("A11", "20240301110000", ward="WARD01"))
    assert _locations(cancelled) == [("WARD01", "completed", {"start": "2024-03-01T10:15:00+00:00",
                                                              "end": "2024-03-01T11:00:00+00:00"})]


def test_an_admission_after_a_cancel_reopens_the_visit_from_the_new_admission() -> None:
    cancelled = _run(_event(*ADMIT, ward="WARD01^BAY1^BED1"), _event("A11", "20240301103000", ward="WARD01^BAY1^BED1"))
    readmit = _event("A01", "20240301110000", ward="WARD02^BAY3^BED4", admitted="20240301110000")
    reopened = readmit(cancelled)
    assert reopened["status"] == "in-progress" and reopened["period"] == {"start": "2024-03-01T11:00:00+00:00"}
    assert _locations(reopened) == [("WARD02 BAY3 BED4", "active", {"start": "2024-03-01T11:00:00+00:00"})]
    assert readmit(reopened) == reopened


def test_an_admission_to_the_planned_bed_makes_it_active() -> None:
    planned = _run(_event("A05", "20240220090000", admitted="20240301100000", ward="WARD01^BAY1^BED1"))
    assert _locations(planned) == [("WARD01 BAY1 BED1", "planned", None)]
    admitted = _event(*ADMIT, ward="WARD01^BAY1^BED1")(planned)
    assert _locations(admitted) == [("WARD01 BAY1 BED1", "active", {"start": "2024-03-01T10:15:00+00:00"})]
    assert _locations(_event(*ADMIT, ward="")(planned)) == _locations(admitted)  # no PV1-3: the planned bed


def test_an_admission_elsewhere_drops_the_planned_bed_and_the_discharge_leaves_none_open() -> None:
    planned = _run(_event("A05", "20240220090000", admitted="20240301100000", ward="WARD01"))
    admitted = _event(*ADMIT, ward="WARD02^BAY1^BED1")(planned)
    assert _locations(admitted) == [("WARD02 BAY1 BED1", "active", {"start": "2024-03-01T10:15:00+00:00"})]
    discharged = _event(*DISCHARGE, ward="WARD02^BAY1^BED1", discharged="20240305100000")(admitted)
    assert {status for _display, status, _period in _locations(discharged)} == {"completed"}


def test_a_discharge_straight_from_pre_admission_records_the_ward_left_and_no_planned_bed() -> None:
    planned = _run(_event("A05", "20240220090000", admitted="20240301100000", ward="WARD01"))
    discharged = _event(*DISCHARGE, ward="WARD03", admitted="20240301100000", discharged="20240305100000")(planned)
    assert discharged["status"] == "finished"
    assert _locations(discharged) == [("WARD03", "completed", {"start": "2024-03-01T10:00:00+00:00",
                                                               "end": "2024-03-05T10:00:00+00:00"})]


def test_a_transfer_of_a_pre_admitted_visit_says_it_was_admitted() -> None:
    planned = _run(_event("A05", "20240220090000", admitted="20240301100000", ward="WARD01"))
    moved = _event("A02", "20240302090000", ward="CCU")(planned)
    assert moved["status"] == "in-progress"
    assert [(d, s) for d, s, _p in _locations(moved)] == [("CCU", "active")]
    assert moved["period"] == {"start": "2024-03-01T10:15:00+00:00"}  # the A02's PV1-44, the admission as it was


def _refusal(change, encounter) -> tuple[tuple[str, int, int] | None, str, str]:
    with pytest.raises(StateConflict) as refused:
        change(encounter)
    return refused.value.hl7_location, refused.value.hl7_code, refused.value.issues[0].diagnostics


CANCELLED = (_event(*ADMIT, ward="WARD01"), _event("A11", "20240301110000", ward="WARD01"))


@pytest.mark.parametrize("event, extra, lacking", [
    ("A02", {"ward": "CCU"}, "no stay to transfer"),
    ("A03", {"ward": "WARD01", "discharged": "20240302100000"}, "no stay to discharge"),
    ("A12", {"ward": "WARD01"}, "no transfer to cancel"),
    ("A13", {"ward": "WARD01"}, "no discharge to cancel"),
])
def test_an_event_of_a_stay_on_a_cancelled_visit_is_refused_at_pv1_19(event: str, extra, lacking: str) -> None:
    """Applied, an A13 would reopen the cancelled admission and an A02 leave a cancelled visit with an active bed."""
    location, code, words = _refusal(_event(event, "20240302100000", **extra), _run(*CANCELLED))
    assert (location, code) == (("PV1", 19, 0), "204")
    assert words.startswith(f"{event}: PV1-19 visit V2024000123 is cancelled (A11)") and lacking in words


def test_a_cancelled_visit_still_takes_an_update_a_resent_cancel_and_a_new_admission() -> None:
    cancelled = _run(*CANCELLED)
    assert _event("A08", "20240301120000", ward="WARD02")(cancelled)["status"] == "cancelled"
    assert _event("A11", "20240301110000", ward="WARD01")(cancelled) == cancelled
    readmitted = _event("A01", "20240301130000", ward="WARD02", admitted="20240301130000")(cancelled)
    assert _event("A02", "20240302100000", ward="CCU")(readmitted)["status"] == "in-progress"


DISCHARGED = (_event(*ADMIT, ward="WARD01", admitted="20240301100000"),
              _event(*DISCHARGE, ward="WARD01", admitted="20240301100000", discharged="20240305100000"))


def test_an_admission_sent_again_after_the_discharge_leaves_the_stay_as_it_ended() -> None:
    discharged = _run(*DISCHARGED)
    again = _event("A01", "20240306090000", ward="WARD07", admitted="20240301100000")
    assert again(discharged) == discharged  # no second, active bed on a finished stay
    corrected = _event("A01", "20240306090000", ward="WARD01", admitted="20240301094500")(discharged)
    assert corrected["status"] == "finished"
    assert corrected["period"] == {"start": "2024-03-01T09:45:00+00:00", "end": "2024-03-05T10:00:00+00:00"}


@pytest.mark.parametrize("admitted", ["20240310100000", "20240305100000"])
def test_a_readmission_reusing_a_discharged_visit_number_is_refused(admitted: str) -> None:
    readmission = _event("A01", admitted, ward="WARD02", admitted=admitted)
    location, code, words = _refusal(readmission, _run(*DISCHARGED))
    assert (location, code) == (("PV1", 19, 0), "205")
    assert "discharged at 2024-03-05T10:00:00+00:00" in words and "its own visit number" in words


@pytest.mark.parametrize("event", ["A02", "A12"])
def test_a_transfer_or_its_cancellation_on_a_discharged_visit_is_refused_until_the_discharge_is(event: str) -> None:
    discharged = _run(*DISCHARGED)
    location, code, words = _refusal(_event(event, "20240306100000", ward="CCU"), discharged)
    assert (location, code) == (("PV1", 19, 0), "204") and "cancel the discharge (A13) first" in words
    reopened = _event("A13", "20240306090000", ward="WARD01")(discharged)
    moved = _event("A02", "20240306100000", ward="CCU")(reopened)
    assert [(d, s) for d, s, _p in _locations(moved)] == [("WARD01", "completed"), ("CCU", "active")]


def test_a_discharge_sent_again_with_a_corrected_time_moves_the_end_of_the_stay_and_its_bed() -> None:
    corrected = _event(*DISCHARGE, ward="WARD01", admitted="20240301100000", discharged="20240305113000")(
        _run(*DISCHARGED))
    assert corrected["status"] == "finished" and corrected["period"]["end"] == "2024-03-05T11:30:00+00:00"
    assert _locations(corrected) == [("WARD01", "completed", {"start": "2024-03-01T10:00:00+00:00",
                                                              "end": "2024-03-05T11:30:00+00:00"})]


def test_an_update_naming_a_location_on_a_planned_visit_keeps_it_planned() -> None:
    planned = _run(_event("A05", "20240220090000", admitted="20240301100000", ward="WARD01"))
    updated = _event("A08", "20240221090000", admitted="20240301100000", ward="WARD02^BAY1^BED4")(planned)
    assert updated["status"] == "planned" and _locations(updated) == [("WARD02 BAY1 BED4", "planned", None)]
    admitted = _event(*ADMIT, ward="", admitted="20240301100000")(updated)  # no PV1-3: the bed as corrected
    assert _locations(admitted) == [("WARD02 BAY1 BED4", "active", {"start": "2024-03-01T10:00:00+00:00"})]
    first = _run(_event("A08", "20240221090000", admitted="", ward="WARD02"))  # an A08 is the first news of it
    assert first["status"] == "planned" and _locations(first) == [("WARD02", "planned", None)]


@pytest.mark.parametrize("event", ["A12", "A13"])
def test_a_cancellation_on_a_visit_not_yet_admitted_says_the_patient_is_in(event: str) -> None:
    """Only an admitted patient has a transfer or a discharge to cancel: the A01 (and what it cancels) were lost."""
    planned = _run(_event("A05", "20240220090000", admitted="20240301100000", ward="WARD01"))
    for before in (None, planned):
        after = _event(event, "20240302090000", ward="WARD03", admitted="20240301100000")(before)
        assert after["status"] == "in-progress" and after["period"] == {"start": "2024-03-01T10:00:00+00:00"}
        assert _locations(after) == [("WARD03", "active", {"start": "2024-03-01T10:00:00+00:00"})]


def test_cancel_transfer_after_two_moves_goes_back_one() -> None:
    moved = _run(_event(*ADMIT, ward="WARD01", admitted="20240301100000"), _event("A02", "20240302090000", ward="CCU"),
                 _event("A02", "20240303090000", ward="WARD05"))
    back = _event("A12", "20240303093000", ward="CCU")(moved)
    assert _locations(back) == [
        ("WARD01", "completed", {"start": "2024-03-01T10:00:00+00:00", "end": "2024-03-02T09:00:00+00:00"}),
        ("CCU", "active", {"start": "2024-03-02T09:00:00+00:00"})]
    assert back["status"] == "in-progress" and "end" not in back["period"]


def test_cancel_discharge_reopens_the_bed_the_discharge_closed_and_no_other() -> None:
    discharged = _run(_event(*ADMIT, ward="WARD01", admitted="20240301100000"),
                      _event("A02", "20240302090000", ward="CCU"),
                      _event(*DISCHARGE, ward="CCU", discharged="20240305100000"))
    reopened = _event("A13", "20240305120000", ward="CCU")(discharged)
    assert reopened["status"] == "in-progress" and "end" not in reopened["period"]
    assert _locations(reopened) == [
        ("WARD01", "completed", {"start": "2024-03-01T10:00:00+00:00", "end": "2024-03-02T09:00:00+00:00"}),
        ("CCU", "active", {"start": "2024-03-02T09:00:00+00:00"})]


def test_a_cancel_admit_of_a_discharged_visit_is_refused_until_the_discharge_is_cancelled() -> None:
    """Applied, the visit would be `cancelled` yet keep its end and completed bed, which say the stay happened."""
    discharged = _run(*DISCHARGED)
    location, code, words = _refusal(_event("A11", "20240306100000", ward="WARD01"), discharged)
    assert (location, code) == (("PV1", 19, 0), "204") and "cancel the discharge (A13) first" in words
    reopened = _event("A13", "20240306090000", ward="WARD01")(discharged)
    cancelled = _event("A11", "20240306100000", ward="WARD01")(reopened)
    assert cancelled["status"] == "cancelled" and "end" not in cancelled["period"]
    assert _locations(cancelled) == [("WARD01", "completed", {"start": "2024-03-01T10:00:00+00:00",
                                                              "end": "2024-03-06T10:00:00+00:00"})]


PV2_EXPECTED = "PV2||||||||20240410090000"  # PV2-8, the expected admission date/time


def test_a_pre_admission_of_a_cancelled_visit_plans_it_afresh() -> None:
    cancelled = _run(*CANCELLED)
    replanned = _event("A05", "20240302100000", admitted="", ward="WARD04", segments=(PV2_EXPECTED,))(cancelled)
    assert replanned["status"] == "planned" and replanned["period"] == {"start": "2024-04-10T08:00:00+00:00"}
    assert _locations(replanned) == [("WARD04", "planned", None)]  # the cancelled admission's bed never stood


def test_a_pre_admission_of_an_admitted_visit_is_refused() -> None:
    """An A05 plans a stay not begun: on one under way or over it has nothing to plan, and its patient class
    (pre-admission) and planned bed would contradict the stay."""
    for visit in (_run(DISCHARGED[0]), _run(*DISCHARGED)):
        location, code, words = _refusal(_event("A05", "20240306100000", admitted="20240320100000",
                                                patient_class="P"), visit)
        assert (location, code) == (("PV1", 19, 0), "205")
        assert "was admitted at 2024-03-01T10:00:00+00:00" in words and "its own visit number" in words


MOVED_TWICE = (_event(*ADMIT, ward="WARD01", admitted="20240301100000"), _event("A02", "20240302090000", ward="CCU"),
               _event("A02", "20240303090000", ward="WARD05"))


def test_a_cancel_transfer_sent_again_does_not_undo_the_transfer_before() -> None:
    back = _event("A12", "20240303093000", ward="CCU")(_run(*MOVED_TWICE))
    again = _event("A12", "20240303094500", ward="CCU")  # a new control id and time, the same cancel
    assert again(back) == back
    location, code, words = _refusal(_event("A12", "20240303094500", ward=""), back)
    assert (location, code) == (("PV1", 3, 0), "101") and "PV1-3, the location the patient goes back to" in words


def test_a_cancel_transfer_with_no_transfer_left_to_cancel_is_refused() -> None:
    moved = _run(*MOVED_TWICE[:2])
    back = _event("A12", "20240302093000", ward="WARD01")(moved)
    assert _event("A12", "20240302094500", ward="WARD01")(back) == back  # the cancel sent again
    for no_transfer in (back, _run(MOVED_TWICE[0])):
        location, code, words = _refusal(_event("A12", "20240302094500", ward=""), no_transfer)
        assert (location, code) == (("PV1", 19, 0), "204")
        assert "has no transfer to cancel (the patient is at WARD01 since the admission)" in words


def test_an_admission_sent_again_during_the_stay_corrects_it_and_never_moves_the_patient() -> None:
    admitted = _run(_event(*ADMIT, ward="WARD01", admitted="20240301100000"))
    corrected = _event("A01", "20240301120000", ward="WARD02^BAY1^BED2", admitted="20240301103000")(admitted)
    assert corrected["status"] == "in-progress" and corrected["period"] == {"start": "2024-03-01T10:30:00+00:00"}
    assert _locations(corrected) == [("WARD02 BAY1 BED2", "active", {"start": "2024-03-01T10:30:00+00:00"})]
    moved = _event("A02", "20240302090000", ward="CCU")(corrected)
    again = _event("A01", "20240302100000", ward="WARD07", admitted="20240301100000")(moved)
    assert again["period"] == {"start": "2024-03-01T10:00:00+00:00"}  # corrected; the ward history stands
    assert _locations(again) == [
        ("WARD02 BAY1 BED2", "completed", {"start": "2024-03-01T10:00:00+00:00", "end": "2024-03-02T09:00:00+00:00"}),
        ("CCU", "active", {"start": "2024-03-02T09:00:00+00:00"})]


def test_an_update_correcting_the_start_moves_the_start_of_the_bed_admitted_to() -> None:
    admitted = _run(_event(*ADMIT, ward="WARD01", admitted="20240301100000"))
    corrected = _event("A08", "20240301120000", ward="WARD01", admitted="20240301094500")(admitted)
    assert _locations(corrected) == [("WARD01", "active", {"start": "2024-03-01T09:45:00+00:00"})]


def test_a_planned_visit_starts_when_expected_not_when_the_message_was_sent() -> None:
    assert "period" not in _run(_event("A08", "20240221090000", admitted="", ward="WARD02"))
    first = _run(_event("A08", "20240221090000", admitted="", ward="WARD02", segments=(PV2_EXPECTED,)))
    assert first["status"] == "planned" and first["period"] == {"start": "2024-04-10T08:00:00+00:00"}
    planned = _run(_event("A05", "20240221090000", admitted="", ward="WARD02", segments=(PV2_EXPECTED,)))
    assert planned["period"] == {"start": "2024-04-10T08:00:00+00:00"}
    booked = _run(_event("A05", "20240221090000", admitted="20240409100000", segments=(PV2_EXPECTED,)))
    assert booked["period"] == {"start": "2024-04-09T09:00:00+00:00"}  # PV1-44, when sent, is the plan
