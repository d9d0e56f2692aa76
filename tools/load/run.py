"""The bounded load run (`make soak`): the whole platform as real processes on loopback, a fixed number of mixed
reads and ingest operations paced over a fixed duration, then the verdict: no errors, no growth in the services'
memory, no lost audit events, and every input stored exactly once.

    python -m tools.load.run --duration 300 --operations 6000     # what `make soak` runs (about 6 minutes)
    python -m tools.load.run --duration 20 --operations 300       # a quick look

Reads: Patient search by NHS number, `$everything`, Condition search, read by id (a clinician), and the citizen's
own preferences and access log. Ingest: HL7 v2 admissions over HTTP (admit, transfer, discharge), GP Bundles and
social-care events on Kafka. Every read that succeeds must have its AuditEvent; every admission its Encounter;
every event its RelatedPerson; nothing twice. The report is printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from shared.db import create_db_engine, make_session_factory
from shared.schema import AuditEventRow, Person, Resource, ResourceVersion
from tools.load import messages
from tools.load.stack import Peers, Signer, Stack, rss_kib, start_peers

READER = "555000004242"  # the load's clinician: its audit rows are counted against its successful reads


@dataclass
class Config:
    duration: float = 300.0  # seconds the operations are spread over
    operations: int = 6000  # fixed count, split across the workers
    people: int = 200  # seeded before the run, read during it
    readers: int = 3
    writers: int = 2
    memory_growth_limit_mib: float = 40.0  # after warm-up; Python services settle, they must not keep growing
    work_dir: Path | None = None


@dataclass
class Report:
    config: dict[str, Any]
    started: str = ""
    elapsed_seconds: float = 0.0
    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    memory_kib: dict[str, list[int]] = field(default_factory=dict)
    memory_growth_mib: dict[str, float] = field(default_factory=dict)
    reads_ok: int = 0
    audit_rows: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_json(self) -> dict[str, Any]:
        # asdict would rebuild each Counter from (key, value) pairs, counting the pairs: turn them into dicts first
        counters = {"operations": dict(self.operations), "errors": dict(self.errors)}
        plain = {k: v for k, v in self.__dict__.items() if k not in counters}
        return plain | counters | {"ok": self.ok}


class Workload:
    """The operations of the run, each a callable returning (operation name, HTTP status or 0)."""

    def __init__(self, stack: Stack, signer: Signer, people: list[messages.Person], person_ids: dict[str, str],
                 producer: Any, topic: str) -> None:
        self.stack, self.people, self.person_ids = stack, people, person_ids
        self.producer, self.topic = producer, topic
        self.clinician = {"Authorization": f"Bearer {signer.clinician(ods=messages.GP_ODS, sub=READER)}"}
        self.citizens = {p.nhs: {"Authorization": f"Bearer {signer.citizen(p.nhs)}"} for p in people[:20]}
        self.acute = {"Authorization": f"Bearer {signer.feed(messages.ACUTE_ODS)}"}
        self.gp = {"Authorization": f"Bearer {signer.feed(messages.GP_ODS)}"}
        self.clients = {name: httpx.Client(base_url=stack.url(name), timeout=60)
                        for name in ("ingest", "record_api", "consent")}
        self._lock = threading.Lock()
        self._next = Counter[str]()
        self.admissions = 0
        self.events = 0
        self.bundles = 0

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def _take(self, what: str) -> int:
        with self._lock:
            self._next[what] += 1
            return self._next[what]

    def read(self, i: int) -> tuple[str, int]:
        person = self.people[i % len(self.people)]
        pid = self.person_ids[person.nhs]
        api = self.clients["record_api"]
        kind = i % 4
        if kind == 0:
            answer = api.get("/fhir/Patient", params={"identifier": f"https://fhir.nhs.uk/Id/nhs-number|{person.nhs}"},
                             headers=self.clinician)
            if answer.status_code == 200 and len(answer.json().get("entry", [])) != 1:
                return "search-identifier", 0
            return "search-identifier", answer.status_code
        if kind == 1:
            return "everything", api.get(f"/fhir/Patient/{pid}/$everything", headers=self.clinician).status_code
        if kind == 2:
            return "search-condition", api.get("/fhir/Condition", params={"patient": pid},
                                               headers=self.clinician).status_code
        return "read-patient", api.get(f"/fhir/Patient/{pid}", headers=self.clinician).status_code

    def citizen(self, i: int) -> tuple[str, int]:
        number = list(self.citizens)[i % len(self.citizens)]
        path = "/consent/me" if i % 2 else "/consent/me/access-log"
        return "citizen", self.clients["consent"].get(path, headers=self.citizens[number]).status_code

    def admit(self, _i: int) -> tuple[str, int]:
        n = self._take("admission")
        person = self.people[n % len(self.people)]
        start = datetime(2025, 1, 1, 8, tzinfo=UTC) + timedelta(hours=n)
        for message in messages.admission(person, f"L{n:06d}", start):
            answer = self.clients["ingest"].post("/ingest/hl7v2", content=message.encode(), headers=self.acute)
            if answer.status_code != 200 or "MSA|AA" not in answer.text:
                return "hl7-admission", answer.status_code or 0
        with self._lock:
            self.admissions += 1
        return "hl7-admission", 200

    def event(self, _i: int) -> tuple[str, int]:
        n = self._take("event")
        person = self.people[n % len(self.people)]
        event = messages.socialcare_event(person, 1000 + n)
        self.producer.send(self.topic, key=person.nhs.encode(), value=json.dumps(event).encode()).get(timeout=30)
        with self._lock:
            self.events += 1
        return "socialcare-event", 200

    def bundle(self, _i: int) -> tuple[str, int]:
        n = self._take("bundle")
        person = messages.Person(100_000 + n, messages.nhs_numbers(1, start=999_600_000 + n * 7)[0])
        answer = self.clients["ingest"].post("/ingest/fhir", json=messages.gp_bundle(person, conditions=3),
                                             headers=self.gp)
        if answer.status_code == 200:
            with self._lock:
                self.bundles += 1
        return "gp-bundle", answer.status_code


def _seed(stack: Stack, signer: Signer, people: list[messages.Person]) -> None:
    headers = {"Authorization": f"Bearer {signer.feed(messages.GP_ODS)}"}
    with httpx.Client(base_url=stack.url("ingest"), timeout=60, headers=headers) as client:
        for person in people:
            answer = client.post("/ingest/fhir", json=messages.gp_bundle(person, conditions=3))
            if answer.status_code != 200:
                raise RuntimeError(f"seeding failed: {answer.status_code} {answer.text[:200]}")


def _counts(url: str) -> dict[str, int]:
    engine = create_db_engine(url, pool_size=1)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            def count(resource_type: str, org: str | None = None) -> int:
                query = select(func.count()).select_from(Resource).where(Resource.resource_type == resource_type)
                if org:
                    query = query.where(Resource.source_org == org)
                return session.scalar(query) or 0

            return {
                "encounters": count("Encounter", messages.ACUTE_ODS),
                "related_persons": count("RelatedPerson", messages.SOCIAL_CARE_ODS),
                "conditions": count("Condition", messages.GP_ODS),
                "persons": session.scalar(select(func.count()).select_from(Person)) or 0,
                "related_person_versions": session.scalar(select(func.count()).select_from(ResourceVersion).where(
                    ResourceVersion.resource_type == "RelatedPerson")) or 0,
                "audit_rows": session.scalar(select(func.count()).select_from(AuditEventRow).where(
                    AuditEventRow.actor_user == READER, AuditEventRow.outcome == "success")) or 0,
            }
    finally:
        engine.dispose()


def _memory_growth(samples: list[int]) -> float:
    """MiB between the settled level after warm-up (samples 20-35% of the way) and the end (the last 15%)."""
    if len(samples) < 8:
        return 0.0
    n = len(samples)
    settled = statistics.median(samples[int(n * 0.2):max(int(n * 0.35), int(n * 0.2) + 1)])
    end = statistics.median(samples[int(n * 0.85):])
    return round((end - settled) / 1024, 1)


def run(config: Config, *, database_url: str | None = None, kafka_bootstrap: str | None = None,
        log: Callable[[str], None] = print) -> Report:
    """One bounded load run; starts its own PostgreSQL and Kafka unless given them."""
    from kafka import KafkaProducer

    work = config.work_dir or Path(tempfile.mkdtemp(prefix="scr-load-"))
    report = Report(config={k: str(v) for k, v in asdict(config).items()},
                    started=datetime.now(UTC).isoformat(timespec="seconds"))
    peers: Peers | None = None
    if database_url is None or kafka_bootstrap is None:
        log("starting PostgreSQL and Kafka ...")
        peers = start_peers(work / "peers")
        database_url, kafka_bootstrap = peers.database_url, peers.kafka.bootstrap
    topic = f"socialcare.events.load-{uuid.uuid4().hex[:8]}"
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()
    signer = Signer(work / "keys")
    stack = Stack(database_url, kafka_bootstrap, signer.jwks_path, signer.issuer, signer.audience, work / "logs",
                  signer.system(), extra_env={"SCR_SOCIALCARE_TOPIC": topic, "SCR_SOCIALCARE_DLQ_TOPIC": f"{topic}.dlq",
                                              "SCR_CONSUMER_GROUP": f"ingest-{uuid.uuid4().hex[:8]}"})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    workload: Workload | None = None
    try:
        log("starting the services ...")
        stack.start()
        people = messages.people(config.people, start=999_500_000)
        log(f"seeding {len(people)} people ...")
        _seed(stack, signer, people)
        before = _counts(database_url)
        engine = create_db_engine(database_url, pool_size=1)
        with make_session_factory(engine)() as session:
            person_ids = {p.nhs: session.scalar(select(Person.id).where(Person.nhs_number == p.nhs)) for p in people}
        engine.dispose()
        workload = Workload(stack, signer, people, person_ids, producer, topic)
        _run_workers(config, workload, stack, report, log)
        producer.flush()
        report.sent = {"hl7_admissions": workload.admissions, "socialcare_events": workload.events,
                       "gp_bundles": workload.bundles}
        expected = {"encounters": before["encounters"] + workload.admissions,
                    "related_persons": before["related_persons"] + workload.events,
                    "conditions": before["conditions"] + 3 * workload.bundles}
        deadline = time.monotonic() + 180  # the consumer catches up with the last events
        while time.monotonic() < deadline and _counts(database_url)["related_persons"] < expected["related_persons"]:
            time.sleep(1)
        after = _counts(database_url)
        report.stored = {k: after[k] - before.get(k, 0) for k in ("encounters", "related_persons", "conditions")}
        report.audit_rows = after["audit_rows"]
        _verdict(report, config, expected, after)
    finally:
        if workload is not None:
            workload.close()
        producer.close(timeout=5)
        stack.stop()
        if peers is not None:
            peers.stop()
    return report


def _run_workers(config: Config, workload: Workload, stack: Stack, report: Report,
                 log: Callable[[str], None]) -> None:
    kinds: list[Callable[[int], tuple[str, int]]] = [workload.read] * config.readers + [workload.citizen]
    writers = [workload.admit, workload.event, workload.bundle]
    kinds += [writers[i % len(writers)] for i in range(config.writers + 2)]
    per_worker = max(1, config.operations // len(kinds))
    interval = config.duration / per_worker
    pids = {name: stack.pid(name) for name in ("ingest", "consent", "record_api")}
    report.memory_kib = {name: [] for name in pids}
    lock = threading.Lock()
    started = time.monotonic()
    stop = threading.Event()

    def worker(index: int, operation: Callable[[int], tuple[str, int]]) -> None:
        for i in range(per_worker):
            due = started + i * interval
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            try:
                name, status = operation(index * per_worker + i)
            except Exception as exc:  # counted as an error, never fatal to the run
                name, status = getattr(operation, "__name__", "op"), 0
                with lock:
                    if len(report.error_samples) < 20:
                        report.error_samples.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
            with lock:
                report.operations[name] += 1
                if name in ("search-identifier", "everything", "search-condition", "read-patient") and status == 200:
                    report.reads_ok += 1
                if status not in (200, 201):
                    report.errors[f"{name}:{status}"] += 1

    def sample_memory() -> None:
        while not stop.wait(2.0):
            for name, pid in pids.items():
                report.memory_kib[name].append(rss_kib(pid))

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=worker, args=(i, op), daemon=True) for i, op in enumerate(kinds)]
    log(f"running {per_worker * len(kinds)} operations over {config.duration:.0f}s with {len(threads)} workers ...")
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(config.duration * 3 + 120)
    stop.set()
    sampler.join(5)
    report.elapsed_seconds = round(time.monotonic() - started, 1)
    if any(thread.is_alive() for thread in threads):
        report.failures.append("workers did not finish within three times the planned duration")


def _verdict(report: Report, config: Config, expected: dict[str, int], after: dict[str, int]) -> None:
    if report.errors:
        report.failures.append(f"errors: {dict(report.errors)} {report.error_samples[:5]}")
    for name, samples in report.memory_kib.items():
        growth = _memory_growth(samples)
        report.memory_growth_mib[name] = growth
        if growth > config.memory_growth_limit_mib:
            report.failures.append(f"{name} memory grew {growth} MiB after warm-up (limit "
                                   f"{config.memory_growth_limit_mib})")
    if report.audit_rows != report.reads_ok:
        report.failures.append(f"audit: {report.reads_ok} successful reads but {report.audit_rows} AuditEvents")
    for key in ("encounters", "related_persons", "conditions"):
        if after[key] != expected[key]:
            report.failures.append(f"{key}: expected {expected[key]} stored, found {after[key]}")
    if after["related_person_versions"] != after["related_persons"]:
        report.failures.append("a social-care event was applied twice")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds the operations are spread over")
    parser.add_argument("--operations", type=int, default=6000, help="how many operations in all")
    parser.add_argument("--people", type=int, default=200, help="people seeded before the run")
    parser.add_argument("--memory-growth-limit-mib", type=float, default=40.0)
    parser.add_argument("--report", type=Path, default=Path("var/load/report.json"))
    args = parser.parse_args(argv)
    config = Config(duration=args.duration, operations=args.operations, people=args.people,
                    memory_growth_limit_mib=args.memory_growth_limit_mib)
    report = run(config)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report.as_json(), indent=2, default=str))
    print(json.dumps({k: v for k, v in report.as_json().items() if k != "memory_kib"}, indent=2, default=str))
    print(f"{'PASS' if report.ok else 'FAIL'}: report in {args.report}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
