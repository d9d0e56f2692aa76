"""The citizen's preferences document (DESIGN.md) — checking it, and writing it as a UK Core Consent.

`{"direct_care": "share" | "object", "withheld_categories": [...], "denied_organisations": [...],
"national_data_opt_out": true | false}`. Problems come back as OperationOutcome issues naming the element
at fault: 400 for a document of the wrong shape, 422 for one whose content breaks a rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.consent import codes
from services.consent.facts import ConsentFacts, ods_code
from shared.errors import InvalidInput, UnprocessableResource
from shared.fhir import NHS_NUMBER_SYSTEM, ODS_ORG_SYSTEM, Issue
from shared.labels import CATEGORIES, CONFIDENTIALITY_CODES, security_coding

FIELDS = ("direct_care", "withheld_categories", "denied_organisations", "national_data_opt_out")
DIRECT_CARE_CHOICES = ("share", "object")
ODS_CODE = re.compile(r"[A-Z0-9]{3,8}")
MAX_DENIED_ORGANISATIONS = 50  # past this, objecting is the honest choice


@dataclass(frozen=True)
class Preferences:
    direct_care: str = "share"
    withheld_categories: tuple[str, ...] = ()
    denied_organisations: tuple[str, ...] = ()
    national_data_opt_out: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"direct_care": self.direct_care, "withheld_categories": list(self.withheld_categories),
                "denied_organisations": list(self.denied_organisations),
                "national_data_opt_out": self.national_data_opt_out}


def parse(document: Any) -> Preferences:
    """A checked Preferences, or InvalidInput (shape) / UnprocessableResource (content) listing every problem."""
    shape = _shape_issues(document)
    if shape:
        raise InvalidInput(shape[0].diagnostics, issues=[i.as_fhir() for i in shape])
    content = _content_issues(document)
    if content:
        raise UnprocessableResource(content[0].diagnostics, issues=[i.as_fhir() for i in content])
    # ODS codes are case-blind: "rh8" is RH8, stored (and so compared everywhere) as RH8.
    return Preferences(document["direct_care"], tuple(document["withheld_categories"]),
                       tuple(ods_code(code) for code in document["denied_organisations"]),
                       document["national_data_opt_out"])


def _shape_issues(document: Any) -> list[Issue]:
    if not isinstance(document, dict):
        return [Issue("the preferences document must be a JSON object", code="structure")]
    issues = [Issue(f"unknown field {key!r}: the document has only {', '.join(FIELDS)} (your NHS number comes "
                    "from your sign-in, never from the request)", str(key), code="structure")
              for key in document if key not in FIELDS]
    issues += [Issue(f"{key} is required", key, code="required") for key in FIELDS if key not in document]
    if issues:
        return issues
    if not isinstance(document["direct_care"], str):
        issues.append(Issue("direct_care must be \"share\" or \"object\"", "direct_care", code="value"))
    for key in ("withheld_categories", "denied_organisations"):
        value = document[key]
        if not isinstance(value, list):
            issues.append(Issue(f"{key} must be a list", key, code="value"))
            continue
        issues += [Issue(f"{key} entries must be strings", f"{key}[{i}]", code="value")
                   for i, item in enumerate(value) if not isinstance(item, str)]
    if not isinstance(document["national_data_opt_out"], bool):
        issues.append(Issue("national_data_opt_out must be true or false", "national_data_opt_out", code="value"))
    return issues


def _content_issues(document: dict[str, Any]) -> list[Issue]:
    issues = []
    if document["direct_care"] not in DIRECT_CARE_CHOICES:
        issues.append(Issue(f"direct_care {document['direct_care']!r} is not \"share\" or \"object\"",
                            "direct_care", code="code-invalid"))
    issues += _category_issues(document["withheld_categories"])
    issues += _organisation_issues(document["denied_organisations"])
    return issues


def _category_issues(categories: list[str]) -> list[Issue]:
    issues = []
    for index, code in enumerate(categories):
        where = f"withheld_categories[{index}]"
        if code in CONFIDENTIALITY_CODES:
            issues.append(Issue(f"{code!r} is a confidentiality level, not a category you can withhold", where,
                                code="code-invalid"))
        elif code not in CATEGORIES:
            issues.append(Issue(f"unknown category {code!r}; the categories are {', '.join(CATEGORIES)}", where,
                                code="code-invalid"))
        elif code in categories[:index]:
            issues.append(Issue(f"category {code!r} is listed twice", where, code="business-rule"))
    return issues


def _organisation_issues(organisations: list[str]) -> list[Issue]:
    issues = []
    if len(organisations) > MAX_DENIED_ORGANISATIONS:
        issues.append(Issue(f"at most {MAX_DENIED_ORGANISATIONS} organisations can be named; to stop sharing with "
                            "every organisation, object to sharing instead", "denied_organisations",
                            code="business-rule"))
    normalised = [ods_code(code) for code in organisations]
    for index, (given, code) in enumerate(zip(organisations, normalised, strict=True)):
        where = f"denied_organisations[{index}]"
        if not ODS_CODE.fullmatch(code):
            issues.append(Issue(f"{given!r} is not an ODS organisation code (3 to 8 letters and digits, "
                                "e.g. RR8 or Y12345)", where, code="value"))
        elif code in normalised[:index]:
            issues.append(Issue(f"organisation {code!r} is listed twice", where, code="business-rule"))
    return issues


# ---------------------------------------------------------------- as FHIR


def to_consent(preferences: Preferences, *, consent_id: str, nhs_number: str, recorded: datetime,
               since: datetime) -> dict[str, Any]:
    """The UK Core Consent recording `preferences`. `since` is when the direct-care choice took effect: it is
    carried over unchanged while the citizen's choice stays the same, so editing another choice never
    re-asserts (or re-opens) an objection."""
    nested = [_deny({"securityLabel": [security_coding(code)]}) for code in preferences.withheld_categories]
    nested += [_deny({"actor": [_organisation_actor(code)]}) for code in preferences.denied_organisations]
    if preferences.national_data_opt_out:
        nested.append(_deny({"purpose": [codes.purpose_coding(codes.HRESCH), codes.purpose_coding(codes.HOPERAT)]}))
    provision: dict[str, Any] = {"type": "deny" if preferences.direct_care == "object" else "permit",
                                 "period": {"start": since.isoformat()}}
    if nested:
        provision["provision"] = nested
    return {
        "resourceType": "Consent", "id": consent_id,
        "meta": {"profile": [codes.CONSENT_PROFILE], "tag": [{"system": codes.KIND_TAG_SYSTEM,
                                                               "code": "preferences"}]},
        "status": "active",
        "scope": {"coding": [{"system": codes.CONSENT_SCOPE_SYSTEM, "code": codes.PATIENT_PRIVACY}]},
        "category": [{"coding": [codes.INFORMATION_ACCESS]}],
        "patient": {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs_number}},
        "dateTime": recorded.isoformat(),
        "performer": [{"identifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs_number}}],
        "policyRule": codes.OPT_OUT_POLICY,
        "provision": provision,
    }


def _deny(element: dict[str, Any]) -> dict[str, Any]:
    return {"type": "deny"} | element


def _organisation_actor(ods_code: str) -> dict[str, Any]:
    return {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "IRCP", "display": "information recipient"}]},
            "reference": {"identifier": {"system": ODS_ORG_SYSTEM, "value": ods_code}}}


def from_facts(facts: ConsentFacts | None, direct_care: str) -> Preferences:
    """The citizen's own document back from their preferences Consent; `direct_care` is the stance in force."""
    if facts is None:
        return Preferences(direct_care=direct_care)
    return Preferences(direct_care, _unique(r.code for r in facts.withheld),
                       _unique(r.code for r in facts.denied_organisations), facts.secondary_use_opt_out is not None)


def _unique(items: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
