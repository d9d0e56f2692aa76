"""How ADT events move an Encounter: admit, transfer, discharge and their cancellations.

ADT sends changes, not states, so each event is a pure function from the stored Encounter (or none) to the
new one. Each is idempotent: applying the same event twice gives the same Encounter. An event older than the
stored state (MSH-7 against the stored source timestamp) is not applied to it: instead the writer replays the
stay's archived events with the late one from none, in event-time order (services/ingest/writer.py `_replayed`),
so a transfer that arrives after the discharge still lands in the ward history, and a discharge that arrives after
a later A08 update still ends the stay. A late discharge or cancellation dated before every other event of the
stay (ENDINGS, which cannot begin one) contradicts it and is refused (refusal_before).

An event the visit's state rules out (a transfer, discharge or cancellation of a cancelled visit; a transfer or
cancel admit of a discharged one; an admission after the discharge; a pre-admission of an admitted one; a cancel
transfer with no transfer to cancel) raises StateConflict rather than leave a status that its period and beds
contradict: the message is refused, and an archived one that a replay puts there is passed over, so the visit ends
the same whichever order its messages arrived in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.ingest.feeds.model import StateConflict, parse_instant
from shared.fhir import Issue

ADMIT = frozenset({"A01", "A04"})
PRE_ADMIT = "A05"
TRANSFER, DISCHARGE, UPDATE = "A02", "A03", "A08"
CANCEL_ADMIT, CANCEL_TRANSFER, CANCEL_DISCHARGE = "A11", "A12", "A13"
ENDINGS = frozenset({DISCHARGE, CANCEL_ADMIT, CANCEL_TRANSFER, CANCEL_DISCHARGE})  # end or undo, never begin
EVENTS = ADMIT | {PRE_ADMIT, TRANSFER, DISCHARGE, UPDATE, CANCEL_ADMIT, CANCEL_TRANSFER, CANCEL_DISCHARGE}
# Events that need a stay under way, and what a cancelled visit lacks for each (in the refusal's words).
_NEEDS_A_STAY = {TRANSFER: "no stay to transfer", DISCHARGE: "no stay to discharge",
                 CANCEL_TRANSFER: "no transfer to cancel", CANCEL_DISCHARGE: "no discharge to cancel"}


@dataclass(frozen=True)
class EncounterEvent:
    """One ADT event as it bears on the visit: the static fields from PV1, and the times and location."""

    event: str
    at: str  # the event time (FHIR dateTime)
    fields: dict[str, Any]  # identifier, class, subject, serviceType, hospitalization ... (replace stored)
    location: str | None  # PV1-3 as a display string
    admitted: str | None  # PV1-44
    discharged: str | None  # PV1-45
    expected: str | None = None  # PV2-8, the expected admission: a planned visit's start when PV1-44 is empty

    def __call__(self, current: dict[str, Any] | None) -> dict[str, Any]:
        return apply(current, self)


def apply(current: dict[str, Any] | None, event: EncounterEvent) -> dict[str, Any]:
    """The Encounter after `event`; StateConflict when the visit's state rules the event out."""
    _check(current, event)
    encounter = copy.deepcopy(current) if current else {"resourceType": "Encounter"}
    encounter.update(copy.deepcopy(event.fields))
    handler = _HANDLERS[event.event]
    handler(encounter, event, current is None)
    return encounter


def _check(current: dict[str, Any] | None, event: EncounterEvent) -> None:
    """Refuse what the visit's state rules out. A PAS cannot transfer or discharge a cancelled admission, nor move
    a discharged patient, so such an event means a lost or wrong message: applied, it would reopen a cancelled
    stay or leave a bed active on a finished one. One visit number is one stay (one Encounter), so an admission
    after the discharge is a readmission that needs its own; one from before it is the admission sent again, and a
    pre-admission of a visit already admitted has nothing left to plan."""
    current = current or {}
    status = current.get("status")
    if status == "cancelled" and event.event in _NEEDS_A_STAY:
        raise _conflict(event, f"is cancelled (A11), so there is {_NEEDS_A_STAY[event.event]}; if the patient was "
                               "admitted after all, send the admission (A01) again first", "204")
    if status == "finished":
        _check_discharged(current, event)
    if status in ("in-progress", "finished") and event.event == PRE_ADMIT:
        raise _conflict(event, f"was admitted at {current.get('period', {}).get('start')}: a pre-admission (A05) "
                               "plans a stay not yet begun, so a new one needs its own visit number (an A08 corrects "
                               "this one's details)", "205")
    if status == "in-progress" and event.event == CANCEL_TRANSFER:
        _check_cancel_transfer(current, event)


