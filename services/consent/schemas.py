"""Payloads of the decision API (docs/CONTRACTS.md §3) and their checks beyond shape."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.consent.codes import ETREAT
from services.consent.facts import ods_code
from services.consent.rules import DecisionRequest
from shared import nhs_number
from shared.errors import InvalidInput
from shared.fhir import Issue
from shared.labels import CATEGORIES, CONFIDENTIALITY_CODES
from shared.roles import job_role

KNOWN_LABELS = frozenset(CATEGORIES) | CONFIDENTIALITY_CODES
MAX_REASON = 1000


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    nhs_number: str | None = None
    person_id: str | None = Field(default=None, max_length=64)


class ActorIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: Literal["clinician", "system", "citizen"] = "clinician"
    ods_code: str | None = Field(default=None, max_length=16)
    role_code: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, max_length=128)

    @field_validator("ods_code")
    @classmethod
    def _normalise_ods(cls, value: str | None) -> str | None:
        """One spelling per organisation ("rh8 " is RH8); blank is none, which a clinician actor may not be."""
        if value is None:
            return None
        return ods_code(value) or None


class DecideIn(BaseModel):
    """The request body. Unknown fields are ignored so the record API can grow its request safely."""

    model_config = ConfigDict(extra="ignore")

    patient: PatientIn
    actor: ActorIn
    purpose: Literal["TREAT", "ETREAT", "HRESCH", "HOPERAT"]
    labels: list[str] = Field(default_factory=list, max_length=64)
    legitimate_relationship: Literal["registered", "care", "self-claimed", "none"] = "none"
    break_glass_reason: str | None = None

    def to_request(self) -> DecisionRequest:
        """The engine's request, or InvalidInput naming every element at fault."""
        issues = self._issues()
        if issues:
            raise InvalidInput(issues[0].diagnostics, issues=[i.as_fhir() for i in issues])
        return DecisionRequest(
            purpose=self.purpose, nhs_number=nhs_number.normalise(self.patient.nhs_number)
            if self.patient.nhs_number else None, person_id=self.patient.person_id, actor_kind=self.actor.kind,
            ods_code=self.actor.ods_code, role=job_role(self.actor.role_code), user_id=self.actor.user_id,
            labels=frozenset(self.labels), legitimate_relationship=self.legitimate_relationship,
            break_glass_reason=self.break_glass_reason,
        )

    def _issues(self) -> list[Issue]:
        issues = []
        if not self.patient.nhs_number and not self.patient.person_id:
            issues.append(Issue("patient needs an nhs_number or a person_id", "patient", code="required"))
        if self.patient.nhs_number and (problem := nhs_number.problem(self.patient.nhs_number)):
            issues.append(Issue(problem, "patient.nhs_number", code="value"))
        if self.actor.kind == "clinician" and not self.actor.ods_code:
            issues.append(Issue("a clinician actor needs an ods_code", "actor.ods_code", code="required"))
        issues += [Issue(f"unknown label {label!r}", f"labels[{i}]", code="code-invalid")
                   for i, label in enumerate(self.labels) if label not in KNOWN_LABELS]
        if self.break_glass_reason is not None and self.purpose != ETREAT:
            issues.append(Issue("break_glass_reason goes with purpose ETREAT only", "break_glass_reason",
                                code="business-rule"))
        if self.break_glass_reason and len(self.break_glass_reason) > MAX_REASON:
            issues.append(Issue(f"break_glass_reason is longer than {MAX_REASON} characters", "break_glass_reason",
                                code="too-long"))
        return issues
