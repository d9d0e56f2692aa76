"""Social-care events (schemas.SocialCareEvent) to UK Core FHIR: EpisodeOfCare and CarePlan for care
packages, Observation for assessments, Flag for safeguarding concerns, RelatedPerson for carers and contacts,
ServiceRequest for hospital discharge support. Pure: one decoded JSON event in, mapped resources out, those of care
packages and concerns as changes to the stored resource (events may send only what changed)."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from services.ingest.feeds.model import AdapterError, Mapped, MappedMessage, Merge, SenderMessageId
from services.ingest.schemas import (
    EVENT_ADAPTER,
    AssessmentCompleted,
    CarePackage,
    CarePackageEvent,
    ContactRecorded,
    DischargeSupportRequested,
    SafeguardingEvent,
)
from shared.fhir import NHS_NUMBER_SYSTEM, NHS_VERIFICATION_ENGLAND, NHS_VERIFICATION_EXT, ODS_ORG_SYSTEM, Issue

PATIENT_REF = "urn:scr:socialcare:patient"
FLAG_SYSTEM = "urn:scr:socialcare:flag"
ASSESSMENT_SYSTEM = "urn:scr:socialcare:assessment"
LOCAL_ID_SYSTEM = "urn:scr:local-patient-id:{}"
SOCIAL_CARE = {"coding": [{"system": "http://snomed.info/sct", "code": "410606002",
                           "display": "Social service procedure"}], "text": "Social care"}
OUTCOME_EXT = "urn:scr:fhir:StructureDefinition:safeguarding-outcome"
PACKAGE_ENDED, CONCERN_CLOSED = "care_package.ended", "safeguarding.concern_closed"
_PROFILE = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-{}"
_ENDED_STATUSES = ("finished", "completed")  # EpisodeOfCare, CarePlan
_HOURS, _ENDED_BECAUSE, _CONCERN = " hours per week", "Ended: ", "Safeguarding concern: "  # how texts begin or end
# The fraction of a date-time's seconds as sent (schemas._DATE_TIME): the only ":ss" followed by a dot.
_SENT_FRACTION = re.compile(r":[0-9]{2}(\.[0-9]+)")
T = TypeVar("T")


def map_event(payload: Any) -> MappedMessage:
    """Check one event against the schema and map it; AdapterError names each field at fault."""
    try:
        event = EVENT_ADAPTER.validate_python(payload)
    except ValidationError as exc:
        raise AdapterError([_issue(e) for e in exc.errors(include_url=False)[:20]]) from None
    message = MappedMessage(source_system=event.provider.system, source_org=event.provider.ods_code,
                            message_id=SenderMessageId(event.event_id, _digest(event)))
    occurred = event.occurred_at.astimezone(UTC)
    message.items.append(Mapped(_patient(event), f"person:{event.person.local_id}", occurred,
                                refs=(PATIENT_REF,), restricted=event.person.restricted, where="person"))
    for change, key in _map(event, payload["occurred_at"]):
        message.items.append(Mapped(change(None), key, occurred, patient_ref=PATIENT_REF, merge=change,
                                    confidential=event.confidential, where=event.event_type))
    return message


def provider_system(payload: Any) -> str | None:
    """`provider.system` of a decoded event, for the raw archive's sender_system, read before the event is checked so
    that a refused event also shows who sent it; None when the event names none as text the archive can hold."""
    provider = payload.get("provider") if isinstance(payload, dict) else None
    system = provider.get("system") if isinstance(provider, dict) else None
    if not isinstance(system, str) or "\x00" in system:  # PostgreSQL text cannot hold NUL
        return None
    try:
        system.encode("utf-8")  # an unpaired surrogate escape (\ud800) has no UTF-8 form
    except UnicodeEncodeError:
        return None
    return system.strip()[:128] or None  # the schema ignores spaces around a string; the column holds 128


def _digest(event: Any) -> str:
    """What the event says, whatever its bytes: spacing, key order and route (Kafka or HTTP) aside. Fields left out
    stay out, since they mean something other than null."""
    return hashlib.sha256(EVENT_ADAPTER.dump_json(event, exclude_unset=True)).hexdigest()


def _issue(error: dict[str, Any]) -> Issue:
    location = ".".join(str(p) for p in error.get("loc", ()) if not _is_union_tag(p))
    if error.get("type") in ("union_tag_not_found", "union_tag_invalid"):
        location = "event_type"
    code = "required" if error.get("type") == "missing" else "value"
    return Issue(str(error.get("msg", "invalid value")), location or "event", code=code)


def _is_union_tag(part: Any) -> bool:
    """pydantic puts the discriminator value in error locations; the sender's field path has no such step."""
    return isinstance(part, str) and "." in part and part.split(".")[0] in {
        "assessment", "care_package", "safeguarding", "carer", "contact", "hospital_discharge_support"}