def _check_discharged(current: dict[str, Any], event: EncounterEvent) -> None:
    """A discharged patient is neither moved nor un-admitted: the discharge is cancelled (A13) first, or the stay
    would be `cancelled` (or moved) with an end and closed beds that say it happened."""
    end = current.get("period", {}).get("end")
    if event.event in (TRANSFER, CANCEL_TRANSFER, CANCEL_ADMIT):
        raise _conflict(event, f"was discharged at {end}; cancel the discharge (A13) first", "204")
    if event.event in ADMIT and _not_before(event.admitted or event.at, end):
        raise _conflict(event, f"was discharged at {end}, before this admission: a readmission needs its own visit "
                               "number (or cancel the discharge, A13, if the patient never left)", "205")


def _check_cancel_transfer(current: dict[str, Any], event: EncounterEvent) -> None:
    """A cancel transfer names (PV1-3) the bed the patient goes back to, and that says which transfer it cancels:
    one naming the bed the patient is in is that cancel sent again. Without PV1-3 a cancel sent again (a new control
    id) would undo the transfer before it, so it is refused while there is a transfer to cancel."""
    active = _active(current)
    if event.location and active is not None and active["location"].get("display") == event.location:
        return
    if active is None or len(current.get("location", [])) < 2:
        where = f" (the patient is at {active['location'].get('display')} since the admission)" if active else ""
        raise _conflict(event, f"has no transfer to cancel{where}", "204")
    if not event.location:
        raise StateConflict(Issue(f"{event.event}: PV1-3, the location the patient goes back to, is required to "
                                  "cancel a transfer: it says which transfer is cancelled, so that the cancel sent "
                                  "again does not undo the one before", "PV1-3", code="required"),
                            hl7_location=("PV1", 3, 0), hl7_code="101")


def refusal_before(event: EncounterEvent, first: datetime | None) -> StateConflict:
    """The refusal of a late discharge or cancellation (ENDINGS) that a replay would put before every other event
    of its stay (`first`, the earliest one's MSH-7): in MSH-7 order there was no stay yet to end or undo, and applied
    first it would end the stay before the admission that follows."""
    began = first.isoformat() if first else "later"
    return _conflict(event, f"has no stay under way to end or undo at {event.at}: its first message is dated {began}"
                            " (MSH-7); check this message's time", "204")


def _conflict(event: EncounterEvent, reason: str, code: str) -> StateConflict:
    """The refusal, at PV1-19 (HL7 table 0357: 204 no such stay under way, 205 the visit number is taken)."""
    visit = (event.fields.get("identifier") or [{}])[0].get("value", "")
    return StateConflict(Issue(f"{event.event}: PV1-19 visit {visit} {reason}", "PV1-19", code="business-rule"),
                         hl7_location=("PV1", 19, 0), hl7_code=code)


def _not_before(moment: str, end: str | None) -> bool:
    later, ended = parse_instant(moment), parse_instant(end)
    return later is not None and ended is not None and later >= ended


def _admit(encounter: dict[str, Any], event: EncounterEvent, _new: bool) -> None:
    """In progress from PV1-44, at PV1-3 (or the planned bed); a planned location does not outlive the admission."""
    if encounter.get("status") in ("in-progress", "finished"):
        _admission_again(encounter, event)
        return
    if encounter.get("status") == "cancelled":
        _reopen(encounter)
    encounter["status"] = "in-progress"
    start = event.admitted or encounter.get("period", {}).get("start") or event.at
    encounter.setdefault("period", {})["start"] = start
    location = _admitted_to(encounter, event.location)
    _drop_planned(encounter)
    _move_to(encounter, location, event.admitted or event.at)


def _admission_again(encounter: dict[str, Any], event: EncounterEvent) -> None:
    """The admission of a stay under way or over, sent again or corrected (_check refuses a readmission after the
    discharge). PV1-44 corrects the start as an A08 would; PV1-3 names the bed admitted to, so it corrects that bed
    while the patient is still in it. Never a move: once transferred or discharged the ward history stands, since
    the messages sent since say where the patient went (and a PAS re-sending an A01 may give the current bed)."""
    _correct_start(encounter, event.admitted)
    beds = encounter.get("location", [])
    if not event.location or encounter.get("status") != "in-progress" or len(beds) > 1:
        return
    start = encounter.get("period", {}).get("start") or event.at
    if not beds:
        _move_to(encounter, event.location, start)
    elif beds[0].get("status") == "active" and beds[0].get("period", {}).get("start") == start:
        beds[0]["location"] = {"display": event.location}


