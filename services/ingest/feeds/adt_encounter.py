"""How ADT events move an Encounter: admit, transfer, discharge and their cancellations.

ADT sends changes, not states, so each event is a pure function from the stored Encounter (or none) to the
new one. Each is idempotent: applying the same event twice gives the same Encounter. An event older than the
stored state (MSH-7 against the stored source timestamp) is not applied to it: instead the writer replays the
stay's archived events with the late one from none, in event-time order (services/ingest/writer.py `_replayed`),
so a transfer that arrives after the discharge still lands in the ward history, and a discharge that arrives after
a later A08 update still ends the stay. A late discharge or cancellation dated before every other event of the
stay (ENDINGS, which cannot begin one) contradicts it and is ignored.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

ADMIT = frozenset({"A01", "A04"})
PRE_ADMIT = "A05"
TRANSFER, DISCHARGE, UPDATE = "A02", "A03", "A08"
CANCEL_ADMIT, CANCEL_TRANSFER, CANCEL_DISCHARGE = "A11", "A12", "A13"
ENDINGS = frozenset({DISCHARGE, CANCEL_ADMIT, CANCEL_TRANSFER, CANCEL_DISCHARGE})  # end or undo, never begin
EVENTS = ADMIT | {PRE_ADMIT, TRANSFER, DISCHARGE, UPDATE, CANCEL_ADMIT, CANCEL_TRANSFER, CANCEL_DISCHARGE}


@dataclass(frozen=True)
class EncounterEvent:
    """One ADT event as it bears on the visit: the static fields from PV1, and the times and location."""

    event: str
    at: str  # the event time (FHIR dateTime)
    fields: dict[str, Any]  # identifier, class, subject, serviceType, hospitalization ... (replace stored)
    location: str | None  # PV1-3 as a display string
    admitted: str | None  # PV1-44
    discharged: str | None  # PV1-45

    def __call__(self, current: dict[str, Any] | None) -> dict[str, Any]:
        return apply(current, self)


def apply(current: dict[str, Any] | None, event: EncounterEvent) -> dict[str, Any]:
    """The Encounter after `event`."""
    encounter = copy.deepcopy(current) if current else {"resourceType": "Encounter"}
    encounter.update(copy.deepcopy(event.fields))
    handler = _HANDLERS[event.event]
    handler(encounter, event, current is None)
    return encounter


def _admit(encounter: dict[str, Any], event: EncounterEvent, _new: bool) -> None:
    """In progress from PV1-44, at PV1-3 (or the planned bed); a planned location does not outlive the admission."""
    if encounter.get("status") == "cancelled":
        _reopen(encounter)
    if encounter.get("status") in (None, "planned", "arrived", "in-progress"):
        encounter["status"] = "in-progress"
    start = event.admitted or encounter.get("period", {}).get("start") or event.at
    encounter.setdefault("period", {})["start"] = start
    location = _admitted_to(encounter, event.location)
    _drop_planned(encounter)
    _move_to(encounter, location, event.admitted or event.at)


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


def _pre_admit(encounter: dict[str, Any], event: EncounterEvent, new: bool) -> None:
    if new or encounter.get("status") == "planned":
        encounter["status"] = "planned"
        if event.admitted:
            encounter["period"] = {"start": event.admitted}
        if event.location:
            encounter["location"] = [{"location": {"display": event.location}, "status": "planned"}]


def _transfer(encounter: dict[str, Any], event: EncounterEvent, new: bool) -> None:
    """A move between beds. A transfer of a visit not yet admitted (new, or planned at pre-admission) says the
    patient was admitted, the A01 lost or still to come (a late one is replayed before it)."""
    if new or encounter.get("status") == "planned":
        encounter["status"] = "in-progress"
        start = event.admitted or encounter.get("period", {}).get("start") or event.at
        encounter["period"] = {"start": start}
        _drop_planned(encounter)
    _move_to(encounter, event.location, event.at)


def _discharge(encounter: dict[str, Any], event: EncounterEvent, new: bool) -> None:
    end = event.discharged or event.at
    encounter["status"] = "finished"
    period = encounter.setdefault("period", {})
    period["end"] = end
    if new or "start" not in period:
        period["start"] = event.admitted or end
        _move_to(encounter, event.location, period["start"])
    _drop_planned(encounter)
    _close_active(encounter, end)


def _update(encounter: dict[str, Any], event: EncounterEvent, new: bool) -> None:
    """A08 corrects details; it does not move the visit through its states (except to create it)."""
    if new:
        encounter["status"] = "finished" if event.discharged else "in-progress" if event.admitted else "planned"
        encounter["period"] = {k: v for k, v in (("start", event.admitted), ("end", event.discharged)) if v} or \
            {"start": event.at}
    else:
        _correct_times(encounter, event)
    active = _active(encounter)
    if event.location and active is not None and active["location"].get("display") != event.location:
        active["location"] = {"display": event.location}  # a correction, not a move
    elif event.location and active is None and encounter["status"] == "in-progress":
        _move_to(encounter, event.location, event.admitted or event.at)


def _correct_times(encounter: dict[str, Any], event: EncounterEvent) -> None:
    """PV1-44 always; PV1-45 only once the visit has ended, since an A08 does not discharge: one sent before the
    A03 (by MSH-7, so also when it arrives after it and the stay is replayed) leaves the end to the A03."""
    if event.admitted:
        encounter.setdefault("period", {})["start"] = event.admitted
    if not event.discharged or encounter.get("status") != "finished":
        return
    period = encounter.setdefault("period", {})
    last = (encounter.get("location") or [{}])[-1]
    if period.get("end") and last.get("period", {}).get("end") == period["end"]:
        last["period"]["end"] = event.discharged  # the bed the discharge closed closes with it
    period["end"] = event.discharged


def _cancel_admit(encounter: dict[str, Any], event: EncounterEvent, _new: bool) -> None:
    """The bed is no longer the patient's: FHIR's location statuses have no `cancelled`, and `completed` with the
    cancel time as its end says the patient is not there now; a planned bed will never be taken up."""
    encounter["status"] = "cancelled"
    _drop_planned(encounter)
    _close_active(encounter, event.at)


def _cancel_transfer(encounter: dict[str, Any], event: EncounterEvent, _new: bool) -> None:
    """Back to the location before the last transfer (PV1-3 names it, when sent)."""
    locations = encounter.get("location", [])
    active = _active(encounter)
    if active is None or len(locations) < 2:
        return
    if event.location and active["location"].get("display") == event.location:
        return  # already back where the cancel says: a re-send
    locations.remove(active)
    previous = locations[-1]
    previous["status"] = "active"
    previous.get("period", {}).pop("end", None)


def _cancel_discharge(encounter: dict[str, Any], _event: EncounterEvent, _new: bool) -> None:
    encounter["status"] = "in-progress"
    encounter.get("period", {}).pop("end", None)
    locations = encounter.get("location", [])
    if locations and _active(encounter) is None:
        locations[-1]["status"] = "active"
        locations[-1].get("period", {}).pop("end", None)


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
