"""The codes and URIs consent resources are written and read with (UK Core Consent, HL7 v3, SNOMED CT, Read v2),
in one place so the writer and the reader of a Consent can never disagree."""

from __future__ import annotations

from shared.fhir import ACT_CODE_SYSTEM, ACT_REASON_SYSTEM, SNOMED

CONSENT_PROFILE = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Consent"
CONSENT_SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
PATIENT_PRIVACY = "patient-privacy"
INFORMATION_ACCESS = {"system": ACT_CODE_SYSTEM, "code": "INFA", "display": "information access"}
# Sharing for direct care is on unless the person objects: the opt-out model of English shared care records.
OPT_OUT_POLICY = {"coding": [{"system": ACT_CODE_SYSTEM, "code": "OPTOUT", "display": "opt-out"}]}
READ_V2 = "http://read.info/readv2"
KIND_TAG_SYSTEM = "urn:scr:consent-kind"

# The review of an objection by a GP or Caldicott Guardian: requested -> upheld | declined.
REVIEW_SYSTEM = "urn:scr:objection-review"
UPHELD, DECLINED = "upheld", "declined"

# Purposes of use (v3-ActReason).
TREAT, ETREAT, HRESCH, HOPERAT = "TREAT", "ETREAT", "HRESCH", "HOPERAT"
PURPOSES = frozenset({TREAT, ETREAT, HRESCH, HOPERAT})
DIRECT_CARE = frozenset({TREAT, ETREAT})
SECONDARY_USE = frozenset({HRESCH, HOPERAT})


def purpose_coding(code: str) -> dict[str, str]:
    return {"system": ACT_REASON_SYSTEM, "code": code}


# Dissent and consent codes recorded at source (reference/uk-domain.md §4.5; ZU8-2 = 2 arrives as 416409005).
DISSENT_CODES: dict[str, str] = {
    "416409005": "Refused consent for upload to local shared electronic record",
    "416308001": "Refused consent for upload to national shared electronic record",
    "9Nd1.": "No consent for electronic record sharing",
    "93C1.": "Refused consent for upload to local shared record",
    "9Ndo.": "Express dissent",
}
CONSENT_CODES: dict[str, str] = {
    "425691002": "Consent given for electronic record sharing",
    "417528008": "Consent given for upload to local shared electronic record",
    "9Nd7.": "Consent given for electronic record sharing",
    "93C0.": "Consent given for upload to local shared record",
}
CODE_SYSTEMS = frozenset({SNOMED, READ_V2})
