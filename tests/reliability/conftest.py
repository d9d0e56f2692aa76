"""Fixtures for the fault tests: the platform's services as real processes (tools.load.stack) against a fresh
PostgreSQL database and Kafka, a way to count what the store holds, and a place to record each run's figures."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from shared.db import create_db_engine, make_session_factory
from shared.schema import Person, RawMessage, Resource, ResourceVersion
from tools.load.stack import Signer, Stack

pytestmark = pytest.mark.integration
# `make soak` runs these tests larger (SCR_SOAK_SCALE=5): more events, more messages, the same faults.
SCALE = max(1, int(os.environ.get("SCR_SOAK_SCALE", "1")))
FIGURES_DIR = Path(__file__).resolve().parents[2] / "var" / "reliability"


class Counts:
    """What the store holds, counted in the database itself."""

    def __init__(self, url: str) -> None:
        self.engine = create_db_engine(url, pool_size=2)
        self.sessions = make_session_factory(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def resources(self, resource_type: str, source_org: str | None = None) -> int:
        query = select(func.count()).select_from(Resource).where(Resource.resource_type == resource_type)
        if source_org:
            query = query.where(Resource.source_org == source_org)
        with self.sessions() as session:
            return session.scalar(query) or 0

    def versions(self, resource_type: str) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(ResourceVersion)
                                  .where(ResourceVersion.resource_type == resource_type)) or 0

    def max_version(self, resource_type: str) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.max(Resource.version_id))
                                  .where(Resource.resource_type == resource_type)) or 0

    def persons(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(Person)) or 0

    def raw(self, channel: str, status: str | None = None) -> int:
        query = select(func.count()).select_from(RawMessage).where(RawMessage.channel == channel)
        if status:
            query = query.where(RawMessage.status == status)
        with self.sessions() as session:
            return session.scalar(query) or 0

    def duplicate_source_keys(self) -> int:
        """Resources stored twice for one sender identity (the unique index should make this impossible)."""
        with self.sessions() as session:
            return session.scalar(text(
                "SELECT count(*) FROM (SELECT 1 FROM resource GROUP BY source_org, source_system, resource_type, "
                "source_key HAVING count(*) > 1) d")) or 0

    def audit(self, actor_user: str, outcome: str | None = None) -> int:
        from shared.schema import AuditEventRow

        query = select(func.count()).select_from(AuditEventRow).where(AuditEventRow.actor_user == actor_user)
        if outcome:
            query = query.where(AuditEventRow.outcome == outcome)
        with self.sessions() as session:
            return session.scalar(query) or 0


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll until `check()` is truthy (bounded: an eventual state, never a speed claim)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def committed(admin: Any, group: str, topic: str) -> int:
    """The sum of a consumer group's committed offsets on a topic; -1 while the broker cannot say yet."""
    from kafka.errors import KafkaError

    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError:  # e.g. the group coordinator still loading: ask again on the next poll
        return -1
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


def record_changed_for(bootstrap: str, ids: set[str]) -> list[dict[str, Any]]:
    """Every record.changed event about `ids`, reading the topic from its start to its end."""
    from shared.events import RECORD_CHANGED

    return [payload for payload in events_on(bootstrap, RECORD_CHANGED) if payload.get("id") in ids]


def events_on(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every event payload on `topic`, read from its start to its end by a new consumer group."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"reader-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=8000)
    try:
        return [json.loads(record.value) for record in consumer]
    finally:
        consumer.close()


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer(tmp_path / "keys")


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def make_stack(signer: Signer, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Build (not start) a Stack; every stack built is stopped at the end of the test, even on failure."""
    stacks: list[Stack] = []

    def make(database_url: str, kafka_bootstrap: str, **extra_env: str) -> Stack:
        stack = Stack(database_url, kafka_bootstrap, signer.jwks_path, signer.issuer, signer.audience,
                      tmp_path / f"stack{len(stacks)}", signer.system(), extra_env=extra_env)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The run's figures, written to var/reliability/<test>.json for docs/RELIABILITY.md."""
    found: dict[str, Any] = {}
    yield found
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / f"{request.node.name}.json").write_text(json.dumps(found, indent=2, default=str))
