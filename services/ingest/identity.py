"""Person matching, the pure part: who a source Patient is, and an explainable score of how alike two are.

A valid NHS number whose verification status is "verified" links deterministically (the person index does
that); everything else is scored field by field with weights a reviewer can read: agreement adds, clear
disagreement subtracts, missing data is neutral. Conflicting valid NHS numbers never link.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import jellyfish

from shared import nhs_number
from shared.fhir import NHS_NUMBER_SYSTEM, NHS_VERIFICATION_EXT, canonical_system

# Verification codes meaning "number present and verified", per code system (reference/uk-domain.md §1.3).
VERIFIED_CODES = {
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland": {"01"},
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusWales": {"01", "nn"},
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus": {"01", "number-present-and-verified"},
    "https://fhir.nhs.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1": {"01"},
}
VERIFICATION_EXTENSIONS = frozenset({NHS_VERIFICATION_EXT,
                                     "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-"
                                     "NHSNumberVerificationStatus-1"})

PSEUDO_POSTCODE_PREFIX = "ZZ99"

# Per-field weights: (agree, partial, disagree). Partial means phonetic/near spelling, a transposed day and
# month, a shared postcode district, or a given-name initial; see `_compare_*` for which applies.
WEIGHTS = {
    "nhs_number": (8.0, 0.0, 0.0),
    "family": (4.0, 2.5, -2.0),
    "given": (3.0, 2.0, -3.0),
    "given_initial": (1.0, 1.0, 1.0),
    "birth_date": (4.0, 1.0, -5.0),
    "sex": (1.0, 0.0, -3.0),
    "postcode": (2.0, 1.0, 0.0),
}


@dataclass(frozen=True)
class Demographics:
    """The matching fields of one source Patient, normalised."""

    nhs_number: str | None = None
    verified: bool = False
    family: str | None = None
    given: str | None = None
    birth_date: date | None = None
    sex: str | None = None
    postcode: str | None = None


@dataclass
class Score:
    """A comparison: the total, each field's outcome and weight, and a conflict that forbids linking."""

    total: float = 0.0
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflict: str | None = None

    def add(self, name: str, outcome: str, weight: float) -> None:
        self.fields[name] = {"outcome": outcome, "weight": weight}
        self.total += weight

    def explanation(self) -> dict[str, Any]:
        return {"score": round(self.total, 2), "fields": self.fields, "conflict": self.conflict}


def demographics(patient: dict[str, Any]) -> Demographics:
    """Read the matching fields from a Patient resource."""
    number, verified = nhs_identity(patient)
    name = next((n for n in patient.get("name") or [] if isinstance(n, dict) and n.get("use") != "old"), {})
    given = (name.get("given") or [None])[0]
    birth = None
    if isinstance(patient.get("birthDate"), str) and len(patient["birthDate"]) == 10:
        try:
            birth = date.fromisoformat(patient["birthDate"])
        except ValueError:
            birth = None
    postcode = next((a.get("postalCode") for a in patient.get("address") or []
                     if isinstance(a, dict) and a.get("postalCode")), None)
    sex = patient.get("gender") if patient.get("gender") in ("male", "female") else None
    return Demographics(number, verified, _fold(name.get("family")), _fold(given), birth, sex,
                        _real_postcode(postcode))


def _real_postcode(value: Any) -> str | None:
    """The postcode as matching compares it, or None for none or a pseudo-postcode: ZZ99 codes (NHS Data
    Dictionary, POSTCODE OF USUAL ADDRESS) stand for no fixed abode, not known, or a country of residence
    abroad, which thousands share. Sharing one is no evidence of being the same person, and as a blocking key
    it would put every such patient in one block."""
    if not isinstance(value, str):
        return None
    postcode = value.replace(" ", "").upper()
    return None if postcode.startswith(PSEUDO_POSTCODE_PREFIX) else postcode


def nhs_identity(patient: dict[str, Any]) -> tuple[str | None, bool]:
    """The Patient's valid NHS number (or None) and whether its verification status says verified."""
    for identifier in patient.get("identifier") or []:
        if not isinstance(identifier, dict) or canonical_system(identifier.get("system")) != NHS_NUMBER_SYSTEM:
            continue
        value = identifier.get("value")
        if not isinstance(value, str) or not nhs_number.is_valid(value):
            return None, False
        return nhs_number.normalise(value), _is_verified(identifier)
    return None, False


def _is_verified(identifier: dict[str, Any]) -> bool:
    for extension in identifier.get("extension") or []:
        if not isinstance(extension, dict) or extension.get("url") not in VERIFICATION_EXTENSIONS:
            continue
        for coding in (extension.get("valueCodeableConcept") or {}).get("coding") or []:
            if isinstance(coding, dict) and coding.get("code") in VERIFIED_CODES.get(coding.get("system"), ()):
                return True
    return False


