"""FHIR R4 helpers: UK Core URIs, structural validation with fhir.resources' R4B models, the checks those
models do not make (required value sets, NHS number check digit), and OperationOutcome building."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from shared import nhs_number

FHIR_JSON = "application/fhir+json"

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_ORG_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
ODS_SITE_SYSTEM = "https://fhir.nhs.uk/Id/ods-site-code"
SDS_USER_SYSTEM = "https://fhir.nhs.uk/Id/sds-user-id"
NHS_VERIFICATION_EXT = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"
NHS_VERIFICATION_ENGLAND = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"
NHS_VERIFICATION_RETIRED = "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus"
ETHNIC_CATEGORY_EXT = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory"
ETHNIC_CATEGORY_ENGLAND = "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategoryEngland"
LIST_WARNING_EXT = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-ListWarningCode"
LIST_WARNING_SYSTEM = "https://fhir.hl7.org.uk/CodeSystem/UKCore-ListWarningCode"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SNOMED = "http://snomed.info/sct"
UK_CORE_PROFILE = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-{}"

# Identifier systems older feeds still send; stored under the current URI.
_LEGACY_SYSTEMS = {
    "http://fhir.nhs.net/Id/nhs-number": NHS_NUMBER_SYSTEM,
    "https://fhir.nhs.net/Id/nhs-number": NHS_NUMBER_SYSTEM,
    "urn:oid:2.16.840.1.113883.2.1.4.1": NHS_NUMBER_SYSTEM,
    "http://fhir.nhs.net/Id/ods-organization-code": ODS_ORG_SYSTEM,
    "https://fhir.nhs.net/Id/ods-organization-code": ODS_ORG_SYSTEM,
    "http://fhir.nhs.net/sds-user-id": SDS_USER_SYSTEM,
}

# Required bindings (FHIR R4) on the elements fhir.resources types as plain code strings and does not check.
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    (rt, "gender"): frozenset({"male", "female", "other", "unknown"})
    for rt in ("Patient", "RelatedPerson", "Practitioner", "Person")
} | {
    ("Encounter", "status"): frozenset({"planned", "arrived", "triaged", "in-progress", "onleave", "finished",
                                        "cancelled", "entered-in-error", "unknown"}),
    ("Observation", "status"): frozenset({"registered", "preliminary", "final", "amended", "corrected",
                                          "cancelled", "entered-in-error", "unknown"}),
    ("AllergyIntolerance", "type"): frozenset({"allergy", "intolerance"}),
    ("AllergyIntolerance", "criticality"): frozenset({"low", "high", "unable-to-assess"}),
    ("MedicationStatement", "status"): frozenset({"active", "completed", "entered-in-error", "intended",
                                                  "stopped", "on-hold", "unknown", "not-taken"}),
    ("MedicationRequest", "status"): frozenset({"active", "on-hold", "cancelled", "completed",
                                                "entered-in-error", "stopped", "draft", "unknown"}),
    ("MedicationRequest", "intent"): frozenset({"proposal", "plan", "order", "original-order", "reflex-order",
                                                "filler-order", "instance-order", "option"}),
    ("Immunization", "status"): frozenset({"completed", "entered-in-error", "not-done"}),
    ("Procedure", "status"): frozenset({"preparation", "in-progress", "not-done", "on-hold", "stopped",
                                        "completed", "entered-in-error", "unknown"}),
    ("CarePlan", "status"): frozenset({"draft", "active", "on-hold", "revoked", "completed",
                                       "entered-in-error", "unknown"}),
    ("CarePlan", "intent"): frozenset({"proposal", "plan", "order", "option"}),
    ("Flag", "status"): frozenset({"active", "inactive", "entered-in-error"}),
    ("DocumentReference", "status"): frozenset({"current", "superseded", "entered-in-error"}),
    ("EpisodeOfCare", "status"): frozenset({"planned", "waitlist", "active", "onhold", "finished", "cancelled",
                                            "entered-in-error"}),
    ("Consent", "status"): frozenset({"draft", "proposed", "active", "rejected", "inactive",
                                      "entered-in-error"}),
    ("ServiceRequest", "status"): frozenset({"draft", "active", "on-hold", "revoked", "completed",
                                             "entered-in-error", "unknown"}),
    ("ServiceRequest", "intent"): frozenset({"proposal", "plan", "directive", "order", "original-order",
                                             "reflex-order", "filler-order", "instance-order", "option"}),
    ("Condition", "clinicalStatus"): frozenset({"active", "recurrence", "relapse", "inactive", "remission",
                                                "resolved"}),
    ("Condition", "verificationStatus"): frozenset({"unconfirmed", "provisional", "differential", "confirmed",
                                                    "refuted", "entered-in-error"}),
    ("AllergyIntolerance", "clinicalStatus"): frozenset({"active", "inactive", "resolved"}),
    ("AllergyIntolerance", "verificationStatus"): frozenset({"unconfirmed", "confirmed", "refuted",
                                                             "entered-in-error"}),
}
# Required bindings on CodeableConcepts: the code must come from this FHIR code system.
_CONCEPT_SYSTEMS = {
    ("Condition", "clinicalStatus"): "http://terminology.hl7.org/CodeSystem/condition-clinical",
    ("Condition", "verificationStatus"): "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    ("AllergyIntolerance", "clinicalStatus"): "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
    ("AllergyIntolerance", "verificationStatus"):
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
}


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome issue: severity, FHIR issue-type code, words for a person, and where."""

    diagnostics: str
    expression: str | None = None
    severity: str = "error"
    code: str = "invalid"

    def as_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def operation_outcome(issues: list[Issue] | Issue) -> dict[str, Any]:
    items = [issues] if isinstance(issues, Issue) else issues
    return {"resourceType": "OperationOutcome", "issue": [i.as_fhir() for i in items]}


