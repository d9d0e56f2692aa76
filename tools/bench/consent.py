"""Consent figures: the decision in-process (the consent service's own DecisionPoint and rules engine against
the bench database) and over HTTP (POST /consent/decide), and the time from a citizen's change
(PUT /consent/me) to its effect on the record API's next read."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from services.consent.decisions import DecisionPoint
from services.consent.rules import DecisionRequest, Policy
from shared.db import create_db_engine, make_session_factory
from tools.bench.environment import ACUTE_ODS, Environment
from tools.bench.reads import Latency

CONSENT_SQL = "SELECT body::text FROM consent WHERE nhs_number = %s ORDER BY recorded_at, id"


def _request(nhs_number: str, person_id: str) -> DecisionRequest:
    return DecisionRequest(purpose="TREAT", nhs_number=nhs_number, person_id=person_id, ods_code=ACUTE_ODS,
                           role="R8000", user_id="555000000001", labels=frozenset({"HIV", "PSY", "SOC"}),
                           legitimate_relationship="care")


def in_process(env: Environment, people: list[tuple[str, str]], count: int) -> tuple[Latency, Latency, Latency]:
    """(decisions with the person's consents cached, decisions loading them first, the bare SQL of that load)."""
    engine = create_db_engine(env.database_url, pool_size=2)
    point = DecisionPoint(make_session_factory(engine), Policy())
    requests = [_request(n, p) for n, p in people]
    try:
        cold = _time("decision in-process, consents loaded", count // 10,
                     lambda i: (point.invalidate(requests[i % len(requests)].nhs_number or ""),
                                point.decide(requests[i % len(requests)])))
        for request in requests:
            point.decide(request)
        hot = _time("decision in-process, consents cached", count, lambda i: point.decide(requests[i % len(requests)]))
    finally:
        engine.dispose()
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        sql = _time("bare SQL: one person's consents", count // 10,
                    lambda i: conn.execute(CONSENT_SQL, (people[i % len(people)][0],)).fetchall())
    return hot, cold, sql


def _time(what: str, count: int, call: Any) -> Latency:
    samples = []
    started = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - t) * 1000)
    return Latency(what, 1, samples, time.perf_counter() - started)


def over_http(env: Environment, people: list[tuple[str, str]], count: int) -> tuple[Latency, Latency]:
    """POST /consent/decide as the record API calls it, against GET /healthz on the same service."""
    headers = {"Authorization": f"Bearer {env.tokens.system()}"}
    with httpx.Client(base_url=env.url("consent"), headers=headers, timeout=30) as client:
        def decide(i: int) -> None:
            nhs_number, person_id = people[i % len(people)]
            response = client.post("/consent/decide", json={
                "patient": {"nhs_number": nhs_number, "person_id": person_id},
                "actor": {"kind": "clinician", "ods_code": ACUTE_ODS, "role_code": "R8000",
                          "user_id": "555000000001"},
                "purpose": "TREAT", "labels": ["HIV", "PSY", "SOC"], "legitimate_relationship": "care"})
            response.raise_for_status()

        for i in range(min(len(people), 200)):
            decide(i)
        decided = _time("decision over HTTP", count, decide)
        health = _time("bare HTTP round trip (GET /healthz)", count, lambda _i: client.get("/healthz"))
    return decided, health


@dataclass
class ChangeEffect:
    """Citizen change -> next read, repeated."""

    delays_ms: list[float]
    next_read_effective: int
    trials: int
    kafka_round_trip_ms: list[float]


def change_to_effect(env: Environment, nhs_number: str, person_id: str, trials: int) -> ChangeEffect:
    """Toggle the citizen's objection and read `$everything` as a clinician of an acute trust until the answer
    changes (objection: only the trust's own items are shown). The clock starts when the PUT is answered."""
    citizen = {"Authorization": f"Bearer {env.tokens.citizen(nhs_number)}", "If-Match": "*"}
    clinician = {"Authorization": f"Bearer {env.tokens.clinician()}"}
    delays: list[float] = []
    first_read_ok = 0
    with httpx.Client(timeout=30) as client:
        def visible() -> int:
            response = client.get(f"{env.url('record_api')}/fhir/Patient/{person_id}/$everything",
                                  params={"_count": "1000"}, headers=clinician)
            return len(response.json().get("entry", [])) if response.status_code == 200 else -1

        sharing = visible()
        for trial in range(trials):
            objecting = trial % 2 == 0
            client.put(f"{env.url('consent')}/consent/me", headers=citizen, json={
                "direct_care": "object" if objecting else "share", "withheld_categories": [],
                "denied_organisations": [], "national_data_opt_out": False}).raise_for_status()
            changed_at = time.perf_counter()
            reads = 0
            while (visible() == sharing) == objecting:
                reads += 1
                if time.perf_counter() - changed_at > 30:
                    raise TimeoutError("a consent change had no effect on reads within 30 s")
            delays.append((time.perf_counter() - changed_at) * 1000)
            first_read_ok += reads == 0
    return ChangeEffect(delays, first_read_ok, trials, _kafka_round_trips(env, trials))


def _kafka_round_trips(env: Environment, count: int) -> list[float]:
    """The transport floor a change rides on: produce one event, see it consumed by another client."""
    topic = f"bench.roundtrip.{uuid.uuid4().hex[:8]}"
    env.kafka.create_topics([topic])
    partition = TopicPartition(topic, 0)
    producer = KafkaProducer(bootstrap_servers=env.kafka.bootstrap, acks="all")
    consumer = KafkaConsumer(bootstrap_servers=env.kafka.bootstrap, enable_auto_commit=False)
    consumer.assign([partition])  # no group: nothing to join, nothing to miss while joining
    try:
        delays = []
        for n in range(count):
            consumer.seek_to_end(partition)
            consumer.position(partition)
            sent = time.perf_counter()
            producer.send(topic, json.dumps({"n": n}).encode())
            producer.flush()
            while not any(consumer.poll(timeout_ms=50).values()):
                if time.perf_counter() - sent > 30:
                    raise TimeoutError("a Kafka event took over 30 s to arrive")
            delays.append((time.perf_counter() - sent) * 1000)
        return delays
    finally:
        producer.close()
        consumer.close()