def _fold(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    decomposed = unicodedata.normalize("NFKD", value)
    letters = "".join(c for c in decomposed if c.isalpha() or c in " -'")
    return " ".join(letters.casefold().replace("-", " ").replace("'", "").split()) or None


def score(a: Demographics, b: Demographics) -> Score:
    """How alike two records are, field by field."""
    result = Score()
    if a.nhs_number and b.nhs_number:
        if a.nhs_number != b.nhs_number:
            result.conflict = "different NHS numbers"
            result.add("nhs_number", "conflict", 0.0)
        else:
            result.add("nhs_number", "agree", WEIGHTS["nhs_number"][0])
    _compare_name(result, "family", a.family, b.family)
    _compare_given(result, a.given, b.given)
    _compare_birth_date(result, a.birth_date, b.birth_date)
    _compare_simple(result, "sex", a.sex, b.sex)
    _compare_postcode(result, a.postcode, b.postcode)
    return result


def _similar(a: str, b: str) -> bool:
    """Near spelling (Jaro-Winkler) or the same sound (NYSIIS, Metaphone)."""
    return (jellyfish.jaro_winkler_similarity(a, b) >= 0.9 or jellyfish.nysiis(a) == jellyfish.nysiis(b)
            or jellyfish.metaphone(a) == jellyfish.metaphone(b))


def _compare_name(result: Score, name: str, a: str | None, b: str | None) -> None:
    agree, partial, disagree = WEIGHTS[name]
    if not a or not b:
        result.add(name, "missing", 0.0)
    elif a == b:
        result.add(name, "agree", agree)
    elif _similar(a, b):
        result.add(name, "similar", partial)
    else:
        result.add(name, "disagree", disagree)


def _compare_given(result: Score, a: str | None, b: str | None) -> None:
    if a and b and a != b and (a.startswith(b) or b.startswith(a)):
        result.add("given", "initial or short form", WEIGHTS["given_initial"][0])
        return
    _compare_name(result, "given", a, b)


def _compare_birth_date(result: Score, a: date | None, b: date | None) -> None:
    agree, partial, disagree = WEIGHTS["birth_date"]
    if not a or not b:
        result.add("birth_date", "missing", 0.0)
    elif a == b:
        result.add("birth_date", "agree", agree)
    elif a.year == b.year and a.month == b.day and a.day == b.month:
        result.add("birth_date", "day and month transposed", partial)
    elif sum(x != y for x, y in ((a.year, b.year), (a.month, b.month), (a.day, b.day))) == 1:
        result.add("birth_date", "one part differs", 0.0)
    else:
        result.add("birth_date", "disagree", disagree)


def _compare_simple(result: Score, name: str, a: str | None, b: str | None) -> None:
    agree, _partial, disagree = WEIGHTS[name]
    if not a or not b:
        result.add(name, "missing", 0.0)
    else:
        result.add(name, "agree" if a == b else "disagree", agree if a == b else disagree)


def _compare_postcode(result: Score, a: str | None, b: str | None) -> None:
    agree, partial, disagree = WEIGHTS["postcode"]
    if not a or not b:
        result.add("postcode", "missing", 0.0)
    elif a == b:
        result.add("postcode", "agree", agree)
    elif a[:-3] == b[:-3]:
        result.add("postcode", "same district", partial)
    else:
        result.add("postcode", "disagree", disagree)


@dataclass(frozen=True)
class Decision:
    """What to do with a new source Patient: link to a person, queue a review (and make a new person), or
    simply make a new person. `candidate` is the person linked to or proposed."""

    action: str  # link | review | new
    candidate: str | None
    score: float | None
    explanation: dict[str, Any]


def decide(scores: dict[str, Score], *, link_threshold: float, review_threshold: float) -> Decision:
    """Choose from each candidate person's best score. Two persons above the link threshold is ambiguity,
    which a person must resolve: it goes to review, never to an automatic link."""
    usable = {person: s for person, s in scores.items() if s.conflict is None}
    thresholds = {"link": link_threshold, "review": review_threshold}
    if not usable:
        conflicts = sorted(p for p, s in scores.items() if s.conflict)
        return Decision("new", None, None, {"reason": "no candidate", "conflicting_candidates": conflicts,
                                            "thresholds": thresholds})
    ranked = sorted(usable.items(), key=lambda item: (-item[1].total, item[0]))
    best_person, best = ranked[0]
    explanation = best.explanation() | {"thresholds": thresholds}
    strong = [p for p, s in ranked if s.total >= link_threshold]
    if len(strong) == 1:
        return Decision("link", best_person, best.total, explanation)
    if len(strong) > 1:
        return Decision("review", best_person, best.total, explanation | {"ambiguous_with": strong[1:]})
    if best.total >= review_threshold:
        return Decision("review", best_person, best.total, explanation)
    return Decision("new", None, best.total, explanation | {"best_candidate": best_person})