def _reopen(encounter: dict[str, Any]) -> None:
    """An admission on a cancelled visit (the same PV1-19) begins it again, so the cancelled admission's times and
    beds, which never stood, give way to the new one's. A late admit older than the cancel never gets here: the
    writer replays the stay in event-time order, so the cancel comes after it."""
    encounter["status"] = "in-progress"
    encounter.pop("period", None)
    encounter.pop("location", None)


def _admitted_to(encounter: dict[str, Any], location: str | None) -> str | None:
    """Where the admission puts the patient: PV1-3, or when it names none the bed planned at pre-admission."""
    if location or _active(encounter) is not None:
        return location
    planned = [loc for loc in encounter.get("location", []) if loc.get("status") == "planned"]
    return planned[-1]["location"].get("display") if planned else None


def _pre_admit(encounter: dict[str, Any], event: EncounterEvent, _new: bool) -> None:
    """Planned from PV1-44 (else PV2-8, the expected admission), at PV1-3 planned. A cancelled visit booked again
    (MSH-7 later than the A11) is planned afresh, as an admission would begin it again; _check refuses a visit
    already admitted, which has nothing left to plan."""
    if encounter.get("status") == "cancelled":
        _reopen(encounter)
    encounter["status"] = "planned"
    if start := event.admitted or event.expected:
        encounter["period"] = {"start": start}
    if event.location:
        _plan(encounter, event.location)


def _plan(encounter: dict[str, Any], location: str) -> None:
    """The bed planned for a visit not yet admitted (the A05's, or an A08's correction of it): planned, not active,
    since the patient is not there until the admission."""
    kept = [loc for loc in encounter.get("location", []) if loc.get("status") != "planned"]
    encounter["location"] = [*kept, {"location": {"display": location}, "status": "planned"}]


def _not_admitted(encounter: dict[str, Any], new: bool) -> bool:
    return new or encounter.get("status") == "planned"


def _begin_stay(encounter: dict[str, Any], event: EncounterEvent) -> None:
    """An event of a stay under way on a visit not yet admitted (new, or planned at pre-admission) says the patient
    was admitted, the A01 lost or still to come (a late one is replayed before it): in progress from PV1-44."""
    encounter["status"] = "in-progress"
    start = event.admitted or encounter.get("period", {}).get("start") or event.at
    encounter["period"] = {"start": start}
    _drop_planned(encounter)


def _transfer(encounter: dict[str, Any], event: EncounterEvent, new: bool) -> None:
    """A move between beds; on a visit not yet admitted, it begins the stay."""
    if _not_admitted(encounter, new):
        _begin_stay(encounter, event)
    _move_to(encounter, event.location, event.at)


def _discharge(encounter: dict[str, Any], event: EncounterEvent, new: bool) -> None:
    """Finished at PV1-45, the bed closed with it. A visit not yet admitted (the A01 lost) is admitted and discharged:
    the ward it left (PV1-3, else the planned bed) held from the start. A discharge of a visit already finished (sent
    again, or with a corrected time) corrects the end as an A08 would."""
    end = event.discharged or event.at
    if encounter.get("status") == "finished":
        _correct_times(encounter, replace(event, discharged=end))
        return
    if _not_admitted(encounter, new) or "start" not in encounter.get("period", {}):
        location = _admitted_to(encounter, event.location)
        encounter["period"] = {"start": event.admitted or encounter.get("period", {}).get("start") or end}
        _drop_planned(encounter)
        _move_to(encounter, location, encounter["period"]["start"])
    encounter["status"] = "finished"
    encounter["period"]["end"] = end
    _drop_planned(encounter)
    _close_active(encounter, end)


def _update(encounter: dict[str, Any], event: EncounterEvent, new: bool) -> None:
    """A08 corrects details; it does not move the visit through its states (except to create it)."""
    if new:
        # A planned visit starts when it is expected to (PV2-8), if the PAS says; the message time is not a start.
        encounter["status"] = "finished" if event.discharged else "in-progress" if event.admitted else "planned"
        start = event.admitted or (None if event.discharged else event.expected)
        if period := {k: v for k, v in (("start", start), ("end", event.discharged)) if v}:
            encounter["period"] = period
    else:
        _correct_times(encounter, event)
    if event.location:
        _correct_location(encounter, event.location, event.admitted or event.at)


def _correct_location(encounter: dict[str, Any], location: str, at: str) -> None:
    """PV1-3 on an A08: where the patient is (a correction of the active bed, not a move), or for a planned visit
    where they are to be, which stays planned until the admission."""
    active = _active(encounter)
    if encounter["status"] == "planned":
        _plan(encounter, location)
    elif active is not None:
        active["location"] = {"display": location}
    elif encounter["status"] == "in-progress":
        _move_to(encounter, location, at)


