"""Recording consents: the citizen's preferences (with optimistic concurrency), consents professionals record
on a patient's behalf, and choices imported from source records (one that would end an objection only from the
person's registered practice). Changes for one person are serialised (`store.lock_people`, taken before any consent is
read or timed). Every change is audited in its own transaction and announced on `consent.changed`:
the event is written in the change's own transaction and sent once committed (shared/outbox.py), so a committed
change is always announced (CONTRACTS §2)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.consent import preferences, professional, rules, store
from services.consent.decisions import DecisionPoint, facts_of, load_facts
from services.consent.errors import PreconditionRequired
from services.consent.facts import ConsentFacts, facts_from, ods_code, utc
from services.consent.metrics import AUDIT_FAILURES, CHANGES
from shared import outbox, roles
from shared.audit import AuditRecord, write_audit
from shared.auth import Principal
from shared.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from shared.events import CONSENT_CHANGED, EventBus
from shared.schema import ConsentRecord

log = structlog.get_logger("scr.consent")

RECORDERS = roles.CLINICAL | roles.ADMINISTRATIVE | roles.CALDICOTT_GUARDIAN  # objection forms go via reception
REVIEWERS = roles.GENERAL_PRACTITIONER | roles.CALDICOTT_GUARDIAN
HELD_SUFFIX = "-held"  # an imported version kept but not in force: src-<resource id>-held
STALE = "your choices were changed on another device; reload them and try again"


@dataclass(frozen=True)
class CitizenView:
    """The citizen's own document, the version it is at (0: nothing recorded yet), and what is in force."""

    preferences: preferences.Preferences
    version: int
    standing: rules.Standing


@dataclass(frozen=True)
class Change:
    nhs_number: str
    consent_id: str
    version_id: int
    kind: str
    changed_at: datetime


