"""Scale-out: one ingest worker, then two in the same Kafka consumer group on this machine, each given a fresh
batch of social-care events of the same size; the group's partition assignment shows they share the work."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from kafka import KafkaAdminClient

from shared.events import SOCIALCARE_EVENTS
from tools.bench import feeds
from tools.bench.environment import Environment
from tools.peers.ports import free_port
from tools.synth import socialcare
from tools.synth.population import generate

GROUP = "ingest"


@dataclass
class ScaleOut:
    one: feeds.FeedResult
    two: feeds.FeedResult
    assignment: dict[str, list[int]] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        return self.two.rate / self.one.rate if self.one.rate else 0.0


def _batches(events_per_batch: int, seed: int) -> tuple[list[tuple[str, dict[str, Any]]], ...]:
    """Two batches of events about people the main population does not hold (a seed of their own)."""
    people = generate(2 * events_per_batch // 4 + 2, seed)
    batches: tuple[list[tuple[str, dict[str, Any]]], ...] = ([], [])
    for index, person in enumerate(people):
        person.key = f"S{person.key}"
        batch = batches[index % 2]
        if len(batch) < events_per_batch:
            rng = random.Random(f"{seed}/{person.key}")
            batch.extend((socialcare.key_of(person), e) for e in socialcare.events(person, rng, 4, date(2025, 6, 2)))
    return batches


def _run(env: Environment, label: str, events: list[tuple[str, dict[str, Any]]]) -> feeds.FeedResult:
    def send() -> tuple[int, int]:
        sent = feeds.publish_events(env, events)
        feeds.wait_consumed(env, GROUP)
        return sent, 0

    return feeds._timed(env, label, send)


def assignment(env: Environment) -> dict[str, list[int]]:
    """Partitions of socialcare.events held by each member of the ingest group."""
    admin = KafkaAdminClient(bootstrap_servers=env.kafka.bootstrap)
    try:
        group = admin.describe_groups([GROUP]).get(GROUP, {})
        out: dict[str, list[int]] = {}
        for member in group.get("members", []):
            assigned = (member.get("member_assignment") or {}).get("assigned_partitions", [])
            partitions = [p for a in assigned if a["topic"] == SOCIALCARE_EVENTS for p in a["partitions"]]
            out[member["member_id"]] = sorted(partitions)
        return out
    finally:
        admin.close()


def _wait_members(env: Environment, count: int, timeout: float = 90) -> dict[str, list[int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = assignment(env)
        if len(current) == count and all(current.values()):
            return current
        time.sleep(0.5)
    raise TimeoutError(f"the ingest group did not settle on {count} members")


def measure(env: Environment, events_per_batch: int, seed: int) -> ScaleOut:
    """One worker (the running ingest service), then a second ingest process joins the group."""
    first, second = _batches(events_per_batch, seed)
    one = _run(env, "1 ingest worker", first)
    env.start_service("ingest", free_port(), {"SCR_MLLP_ENABLED": "false"}, key="ingest-2")
    try:
        members = _wait_members(env, 2)
        two = _run(env, "2 ingest workers", second)
    finally:
        env.services.pop("ingest-2").stop()
    return ScaleOut(one, two, members)
