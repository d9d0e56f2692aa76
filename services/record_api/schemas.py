"""Payloads of the consent decision API (docs/CONTRACTS.md §3) as the record API sends and accepts them.

The response model is strict on purpose: an answer the record API cannot fully understand is treated as a
failure of the decision service (fail closed), never as a permit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

Relationship = Literal["registered", "care", "self-claimed", "none"]
Purpose = Literal["TREAT", "ETREAT", "HRESCH", "HOPERAT"]
# Obligations this enforcement point knows how to honour; any other obligation fails closed.
KNOWN_OBLIGATIONS = frozenset({"redact-location"})


class PatientRef(BaseModel):
    nhs_number: str | None
    person_id: str


class Actor(BaseModel):
    kind: Literal["clinician"] = "clinician"
    ods_code: str
    role_code: str | None
    user_id: str


class DecideRequest(BaseModel):
    patient: PatientRef
    actor: Actor
    purpose: Purpose
    labels: list[str]
    legitimate_relationship: Relationship
    break_glass_reason: str | None = None


class ConsentPointer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictStr
    version_id: int | str | None = None
    provision: str | None = None


class Decision(BaseModel):
    """The decision service's answer. Unknown extra fields are ignored; missing or mistyped ones are errors."""

    model_config = ConfigDict(extra="ignore")

    decision: Literal["permit", "deny"]
    own_organisation_only: StrictBool
    withhold_labels: list[StrictStr]
    allowed_types: list[StrictStr] | None
    obligations: list[StrictStr]
    break_glass: StrictBool
    break_glass_available: StrictBool
    rule: StrictStr
    consent: ConsentPointer | None = None
    reason: StrictStr = Field(min_length=1)

    @property
    def permits(self) -> bool:
        return self.decision == "permit"

    def unknown_obligations(self) -> set[str]:
        return set(self.obligations) - KNOWN_OBLIGATIONS