class ConsentService:
    def __init__(self, sessions: sessionmaker[Session], decisions: DecisionPoint, bus: Callable[[], EventBus | None],
                 service_name: str = "consent") -> None:
        self._sessions = sessions
        self._decisions = decisions
        self._bus = bus
        self._service = service_name
        self.on_committed: Callable[[], None] | None = None  # the outbox relay's wake-up, when one runs here

    # ------------------------------------------------------------ the citizen's preferences

    def citizen_view(self, nhs_number: str) -> CitizenView:
        """Read from the database, not the decision cache, so a citizen always sees their latest write."""
        with self._sessions() as session:
            return _view(session, nhs_number, _now())

    def put_preferences(self, principal: Principal, document: Any, if_match: str | None) -> tuple[CitizenView,
                                                                                                   bool]:
        """Replace the citizen's preferences; returns the new view and whether anything changed."""
        wanted = preferences.parse(document)
        nhs_number = principal.nhs_number or ""
        try:
            with self._sessions() as session, session.begin():
                store.lock_people(session, nhs_number)
                now = _now()  # after the lock: later than every change for this person committed before ours
                row = store.preferences_of(session, nhs_number, for_update=True)
                _check_precondition(row, if_match)
                current = _view(session, nhs_number, now)
                if row is not None and current.preferences == wanted:
                    return current, False
                change = self._write_preferences(session, principal, row, wanted, current, now)
        except IntegrityError:
            # Another device created this citizen's first preferences between our read and our insert.
            raise PreconditionFailed(STALE, expression=["If-Match"]) from None
        self._after_commit(change)
        return self.citizen_view(nhs_number), True

    def _write_preferences(self, session: Session, principal: Principal, row: ConsentRecord | None,
                           wanted: preferences.Preferences, current: CitizenView,
                           now: datetime) -> Change:
        nhs_number = principal.nhs_number or ""
        since = _since(wanted, row, current, now)
        consent_id = row.id if row is not None else str(uuid.uuid4())
        body = preferences.to_consent(wanted, consent_id=consent_id, nhs_number=nhs_number, recorded=now,
                                      since=since)
        author = store.Author("citizen", user=principal.subject)
        if row is None:
            version = store.insert(session, consent_id=consent_id, nhs_number=nhs_number, kind="preferences",
                                   author=author, recorded=now, body=body).version_id
        elif store.new_version(session, row, recorded=now, body=body, author=author):
            version = row.version_id
        else:
            raise PreconditionFailed(STALE, expression=["If-Match"])
        change = Change(nhs_number, consent_id, version, "preferences", now)
        self._record(session, principal, change, "Citizen changed their data-sharing preferences")
        return change

    # ------------------------------------------------------------ professionals

    def record_professional(self, principal: Principal, resource: Any) -> dict[str, Any]:
        """Record a consent, dissent or objection review on a patient's behalf; returns the stored resource. A
        refusal (403) is audited too, so the person sees the attempt in their access log."""
        checked = professional.check(resource)
        try:
            _authorise_recorder(principal, checked.kind)
            change, stored = self._record_professional(principal, checked)
        except Forbidden as refusal:
            self._audit_refusal(principal, checked.nhs_number, refusal)
            raise
        self._after_commit(change)
        return stored

    def _record_professional(self, principal: Principal,
                             checked: professional.CheckedConsent) -> tuple[Change, dict[str, Any]]:
        with self._sessions() as session, session.begin():
            store.lock_people(session, checked.nhs_number)
            now = _now()  # after the lock, so whether this ends an objection is judged on what is in force now
            person_id = store.person_id_for(session, checked.nhs_number)
            consent_id = str(uuid.uuid4())
            stored = professional.for_storage(_as_of(checked, now), consent_id=consent_id, kind=checked.kind,
                                              nhs_number=checked.nhs_number, recorded=now,
                                              author_ods=principal.ods_code, person_id=person_id)
            author = store.Author("professional", principal.ods_code, principal.role, principal.subject)
            candidate = facts_from(id=consent_id, version_id=1, kind=checked.kind, status=stored["status"],
                                   author_kind=author.kind, author_ods=author.ods, author_role=author.role,
                                   recorded_at=now, body=stored)
            _authorise_change(session, principal, checked, candidate, now)
            row = store.insert(session, consent_id=consent_id, nhs_number=checked.nhs_number, kind=checked.kind,
                               author=author, recorded=now, body=stored)
            change = Change(checked.nhs_number, consent_id, 1, checked.kind, now)
            self._record(session, principal, change, f"Professional recorded a {checked.kind} on the "
                                   "patient's behalf", person_id=person_id)
            return change, row.body

    def _audit_refusal(self, principal: Principal, nhs_number: str, refusal: Forbidden) -> None:
        """Audit a refused change (outcome denied, nothing changed) in a transaction of its own: the change's
        was rolled back."""
        with self._sessions() as session, session.begin():
            self._audit(session, principal, "consent-change", nhs_number, [], refusal.message, outcome="denied")

    def read_professional(self, principal: Principal, consent_id: str) -> dict[str, Any]:
        with self._sessions() as session, session.begin():
            row = store.get(session, consent_id)
            if row is None:
                raise NotFound(f"Consent/{consent_id} is not known")
            refusal = self._audit_read(session, principal, row.nhs_number, [row],
                                       store.consents_for(session, row.nhs_number))
        if refusal:
            raise Forbidden(refusal)
        return row.body

    def search_professional(self, principal: Principal, nhs_number: str) -> list[dict[str, Any]]:
        with self._sessions() as session, session.begin():
            rows = store.consents_for(session, nhs_number)
            refusal = self._audit_read(session, principal, nhs_number, rows, rows)
        if refusal:
            raise Forbidden(refusal)
        return [row.body for row in rows]

    def _audit_read(self, session: Session, principal: Principal, nhs_number: str, rows: list[ConsentRecord],
                    persons_consents: list[ConsentRecord]) -> str | None:
        """Audit a read of `rows` of the person's consents; returns why it is refused, if it is. A refused read is
        audited too (outcome denied, nothing returned), so the person sees the attempt in their access log."""
        standing = rules.standing_of([facts_of(row) for row in persons_consents], _now())
        refusal = _denied_organisation(principal, standing)
        entities = [] if refusal else [f"Consent/{row.id}" for row in rows]
        self._audit(session, principal, "consent-read", nhs_number, entities, refusal,
                    outcome="denied" if refusal else "success")
        return refusal

    # ------------------------------------------------------------ import of choices recorded at source

    def import_source_consent(self, resource_id: str) -> str:
        """Record a Consent that ingest stored from a source system; re-delivery changes nothing. Returns what
        happened: created | updated | relinked (its source record now belongs to another person: it moved to
        them, see `_move_off`) | unchanged | held (it would end an objection and its sender has no standing:
        kept, not in force; see `_import_refusal`) | skipped (no person to key it by) | ignored (not a sharing
        choice: see professional.import_kind)."""
        with self._sessions() as session, session.begin():
            source = store.source_resource(session, "Consent", resource_id)
            nhs_number = store.nhs_number_of_person(session, source.person_id) if source and source.person_id \
                else None
            if source is None or nhs_number is None:
                # No person with an NHS number to key it by (yet). A consent already imported stays where it is:
                # a person without a number is most often the same one under another record (an A40 survivor).
                return "skipped"
            _lock_for_import(session, f"src-{source.id}", nhs_number)
            outcome, changes = self._import(session, source, nhs_number, _now())
        for change in changes:
            self._after_commit(change)
        return outcome

    def _import(self, session: Session, source: Any, nhs_number: str, now: datetime) -> tuple[str, list[Change]]:
        consent_id = f"src-{source.id}"
        row = store.get(session, consent_id, for_update=True)
        sharing_kind = professional.import_kind(source.body)
        kind = sharing_kind or (row.kind if row is not None else None)
        if kind is None:
            return "ignored", []  # not a sharing choice (e.g. a treatment consent): a clinical record only
        filed_under = row.nhs_number if row is not None else nhs_number
        moved = self._move_off(session, source, row, now) if row and filed_under != nhs_number else []
        body = _imported_body(source, consent_id, kind, nhs_number, retired=sharing_kind is None)
        if row is not None and _same_content(row.body, body):
            return "unchanged", moved
        candidate = facts_from(id=consent_id, version_id=row.version_id + 1 if row else 1, kind=kind,
                               status=body["status"], author_kind="professional", author_ods=source.source_org,
                               author_role=None, recorded_at=now, body=body)
        if refusal := _import_refusal(session, source, nhs_number, candidate, now):
            return self._hold(session, source, nhs_number, kind, body, refusal, now), moved
        change = self._put_in_force(session, source, row, Change(nhs_number, consent_id, 1, kind, now), body)
        outcome = "created" if row is None else "relinked" if filed_under != nhs_number else "updated"
        return outcome, [*moved, change]

    def _move_off(self, session: Session, source: Any, row: ConsentRecord, now: datetime) -> list[Change]:
        """Take an imported consent off the record of the person it was filed under: ingest relinked its source
        record to another person (an A40 merge, a corrected NHS number, a reviewed match), so it was never theirs.
        It stays in their history, made `inactive` by a version of its own under their NHS number (audited and
        announced to them, naming no one else); the caller then files it under the new person. No standing is
        needed: this is not a withdrawal of their objection but the correction of whose it was, and a citizen's
        own choices (keyed by their token) never move. Nothing to write when it is already inactive."""
        body = row.body | {"status": "inactive"}
        if _same_content(row.body, body):
            return []
        if not store.new_version(session, row, recorded=now, body=body):
            raise Conflict("the imported consent changed while it was being moved")
        change = Change(row.nhs_number, row.id, row.version_id, row.kind, now)
        self._record(session, _import_principal(source), change, f"An imported {row.kind} recorded at source no "
                     "longer applies: the source record it came with was linked to another person")
        return [change]

    def _put_in_force(self, session: Session, source: Any, row: ConsentRecord | None, change: Change,
                      body: dict[str, Any]) -> Change:
        """Store the imported version as the current one of `src-<resource id>`, filed under the person its source
        record belongs to now, audit it and announce it."""
        author = _import_author(source)
        if row is None:
            store.insert(session, consent_id=change.consent_id, nhs_number=change.nhs_number, kind=change.kind,
                         author=author, recorded=change.changed_at, body=body)
        elif store.new_version(session, row, recorded=change.changed_at, body=body, author=author,
                               nhs_number=change.nhs_number):
            change = replace(change, version_id=row.version_id)
        else:
            raise Conflict("the imported consent changed while it was being updated")
        self._record(session, _import_principal(source), change, f"Imported a {change.kind} recorded at source",
                     person_id=source.person_id)
        return change

    def _hold(self, session: Session, source: Any, nhs_number: str, kind: str, body: dict[str, Any],
              refusal: str, now: datetime) -> str:
        """Keep an imported version that may not be put in force, as a `rejected` Consent of its own beside the
        imported one (which stays as it was), and audit the refusal so the person sees it in their access log.
        Nothing in force changes, so nothing is published. The same version delivered again is held once."""
        held_id = f"{body['id']}{HELD_SUFFIX}"
        held = body | {"id": held_id, "status": "rejected"}
        row = store.get(session, held_id, for_update=True)
        if row is not None and _same_content(row.body, held):
            return "unchanged"
        author = _import_author(source)
        if row is None:
            version = store.insert(session, consent_id=held_id, nhs_number=nhs_number, kind=kind, author=author,
                                   recorded=now, body=held).version_id
        elif store.new_version(session, row, recorded=now, body=held, author=author, nhs_number=nhs_number):
            version = row.version_id
        else:
            raise Conflict("the held imported consent changed while it was being updated")
        self._audit(session, _import_principal(source), "consent-change", nhs_number,
                    [f"Consent/{held_id}/_history/{version}"], refusal, source.person_id, outcome="denied")
        log.info("imported consent held: it would end an objection", kind=kind)
        return "held"

    # ------------------------------------------------------------ audit and propagation

    def _record(self, session: Session, principal: Principal, change: Change, description: str, *,
                person_id: str | None = None) -> None:
        """Audit a change and write its consent.changed event, both in the change's own transaction."""
        entity = f"Consent/{change.consent_id}/_history/{change.version_id}"
        person_id = person_id or store.person_id_for(session, change.nhs_number)
        self._audit(session, principal, "consent-change", change.nhs_number, [entity], description, person_id)
        outbox.stage(session, self._bus(), CONSENT_CHANGED, [(change.nhs_number, _payload(change, person_id))])

    def _audit(self, session: Session, principal: Principal, action: str, nhs_number: str, entities: list[str],
               description: str | None = None, person_id: str | None = None, outcome: str = "success") -> None:
        person_id = person_id or store.person_id_for(session, nhs_number)
        try:
            write_audit(session, AuditRecord(service=self._service, action=action, outcome=outcome,
                                             principal=principal, person_id=person_id, nhs_number=nhs_number,
                                             entities=entities, description=description))
        except SQLAlchemyError:
            AUDIT_FAILURES.labels(self._service).inc()
            raise

    def _after_commit(self, change: Change) -> None:
        self._decisions.invalidate(change.nhs_number)
        CHANGES.labels(change.kind).inc()
        if self.on_committed is not None:
            self.on_committed()
        log.info("consent changed", kind=change.kind, version=change.version_id)


