"""Payloads: the social-care event types (their JSON Schema is published at GET /ingest/socialcare/schema and
kept in services/ingest/socialcare.schema.json), and the admin endpoints' request bodies."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from shared import nhs_number

SCHEMA_ID = "https://scr.example-ics.nhs.uk/schemas/socialcare-event.json"
# Each check below is also a `pattern` in the published schema (written for both Python and ECMA-262 regexes, so
# [0-9] rather than \d, which Python lets match other scripts' digits): a schema-valid event is an accepted one.
# Ten digits, grouped as people and systems print them ("943 476 5919", "943-476-5919"): the separators are removed
# (shared.nhs_number.normalise, as the FHIR, HL7 and CSV feeds do).
_NHS_NUMBER = r"^[0-9]([ -]*[0-9]){9}$"
_POSTCODE = r"^[A-Za-z]{1,2}[0-9][A-Za-z0-9]?\s*[0-9][A-Za-z]{2}$"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # RFC 3339 full-date, as JSON Schema's format "date"
# ISO 8601 / RFC 3339 date-time with a UTC offset, seconds optional (many systems stop at minutes); offsets as
# +01:00, +0100 or +01 (PostgreSQL's own text form), a space for the T. JSON Schema's format "date-time" requires
# seconds, so the schema carries this pattern alone; it checks each part's range, leaving only days a month lacks.
_DATE_TIME = (r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]"
              r"(:[0-5][0-9](\.[0-9]+)?)?([Zz]|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)$")
_NO_OFFSET = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.]+$")
_HOURS_ONLY_OFFSET = re.compile(r"([+-][0-9]{2})$")


def _text_matching(pattern: str, what: str) -> Callable[[Any], Any]:
    """A check that the JSON value is a string of the given form: pydantic's own date and datetime parsing also
    takes numbers (Unix times) and datetimes for dates, which the schema does not."""
    form = re.compile(pattern)

    def check(value: Any) -> Any:
        value = value.strip() if isinstance(value, str) else value  # as for every string of an event
        if not isinstance(value, str) or not form.match(value):
            raise ValueError(f"must be {what}")
        return value
    return check


def _instant(value: Any) -> Any:
    """An ISO 8601 date-time with a UTC offset, as pydantic parses it (which needs the offset's minutes). A local
    time is refused by name: around the clock change it names two instants, or none."""
    value = value.strip() if isinstance(value, str) else value  # before the check for a missing offset
    if isinstance(value, str) and _NO_OFFSET.match(value):
        raise ValueError("has no UTC offset: add Z or the offset in force (+01:00 in British Summer Time)")
    text = _text_matching(_DATE_TIME, "an ISO 8601 date-time with a UTC offset, e.g. 2024-05-01T10:00:00+01:00 "
                                      "or 2024-05-01T09:00Z")(value)
    return _HOURS_ONLY_OFFSET.sub(r"\1:00", text)


Text = Annotated[str, Field(min_length=1, max_length=200)]
NhsNumber = Annotated[str, Field(json_schema_extra={"pattern": _NHS_NUMBER})]  # checked by PersonRef's validators
Postcode = Annotated[str, Field(json_schema_extra={"pattern": _POSTCODE})]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]
# Strictness off for these two only: in strict mode pydantic takes nothing but date objects from Python values.
Day = Annotated[date, Field(strict=False, json_schema_extra={"pattern": _DATE}),
                BeforeValidator(_text_matching(_DATE, "a date, YYYY-MM-DD"))]
Instant = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_instant),
                    WithJsonSchema({"type": "string", "pattern": _DATE_TIME})]


class _Strict(BaseModel):
    # strict: no "14" for a number, "yes" or 1 for a boolean, as the schema says; surrounding spaces are ignored.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


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
    nhs_number: NhsNumber | None = Field(None, description="10 digits, spaces or dashes between them ignored "
                                                           "(943 476 5919); the tenth a valid Modulus 11 check digit "
                                                           "(NHS Data Dictionary), not all ten the same")
    nhs_number_verified: bool = Field(False, description="true when traced and verified against PDS")
    family_name: Text | None = None
    given_name: Text | None = None
    birth_date: Day | None = None
    sex: Literal["male", "female", "other", "unknown"] | None = None
    postcode: Postcode | None = Field(None, description="UK postcode")
    # Absent says nothing about the S-flag, so the stored one stands: most events are about something else.
    restricted: bool | None = Field(None, description="location must be hidden (S-flag / location hiding); "
                                                      "absent or null leaves the flag as last sent")

    @field_validator("nhs_number")
    @classmethod
    def _valid_nhs_number(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if problem := nhs_number.problem(value):
            raise ValueError(problem)
        if not re.match(_NHS_NUMBER, value):  # ten digits, but other characters between them (tabs, dots...)
            raise ValueError("NHS number must be 10 digits, grouped by spaces or dashes if at all (943 476 5919)")
        return nhs_number.normalise(value)  # stored as UK Core has it: ten digits

    @field_validator("postcode")
    @classmethod
    def _uk_postcode(cls, value: str | None) -> str | None:
        if value is not None and not re.match(_POSTCODE, value):
            raise ValueError("not a UK postcode")
        return value.upper() if value else None


class _Event(_Strict):
    event_id: Id = Field(description="unique per provider; a re-sent event carries the same id")
    occurred_at: Instant = Field(description="when it happened at the provider: an ISO 8601 date-time with a UTC "
                                             "offset, seconds optional (2024-05-01T10:00:00+01:00, 2024-05-01T09:00Z)")
    provider: Provider
    person: PersonRef
    confidential: bool = Field(False, description="the provider marks this item confidential")


class Assessment(_Strict):
    id: Id
    name: Text = Field(description="e.g. Care Act needs assessment")
    completed_on: Day
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
    start_date: Day
    end_date: Day | None = Field(None, description="on or after start_date; a date still to come is the planned "
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
    raised_on: Day
    closed_on: Day | None = Field(None, description="on or after raised_on")
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
    expected_discharge_date: Day | None = None
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
                           "(the NHS number when known). Spaces around a string are ignored."} | schema


class ReviewDecision(_Strict):
    """POST /ingest/reviews/{id}: link the record to the candidate person, or reject the match."""

    decision: Literal["link", "reject"]
    reviewer: Text = Field(description="who decided (their user id)")
