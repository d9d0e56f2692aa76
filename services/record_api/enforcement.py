"""The one policy enforcement point: every read path of the record API passes through here (HAPI's consent
interceptor shape, docs/RECORD_API.md "Enforcement").

* `guard(interaction)` is the FastAPI dependency every /fhir route except /fhir/metadata takes: it checks the
  caller (clinician token, SMART scope for the type and interaction, break-glass header) before anything runs.
* `Guard.admit(person)` decides per person (startOperation): legitimate relationship from the store, then the
  consent decision service (cached per person), then 403 with the reason or a Grant.
* `Grant.filter(rows)` runs before paging (canSeeResource) so pages stay full and removals stay hidden;
  `Grant.redact(body)` runs after paging (willSeeResource) to honour redact-location and the S-flag.
* `Guard.respond(...)` writes the audit rows and only then builds the response; if they cannot be written the
  caller gets 503 and no data. Denials are audited by `Guard.deny` before the 403 leaves.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import structlog
from fastapi import Request, Response
from sqlalchemy.orm import Session, sessionmaker

from services.record_api import bundles
from services.record_api.consent_client import DecisionService, DecisionUnavailable
from services.record_api.decision_cache import CacheKey, DecisionCache
from services.record_api.metrics import AUDIT_FAILURES, BREAK_GLASS, WITHHELD
from services.record_api.resource_types import served_types
from services.record_api.schemas import Actor, DecideRequest, Decision, PatientRef
from services.record_api.settings import RecordApiSettings
from services.record_api.store import (
    CensusRow,
    person_record_summary,
    provenance_targets,
    sources_with_channels,
    vouched_sources,
)
from shared import roles
from shared.audit import AuditRecord, write_audits
from shared.auth import InsufficientScope, Principal, authenticate
from shared.errors import Forbidden, Gone, InvalidInput, NotFound, ScrError, ServiceUnavailable
from shared.fhir import ACT_REASON_SYSTEM, FHIR_JSON, Issue
from shared.labels import CATEGORIES, CONFIDENTIALITY_CODES, RESTRICTED, VERY_RESTRICTED
from shared.registration import registered_for_access, stored_organisation_codes
from shared.schema import Person, Resource

log = structlog.get_logger("scr.record_api.enforcement")

BREAK_GLASS_HEADER = "X-Break-Glass-Reason"
# Elements removed for S-flagged persons and under the redact-location obligation (docs/CONTRACTS.md §3).
LOCATION_ELEMENTS = {"Patient": ("address", "telecom", "contact", "generalPractitioner"),
                     "RelatedPerson": ("address", "telecom"), "Encounter": ("location",)}
REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}
_SCOPE_LETTERS = {"read": "r", "vread": "r", "history": "r", "search": "s", "everything": "r",
                  "audit-search": "s"}
KNOWN_LABELS = frozenset(CATEGORIES) | CONFIDENTIALITY_CODES


class AuditUnavailable(ServiceUnavailable):
    """The audit row for an access could not be written, so nothing is returned."""


class Withheld(ScrError):
    status, code = 403, "suppressed"


@dataclass(frozen=True)
class Caller:
    """Who is asking and how, established before any data is touched."""

    principal: Principal
    interaction: str
    resource_type: str
    break_glass_reason: str | None

    @property
    def purpose(self) -> str:
        return "ETREAT" if self.break_glass_reason else "TREAT"

    def may(self, resource_type: str, interaction: str | None = None) -> bool:
        letter = _SCOPE_LETTERS[interaction or self.interaction]
        return self.principal.can(resource_type, letter, contexts=("user",))


@dataclass
class Grant:
    """What one caller may see of one person, per the decision (and the rules the PEP always applies)."""

    person: Person
    decision: Decision
    actor_ods: str
    relationship: str
    s_flag: bool
    # The person's source Patient records as admit() read them, so the request's other steps need not read again.
    sources: list[Resource] = field(default_factory=list)
    channels: dict[str, str] = field(default_factory=dict)  # source Patient id -> the channel it first came by
    # The labels the decision was asked about (None: not known, the decision is taken as given).
    decided: frozenset[str] | None = None
    # Provenance ids -> what each targets, for this person (store.provenance_targets); loaded when first needed.
    targets_of: Callable[[Sequence[str]], dict[str, list[CensusRow]]] = field(default=lambda ids: {})
    withheld: Counter[str] = field(default_factory=Counter)
    entities: list[str] = field(default_factory=list)
    _withheld_refs: set[str] = field(default_factory=set)
    _targets: dict[str, list[CensusRow]] = field(default_factory=dict)

    def reason_hidden(self, row: CensusRow | Resource) -> str | None:
        """Why this row may not be shown, or None. Nothing is counted."""
        if row.person_id != self.person.id:
            return "other-person"
        own = row.source_org == self.actor_ods  # both normalised: the claim by shared.auth, source_org by ingest
        if self.decision.own_organisation_only and not own:
            return "objection"
        allowed = self.decision.allowed_types
        if allowed is not None and row.resource_type not in allowed:
            return "role"
        labels = set(row.labels or ())
        if not own and (VERY_RESTRICTED in labels or labels & set(self.decision.withhold_labels)):
            return "label"
        if not own and self.decided is not None and (labels & KNOWN_LABELS) - self.decided:
            return "label"  # a label the decision was never asked about (a deleted item's): fail closed
        if row.resource_type == "Provenance":
            return self._provenance_reason(row.id)
        return None

    def _provenance_reason(self, provenance_id: str) -> str | None:
        """A Provenance is stored unlabelled, yet it tells when, by whom and from which message its targets were
        recorded: it is shown only if the caller may see at least one of them (else the first target's reason)."""
        reasons = [self.reason_hidden(t) for t in self._targets_for([provenance_id])[provenance_id]]
        if not reasons or None in reasons:
            return None if reasons else "label"  # a Provenance with no target we know says nothing safe
        return next((r for r in reasons if r != "other-person"), "label")

    def _targets_for(self, provenance_ids: Sequence[str]) -> dict[str, list[CensusRow]]:
        missing = [i for i in dict.fromkeys(provenance_ids) if i not in self._targets]
        if missing:
            found = self.targets_of(missing)
            # A Provenance never targets a Provenance; were one to, it would not make another visible.
            self._targets.update({i: [t for t in found.get(i, []) if t.resource_type != "Provenance"]
                                  for i in missing})
        return {i: self._targets[i] for i in provenance_ids}

    def visible_targets(self, provenance_id: str) -> set[str]:
        """`Type/id` of the targets of a Provenance this caller may see; the others are counted as withheld."""
        visible = set()
        for target in self._targets_for([provenance_id])[provenance_id]:
            reason = self.reason_hidden(target)
            if reason is None:
                visible.add(target.ref)
            elif reason != "other-person":
                self.note_withheld(target.ref, reason)
        return visible

    def can_see(self, row: CensusRow | Resource) -> bool:
        return self.reason_hidden(row) is None

    def filter(self, rows: Iterable[CensusRow]) -> list[CensusRow]:
        """The rows the caller may see, counting (once each) the ones withheld from them. Runs before paging."""
        rows = list(rows)
        self._targets_for([r.id for r in rows if r.resource_type == "Provenance"])  # one query for them all
        visible = []
        for row in rows:
            reason = self.reason_hidden(row)
            if reason is None:
                visible.append(row)
            elif reason != "other-person":
                self.note_withheld(row.ref, reason)
        return visible

    def note_withheld(self, ref: str, reason: str) -> None:
        if ref not in self._withheld_refs:
            self._withheld_refs.add(ref)
            self.withheld[reason] += 1

    @property
    def withheld_count(self) -> int:
        return sum(self.withheld.values())

    @property
    def redacts_location(self) -> bool:
        return self.s_flag or "redact-location" in self.decision.obligations

    def alters(self, resource_type: str) -> bool:
        """Whether `redact` may change a body of this type for this caller."""
        return self.redacts_location and resource_type in LOCATION_ELEMENTS

    def redact(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body as this caller may see it (after paging); the stored body is never modified."""
        elements = LOCATION_ELEMENTS.get(body.get("resourceType", ""), ()) if self.redacts_location else ()
        present = [e for e in elements if e in body]
        if not present:
            return body
        redacted = {k: v for k, v in body.items() if k not in present}
        meta = dict(redacted.get("meta") or {})
        meta["security"] = [*meta.get("security", []), REDACTED]
        redacted["meta"] = meta
        return redacted

    def returned(self, refs: Iterable[str]) -> None:
        self.entities.extend(refs)


@dataclass
class _Denied:
    person: Person | None
    reason: str
    outcome: str = "denied"
    metric: str | None = None  # the scr_record_items_withheld_total reason, when a decision withheld the person
    signalled: bool = True  # whether a search tells the caller that someone was left out (the withheld flag)


class Enforcer:
    """Process-wide parts of enforcement: the decision service, its cache, and where audit rows go."""

    def __init__(self, settings: RecordApiSettings, sessions: sessionmaker[Session], decisions: DecisionService,
                 cache: DecisionCache) -> None:
        self.settings, self.sessions, self.decisions, self.cache = settings, sessions, decisions, cache


def guard(interaction: str, resource_type: str | None = None) -> Callable[[Request], Guard]:
    """The FastAPI dependency every protected /fhir route takes: the caller, checked, as a Guard."""

    def dependency(request: Request) -> Guard:
        principal = authenticate(request)
        rtype = resource_type or request.path_params.get("resource_type", "")
        enforcer: Enforcer = request.app.state.enforcer
        caller = Caller(principal, interaction, rtype, None)
        current = Guard(enforcer, caller, request)
        if principal.kind != "clinician":
            current.deny(None, f"the record API serves clinicians' systems; {principal.kind} tokens may not "
                               f"read records here")
        if rtype not in served_types() and rtype != "AuditEvent":
            raise NotFound(f"resource type {rtype[:64]!r} is not served here", expression=[rtype[:64]])
        if not caller.may(rtype):
            current.deny(None, f"the token's SMART scopes do not allow {interaction} on {rtype}", scope=True)
        if interaction == "audit-search" and principal.role not in roles.PRIVACY_OFFICER:
            current.deny(None, "searching the audit trail needs the privacy officer role (R5100)")
        current.caller = Caller(principal, interaction, rtype, current.break_glass(request))
        return current

    dependency.__scr_enforced__ = interaction  # type: ignore[attr-defined]
    return dependency


class Guard:
    """Enforcement for one request: admits persons, tracks what is returned and withheld, audits, responds."""

    def __init__(self, enforcer: Enforcer, caller: Caller, request: Request) -> None:
        self.enforcer, self.caller, self.request = enforcer, caller, request
        self.grants: list[Grant] = []
        self.denied: list[_Denied] = []
        self.other_entities: list[str] = []
        self.description: str | None = None
        self._break_glass_counted = False

    # -------------------------------------------------------------- before the query (startOperation)

    def break_glass(self, request: Request) -> str | None:
        raw = request.headers.get(BREAK_GLASS_HEADER)
        if raw is None:
            return None
        if not roles.is_clinical(self.caller.principal.role):
            self.deny(None, "break-glass is available only to clinical roles")
        reason = raw.strip()
        if not reason:
            self.deny(None, f"break-glass needs a reason: {BREAK_GLASS_HEADER} is empty")
        if len(reason) > self.enforcer.settings.max_break_glass_reason_length:
            raise InvalidInput(f"{BREAK_GLASS_HEADER} is longer than "
                               f"{self.enforcer.settings.max_break_glass_reason_length} characters",
                               expression=[BREAK_GLASS_HEADER])
        return reason

    def admit(self, session: Session, person: Person, *, soft: bool = False,
              found: Callable[[Grant], bool] | None = None, labels: Iterable[str] = (),
              sources: tuple[list[Resource], dict[str, str]] | None = None) -> Grant | None:
        """A Grant for this person, or a 403 (or None when `soft`: the person is left out of a search). A search
        passes `found`, whether the person matched on what this caller may see; if not, they are left out as if
        they had not matched, unaudited and unsignalled. `labels`: those of the items in question that the current
        record may not carry (a deleted item, an earlier version), so the decision is asked about them too.
        `sources`: the person's source Patients and channels (`store.sources_with_channels`) if already read in
        this transaction, as a Patient search reads them with its candidates."""
        sources, channels = sources if sources is not None else sources_with_channels(session, person.id)
        summary = person_record_summary(session, person.id)
        relationship, basis = self._relationship(session, person, sources, summary)
        if relationship == "none" and not self.caller.break_glass_reason:
            # Audited, but a search does not signal it: "left out" would tell a stranger the person is on the
            # record, which "no match" does not (docs/RECORD_API.md "Patient search and strangers").
            return self._refuse(person, "no legitimate relationship with this patient: no registration or care "
                                        "by your organisation; claim one or use break-glass with a reason", soft,
                                signalled=False)
        # Only codes of the two label systems mean anything to the decision service (shared.labels).
        asked = sorted(({label for _o, labels in summary for label in labels} | set(labels)) & KNOWN_LABELS)
        decision = self._decision(person, relationship, asked)
        grant = Grant(person, decision, self.caller.principal.ods_code or "", relationship,
                      s_flag=any(RESTRICTED in (row.labels or ()) for row in sources), sources=sources,
                      channels=channels, decided=frozenset(asked),
                      targets_of=functools.partial(provenance_targets, session, person.id))
        if found is not None and not found(grant):
            return None
        if not decision.permits:
            return self._refuse(person, decision.reason, soft, hint=decision.break_glass_available,
                                metric="objection")
        self.description = basis
        self.grants.append(grant)
        return grant

    def _relationship(self, session: Session, person: Person, sources: Sequence[Resource],
                      summary: Sequence[tuple[str, list[str]]]) -> tuple[str, str | None]:
        ods = self.caller.principal.ods_code
        if ods and _registered_with(session, sources, ods):
            return "registered", None
        if ods and any(org == ods for org, _l in summary):
            return "care", None
        claim = self.caller.principal.claims.get("legitimate_relationship")
        if isinstance(claim, dict) and claim.get("basis") == "self_claimed" and str(claim.get("reason", "")).strip():
            return "self-claimed", f"self-claimed legitimate relationship: {str(claim['reason']).strip()[:500]}"
        return "none", None

    def _decision(self, person: Person, relationship: str, labels: list[str]) -> Decision:
        principal = self.caller.principal
        request = DecideRequest(
            patient=PatientRef(nhs_number=person.nhs_number, person_id=person.id),
            actor=Actor(ods_code=principal.ods_code or "", role_code=principal.role, user_id=principal.subject),
            purpose=self.caller.purpose, labels=labels, legitimate_relationship=relationship,  # type: ignore[arg-type]
            break_glass_reason=self.caller.break_glass_reason)
        key = CacheKey(person.id, person.nhs_number, principal.ods_code or "", principal.role, principal.subject,
                       self.caller.purpose, relationship, bool(self.caller.break_glass_reason), frozenset(labels))
        try:
            return self.enforcer.cache.get_or_fetch(key, lambda: self.enforcer.decisions.decide(request))
        except DecisionUnavailable as exc:
            log.warning("consent decision unavailable; access refused", reason=exc.message)
            self.denied.append(_Denied(person, exc.message, outcome="error"))
            self._audit()
            raise

    def _refuse(self, person: Person, reason: str, soft: bool, hint: bool = False,
                metric: str | None = None, signalled: bool = True) -> None:
        if soft:
            self.denied.append(_Denied(person, reason, metric=metric, signalled=signalled))
            return None
        self.deny(person, reason, hint=hint, metric=metric)
        return None

    def deny(self, person: Person | None, reason: str, *, hint: bool = False, metric: str | None = None,
             scope: bool = False) -> None:
        """Audit the refusal, then refuse with 403 (with the break-the-glass hint when it would help; `scope`: the
        token's scopes are what is missing, RFC 6750 `insufficient_scope`)."""
        self.denied.append(_Denied(person, reason, metric=metric))
        self._audit()
        issues = [Issue(reason, code="forbidden").as_fhir()]
        if hint and roles.is_clinical(self.caller.principal.role):
            issues.append(_break_glass_hint())
        raise (InsufficientScope if scope else Forbidden)(reason, issues=issues)

    def withhold_item(self, grant: Grant, reason: str) -> None:
        """Refuse a single item (a read of something withheld) without saying what it is; when an objection
        withheld it and break-glass could lift that, say so."""
        if grant in self.grants:  # nothing of this person is returned: one denial row, not an empty access too
            self.grants.remove(grant)
        self.denied.append(_Denied(grant.person, f"item withheld ({reason})"))
        self._audit()
        issues = [Issue("this item is withheld (confidentiality or the patient's preferences)",
                        code="suppressed").as_fhir()]
        if reason == "objection" and grant.decision.break_glass_available:
            issues.append(_break_glass_hint())
        raise Withheld(issues[0]["diagnostics"], issues=issues)

    def gone(self, message: str, expression: list[str]) -> NoReturn:
        """Answer 410 for something the caller was admitted to: it was an access (it confirms the record existed),
        so it is audited like any other before the answer leaves."""
        self._audit()
        raise Gone(message, expression=expression)

    # -------------------------------------------------------------- after the query (completeOperation)

    @property
    def withheld_count(self) -> int:
        return sum(g.withheld_count for g in self.grants) + sum(1 for d in self.denied if d.person and d.signalled)

    def respond(self, payload: dict[str, Any] | None, *, status: int = 200,
                headers: dict[str, str] | None = None, session: Session | None = None) -> Response:
        """Audit what is being returned, then return it; if the audit cannot be written, return nothing.
        Given the request's read session, the audit rows are written on its connection (one connection per read;
        on PostgreSQL in one round trip and a transaction of their own, see `shared.audit.write_audits`)."""
        self._audit(session)
        body = bundles.encode(payload) if payload else b""
        return Response(body, status_code=status, headers=headers, media_type=FHIR_JSON if payload else None)

    def _audit(self, session: Session | None = None) -> None:
        records = self._records()
        try:
            if session is None:
                with self.enforcer.sessions.begin() as own:
                    write_audits(own, records)
            else:
                write_audits(session, records)
                session.commit()
        except Exception as exc:  # any failure to record an access means the access does not happen
            if session is not None:
                session.rollback()
            AUDIT_FAILURES.labels(self.enforcer.settings.service_name).inc()
            log.error("audit write failed; response withheld", error_type=type(exc).__name__)
            raise AuditUnavailable("the access could not be audited, so nothing was returned; try again") from None
        self._count_metrics()

    def _records(self) -> list[AuditRecord]:
        caller = self.caller
        common = dict(service="record_api", action=caller.interaction, principal=caller.principal,
                      purpose=caller.purpose, break_glass_reason=caller.break_glass_reason)
        records = [AuditRecord(outcome="success", person_id=g.person.id, nhs_number=g.person.nhs_number,
                               entities=list(dict.fromkeys(g.entities)), withheld_count=g.withheld_count,
                               description=_describe(g, self.description), **common)  # type: ignore[arg-type]
                   for g in self.grants]
        records += [AuditRecord(outcome=d.outcome, person_id=d.person.id if d.person else None,
                                nhs_number=d.person.nhs_number if d.person else None,
                                description=d.reason, **common)  # type: ignore[arg-type]
                    for d in self.denied]
        if not records:
            records.append(AuditRecord(outcome="success", entities=list(dict.fromkeys(self.other_entities)),
                                       description=self.description, **common))  # type: ignore[arg-type]
        elif self.other_entities:
            records[0].entities += self.other_entities
        return records

    def _count_metrics(self) -> None:
        if self.caller.break_glass_reason and not self._break_glass_counted:
            BREAK_GLASS.labels(self.caller.principal.role or "unknown").inc()
            self._break_glass_counted = True
        for grant in self.grants:
            for reason, count in grant.withheld.items():
                WITHHELD.labels(reason).inc(count)
        for denied in self.denied:
            if denied.metric:
                WITHHELD.labels(denied.metric).inc()
        # What is audited is forgotten, so a second audit in the same request records only what came after.
        self.grants, self.denied, self.other_entities = [], [], []


def _break_glass_hint() -> dict[str, Any]:
    """The FHIR break-the-glass hint: the request may succeed with purpose of use ETREAT."""
    return {"severity": "information", "code": "suppressed",
            "details": {"coding": [{"system": ACT_REASON_SYSTEM, "code": "ETREAT", "display": "Emergency treatment"}],
                        "text": f"break-glass is available: repeat with {BREAK_GLASS_HEADER}"},
            "diagnostics": f"a clinical role may break glass with a reason in {BREAK_GLASS_HEADER}"}


def _describe(grant: Grant, basis: str | None) -> str:
    parts = [f"relationship {grant.relationship}", f"rule {grant.decision.rule}"]
    if grant.decision.break_glass:
        parts.append("permitted only by break-glass")
    if basis:
        parts.append(basis)
    return "; ".join(parts)


def _registered_with(session: Session, sources: Sequence[Resource], ods: str) -> bool:
    """Is the caller's organisation a practice the person is registered with now (`shared.registration`
    `registered_for_access`): the one the newest source Patient record naming a practice names, whichever feed sent
    it, or the one its own vouched record registers, so a newer hospital record naming an old GP does not take the
    relationship from the practice the consent service lets lift an objection (RECORD_API.md "Enforcement"). The
    sources are already loaded for the read: a practice named by reference to a stored Organization costs a query,
    and vouching for a practice's own records one more, asked only when the newest claim does not name the caller."""
    # The caller's code is normalised with its token (shared.auth), the practice's by the rule.
    return registered_for_access(sources, ods, vouched=lambda ids: vouched_sources(session, ids),
                                 organisation_codes=lambda ids: stored_organisation_codes(session, ids))


