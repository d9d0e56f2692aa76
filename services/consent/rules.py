"""The consent rules engine: one pure, deterministic function from a request, a person's consents and the
policy to a decision (docs/CONTRACTS.md §3; the rules as implemented are written out in docs/CONSENT.md).

No I/O, no clock unless none is given: the same inputs always give the same decision, which is what makes the
table-driven tests meaningful and lets the decision be benchmarked in-process.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from services.consent.codes import DIRECT_CARE, ETREAT, SECONDARY_USE, TREAT
from services.consent.facts import BASE, ConsentFacts, Restriction, ods_code
from shared import labels, roles

ADMIN_TYPES = ("Appointment", "Encounter", "Patient")
# R8014 sees social care and the clinical items a social worker needs to act safely: alerts, allergies,
# problems and current medication; not results, documents or the rest of the clinical record.
SOCIAL_CARE_TYPES = ("AllergyIntolerance", "Appointment", "CarePlan", "CareTeam", "Condition", "Encounter",
                     "EpisodeOfCare", "Flag", "MedicationStatement", "Patient", "RelatedPerson", "ServiceRequest",
                     "Task")
REDACT_LOCATION = "redact-location"
OBJECTING = frozenset({"objection", "upheld"})


@dataclass(frozen=True, slots=True)
class Policy:
    """The operator's switches (SCR_BREAK_GLASS_OVERRIDES_OBJECTION)."""

    break_glass_overrides_objection: bool = True


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """Who wants what about whom, and why. `role` is the national RBAC R-code."""

    purpose: str
    nhs_number: str | None = None
    person_id: str | None = None
    actor_kind: str = "clinician"
    ods_code: str | None = None
    role: str | None = None
    user_id: str | None = None
    labels: frozenset[str] = frozenset()
    legitimate_relationship: str = "none"
    break_glass_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ConsentRef:
    id: str
    version_id: int
    provision: str