def _now() -> datetime:
    return datetime.now(UTC)


def _lock_for_import(session: Session, consent_id: str, nhs_number: str) -> None:
    """Serialise an import with every other change for the person it is for and, when it moves the consent (or its
    held version) off another person after a relink, for that person too. Where it is filed is read before the
    lock, so it is read again after: another import that moved it meanwhile to someone whose changes this one has
    not locked makes this one fail, to be retried (the consumer retries every failed event)."""
    ids = (consent_id, f"{consent_id}{HELD_SUFFIX}")
    locked = {nhs_number, *store.filed_under(session, *ids)}
    store.lock_people(session, *locked)
    if not set(store.filed_under(session, *ids)) <= locked:
        raise Conflict("the imported consent was moved to another person while it was being imported")


def _view(session: Session, nhs_number: str, now: datetime) -> CitizenView:
    facts = load_facts(session, nhs_number)
    standing = rules.standing_of(facts, now)
    own = next((f for f in facts if f.kind == "preferences"), None)
    direct_care = "share" if standing.stance.state == "share" else "object"
    return CitizenView(preferences.from_facts(own, direct_care), own.version_id if own else 0, standing)


def _since(wanted: preferences.Preferences, row: ConsentRecord | None, current: CitizenView,
           now: datetime) -> datetime:
    """When the citizen's direct-care choice took effect: now if they changed it, else unchanged."""
    if wanted.direct_care != current.preferences.direct_care:
        return now
    if row is not None:
        return facts_of(row).stated_at
    decided_by: ConsentFacts | None = current.standing.stance.decided_by
    return decided_by.stated_at if decided_by else now