def _patient(event: Any) -> dict[str, Any]:
    person = event.person
    identifiers: list[dict[str, Any]] = [{"system": LOCAL_ID_SYSTEM.format(event.provider.ods_code),
                                          "value": person.local_id}]
    if person.nhs_number:
        status = "01" if person.nhs_number_verified else "02"
        identifiers.insert(0, {"system": NHS_NUMBER_SYSTEM, "value": person.nhs_number, "extension": [
            {"url": NHS_VERIFICATION_EXT, "valueCodeableConcept": {"coding": [
                {"system": NHS_VERIFICATION_ENGLAND, "code": status}]}}]})
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers,
                               "meta": {"profile": [_PROFILE.format("Patient")]}}
    name = {k: v for k, v in (("family", person.family_name),
                              ("given", [person.given_name] if person.given_name else None)) if v}
    if name:
        patient["name"] = [{"use": "official"} | name]
    if person.birth_date:
        patient["birthDate"] = person.birth_date.isoformat()
    if person.sex:
        patient["gender"] = person.sex
    if person.postcode:
        patient["address"] = [{"use": "home", "postalCode": person.postcode}]
    return patient


def _map(event: Any, occurred_at_sent: str) -> list[tuple[Merge, str]]:
    """Each resource the event gives, as a change to the stored one (None when new), with its source key;
    `occurred_at_sent` is the text of the event's time, whose fraction a parsed datetime does not keep as sent."""
    if isinstance(event, AssessmentCompleted):
        return [(_replacing(_assessment(event)), f"assessment:{event.assessment.id}")]
    if isinstance(event, CarePackageEvent):
        package = event.care_package
        return [(_PackageChange(event, _episode), f"care-package:{package.id}"),
                (_PackageChange(event, _care_plan), f"care-plan:{package.id}")]
    if isinstance(event, SafeguardingEvent):
        return [(_ConcernChange(event), f"safeguarding:{event.concern.id}")]
    if isinstance(event, ContactRecorded):
        return [(_replacing(_related_person(event)), f"contact:{event.contact.id}")]
    if isinstance(event, DischargeSupportRequested):
        return [(_replacing(_service_request(event, occurred_at_sent)), f"discharge-support:{event.request.id}")]
    raise AdapterError(Issue(f"event type {event.event_type!r} has no mapping", "event_type",
                             code="not-supported"))


def _replacing(resource: dict[str, Any]) -> Merge:
    """An event that sends the whole resource: it replaces the stored one."""
    return lambda _current: _profiled(copy.deepcopy(resource))


def _profiled(resource: dict[str, Any]) -> dict[str, Any]:
    resource.setdefault("meta", {"profile": [_PROFILE.format(resource["resourceType"])]})
    return resource


def _subject() -> dict[str, str]:
    return {"reference": PATIENT_REF}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64] or "unspecified"


def _assessment(event: AssessmentCompleted) -> dict[str, Any]:
    assessment = event.assessment
    observation: dict[str, Any] = {
        "resourceType": "Observation", "status": "final", "subject": _subject(),
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "social-history"}]}],
        "code": {"coding": [{"system": ASSESSMENT_SYSTEM, "code": _slug(assessment.name),
                             "display": assessment.name}], "text": assessment.name},
        "effectiveDateTime": assessment.completed_on.isoformat(),
        "identifier": [{"system": f"urn:scr:socialcare:{event.provider.ods_code}:assessment",
                        "value": assessment.id}],
        "performer": [{"identifier": {"system": ODS_ORG_SYSTEM, "value": event.provider.ods_code}}],
    }
    if assessment.outcome:
        observation["valueString"] = assessment.outcome
    return observation


@dataclass(frozen=True)
class _PackageChange:
    """A care-package event applied to the stored EpisodeOfCare or CarePlan (None when new). Events may send only
    what changed (an `ended` names no supplier), so a detail left out keeps the stored one and null removes it.
    An ended package stays ended: a later `changed` corrects its details, a new package needs a new id."""

    event: CarePackageEvent
    build: Callable[[CarePackageEvent, bool, dict[str, str], dict[str, Any]], dict[str, Any]]

    def __call__(self, current: dict[str, Any] | None) -> dict[str, Any]:
        stored = current or {}
        ended, period = _package_period(self.event, stored)
        return _profiled(self.build(self.event, ended, period, stored))


