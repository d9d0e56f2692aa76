"""The person index, the stored part: which person each source Patient belongs to, and every change to that
(first sighting, a newly verified NHS number, a reviewed match, an A40 merge and its undo). Moving a source
Patient moves every resource that came with it: new person, rewritten references, new versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session

from services.ingest import identity, records, store
from services.ingest.feeds.model import rewrite_references
from services.ingest.identity import Demographics, Score, decide, demographics, score
from services.ingest.metrics import MATCH_BLOCKS_CUT
from services.ingest.records import Change, WriteContext
from shared.errors import Conflict, InvalidInput, NotFound
from shared.schema import Person, Resource

log = structlog.get_logger("scr.ingest.person_index")

# Links a person decided, or an A40 made: a later automatic rule never overrides them.
DELIBERATE = frozenset({"manual", "merge"})


@dataclass(frozen=True)
class Thresholds:
    link: float
    review: float


def follow(session: Session, person: Person) -> Person:
    """The surviving person behind a merged one."""
    seen = {person.id}
    while person.status == "merged" and person.merged_into and person.merged_into not in seen:
        nxt = store.get_person(session, person.merged_into)
        if nxt is None:
            break
        seen.add(nxt.id)
        person = nxt
    return person


def person_of(session: Session, source_patient_id: str) -> str:
    link = store.get_link(session, source_patient_id)
    if link is None:
        raise NotFound(f"source Patient {source_patient_id} has no person link")
    return link.person_id


def assign_new(session: Session, source_patient_id: str, patient: dict[str, Any],
               thresholds: Thresholds) -> str:
    """The person for a source Patient seen for the first time; always one (CONTRACTS.md §1.1)."""
    demo = demographics(patient)
    if demo.nhs_number and demo.verified and (known := store.person_by_nhs_number(session, demo.nhs_number)):
        person = follow(session, known)
        store.add_link(session, source_patient_id, person.id, "nhs-number", None,
                       {"rule": "valid NHS number with verification status verified"})
        return person.id
    scores, block_cut = _candidate_scores(session, source_patient_id, demo, patient, thresholds)
    decision = decide(scores, link_threshold=thresholds.link, review_threshold=thresholds.review)
    if block_cut:
        # Rare (a placeholder birth date): the decision was made on part of the block. Say so where a reviewer
        # and the operator will see it.
        decision.explanation["birth_date_block_cut_at"] = store.BIRTH_DATE_BLOCK_LIMIT
        MATCH_BLOCKS_CUT.inc()
        log.warning("birth-date block cut", limit=store.BIRTH_DATE_BLOCK_LIMIT)
    verified_number = demo.nhs_number if demo.verified else None
    if decision.action == "link" and decision.candidate:
        person = store.get_person(session, decision.candidate)
        assert person is not None  # candidates come from existing links
        if verified_number and person.nhs_number is None:
            person.nhs_number, person.updated = verified_number, datetime.now(UTC)
        store.add_link(session, source_patient_id, person.id, "demographic", decision.score, decision.explanation)
        return person.id
    person = store.create_person(session, verified_number)
    explanation = dict(decision.explanation)
    if decision.action == "review" and decision.candidate:
        review = store.add_review(session, source_patient_id, decision.candidate, decision.score or 0.0,
                                  decision.explanation)
        explanation["review_id"] = review.id
    store.add_link(session, source_patient_id, person.id, "new-person", decision.score, explanation)
    return person.id


def _candidate_scores(session: Session, source_patient_id: str, demo: Demographics, patient: dict[str, Any],
                      thresholds: Thresholds) -> tuple[dict[str, Score], bool]:
    """Each candidate person's best score (a person holding a different valid NHS number conflicts), and whether
    the birth-date block was cut."""
    dates = [demo.birth_date] if demo.birth_date else []
    if demo.birth_date and demo.birth_date.day <= 12 and demo.birth_date.day != demo.birth_date.month:
        dates.append(date(demo.birth_date.year, demo.birth_date.day, demo.birth_date.month))
    # The family-name block looks the name up as the search index holds it (shared.search), not as folded here.
    family = next((n.get("family") for n in patient.get("name") or [] if isinstance(n, dict)
                   and isinstance(n.get("family"), str)), None)
    blocks = store.blocked_patients(session, birth_dates=dates, nhs=demo.nhs_number, family=family,
                                    postcode=demo.postcode, exclude=source_patient_id)
    by_birth_date, cut = blocks.by_birth_date, False
    if blocks.crowded:
        by_birth_date, cut = _could_match(session, demo, dates, min(thresholds.link, thresholds.review))
    scores: dict[str, Score] = {}
    for resource, linked in store.linked_patients(session, blocks.certain.union(by_birth_date) - {source_patient_id}):
        person = follow(session, linked)
        result = score(demo, demographics(resource.body))
        if demo.nhs_number and person.nhs_number and person.nhs_number != demo.nhs_number:
            result.conflict = "the person holds a different verified NHS number"
        current = scores.get(person.id)
        if current is None or (current.conflict is None and (result.conflict or result.total > current.total)):
            scores[person.id] = result
    return scores, cut


def _could_match(session: Session, demo: Demographics, dates: list[date], floor: float) -> tuple[list[str], bool]:
    """The source Patients of a crowded birth-date block whose search rows allow a score of at least `floor`, and
    whether the block was cut at its limit. Sifting on what the index holds, rather than reading and scoring
    every Patient born that day, leaves out nothing that could reach a threshold: identity.best_possible is an
    upper bound of the score."""
    fields = identity.indexed(store.birth_date_block_fields(session, dates, identity.INDEXED_PARAMS))
    cut = len(fields) > store.BIRTH_DATE_BLOCK_LIMIT
    kept = list(fields.items())[:store.BIRTH_DATE_BLOCK_LIMIT]
    return [i for i, indexed in kept if identity.best_possible(demo, indexed) >= floor], cut


def after_update(session: Session, ctx: WriteContext, source_patient_id: str, patient: dict[str, Any]) -> list[Change]:
    """A stored source Patient changed: a newly verified NHS number may establish or move its person."""
    demo = demographics(patient)
    link = store.get_link(session, source_patient_id)
    if not (demo.nhs_number and demo.verified) or link is None:
        return []
    person = store.get_person(session, link.person_id)
    holder = store.person_by_nhs_number(session, demo.nhs_number)
    if holder is None and person is not None and person.nhs_number is None:
        person.nhs_number, person.updated = demo.nhs_number, datetime.now(UTC)
        return []
    if holder is not None and holder.id != link.person_id and link.method not in DELIBERATE:
        holder = follow(session, holder)
        return relink(session, ctx, source_patient_id, holder.id, "nhs-number", None,
                      {"rule": "valid NHS number with verification status verified"})
    return []


def relink(session: Session, ctx: WriteContext, source_patient_id: str, new_person_id: str, method: str,
           match_score: float | None, explanation: dict[str, Any]) -> list[Change]:
    """Move a source Patient, and everything that came with it, to another person."""
    link = store.get_link(session, source_patient_id)
    if link is None:
        raise NotFound(f"source Patient {source_patient_id} has no person link")
    old_person_id = link.person_id
    store.set_link(session, source_patient_id, new_person_id, method, match_score, explanation)
    if old_person_id == new_person_id:
        return []
    mapping = {f"Patient/{old_person_id}": f"Patient/{new_person_id}"}
    changes = []
    for row in store.of_source_patient(session, source_patient_id):
        body = rewrite_references(records.unstamped(row), mapping)
        changes.append(_rewrite(session, ctx, row, body, person_id=new_person_id, change="relink"))
    _retire_if_empty(session, old_person_id, new_person_id)
    _revive(session, new_person_id)
    return changes


def _rewrite(session: Session, ctx: WriteContext, row: Resource, body: dict[str, Any], *,
             person_id: str | None = None, change: str | None = None) -> Change:
    return records.write(session, ctx, existing=row, resource_type=row.resource_type, resource_id=row.id, body=body,
                         labels=list(row.labels), person_id=person_id or row.person_id,
                         source_patient_id=row.source_patient_id, source_key=row.source_key,
                         source_updated=row.source_updated, change=change)


def _retire_if_empty(session: Session, person_id: str, into: str) -> None:
    person = store.get_person(session, person_id)
    if person is not None and store.links_of_person(session, person_id) == 0:
        person.status, person.merged_into = "merged", into
        person.version, person.updated = person.version + 1, datetime.now(UTC)
        # It keeps its NHS number: a later record with that number finds it and follows `merged_into`.


def _revive(session: Session, person_id: str) -> None:
    person = store.get_person(session, person_id)
    if person is not None and person.status == "merged":
        person.status, person.merged_into = "active", None
        person.version, person.updated = person.version + 1, datetime.now(UTC)


# ------------------------------------------------------------------------------------------- A40 merge

def merge(session: Session, ctx: WriteContext, surviving: Resource, retired_key: str) -> list[Change]:
    """Merge the retired source Patient (named by its source key) into the surviving one: re-point the
    retired record and all it carries to the survivor's person, and link the two Patients
    (replaces / replaced-by). The previous state is kept so the merge can be undone."""
    retired = store.by_source_keys(session, surviving.source_org, surviving.source_system, "Patient",
                                   [retired_key]).get(retired_key)
    if retired is None:
        raise InvalidInput("MRG-1 names no patient record known from this sender", expression=["MRG-1"])
    if retired.id == surviving.id:
        raise InvalidInput("MRG-1 names the surviving record itself", expression=["MRG-1"])
    survivor_person = store.get_person(session, person_of(session, surviving.id))
    retired_link = store.get_link(session, retired.id)
    retired_person = store.get_person(session, retired_link.person_id) if retired_link else None
    if survivor_person is None or retired_link is None or retired_person is None:
        raise NotFound("merge records have no person")
    if survivor_person.nhs_number and retired_person.nhs_number and \
            survivor_person.nhs_number != retired_person.nhs_number:
        raise InvalidInput("the records carry different verified NHS numbers; they are not merged",
                           expression=["MRG-1"])
    previous = {"retired_person_id": retired_person.id, "method": retired_link.method, "score": retired_link.score,
                "explanation": retired_link.explanation, "retired_active": retired.body.get("active"),
                "survivor_person_id": survivor_person.id}
    changes = relink(session, ctx, retired.id, survivor_person.id, "merge", None,
                     {"rule": "HL7 A40 merge", "surviving_patient_id": surviving.id})
    changes.append(_set_link(session, ctx, surviving, retired.id, "replaces", active=surviving.body.get("active")))
    changes.append(_set_link(session, ctx, retired, surviving.id, "replaced-by", active=False))
    merge_row = store.add_merge(session, surviving.id, retired.id, previous, ctx.raw_id)
    for change in changes:
        change.where = f"merge:{merge_row.id}"
    return changes


def undo_merge(session: Session, ctx: WriteContext, merge_id: str) -> list[Change]:
    """Put a merge back: the retired record returns to its own person, and the Patient links go."""
    row = store.get_merge(session, merge_id)
    if row is None:
        raise NotFound(f"no merge {merge_id}")
    if row.undone_at is not None:
        raise Conflict(f"merge {merge_id} was already undone")
    previous = row.previous_state
    changes = relink(session, ctx, row.retired_patient_id, previous["retired_person_id"], previous["method"],
                     previous.get("score"), previous.get("explanation") or {})
    surviving = store.get_resource(session, "Patient", row.surviving_patient_id)
    retired = store.get_resource(session, "Patient", row.retired_patient_id)
    if surviving is not None:
        changes.append(_set_link(session, ctx, surviving, row.retired_patient_id, None,
                                 active=surviving.body.get("active")))
    if retired is not None:
        changes.append(_set_link(session, ctx, retired, row.surviving_patient_id, None,
                                 active=previous.get("retired_active")))
    row.undone_at = datetime.now(UTC)
    return changes


def _set_link(session: Session, ctx: WriteContext, patient: Resource, other_id: str, link_type: str | None,
              *, active: Any) -> Change:
    """Patient.link to `other_id` set to `link_type` (None removes it), and `active` as given."""
    body = records.unstamped(patient)
    links = [link for link in body.get("link", []) if link.get("other", {}).get("reference") != f"Patient/{other_id}"]
    if link_type:
        links.append({"other": {"reference": f"Patient/{other_id}"}, "type": link_type})
    body.pop("link", None)
    if links:
        body["link"] = links
    body.pop("active", None)
    if active is not None:
        body["active"] = active
    return _rewrite(session, ctx, patient, body)


# ------------------------------------------------------------------------------------------- review

def resolve_review(session: Session, ctx: WriteContext, review_id: str, decision: str, reviewer: str) -> list[Change]:
    """A person decided a possible match: link moves the record to the candidate; reject closes it."""
    review = store.get_review(session, review_id)
    if review is None:
        raise NotFound(f"no match review {review_id}")
    if review.status != "open":
        raise Conflict(f"match review {review_id} is already {review.status}")
    changes: list[Change] = []
    if decision == "link":
        candidate = store.get_person(session, review.candidate_person_id)
        if candidate is None:
            raise NotFound("the candidate person no longer exists")
        candidate = follow(session, candidate)
        changes = relink(session, ctx, review.source_patient_id, candidate.id, "manual", review.score,
                         review.explanation | {"review_id": review.id, "reviewer": reviewer})
    review.status = "linked" if decision == "link" else "rejected"
    review.resolved_at, review.resolved_by = datetime.now(UTC), reviewer
    return changes