def parse_etag(value: str) -> int | None:
    """The version in an ETag / If-Match value (W/"3", "3"), or None if it is not one of ours."""
    text = value.strip()
    text = text[2:] if text.startswith("W/") else text
    text = text.strip('"')
    return int(text) if text.isdigit() else None


def _check_precondition(row: ConsentRecord | None, if_match: str | None) -> None:
    if row is None:
        if if_match is not None and if_match.strip() != "*" and parse_etag(if_match) != 0:
            raise PreconditionFailed(STALE, expression=["If-Match"])
        return
    if if_match is None:
        raise PreconditionRequired("send If-Match with the ETag from your last read, so changes made on another "
                                   "device are never silently overwritten", expression=["If-Match"])
    if if_match.strip() != "*" and parse_etag(if_match) != row.version_id:
        raise PreconditionFailed(STALE, expression=["If-Match"])


def _as_of(checked: professional.CheckedConsent, now: datetime) -> dict[str, Any]:
    """The resource to store. A review acts on the objection in force now, so it is dated now: it cannot be
    back-dated before the objection it reviews."""
    body = checked.resource
    if checked.kind != "safety-override":
        return body
    provision = body["provision"]
    return body | {"dateTime": now.isoformat(),
                   "provision": provision | {"period": provision.get("period", {}) | {"start": now.isoformat()}}}