@cache
def model_class(resource_type: str) -> type | None:
    """The fhir.resources R4B model for a resource type, or None if R4 has no such type."""
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


def validate_resource(resource: Any, *, where: str = "") -> list[Issue]:
    """Every problem with one resource: R4 structure, required value sets, NHS number check digits."""
    if not isinstance(resource, dict):
        return [Issue("a resource must be a JSON object", where or None, code="structure")]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or model_class(resource_type) is None:
        return [Issue(f"unknown resourceType {resource_type!r}", _path(where, "resourceType"),
                      code="not-supported")]
    issues = _structure_issues(resource, resource_type, where)
    issues += _binding_issues(resource, resource_type, where)
    issues += _nhs_number_issues(resource, resource_type, where)
    return issues


def _path(where: str, element: str) -> str:
    return f"{where}.{element}" if where else element


def _structure_issues(resource: dict[str, Any], resource_type: str, where: str) -> list[Issue]:
    cls = model_class(resource_type)
    try:
        cls.model_validate(resource)  # type: ignore[union-attr]
    except ValidationError as exc:
        return [_issue_from_pydantic(err, resource_type, where) for err in exc.errors(include_url=False)]
    except (ValueError, TypeError) as exc:  # fhir.resources raises these for some primitive checks
        return [Issue(str(exc)[:500], where or resource_type, code="structure")]
    return []


def _issue_from_pydantic(err: dict[str, Any], resource_type: str, where: str) -> Issue:
    location = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err.get("loc", ()))
    location = location.replace(".[", "[")
    message = str(err.get("msg", "invalid value"))
    code = "required" if err.get("type") == "missing" else "value"
    base = where or resource_type
    return Issue(f"{message}", f"{base}.{location}" if location else base, code=code)


def _binding_issues(resource: dict[str, Any], resource_type: str, where: str) -> list[Issue]:
    issues = []
    for (rt, element), allowed in REQUIRED_CODES.items():
        if rt != resource_type or element not in resource:
            continue
        value = resource[element]
        system = _CONCEPT_SYSTEMS.get((rt, element))
        codes = _concept_codes(value, system) if system else [value]
        for code in codes:
            if code not in allowed:
                issues.append(Issue(f"{element} {code!r} is not in the required value set "
                                    f"({', '.join(sorted(allowed))})",
                                    _path(where or resource_type, element), code="code-invalid"))
    return issues


def _concept_codes(concept: Any, system: str) -> list[Any]:
    if not isinstance(concept, dict):
        return []
    return [c.get("code") for c in concept.get("coding", []) if isinstance(c, dict) and c.get("system") == system]


def _nhs_number_issues(resource: dict[str, Any], resource_type: str, where: str) -> list[Issue]:
    issues = []
    identifiers = resource.get("identifier")
    if not isinstance(identifiers, list):
        return issues
    for index, identifier in enumerate(identifiers):
        if not isinstance(identifier, dict):
            continue
        if canonical_system(identifier.get("system")) != NHS_NUMBER_SYSTEM:
            continue
        reason = nhs_number.problem(str(identifier.get("value", "")))
        if reason:
            issues.append(Issue(reason, _path(where or resource_type, f"identifier[{index}].value"),
                                code="value"))
    return issues


def canonical_system(system: Any) -> Any:
    """The current URI for an identifier system, mapping legacy NHS URIs still seen in feeds."""
    return _LEGACY_SYSTEMS.get(system, system) if isinstance(system, str) else system


def nhs_number_of(patient: dict[str, Any]) -> str | None:
    for identifier in patient.get("identifier") or []:
        if isinstance(identifier, dict) and canonical_system(identifier.get("system")) == NHS_NUMBER_SYSTEM:
            value = identifier.get("value")
            return nhs_number.normalise(value) if isinstance(value, str) else None
    return None


def canonical_json(resource: dict[str, Any]) -> bytes:
    """Stable bytes for hashing: sorted keys, no whitespace, UTF-8."""
    return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
