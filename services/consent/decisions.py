"""Decisions on the hot path: consents from the in-memory cache, the pure rules engine, metrics.

No audit row per decision: the record API audits every access it makes with the decision it was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from services.consent import rules, store
from services.consent.cache import ConsentCache
from services.consent.facts import ConsentFacts, facts_from
from services.consent.metrics import DECISION_SECONDS, DECISIONS
from shared.schema import ConsentRecord


def facts_of(row: ConsentRecord) -> ConsentFacts:
    return facts_from(id=row.id, version_id=row.version_id, kind=row.kind, status=row.status,
                      author_kind=row.author_kind, author_ods=row.author_ods, author_role=row.author_role,
                      recorded_at=row.recorded_at, body=row.body)


def load_facts(session: Session, nhs_number: str) -> tuple[ConsentFacts, ...]:
    return tuple(facts_of(row) for row in store.consents_for(session, nhs_number))


class DecisionPoint:
    """The policy decision point: `decide` answers in well under a millisecond once a person is cached."""

    def __init__(self, sessions: sessionmaker[Session], policy: rules.Policy, cache_size: int = 100_000,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.policy = policy
        self._sessions = sessions
        self._clock = clock
        self.cache = ConsentCache(self._load, cache_size)

    def _load(self, nhs_number: str) -> tuple[ConsentFacts, ...]:
        with self._sessions() as session:
            return load_facts(session, nhs_number)

    def decide(self, request: rules.DecisionRequest) -> rules.Decision:
        started = time.perf_counter()
        consents = self.cache.get(request.nhs_number) if request.nhs_number else ()
        decision = rules.decide(request, consents, self.policy, now=self._clock())
        DECISION_SECONDS.observe(time.perf_counter() - started)
        DECISIONS.labels(decision.decision, decision.rule).inc()
        return decision

    def invalidate(self, nhs_number: str) -> None:
        self.cache.invalidate(nhs_number)
