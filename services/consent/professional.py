"""Consents professionals record on a patient's behalf (POST /fhir/Consent) and dissent imported from source
records (CONTRACTS §1.5): checking a FHIR Consent, telling what kind it is, and shaping it for storage."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.consent import codes
from services.consent.facts import (
    actor_ods_codes,
    first_code,
    is_about_sharing,
    ods_code,
    parse_datetime,
    range_end,
)
from services.consent.preferences import ODS_CODE
from shared import nhs_number as nhs
from shared.errors import InvalidInput, UnprocessableResource
from shared.fhir import (
    ACT_CODE_SYSTEM,
    ACT_REASON_SYSTEM,
    NHS_NUMBER_SYSTEM,
    ODS_ORG_SYSTEM,
    Issue,
    canonical_system,
    validate_resource,
)
from shared.labels import CATEGORIES

_REVIEW_TYPES = {codes.DECLINED: "permit", codes.UPHELD: "deny"}


@dataclass(frozen=True)
class CheckedConsent:
    kind: str  # dissent | consent | safety-override
    nhs_number: str
    resource: dict[str, Any]


def check(resource: Any) -> CheckedConsent:
    """A Consent a professional may record, or InvalidInput (structure) / UnprocessableResource (rules)."""
    structure = validate_resource(resource)
    if not structure and resource.get("resourceType") != "Consent":
        structure = [Issue("this endpoint records Consent resources", "resourceType", code="not-supported")]
    if structure:
        raise InvalidInput(structure[0].diagnostics, issues=[i.as_fhir() for i in structure])
    resource = _normalised(resource)
    issues = _rule_issues(resource)
    if issues:
        raise UnprocessableResource(issues[0].diagnostics, issues=[i.as_fhir() for i in issues])
    return CheckedConsent(kind_of(resource["provision"]), patient_nhs_number(resource) or "", resource)


def _normalised(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with its nested actors' ODS codes written as they are compared (`facts.ods_code`: stripped,
    capitals), the same normalising a citizen's denied organisations get: "rh8 " is checked and stored as RH8."""
    body = copy.deepcopy(resource)
    for item in (body.get("provision") or {}).get("provision") or []:
        for actor in (item or {}).get("actor") or []:
            identifier = ((actor or {}).get("reference") or {}).get("identifier") or {}
            if canonical_system(identifier.get("system")) == ODS_ORG_SYSTEM and isinstance(identifier.get("value"),
                                                                                            str):
                identifier["value"] = ods_code(identifier["value"])
    return body


def kind_of(provision: dict[str, Any]) -> str:
    if first_code(provision.get("code"), {codes.REVIEW_SYSTEM}):
        return "safety-override"
    source = first_code(provision.get("code"), codes.CODE_SYSTEMS)
    if source in codes.DISSENT_CODES:
        return "dissent"
    if source in codes.CONSENT_CODES:
        return "consent"
    return "dissent" if provision.get("type") == "deny" else "consent"


def import_kind(body: dict[str, Any]) -> str | None:
    """The kind of a Consent imported from a source record, or None when it is not a sharing choice this service
    acts on: a scope other than patient-privacy (a patient declining a procedure, a research consent: clinical
    records, stored by ingest but not consent to share), or an objection review, which only a GP at the
    patient's practice or a Caldicott Guardian may make, here, never a feed."""
    provision = body.get("provision")
    if not is_about_sharing(body) or not isinstance(provision, dict):
        return None
    kind = kind_of(provision)
    return None if kind == "safety-override" else kind


def patient_nhs_number(resource: dict[str, Any]) -> str | None:
    identifier = (resource.get("patient") or {}).get("identifier") or {}
    if canonical_system(identifier.get("system")) != NHS_NUMBER_SYSTEM or not isinstance(identifier.get("value"),
                                                                                          str):
        return None
    return nhs.normalise(identifier["value"])


def _rule_issues(resource: dict[str, Any]) -> list[Issue]:
    issues = []
    if resource.get("status") != "active":
        issues.append(Issue("a recorded consent must have status \"active\"", "Consent.status", code="value"))
    scopes = {c.get("code") for c in (resource.get("scope") or {}).get("coding") or []
              if c.get("system") == codes.CONSENT_SCOPE_SYSTEM}
    if codes.PATIENT_PRIVACY not in scopes:
        issues.append(Issue("scope must be consentscope#patient-privacy", "Consent.scope", code="value"))
    number = patient_nhs_number(resource)
    if number is None:
        issues.append(Issue("patient must be identified by NHS number (identifier system "
                            f"{NHS_NUMBER_SYSTEM})", "Consent.patient.identifier", code="required"))
    elif problem := nhs.problem(number):
        issues.append(Issue(problem, "Consent.patient.identifier.value", code="value"))
    provision = resource.get("provision")
    if not isinstance(provision, dict) or provision.get("type") not in ("permit", "deny"):
        issues.append(Issue("provision.type (permit or deny) is required", "Consent.provision.type",
                            code="required"))
        return issues
    return issues + _period_issues(provision) + _provision_issues(provision)