def _authorise_change(session: Session, principal: Principal, checked: professional.CheckedConsent,
                      candidate: ConsentFacts, now: datetime) -> None:
    """Who may make this change for this person (403), in order: not a denied organisation; a review only by a
    reviewer with standing, and only of an objection in force (409); and a consent that would end an objection
    only from those who may record the person's withdrawal of it."""
    consents = load_facts(session, checked.nhs_number)
    standing = rules.standing_of(consents, now)
    if refusal := _denied_organisation(principal, standing):
        raise Forbidden(refusal)
    if checked.kind == "safety-override":
        _authorise_reviewer(session, principal, checked.nhs_number)
        _require_objection(standing)
    if rules.ends_objection(consents, candidate, now):
        _authorise_withdrawal(session, principal, checked.nhs_number)


def _authorise_recorder(principal: Principal, kind: str) -> None:
    if kind == "safety-override" and principal.role not in REVIEWERS:
        raise Forbidden("only a GP or a Caldicott Guardian may review an objection")
    if principal.role not in RECORDERS:
        raise Forbidden(f"role {principal.role} may not record consent on a patient's behalf")


def _denied_organisation(principal: Principal, standing: rules.Standing) -> str | None:
    """Why the caller's organisation may not see or change this person's consents: the person denied it. Their
    list of withheld categories and denied organisations is itself part of their record."""
    if principal.ods_code and ods_code(principal.ods_code) in standing.denied:
        return (f"the patient has asked that organisation {ods_code(principal.ods_code)} does not see their "
                "shared record, including their sharing choices")
    return None