@dataclass(frozen=True, slots=True)
class Decision:
    decision: str  # permit | deny
    rule: str
    reason: str
    own_organisation_only: bool = False
    withhold_labels: tuple[str, ...] = ()
    allowed_types: tuple[str, ...] | None = None
    obligations: tuple[str, ...] = ()
    break_glass: bool = False
    break_glass_available: bool = False
    consent: ConsentRef | None = None

    @property
    def permits(self) -> bool:
        return self.decision == "permit"

    def as_json(self) -> dict[str, Any]:
        """The response body of POST /consent/decide."""
        ref = self.consent
        return {
            "decision": self.decision, "own_organisation_only": self.own_organisation_only,
            "withhold_labels": list(self.withhold_labels),
            "allowed_types": list(self.allowed_types) if self.allowed_types is not None else None,
            "obligations": list(self.obligations), "break_glass": self.break_glass,
            "break_glass_available": self.break_glass_available, "rule": self.rule,
            "consent": {"id": ref.id, "version_id": ref.version_id, "provision": ref.provision} if ref else None,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Stance:
    """Where the person stands on sharing for direct care, after every statement in force, oldest first."""

    state: str = "share"  # share | objection | upheld | declined
    decided_by: ConsentFacts | None = None
    objection: ConsentFacts | None = None


@dataclass(frozen=True, slots=True)
class Standing:
    """Everything in force for one person at one moment."""

    stance: Stance
    withheld: dict[str, Restriction] = field(default_factory=dict)
    denied: dict[str, Restriction] = field(default_factory=dict)
    opt_out: tuple[ConsentFacts, str] | None = None
    consents: dict[str, ConsentFacts] = field(default_factory=dict)


def decide(request: DecisionRequest, consents: Iterable[ConsentFacts], policy: Policy, *,
           now: datetime | None = None) -> Decision:
    """The decision for one request (the request is assumed well-formed; see schemas.py)."""
    standing = standing_of(consents, now or datetime.now(UTC))
    if request.purpose in SECONDARY_USE:
        return _secondary_use(request, standing)
    if request.purpose == ETREAT:
        return _break_glass(request, standing, policy)
    return _with_break_glass_hint(request, standing, policy, _direct_care(request, standing, policy))


def standing_of(consents: Iterable[ConsentFacts], now: datetime) -> Standing:
    """Fold the consents in force into one standing, oldest statement first (ConsentFacts.order_key: ties in time
    go to the one recorded here later, then id and version, so the answer never depends on listing order)."""
    in_force = sorted((c for c in consents if c.in_force(now)), key=ConsentFacts.order_key)
    withheld: dict[str, Restriction] = {}
    denied: dict[str, Restriction] = {}
    opt_out = None
    for consent in in_force:
        withheld.update({r.code: r for r in consent.withheld if r.code not in withheld})
        denied.update({r.code: r for r in consent.denied_organisations if r.code not in denied})
        if consent.secondary_use_opt_out and opt_out is None:
            opt_out = (consent, consent.secondary_use_opt_out)
    return Standing(fold_stance(in_force), withheld, denied, opt_out, {c.id: c for c in in_force})


def ends_objection(consents: Sequence[ConsentFacts], candidate: ConsentFacts, now: datetime) -> bool:
    """Would recording `candidate` end an objection, now or at any later moment? True when, at some moment from
    now on, an objection (requested, upheld or declined) stands without it and none stands with it. Judged by the
    effect, not the shape: a consent code with either provision type, a permit carrying nested restrictions, a
    period that starts later (it is placed at when we recorded it, so it would outrank an objection made before
    then), or a date placed between an objection and its review all count; one older than every objection does
    not (the newer objection still wins). A candidate with the id of a consent in `consents` is its new version and
    replaces it (an imported consent the source changed or deleted): withdrawing a dissent ends an objection too."""
    with_candidate = [*(c for c in consents if c.id != candidate.id), candidate]
    for moment in _changes_from(with_candidate, now):
        if stance_at(consents, moment).objection is not None and stance_at(with_candidate, moment).objection is None:
            return True
    return False


def stance_at(consents: Iterable[ConsentFacts], moment: datetime) -> Stance:
    """The direct-care stance the consents in force at `moment` give."""
    return fold_stance(sorted((c for c in consents if c.in_force(moment)), key=ConsentFacts.order_key))


def _changes_from(consents: Sequence[ConsentFacts], now: datetime) -> list[datetime]:
    """Now and every later moment a consent starts or ends: between two of them the consents in force, and so the
    stance, stay the same."""
    later = {moment for c in consents for moment in (c.starts_at, c.ends_at) if moment is not None and moment > now}
    return [now, *sorted(later)]


def fold_stance(in_force: list[ConsentFacts]) -> Stance:
    """Newest statement wins; a review (upheld/declined) only acts on an objection older than itself."""
    stance = Stance()
    for consent in in_force:
        if consent.stance == "object":
            stance = Stance("objection", consent, consent)
        elif consent.stance == "share":
            stance = Stance("share", consent, None)
        elif consent.stance in ("upheld", "declined") and stance.objection is not None:
            stance = Stance("upheld" if consent.stance == "upheld" else "declined", consent, stance.objection)
    return stance


# ---------------------------------------------------------------- direct care (TREAT, and ETREAT's core)


def _direct_care(request: DecisionRequest, standing: Standing, policy: Policy, *,
                 breaking_glass: bool = False) -> Decision:
    refusal = _refuse_actor(request) or _refuse_organisation(request, standing)
    if refusal:
        return refusal
    if request.legitimate_relationship == "none" and not breaking_glass:
        return Decision("deny", "no-legitimate-relationship",
                        "No legitimate relationship between the organisation and this person: no registration, "
                        "care contribution or self-claimed relationship.")
    stance = standing.stance
    if stance.state in OBJECTING:
        if breaking_glass and policy.break_glass_overrides_objection:
            return _permit(request, standing, "break-glass", _objection_ref(stance),
                           "Break-glass for emergency care with a reason: the objection to sharing is "
                           "overridden for vital interests, and this access is audited and shown to the person.",
                           break_glass=True)
        return _permit(request, standing, "objection", _objection_ref(stance), _objection_reason(stance, policy,
                       breaking_glass), own_organisation_only=True)
    if breaking_glass:
        return _permit(request, standing, "break-glass", None,
                       "Break-glass for emergency care with a reason: access without a legitimate relationship, "
                       "audited and shown to the person.", break_glass=True)
    return _share(request, standing)


def _refuse_actor(request: DecisionRequest) -> Decision | None:
    if request.actor_kind != "clinician":
        return Decision("deny", "actor-not-permitted",
                        f"Direct care access needs a named professional user, not a {request.actor_kind} caller.")
    if _view_of(request.role) is None:
        return Decision("deny", "role-not-permitted",
                        f"Role {request.role or 'none'} has no view of the shared care record for direct care.")
    return None


def _refuse_organisation(request: DecisionRequest, standing: Standing) -> Decision | None:
    # Denied codes are normalised when parsed; the caller's too, so "rh8 " can never slip past a denied RH8.
    restriction = standing.denied.get(ods_code(request.ods_code or ""))
    if restriction is None:
        return None
    return Decision("deny", "denied-organisation",
                    f"The person has asked that organisation {request.ods_code} does not see their shared record; "
                    "break-glass does not lift a named organisation.",
                    consent=_ref(standing, restriction))


def _share(request: DecisionRequest, standing: Standing) -> Decision:
    stance = standing.stance
    if stance.state == "declined":
        return _permit(request, standing, "safety-override", _base_ref(stance.decided_by),
                       "The person's objection was reviewed and declined for their safety by a GP or Caldicott "
                       "Guardian, so sharing for direct care continues.")
    if stance.decided_by is not None:
        by = "the person" if stance.decided_by.author_kind == "citizen" else "a professional on their behalf"
        return _permit(request, standing, "share", _base_ref(stance.decided_by),
                       f"Sharing for direct care, as recorded by {by}.")
    return _permit(request, standing, "default-share", None,
                   "No objection recorded: sharing for direct care is on by default.")


def _permit(request: DecisionRequest, standing: Standing, rule: str, consent: ConsentRef | None, reason: str, *,
            own_organisation_only: bool = False, break_glass: bool = False) -> Decision:
    withhold = _withhold(request, standing)
    if consent is None and withhold:
        consent = _first_citizen_restriction(standing, withhold)
    allowed = _view_of(request.role)
    obligations = (REDACT_LOCATION,) if labels.RESTRICTED in request.labels else ()
    return Decision("permit", rule, _full_reason(reason, withhold, obligations, allowed),
                    own_organisation_only=own_organisation_only, withhold_labels=withhold,
                    allowed_types=allowed or None, obligations=obligations, break_glass=break_glass,
                    consent=consent)


def _view_of(role: str | None) -> tuple[str, ...] | None:
    """The resource types a role may see: () for everything, a tuple for a limited view, None for no view."""
    if role in roles.CLINICAL:
        return ()
    if role in roles.SOCIAL_CARE:
        return SOCIAL_CARE_TYPES
    if role in roles.ADMINISTRATIVE:
        return ADMIN_TYPES
    return None


def _withhold(request: DecisionRequest, standing: Standing) -> tuple[str, ...]:
    """Labels present in the request that are withheld: the defaults, the person's choices, and V always.
    Break-glass never lifts these: it overrides an objection, not legal or chosen sensitivity restrictions."""
    chosen = standing.withheld.keys()
    return tuple(sorted(code for code in request.labels
                        if code in labels.WITHHELD_BY_DEFAULT or code in chosen or code == labels.VERY_RESTRICTED))


def _first_citizen_restriction(standing: Standing, withhold: tuple[str, ...]) -> ConsentRef | None:
    for code in withhold:
        if code in standing.withheld:
            return _ref(standing, standing.withheld[code])
    return None


# ---------------------------------------------------------------- break-glass (ETREAT)


def _break_glass(request: DecisionRequest, standing: Standing, policy: Policy) -> Decision:
    if not has_words(request.break_glass_reason):
        return Decision("deny", "break-glass-no-reason", "Break-glass needs a reason; none was given.")
    if request.role not in roles.CLINICAL:
        return Decision("deny", "break-glass-not-clinical",
                        f"Only clinical roles may break glass; role {request.role or 'none'} may not.")
    baseline = _direct_care(replace(request, purpose=TREAT), standing, policy)
    if baseline.permits and not baseline.own_organisation_only:
        return replace(baseline, reason=f"Break-glass was not needed. {baseline.reason}")
    emergency = _direct_care(request, standing, policy, breaking_glass=True)
    if not emergency.permits:
        return emergency
    if emergency.own_organisation_only and baseline.permits:
        return replace(baseline, reason=f"Break-glass does not change this decision. {baseline.reason}")
    return replace(emergency, break_glass=True)


def has_words(reason: str | None) -> bool:
    """A reason someone could read: at least one letter or digit in any script. Spaces, zero-width characters
    and blank Braille cells (U+2800) look like nothing to the privacy officer who reviews the access."""
    return any(unicodedata.category(char)[0] in "LN" for char in reason or "")


def _with_break_glass_hint(request: DecisionRequest, standing: Standing, policy: Policy,
                           decision: Decision) -> Decision:
    """Mark a TREAT decision that break-glass would turn into a full view (the FHIR break-the-glass hint)."""
    limited = not decision.permits or decision.own_organisation_only
    if not limited or request.role not in roles.CLINICAL or request.purpose not in DIRECT_CARE:
        return decision
    emergency = _direct_care(request, standing, policy, breaking_glass=True)
    available = emergency.permits and not emergency.own_organisation_only
    return replace(decision, break_glass_available=available)


# ---------------------------------------------------------------- secondary use (HRESCH, HOPERAT)


def _secondary_use(request: DecisionRequest, standing: Standing) -> Decision:
    refusal = _refuse_organisation(request, standing)
    if refusal:
        return refusal
    purpose = "research" if request.purpose == "HRESCH" else "planning and operations"
    if standing.opt_out is not None:
        consent, provision = standing.opt_out
        return Decision("deny", "national-data-opt-out",
                        f"The person has registered a National Data Opt-out: no use for {purpose}.",
                        consent=ConsentRef(consent.id, consent.version_id, provision))
    stance = standing.stance
    if stance.state in (*OBJECTING, "declined"):
        return Decision("deny", "objection-secondary-use",
                        f"The person objects to sharing their record, so it is not used for {purpose} "
                        "(a safety override covers direct care only).", consent=_objection_ref(stance))
    withhold = _withhold(request, standing)
    obligations = (REDACT_LOCATION,) if labels.RESTRICTED in request.labels else ()
    return Decision("permit", "secondary-use",
                    _full_reason(f"No National Data Opt-out or objection recorded: use for {purpose} may go ahead.",
                                 withhold, obligations, None),
                    withhold_labels=withhold, obligations=obligations,
                    consent=_first_citizen_restriction(standing, withhold))


# ---------------------------------------------------------------- references and words


def _base_ref(consent: ConsentFacts | None) -> ConsentRef | None:
    return ConsentRef(consent.id, consent.version_id, BASE) if consent else None


def _objection_ref(stance: Stance) -> ConsentRef | None:
    return _base_ref(stance.decided_by)


def _ref(standing: Standing, restriction: Restriction) -> ConsentRef | None:
    for consent in standing.consents.values():
        if restriction in consent.withheld or restriction in consent.denied_organisations:
            return ConsentRef(consent.id, consent.version_id, restriction.provision)
    return None


def _objection_reason(stance: Stance, policy: Policy, breaking_glass: bool) -> str:
    objection = stance.objection
    who = "the person" if objection and objection.author_kind == "citizen" else "a professional on their behalf"
    state = "reviewed and upheld" if stance.state == "upheld" else "in force"
    reason = (f"The person objects to sharing their record (recorded by {who}; {state}): only the organisation "
              "that recorded an item may see it.")
    if breaking_glass and not policy.break_glass_overrides_objection:
        reason += " Break-glass does not override an objection under this ICS's policy."
    return reason


def _full_reason(reason: str, withhold: tuple[str, ...], obligations: tuple[str, ...],
                 allowed: tuple[str, ...] | None) -> str:
    parts = [reason]
    if withhold:
        parts.append(f"Withheld: {', '.join(withhold)} (sensitive, confidential or withheld by the person).")
    if allowed:
        parts.append(f"This role sees only {', '.join(allowed)}.")
    if obligations:
        parts.append("Address and contact details are not shared (restricted person).")
    return " ".join(parts)
