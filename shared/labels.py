"""Security labels: the HL7 codes ingest puts on resources, the consent engine reasons about, and the record
API filters by. Categories are HL7 v3 ActCode information-sensitivity codes (the same codes citizens choose
in `withheld_categories`); confidentiality is the HL7 v3 Confidentiality code on the patient or resource."""

from __future__ import annotations

from shared.fhir import ACT_CODE_SYSTEM, CONFIDENTIALITY_SYSTEM

# Sensitivity categories (system v3-ActCode), what each means here, and whether it is withheld by default.
CATEGORIES: dict[str, str] = {
    "HIV": "HIV/AIDS information",
    "STD": "Sexually transmitted disease information",
    "SEX": "Sexuality and reproductive health (fertility treatment, termination of pregnancy)",
    "GDIS": "Genetic disease information",
    "TBOO": "Gender reassignment and other legally protected information",
    "PSY": "Mental health (psychiatry) information",
    "ETH": "Substance misuse information",
    "SDV": "Sexual assault, abuse and domestic violence (safeguarding)",
    "SOC": "Social care information",
}

# RCGP exclusion set and statutory restrictions (HFEA 1990 s.33A, GRA 2004 s.22): withheld unless a citizen
# or clinician explicitly includes them. STI/HIV is policy-sensitive rather than legally restricted since 2023.
WITHHELD_BY_DEFAULT: frozenset[str] = frozenset({"HIV", "STD", "SEX", "TBOO"})

# Confidentiality codes (system v3-Confidentiality).
RESTRICTED = "R"  # the S-flag: location and contact details are never shared
VERY_RESTRICTED = "V"  # marked confidential/sealed/private by the source: never leaves the source organisation
CONFIDENTIALITY_CODES = frozenset({"U", "L", "M", "N", RESTRICTED, VERY_RESTRICTED})

# What S-flag patients never expose (PDS behaviour for `R`).
S_FLAG_REDACTED_ELEMENTS = ("address", "telecom", "generalPractitioner", "contact")


def security_coding(label: str) -> dict[str, str]:
    """The meta.security Coding for a label code."""
    system = CONFIDENTIALITY_SYSTEM if label in CONFIDENTIALITY_CODES else ACT_CODE_SYSTEM
    return {"system": system, "code": label}


def labels_from_meta(resource: dict) -> set[str]:
    """The label codes a resource carries in meta.security, from either code system."""
    meta = resource.get("meta") or {}
    return {
        c["code"]
        for c in meta.get("security") or []
        if isinstance(c, dict) and c.get("system") in (ACT_CODE_SYSTEM, CONFIDENTIALITY_SYSTEM) and c.get("code")
    }