def _package_period(event: CarePackageEvent, stored: dict[str, Any]) -> tuple[bool, dict[str, str]]:
    """Whether the package has ended, and its period. An end date still to come when the event happened is the
    planned end (FHIR Period: an end in the future is when the period is expected to end): the package stays
    active. It ends with `care_package.ended`, or once its end date has passed when an event happens."""
    package = event.care_package
    day = event.occurred_at.date()  # the provider's own calendar day
    was_ended = stored.get("status") in _ENDED_STATUSES
    end = _sent_or_stored(package, "end_date", package.end_date, _day(stored.get("period", {}).get("end")))
    if event.event_type == PACKAGE_ENDED and not was_ended and package.end_date is None:
        end = min(end, day) if end else day  # ended now, unless the planned end had already come
    ended = was_ended or event.event_type == PACKAGE_ENDED or (end is not None and end < day)
    if ended and end is None:
        end = _day(stored.get("period", {}).get("end")) or day
    period = {"start": package.start_date.isoformat()}
    if end is not None:
        period["end"] = max(end, package.start_date).isoformat()
    return ended, period


def _episode(event: CarePackageEvent, ended: bool, period: dict[str, str], _stored: dict[str, Any]) -> dict[str, Any]:
    package = event.care_package
    return {
        "resourceType": "EpisodeOfCare", "status": "finished" if ended else "active", "patient": _subject(),
        "type": [SOCIAL_CARE, {"text": package.service}], "period": period,
        "identifier": [{"system": f"urn:scr:socialcare:{event.provider.ods_code}:care-package",
                        "value": package.id}],
        "managingOrganization": {"identifier": {"system": ODS_ORG_SYSTEM, "value": event.provider.ods_code}},
    }


def _care_plan(event: CarePackageEvent, ended: bool, period: dict[str, str], stored: dict[str, Any]) -> dict[str, Any]:
    package = event.care_package
    stored_detail = (stored.get("activity") or [{}])[0].get("detail", {})
    detail: dict[str, Any] = {"status": "completed" if ended else "in-progress", "description": package.service}
    frequency = _sent_or_stored(package, "frequency", package.frequency, stored_detail.get("scheduledString"))
    if frequency:
        detail["scheduledString"] = frequency
    supplier = _sent_or_stored(package, "supplier", [{"display": package.supplier}] if package.supplier else None,
                               stored_detail.get("performer"))
    if supplier:
        detail["performer"] = supplier
    plan: dict[str, Any] = {
        "resourceType": "CarePlan", "status": "completed" if ended else "active",
        "intent": "plan", "subject": _subject(), "category": [SOCIAL_CARE],
        "title": f"Care package: {package.service}", "period": period,
        "identifier": [{"system": f"urn:scr:socialcare:{event.provider.ods_code}:care-package",
                        "value": package.id}],
        "activity": [{"detail": detail}],
    }
    if notes := _care_plan_notes(package, stored.get("note") or []):
        plan["note"] = [{"text": text} for text in notes]
    return plan


def _care_plan_notes(package: CarePackage, stored: list[dict[str, Any]]) -> list[str]:
    hours = _sent_or_stored(package, "hours_per_week", None if package.hours_per_week is None
                            else f"{package.hours_per_week:g}{_HOURS}",
                            _stored_note(stored, lambda text: text.endswith(_HOURS)))
    reason = _sent_or_stored(package, "end_reason", f"{_ENDED_BECAUSE}{package.end_reason}" if package.end_reason
                             else None, _stored_note(stored, lambda text: text.startswith(_ENDED_BECAUSE)))
    return [text for text in (hours, reason) if text]


def _stored_note(notes: list[dict[str, Any]], kind: Callable[[str], bool]) -> str | None:
    return next((n["text"] for n in notes if isinstance(n.get("text"), str) and kind(n["text"])), None)


@dataclass(frozen=True)
class _ConcernChange:
    """A safeguarding event applied to the stored Flag (None when new). A closed concern stays closed: a re-sent
    `concern_raised` updates its details, and a new concern has a new id. A detail left out keeps the stored one."""

    event: SafeguardingEvent

    def __call__(self, current: dict[str, Any] | None) -> dict[str, Any]:
        return _profiled(_flag(self.event, current or {}))