def _authorise_reviewer(session: Session, principal: Principal, nhs_number: str) -> None:
    """Only a Caldicott Guardian, or a GP at a practice the patient is registered with, may review an objection
    (uk-domain §4.2: objections are made to, and may be refused by, the patient's GP practice)."""
    if principal.role in roles.CALDICOTT_GUARDIAN:
        return
    practices = store.registered_practices(session, nhs_number)
    if principal.ods_code and ods_code(principal.ods_code) in practices:
        return
    raise Forbidden("only a GP at the patient's registered practice, or a Caldicott Guardian, may review their "
                    "objection" + ("" if practices else "; no registered practice is known for this patient"))


def _authorise_withdrawal(session: Session, principal: Principal, nhs_number: str) -> None:
    """An objection is the person's, and theirs to withdraw (uk-domain §4.2: made through, and reversible at, their
    GP practice). A professional may record that withdrawal for them only from the practice they are registered
    with, or as a Caldicott Guardian; anyone else who could end it could silently undo the person's choice."""
    if principal.role in roles.CALDICOTT_GUARDIAN:
        return
    if principal.ods_code and ods_code(principal.ods_code) in store.registered_practices(session, nhs_number):
        return
    raise Forbidden("the patient objects to sharing their record, and only they (in the app), their registered GP "
                    "practice or a Caldicott Guardian may record that they withdraw that objection")


def _import_refusal(session: Session, source: Any, nhs_number: str, candidate: ConsentFacts,
                    now: datetime) -> str | None:
    """Why an imported version may not be put in force, or None. The rule `_authorise_withdrawal` applies to a
    professional: a feed that could end an objection (an acute trust's ADT with ZU8-2=1, a bundle that changes or
    deletes a dissent) could silently undo the person's choice. Only a version sent by the person's registered
    practice, as named by the feed token of the message that wrote it, may; a feed has no Caldicott Guardian."""
    if not rules.ends_objection(load_facts(session, nhs_number), candidate, now):
        return None
    sender = store.feed_sender(session, source)
    if sender is not None and sender in store.registered_practices(session, nhs_number):
        return None
    why = (f"{sender} is not their registered GP practice" if sender else
           f"the sender could not be confirmed as {ods_code(source.source_org)} (no feed token of theirs came with it)")
    return ("a consent imported from a source record would end the patient's objection to sharing, and only they "
            f"(in the app), their registered GP practice or a Caldicott Guardian may record that they withdraw it; "
            f"{why}, so it is kept but not in force")


def _require_objection(standing: rules.Standing) -> None:
    if standing.stance.objection is None:
        raise Conflict("there is no objection in force for this patient to review",
                       expression=["Consent.provision.code"])


def _imported_body(source: Any, consent_id: str, kind: str, nhs_number: str, *, retired: bool) -> dict[str, Any]:
    """The stored form of a source Consent: inactive once deleted at source, or once the source re-scoped it so
    it is no longer a sharing choice (`retired`)."""
    # The source's own time, not ours, fills any gap: the same source version must give the same body.
    body = professional.for_storage(source.body, consent_id=consent_id, kind=kind, nhs_number=nhs_number,
                                    recorded=utc(source.last_updated), author_ods=source.source_org,
                                    person_id=source.person_id)
    if source.deleted or retired:
        body["status"] = "inactive"
    return body


def _import_author(source: Any) -> store.Author:
    return store.Author("professional", source.source_org, None, f"source:{source.source_system}")


def _import_principal(source: Any) -> Principal:
    return Principal("system", "consent-import", ods_code=source.source_org)


def _same_content(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    def strip(body: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (body.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        return body | {"meta": meta}

    return strip(stored) == strip(new)


def _payload(change: Change, person_id: str | None) -> dict[str, Any]:
    return {"nhs_number": change.nhs_number, "person_id": person_id,
            "consent_id": change.consent_id, "version_id": change.version_id, "kind": change.kind,
            "changed_at": change.changed_at.isoformat()}
