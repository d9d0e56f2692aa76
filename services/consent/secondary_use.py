"""Secondary use in bulk: which people the consent rules keep out of research and planning (the National Data
Opt-out, an objection, or an organisation they denied), and which extra categories others have withheld.

The bulk export and the population aggregates of the record API ask this once per job, page by page, instead of
asking `POST /consent/decide` once per person. Each person's answer is `rules.decide` itself (purpose HRESCH or
HOPERAT, a system actor of the recipient's organisation, every label): nothing here re-states the rules.

Only people with at least one consent recorded can be refused or restrict anything (everyone else gets the
defaults: secondary use permitted), so a page walks the consent table by NHS number, never the person index.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.consent import rules
from services.consent.codes import SECONDARY_USE
from services.consent.decisions import facts_of
from services.consent.facts import ConsentFacts
from shared import labels, nhs_number
from shared.audit import AuditRecord, write_audit
from shared.auth import Principal, require
from shared.errors import InvalidInput
from shared.schema import ConsentRecord

DEFAULT_PAGE, MAX_PAGE = 1000, 10_000
# Asking about every label means `withhold_labels` lists everything withheld for the person.
EVERY_LABEL = frozenset(labels.CATEGORIES) | {labels.RESTRICTED, labels.VERY_RESTRICTED}
_ALWAYS = labels.WITHHELD_BY_DEFAULT | {labels.VERY_RESTRICTED}
_ODS_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

router = APIRouter(prefix="/consent/secondary-use", tags=["consent"])
system_reading_consent = require("system", scope=("Consent", "r"))


@dataclass(frozen=True)
class Page:
    """One page of answers: the people refused (with the deciding rule), those permitted but with categories
    of their own withheld, and where the next page starts (None on the last page)."""

    excluded: list[tuple[str, str]]
    withheld: list[tuple[str, tuple[str, ...]]]
    next_after: str | None

    def as_json(self, purpose: str, organisation: str | None) -> dict[str, object]:
        return {"purpose": purpose, "organisation": organisation,
                "excluded": [{"nhs_number": n, "rule": rule} for n, rule in self.excluded],
                "withheld": [{"nhs_number": n, "labels": list(codes)} for n, codes in self.withheld],
                "next_after": self.next_after}


def decide_page(session: Session, policy: rules.Policy, *, purpose: str, organisation: str | None,
                after: str, count: int, now: datetime) -> Page:
    """Decide secondary use for the next `count` people (by NHS number, after `after`) who have consents."""
    numbers = list(session.scalars(select(ConsentRecord.nhs_number).where(ConsentRecord.nhs_number > after)
                                   .group_by(ConsentRecord.nhs_number).order_by(ConsentRecord.nhs_number)
                                   .limit(count)))
    excluded: list[tuple[str, str]] = []
    withheld: list[tuple[str, tuple[str, ...]]] = []
    for number, facts in _facts_by_person(session, numbers).items():
        request = rules.DecisionRequest(purpose=purpose, nhs_number=number, actor_kind="system",
                                        ods_code=organisation, labels=EVERY_LABEL)
        decision = rules.decide(request, facts, policy, now=now)
        if not decision.permits:
            excluded.append((number, decision.rule))
        elif chosen := tuple(code for code in decision.withhold_labels if code not in _ALWAYS):
            withheld.append((number, chosen))
    return Page(excluded, withheld, numbers[-1] if len(numbers) == count else None)


def _facts_by_person(session: Session, numbers: list[str]) -> dict[str, tuple[ConsentFacts, ...]]:
    grouped: dict[str, list[ConsentFacts]] = defaultdict(list)
    if numbers:
        rows = session.scalars(select(ConsentRecord).where(ConsentRecord.nhs_number.in_(numbers))
                               .order_by(ConsentRecord.nhs_number, ConsentRecord.id))
        for row in rows:
            grouped[row.nhs_number].append(facts_of(row))
    return {number: tuple(grouped[number]) for number in numbers}


# ---------------------------------------------------------------- the route


def _purpose(request: Request) -> str:
    purpose = request.query_params.get("purpose", "HOPERAT")
    if purpose not in SECONDARY_USE:
        raise InvalidInput(f"purpose must be one of {', '.join(sorted(SECONDARY_USE))} (secondary use)",
                           expression=["purpose"])
    return purpose


def _organisation(request: Request) -> str | None:
    ods = request.query_params.get("organisation")
    if ods is not None and not (3 <= len(ods) <= 8 and set(ods) <= _ODS_CHARS):
        raise InvalidInput("organisation must be an ODS code (3-8 capital letters and digits)",
                           expression=["organisation"])
    return ods


def _after(request: Request) -> str:
    after = request.query_params.get("after", "")
    if after and not nhs_number.is_valid(after):
        raise InvalidInput("after must be the NHS number a previous page ended at", expression=["after"])
    return after


def _count(request: Request) -> int:
    raw = request.query_params.get("_count", str(DEFAULT_PAGE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidInput(f"_count must be a whole number from 1 to {MAX_PAGE}", expression=["_count"])
    return int(raw)


def _only(request: Request) -> None:
    for name in request.query_params:
        if name not in ("purpose", "organisation", "after", "_count"):
            raise InvalidInput(f"unknown query parameter {name!r}", expression=[name])


@router.get("/excluded")
def excluded(request: Request, principal: Principal = Depends(system_reading_consent)) -> JSONResponse:
    """`GET /consent/secondary-use/excluded?purpose=HOPERAT&organisation=<ODS>&after=<NHS number>&_count=1000`"""
    _only(request)
    purpose, organisation = _purpose(request), _organisation(request)
    after, count = _after(request), _count(request)
    decisions = request.app.state.decision_point
    with request.app.state.runtime.sessions() as session, session.begin():
        page = decide_page(session, decisions.policy, purpose=purpose, organisation=organisation, after=after,
                           count=count, now=datetime.now(UTC))
        # One row per page, naming nobody: the caller audits the export itself.
        write_audit(session, AuditRecord(
            service="consent", action="decide", outcome="success", principal=principal, purpose=purpose,
            description=f"secondary-use exclusions page: {len(page.excluded)} refused, "
                        f"{len(page.withheld)} with categories withheld"))
    return JSONResponse(page.as_json(purpose, organisation), headers={"Cache-Control": "no-store"})