def _flag(event: SafeguardingEvent, stored: dict[str, Any]) -> dict[str, Any]:
    concern = event.concern
    was_closed = stored.get("status") == "inactive"
    closed = was_closed or event.event_type == CONCERN_CLOSED or concern.closed_on is not None
    period = {"start": concern.raised_on.isoformat()}
    if closed:
        end = concern.closed_on or _day(stored.get("period", {}).get("end")) or event.occurred_at.date()
        period["end"] = max(end, concern.raised_on).isoformat()
    category = _sent_or_stored(concern, "category", f"{_CONCERN}{concern.category}" if concern.category else None,
                               stored.get("code", {}).get("text"))
    flag: dict[str, Any] = {
        "resourceType": "Flag", "status": "inactive" if closed else "active", "subject": _subject(),
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                  "code": "safety"}]}],
        "code": {"coding": [{"system": FLAG_SYSTEM, "code": "safeguarding-concern",
                             "display": "Safeguarding concern"}],
                 "text": category or "Safeguarding concern"},
        "period": period,
        "identifier": [{"system": f"urn:scr:socialcare:{event.provider.ods_code}:safeguarding", "value": concern.id}],
        "author": {"identifier": {"system": ODS_ORG_SYSTEM, "value": event.provider.ods_code}},
    }
    stored_outcome = next((e for e in stored.get("extension") or [] if e.get("url") == OUTCOME_EXT), None)
    outcome = _sent_or_stored(concern, "outcome", {"url": OUTCOME_EXT, "valueString": concern.outcome}
                              if concern.outcome else None, stored_outcome)
    if outcome:
        flag["extension"] = [outcome]  # R4 Flag has no element for how a concern ended
    return flag


def _sent_or_stored(model: BaseModel, name: str, sent: T | None, stored: T | None) -> T | None:
    """What the event sends for one detail (an explicit null removes it); left out, the stored value stands."""
    return sent if name in model.model_fields_set else stored


def _day(value: Any) -> date | None:
    """A stored FHIR date (YYYY-MM-DD), or None."""
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _fhir_date_time(moment: datetime, sent: str) -> str:
    """A FHIR dateTime at the precision sent: seconds always (FHIR requires them with a time, so an event sent to the
    minute gets :00), the fraction of a second digit for digit as sent, the sender's offset. The fraction comes from
    the text: a datetime keeps neither trailing zeros (.120) nor digits past the microsecond, and FHIR allows both."""
    text = moment.isoformat(timespec="seconds")  # YYYY-MM-DDThh:mm:ss, then the offset
    fraction = _SENT_FRACTION.search(sent)
    return text[:19] + (fraction.group(1) if fraction else "") + text[19:]


def _related_person(event: ContactRecorded) -> dict[str, Any]:
    contact = event.contact
    relationship: dict[str, Any] = {"text": contact.relationship}
    if contact.is_carer or event.event_type == "carer.recorded":
        relationship["coding"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
                                   "code": "CAREGIVER", "display": "caregiver"}]
    person: dict[str, Any] = {
        "resourceType": "RelatedPerson", "active": True, "patient": _subject(), "relationship": [relationship],
        "identifier": [{"system": f"urn:scr:socialcare:{event.provider.ods_code}:contact", "value": contact.id}],
    }
    name = {k: v for k, v in (("family", contact.family_name),
                              ("given", [contact.given_name] if contact.given_name else None)) if v}
    if name:
        person["name"] = [name]
    if contact.phone:
        person["telecom"] = [{"system": "phone", "value": contact.phone}]
    return person


def _service_request(event: DischargeSupportRequested, occurred_at_sent: str) -> dict[str, Any]:
    request = event.request
    service: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": _subject(),
        "category": [SOCIAL_CARE],
        "code": {"coding": [{"system": "urn:scr:socialcare:service", "code": "hospital-discharge-support",
                             "display": "Hospital discharge support"}], "text": "Hospital discharge support"},
        "authoredOn": _fhir_date_time(event.occurred_at, occurred_at_sent),
        "identifier": [{"system": f"urn:scr:socialcare:{event.provider.ods_code}:discharge-support",
                        "value": request.id}],
        "performer": [{"identifier": {"system": ODS_ORG_SYSTEM, "value": event.provider.ods_code}}],
    }
    if request.expected_discharge_date:
        service["occurrenceDateTime"] = request.expected_discharge_date.isoformat()
    if request.hospital_ods:
        service["requester"] = {"identifier": {"system": ODS_ORG_SYSTEM, "value": request.hospital_ods}}
    notes = ([f"Discharge to assess pathway {request.pathway}"] if request.pathway else []) + request.support
    if notes:
        service["note"] = [{"text": text} for text in notes]
    return service
