"""Person matching, the pure part: who a source Patient is, and an explainable score of how alike two are.

A valid NHS number whose verification status is "verified" links deterministically (the person index does
that); everything else is scored field by field with weights a reviewer can read: agreement adds, clear
disagreement subtracts, missing data is neutral. Conflicting valid NHS numbers never link.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import jellyfish

from shared import nhs_number
from shared.fhir import NHS_NUMBER_SYSTEM, NHS_VERIFICATION_EXT, canonical_system
from shared.search import date_bounds, normalise_postcode, normalise_text

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
                     if isinstance(a, dict) and a.get("postalCode") and _current(a)), None)
    sex = patient.get("gender") if patient.get("gender") in ("male", "female") else None
    return Demographics(number, verified, _fold(name.get("family")), _fold(given), birth, sex,
                        _real_postcode(postcode))


def _current(address: dict[str, Any]) -> bool:
    """Whether an address is where the patient lives now: not marked old, and no end date that has passed (a
    sender listing a former address first must not make it the one matching compares)."""
    if address.get("use") == "old":
        return False
    period = address.get("period")
    end = period.get("end") if isinstance(period, dict) else None
    ended = date_bounds(end)[1] if isinstance(end, str) else None
    return ended is None or ended >= datetime.now(UTC)


def _real_postcode(value: Any) -> str | None:
    """The postcode as matching compares it, or None for none or a pseudo-postcode."""
    return _matching_postcode(normalise_postcode(value)) if isinstance(value, str) else None


def _matching_postcode(indexed: str) -> str | None:
    """From the postcode as the search index holds it (shared.search), so that a candidate's indexed postcodes
    compare exactly as its Patient's would. ZZ99 pseudo-postcodes (NHS Data Dictionary, POSTCODE OF USUAL
    ADDRESS) stand for no fixed abode, not known, or a country of residence abroad, which thousands share.
    Sharing one is no evidence of being the same person, and as a blocking key it would put every such patient
    in one block."""
    postcode = indexed.upper()
    return None if not postcode or postcode.startswith(PSEUDO_POSTCODE_PREFIX) else postcode


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
    """A name as matching compares it, folded on top of the search index's folding (shared.search), so that a
    candidate's indexed names compare exactly as its Patient's would: letters, spaces and no punctuation."""
    return _letters(normalise_text(value)) if isinstance(value, str) else None


def _letters(indexed: str) -> str | None:
    letters = "".join(c for c in indexed if c.isalpha() or c in " -'")
    return " ".join(letters.replace("-", " ").replace("'", "").split()) or None


def score(a: Demographics, b: Demographics) -> Score:
    """How alike two records are, field by field."""
    result = Score()
    if a.nhs_number and b.nhs_number:
        if a.nhs_number != b.nhs_number:
            result.conflict = "different NHS numbers"
            result.add("nhs_number", "conflict", 0.0)
        else:
            result.add("nhs_number", "agree", WEIGHTS["nhs_number"][0])
    for name, compare in _FIELDS:
        result.add(name, *compare(getattr(a, name), getattr(b, name)))
    return result


Outcome = tuple[str, float]


def _similar(a: str, b: str) -> bool:
    """Near spelling (Jaro-Winkler) or the same sound (NYSIIS, Metaphone)."""
    return (jellyfish.jaro_winkler_similarity(a, b) >= 0.9 or jellyfish.nysiis(a) == jellyfish.nysiis(b)
            or jellyfish.metaphone(a) == jellyfish.metaphone(b))


def _compare_name(name: str, a: str | None, b: str | None) -> Outcome:
    agree, partial, disagree = WEIGHTS[name]
    if not a or not b:
        return "missing", 0.0
    if a == b:
        return "agree", agree
    if _similar(a, b):
        return "similar", partial
    return "disagree", disagree


def _compare_family(a: str | None, b: str | None) -> Outcome:
    return _compare_name("family", a, b)


def _compare_given(a: str | None, b: str | None) -> Outcome:
    if a and b and a != b and (a.startswith(b) or b.startswith(a)):
        return "initial or short form", WEIGHTS["given_initial"][0]
    return _compare_name("given", a, b)


def _compare_birth_date(a: date | None, b: date | None) -> Outcome:
    agree, partial, disagree = WEIGHTS["birth_date"]
    if not a or not b:
        return "missing", 0.0
    if a == b:
        return "agree", agree
    if a.year == b.year and a.month == b.day and a.day == b.month:
        return "day and month transposed", partial
    if sum(x != y for x, y in ((a.year, b.year), (a.month, b.month), (a.day, b.day))) == 1:
        return "one part differs", 0.0
    return "disagree", disagree


def _compare_sex(a: str | None, b: str | None) -> Outcome:
    agree, _partial, disagree = WEIGHTS["sex"]
    if not a or not b:
        return "missing", 0.0
    return ("agree", agree) if a == b else ("disagree", disagree)


def _compare_postcode(a: str | None, b: str | None) -> Outcome:
    agree, partial, disagree = WEIGHTS["postcode"]
    if not a or not b:
        return "missing", 0.0
    if a == b:
        return "agree", agree
    if a[:-3] == b[:-3]:
        return "same district", partial
    return "disagree", disagree


# Each scored field (a Demographics attribute) and how two values of it compare.
_FIELDS: tuple[tuple[str, Callable[[Any, Any], Outcome]], ...] = (
    ("family", _compare_family), ("given", _compare_given), ("birth_date", _compare_birth_date),
    ("sex", _compare_sex), ("postcode", _compare_postcode))


# What the search index holds of a candidate, enough to bound its score without reading its Patient.
INDEXED_PARAMS = ("identifier", "family", "given", "birthdate", "gender", "address-postalcode")


@dataclass
class Indexed:
    """Every value the search index holds for one source Patient's matching fields, from all its names,
    identifiers and addresses (`demographics` picks one of each, or none). Named as in Demographics."""

    nhs_number: set[str] = field(default_factory=set)
    family: set[str] = field(default_factory=set)
    given: set[str] = field(default_factory=set)
    birth_date: set[date] = field(default_factory=set)
    sex: set[str] = field(default_factory=set)
    postcode: set[str] = field(default_factory=set)

    def add(self, param: str, system: str | None, code: str | None, text: str | None,
            date_low: datetime | None) -> None:
        """One search row (shared.search) of the source Patient."""
        if param == "identifier" and system == NHS_NUMBER_SYSTEM and code and nhs_number.is_valid(code):
            self.nhs_number.add(nhs_number.normalise(code))
        elif param in ("family", "given") and text and (name := _letters(text)):
            (self.family if param == "family" else self.given).add(name)
        elif param == "birthdate" and date_low is not None:
            self.birth_date.add(date_low.date())
        elif param == "gender" and code in ("male", "female"):
            self.sex.add(code)
        elif param == "address-postalcode" and text and (postcode := _matching_postcode(text)):
            self.postcode.add(postcode)


def indexed(rows: Iterable[tuple[str, str, str | None, str | None, str | None, datetime | None]]
            ) -> dict[str, Indexed]:
    """Search rows (resource id, param, system, code, text, date_low) gathered per source Patient, in the order
    each first appears."""
    found: dict[str, Indexed] = {}
    for resource_id, *row in rows:
        found.setdefault(resource_id, Indexed()).add(*row)
    return found


def best_possible(ours: Demographics, theirs: Indexed) -> float:
    """The most `score(ours, demographics(their Patient))` can come to, from their indexed values alone: each
    field's best outcome over its values, and never less than a missing value counts, since `demographics` may
    find none it can use. A conflict is left out: it only ever keeps a candidate from linking."""
    total = WEIGHTS["nhs_number"][0] if ours.nhs_number in theirs.nhs_number else 0.0
    for name, compare in _FIELDS:
        mine = getattr(ours, name)
        if mine is not None:
            total += max([0.0, *(compare(mine, value)[1] for value in getattr(theirs, name))])
    return total


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