def _correct_times(encounter: dict[str, Any], event: EncounterEvent) -> None:
    """PV1-44 always; PV1-45 only once the visit has ended, since an A08 does not discharge: one sent before the
    A03 (by MSH-7, so also when it arrives after it and the stay is replayed) leaves the end to the A03."""
    _correct_start(encounter, event.admitted)
    if not event.discharged or encounter.get("status") != "finished":
        return
    period = encounter.setdefault("period", {})
    last = (encounter.get("location") or [{}])[-1]
    if period.get("end") and last.get("period", {}).get("end") == period["end"]:
        last["period"]["end"] = event.discharged  # the bed the discharge closed closes with it
    period["end"] = event.discharged


def _correct_start(encounter: dict[str, Any], admitted: str | None) -> None:
    """PV1-44 corrects period.start, and the start of the bed the admission opened with it (as the end of the bed
    the discharge closed moves with period.end): left, that bed would be held from outside the stay."""
    if not admitted:
        return
    period = encounter.setdefault("period", {})
    first = (encounter.get("location") or [{}])[0].get("period", {})
    if period.get("start") and first.get("start") == period["start"]:
        first["start"] = admitted
    period["start"] = admitted


def _cancel_admit(encounter: dict[str, Any], event: EncounterEvent, _new: bool) -> None:
    """The bed is no longer the patient's: FHIR's location statuses have no `cancelled`, and `completed` with the
    cancel time as its end says the patient is not there now; a planned bed will never be taken up."""
    encounter["status"] = "cancelled"
    _drop_planned(encounter)
    _close_active(encounter, event.at)


def _cancel_transfer(encounter: dict[str, Any], event: EncounterEvent, new: bool) -> None:
    """Back to the location before the last transfer (PV1-3 names it; _check refuses a cancel with none to undo)."""
    if _not_admitted(encounter, new):
        _resume(encounter, event)
        return
    locations = encounter.get("location", [])
    active = _active(encounter)
    if active is None or len(locations) < 2 or active["location"].get("display") == event.location:
        return  # already back where the cancel says: the cancel sent again
    locations.remove(active)
    previous = locations[-1]
    previous["status"] = "active"
    previous.get("period", {}).pop("end", None)


def _cancel_discharge(encounter: dict[str, Any], event: EncounterEvent, new: bool) -> None:
    """The patient did not leave: in progress again, the bed the discharge closed reopened."""
    if _not_admitted(encounter, new):
        _resume(encounter, event)
        return
    encounter["status"] = "in-progress"
    encounter.get("period", {}).pop("end", None)
    locations = encounter.get("location", [])
    if locations and _active(encounter) is None:
        locations[-1]["status"] = "active"
        locations[-1].get("period", {}).pop("end", None)


def _resume(encounter: dict[str, Any], event: EncounterEvent) -> None:
    """A cancel transfer or cancel discharge of a visit not yet admitted: the admission and the event it cancels
    were lost, and the patient is in hospital, at PV1-3 (or the planned bed) since the admission."""
    location = _admitted_to(encounter, event.location)
    _begin_stay(encounter, event)
    _move_to(encounter, location, encounter["period"]["start"])


def _active(encounter: dict[str, Any]) -> dict[str, Any] | None:
    return next((loc for loc in reversed(encounter.get("location", [])) if loc.get("status") == "active"), None)


def _move_to(encounter: dict[str, Any], location: str | None, at: str) -> None:
    """Make `location` the active one from `at`, closing the one before; nothing if already there."""
    if not location:
        return
    active = _active(encounter)
    if active is not None and active["location"].get("display") == location:
        return
    _close_active(encounter, at)
    encounter.setdefault("location", []).append(
        {"location": {"display": location}, "status": "active", "period": {"start": at}})


def _close_active(encounter: dict[str, Any], at: str) -> None:
    for location in encounter.get("location", []):
        if location.get("status") == "active":
            location["status"] = "completed"
            location.setdefault("period", {})["end"] = at


def _drop_planned(encounter: dict[str, Any]) -> None:
    """A planned location not taken up goes: `completed` would say the patient was there."""
    kept = [loc for loc in encounter.get("location", []) if loc.get("status") != "planned"]
    if kept:
        encounter["location"] = kept
    else:
        encounter.pop("location", None)  # FHIR has no empty arrays


_HANDLERS = {
    "A01": _admit, "A04": _admit, PRE_ADMIT: _pre_admit, TRANSFER: _transfer, DISCHARGE: _discharge,
    UPDATE: _update, CANCEL_ADMIT: _cancel_admit, CANCEL_TRANSFER: _cancel_transfer,
    CANCEL_DISCHARGE: _cancel_discharge,
}