def _period_issues(provision: dict[str, Any]) -> list[Issue]:
    period = provision.get("period") or {}
    # Partial dates are ranges: a period from 2020-06-01 to "2020" (the whole year) is fine.
    start, end = parse_datetime(period.get("start")), range_end(period.get("end"))
    if start and end and end <= start:
        return [Issue("provision.period.end must be after its start", "Consent.provision.period.end",
                      code="value")]
    return []


def _provision_issues(provision: dict[str, Any]) -> list[Issue]:
    review = first_code(provision.get("code"), {codes.REVIEW_SYSTEM})
    nested = provision.get("provision") or []
    if review is not None:
        return _review_issues(review, provision, nested)
    issues = []
    for index, item in enumerate(nested):
        issues += _nested_issues(item, f"Consent.provision.provision[{index}]")
    return issues


def _review_issues(review: str, provision: dict[str, Any], nested: list[Any]) -> list[Issue]:
    where = "Consent.provision.code"
    if review not in _REVIEW_TYPES:
        return [Issue(f"objection review {review!r} is not \"upheld\" or \"declined\"", where, code="code-invalid")]
    issues = []
    if provision["type"] != _REVIEW_TYPES[review]:
        issues.append(Issue(f"an objection review of {review!r} has provision.type {_REVIEW_TYPES[review]!r}",
                            "Consent.provision.type", code="business-rule"))
    if nested:
        issues.append(Issue("an objection review carries no nested provisions", "Consent.provision.provision",
                            code="business-rule"))
    return issues


def _nested_issues(item: dict[str, Any], where: str) -> list[Issue]:
    if item.get("type") != "deny":
        return [Issue("nested provisions may only restrict sharing (type deny)", f"{where}.type",
                      code="business-rule")]
    if item.get("provision"):
        return [Issue("provisions nest one level only", f"{where}.provision", code="not-supported")]
    issues = []
    for i, label in enumerate(item.get("securityLabel") or []):
        if label.get("system") != ACT_CODE_SYSTEM or label.get("code") not in CATEGORIES:
            issues.append(Issue(f"unknown category {label.get('code')!r}; the categories are "
                                f"{', '.join(CATEGORIES)}", f"{where}.securityLabel[{i}]", code="code-invalid"))
    for i, actor in enumerate(item.get("actor") or []):
        identifier = ((actor or {}).get("reference") or {}).get("identifier") or {}
        if canonical_system(identifier.get("system")) != ODS_ORG_SYSTEM or not ODS_CODE.fullmatch(
                str(identifier.get("value", ""))):
            issues.append(Issue("actor must name an organisation by ODS code (3 to 8 letters and digits)",
                                f"{where}.actor[{i}].reference.identifier", code="value"))
    for i, purpose in enumerate(item.get("purpose") or []):
        if purpose.get("system") != ACT_REASON_SYSTEM or purpose.get("code") not in codes.SECONDARY_USE:
            issues.append(Issue("a nested purpose may only be HRESCH or HOPERAT (secondary use)",
                                f"{where}.purpose[{i}]", code="code-invalid"))
    if not (item.get("securityLabel") or actor_ods_codes(item) or item.get("purpose")) and not issues:
        issues.append(Issue("a nested provision must name categories, organisations or purposes", where,
                            code="required"))
    return issues


def for_storage(resource: dict[str, Any], *, consent_id: str, kind: str, nhs_number: str, recorded: datetime,
                author_ods: str | None, person_id: str | None = None) -> dict[str, Any]:
    """The resource as stored: our id and profile, the kind as a tag, the patient's NHS number normalised, and
    the recording organisation and time filled in where the sender left them out."""
    body = copy.deepcopy(resource)
    body["id"] = consent_id
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    profiles = [p for p in meta.get("profile") or [] if p != codes.CONSENT_PROFILE]
    tags = [t for t in meta.get("tag") or [] if t.get("system") != codes.KIND_TAG_SYSTEM]
    body["meta"] = meta | {"profile": [codes.CONSENT_PROFILE, *profiles],
                           "tag": [*tags, {"system": codes.KIND_TAG_SYSTEM, "code": kind}]}
    patient: dict[str, Any] = {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs_number}}
    if person_id:
        patient["reference"] = f"Patient/{person_id}"
    body["patient"] = patient
    body.setdefault("dateTime", recorded.isoformat())
    if author_ods and not body.get("organization"):
        body["organization"] = [{"identifier": {"system": ODS_ORG_SYSTEM, "value": author_ods}}]
    return body
