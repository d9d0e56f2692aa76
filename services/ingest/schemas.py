"""Payloads: the social-care event types (their JSON Schema is published at GET /ingest/socialcare/schema and
kept in services/ingest/socialcare.schema.json), and the admin endpoints' request bodies."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator

from shared import nhs_number

SCHEMA_ID = "https://scr.example-ics.nhs.uk/schemas/socialcare-event.json"
_POSTCODE = re.compile(r"^[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}$", re.IGNORECASE)
Text = Annotated[str, Field(min_length=1, max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _not_before(end: date | None, info: ValidationInfo, start_field: str) -> date | None:
    """A period's end must not come before its start (a start that failed its own check is reported there)."""
    start = info.data.get(start_field)
    if end is not None and isinstance(start, date) and end < start:
        raise ValueError(f"{info.field_name} {end.isoformat()} is before {start_field} {start.isoformat()}")
    return end


class Provider(_Strict):
    """The sending social-care organisation and its case-management system."""

    ods_code: str = Field(pattern=r"^[A-Z0-9]{3,9}$", description="ODS code of the local authority or provider")
    system: Text = Field(description="the sending system, e.g. Mosaic, LiquidLogic LAS")


class PersonRef(_Strict):
    """Who the event is about, as the provider knows them."""

    local_id: Id = Field(description="the provider's own person id")
    nhs_number: str | None = Field(None, description="10-digit NHS number, Modulus 11 valid")
    nhs_number_verified: bool = Field(False, description="true when traced and verified against PDS")
    family_name: Text | None = None
    given_name: Text | None = None
    birth_date: date | None = None
    sex: Literal["male", "female", "other", "unknown"] | None = None
    postcode: str | None = Field(None, description="UK postcode")
    # Absent says nothing about the S-flag, so the stored one stands: most events are about something else.
    restricted: bool | None = Field(None, description="location must be hidden (S-flag / location hiding); "
                                                      "absent or null leaves the flag as last sent")

    @field_validator("nhs_number")
    @classmethod
    def _valid_nhs_number(cls, value: str | None) -> str | None:
        if value is not None and (problem := nhs_number.problem(value)):
            raise ValueError(problem)
        return nhs_number.normalise(value) if value else None

    @field_validator("postcode")
    @classmethod
    def _uk_postcode(cls, value: str | None) -> str | None:
        if value is not None and not _POSTCODE.match(value):
            raise ValueError("not a UK postcode")
        return value.upper() if value else None


class _Event(_Strict):
    event_id: Id = Field(description="unique per provider; a re-sent event carries the same id")
    occurred_at: AwareDatetime = Field(description="when it happened at the provider (with a UTC offset)")
    provider: Provider
    person: PersonRef
    confidential: bool = Field(False, description="the provider marks this item confidential")


class Assessment(_Strict):
    id: Id
    name: Text = Field(description="e.g. Care Act needs assessment")
    completed_on: date
    outcome: Text | None = Field(None, description="e.g. eligible needs identified")


class AssessmentCompleted(_Event):
    event_type: Literal["assessment.completed"]
    assessment: Assessment


class CarePackage(_Strict):
    id: Id
    service: Text = Field(description="e.g. Homecare, Residential care, Reablement")
    supplier: Text | None = None
    frequency: Text | None = Field(None, description="e.g. 4 visits daily")
    hours_per_week: float | None = Field(None, ge=0, le=168)
    start_date: date
    end_date: date | None = Field(None, description="on or after start_date; a date still to come is the planned "
                                                    "end, and the package stays active until then")
    end_reason: Text | None = None

    @field_validator("end_date")
    @classmethod
    def _ends_after_it_starts(cls, value: date | None, info: ValidationInfo) -> date | None:
        return _not_before(value, info, "start_date")


class CarePackageEvent(_Event):
    event_type: Literal["care_package.started", "care_package.changed", "care_package.ended"]
    care_package: CarePackage


class Concern(_Strict):
    id: Id
    category: Text | None = Field(None, description="e.g. neglect, financial abuse, domestic abuse")
    raised_on: date
    closed_on: date | None = Field(None, description="on or after raised_on")
    outcome: Text | None = Field(None, description="e.g. no further action")

    @field_validator("closed_on")
    @classmethod
    def _closed_after_it_was_raised(cls, value: date | None, info: ValidationInfo) -> date | None:
        return _not_before(value, info, "raised_on")


class SafeguardingEvent(_Event):
    event_type: Literal["safeguarding.concern_raised", "safeguarding.concern_closed"]
    concern: Concern


class Contact(_Strict):
    id: Id
    relationship: Text = Field(description="e.g. daughter, neighbour, allocated social worker")
    family_name: Text | None = None
    given_name: Text | None = None
    phone: str | None = Field(None, max_length=30)
    is_carer: bool = False


class ContactRecorded(_Event):
    event_type: Literal["carer.recorded", "contact.recorded"]
    contact: Contact


class DischargeSupport(_Strict):
    id: Id
    hospital_ods: str | None = Field(None, pattern=r"^[A-Z0-9]{3,9}$")
    expected_discharge_date: date | None = None
    pathway: Literal["0", "1", "2", "3"] | None = Field(None, description="discharge to assess pathway")
    support: list[Text] = Field(default_factory=list, max_length=20)


class DischargeSupportRequested(_Event):
    event_type: Literal["hospital_discharge_support.requested"]
    request: DischargeSupport


SocialCareEvent = Annotated[
    AssessmentCompleted | CarePackageEvent | SafeguardingEvent | ContactRecorded | DischargeSupportRequested,
    Field(discriminator="event_type"),
]
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(SocialCareEvent)
EVENT_TYPES = ("assessment.completed", "care_package.started", "care_package.changed", "care_package.ended",
               "safeguarding.concern_raised", "safeguarding.concern_closed", "carer.recorded", "contact.recorded",
               "hospital_discharge_support.requested")


def socialcare_schema() -> dict[str, Any]:
    """The published JSON Schema (2020-12) for one social-care event."""
    schema = EVENT_ADAPTER.json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "Social-care event (topic socialcare.events)",
            "description": "One event from a social-care provider; key = the provider's person key "
                           "(the NHS number when known)."} | schema


class ReviewDecision(_Strict):
    """POST /ingest/reviews/{id}: link the record to the candidate person, or reject the match."""

    decision: Literal["link", "reject"]
    reviewer: Text = Field(description="who decided (their user id)")
