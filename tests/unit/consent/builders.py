"""Consents and decision requests for the consent tests, built the way the service builds them (real FHIR
Consent bodies through the same parser), with realistic NHS numbers, ODS codes and RBAC roles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.consent import codes
from services.consent.facts import ConsentFacts, facts_from
from services.consent.preferences import Preferences, to_consent
from services.consent.rules import DecisionRequest
from shared.fhir import NHS_NUMBER_SYSTEM, ODS_ORG_SYSTEM, SNOMED
from tests.support import data

NHS = data.NHS_NUMBERS[0]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ACTOR_ODS = data.ACUTE_ODS  # the organisation asking in most rows

# One representative R-code per role group the rules distinguish.
ROLES = {"clinical": "R8000", "gp": "R0260", "social-care": "R8014", "admin": "R8009", "privacy-officer": "R5100",
         "caldicott-guardian": "R5105", "unknown": "R9999"}


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def citizen(direct_care: str = "share", *, withheld: tuple[str, ...] = (), denied: tuple[str, ...] = (),
            ndoo: bool = False, since: datetime | None = None, version: int = 1, status: str = "active",
            ends: datetime | None = None, consent_id: str = "pref-1") -> ConsentFacts:
    """The citizen's preferences Consent."""
    since = since or days_ago(30)
    body = to_consent(Preferences(direct_care, withheld, denied, ndoo), consent_id=consent_id, nhs_number=NHS,
                      recorded=since, since=since)
    body["status"] = status
    if ends:
        body["provision"]["period"]["end"] = ends.isoformat()
    return facts_from(id=consent_id, version_id=version, kind="preferences", status=status, author_kind="citizen",
                      author_ods=None, author_role=None, recorded_at=since, body=body)


def professional_body(provision_type: str = "deny", *, code: str | None = "416409005", system: str = SNOMED,
                      stated: datetime | None = None, status: str = "active", ends: datetime | None = None,
                      nested: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A FHIR Consent a professional would POST (dissent by default: SNOMED 416409005)."""
    provision: dict[str, Any] = {"type": provision_type}
    if code:
        provision["code"] = [{"coding": [{"system": system, "code": code}]}]
    if ends:
        provision["period"] = {"end": ends.isoformat()}
    if nested:
        provision["provision"] = nested
    return {
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": codes.CONSENT_SCOPE_SYSTEM, "code": codes.PATIENT_PRIVACY}]},
        "category": [{"coding": [codes.INFORMATION_ACCESS]}],
        "patient": {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": NHS}},
        "dateTime": (stated or days_ago(10)).isoformat(),
        "policyRule": codes.OPT_OUT_POLICY,
        "provision": provision,
    }


def review_body(outcome: str = codes.DECLINED, *, stated: datetime | None = None) -> dict[str, Any]:
    body = professional_body("permit" if outcome == codes.DECLINED else "deny", code=outcome,
                             system=codes.REVIEW_SYSTEM, stated=stated)
    return body


def professional(body: dict[str, Any], *, kind: str | None = None, consent_id: str = "prof-1", version: int = 1,
                 ods: str = data.GP_ODS, role: str = "R0260", recorded: datetime | None = None) -> ConsentFacts:
    """A professional's Consent as the service stores it; `recorded` is when the service received it."""
    from services.consent.professional import kind_of

    return facts_from(id=consent_id, version_id=version, kind=kind or kind_of(body["provision"]),
                      status=body["status"], author_kind="professional", author_ods=ods, author_role=role,
                      recorded_at=recorded or days_ago(1), body=body)


def dissent(*, stated: datetime | None = None, status: str = "active", ends: datetime | None = None,
            code: str | None = "416409005", consent_id: str = "dissent-1") -> ConsentFacts:
    return professional(professional_body("deny", code=code, stated=stated or days_ago(10), status=status,
                                          ends=ends), consent_id=consent_id)


def professional_consent(*, stated: datetime | None = None, consent_id: str = "consent-1") -> ConsentFacts:
    return professional(professional_body("permit", code="425691002", stated=stated or days_ago(5)),
                        consent_id=consent_id)


def review(outcome: str = codes.DECLINED, *, stated: datetime | None = None,
           consent_id: str = "review-1") -> ConsentFacts:
    return professional(review_body(outcome, stated=stated or days_ago(3)), consent_id=consent_id)


def denied_organisation_nested(ods: str) -> dict[str, Any]:
    return {"type": "deny", "actor": [{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "reference": {"identifier": {"system": ODS_ORG_SYSTEM, "value": ods}}}]}


def request(purpose: str = "TREAT", *, role: str | None = ROLES["clinical"], ods: str = ACTOR_ODS,
            relationship: str = "registered", labels: tuple[str, ...] = (), reason: str | None = None,
            kind: str = "clinician") -> DecisionRequest:
    return DecisionRequest(purpose=purpose, nhs_number=NHS, person_id="person-1", actor_kind=kind, ods_code=ods,
                           role=role, user_id="555000000001", labels=frozenset(labels),
                           legitimate_relationship=relationship, break_glass_reason=reason)
