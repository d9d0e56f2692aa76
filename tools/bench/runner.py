"""One benchmark run: the population ingested phase by phase (each phase ends at a checkpoint size, e.g. 100k
then 1M stored resources), and at each checkpoint the reads, consent figures and memory measured; then the
scale-out. Every figure is kept with its same-run baseline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tools.bench import baseline, consent, export, feeds, reads, scaleout
from tools.bench.environment import Environment
from tools.bench.memory import RssSampler
from tools.synth import ics


@dataclass
class Options:
    resources: int
    seed: int = ics.DEFAULT_SEED
    seconds: float = 8.0  # per load level and client count
    decisions: int = 20_000
    change_trials: int = 10
    scale_events: int = 2000
    quick: bool = False

    @property
    def checkpoints(self) -> list[int]:
        return sorted({min(100_000, self.resources), self.resources})


@dataclass
class Checkpoint:
    target: int
    persons: int = 0
    stored: int = 0
    versions: int = 0
    database_mb: float = 0.0
    feeds: list[feeds.FeedResult] = field(default_factory=list)
    copy: baseline.CopyBaseline | None = None
    preferences: int = 0
    everything_size: int = 0
    everything_persons: int = 0
    reads: list[tuple[reads.Latency, reads.Latency]] = field(default_factory=list)
    decisions: tuple[reads.Latency, ...] = ()
    http_decisions: tuple[reads.Latency, ...] = ()
    change: consent.ChangeEffect | None = None
    export: export.ExportResult | None = None


@dataclass
class Results:
    options: Options
    checkpoints: list[Checkpoint] = field(default_factory=list)
    scale: scaleout.ScaleOut | None = None
    rss: dict[str, dict[str, float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0


def phases(people: list[ics.Planned], checkpoints: list[int]) -> list[list[ics.Planned]]:
    """The population cut where the running estimate passes each checkpoint."""
    out: list[list[ics.Planned]] = []
    current: list[ics.Planned] = []
    total, targets = 0, list(checkpoints)
    for planned in people:
        current.append(planned)
        total += planned.profile.estimate()
        if targets and total >= targets[0]:
            out.append(current)
            current, targets = [], targets[1:]
    if current and out:
        out[-1].extend(current)
    elif current:
        out.append(current)
    return out


def run(env: Environment, options: Options, on_checkpoint: Callable[[Results], None] | None = None) -> Results:
    started = time.perf_counter()
    results = Results(options, versions=software_versions(env))
    people = ics.plan(options.resources, options.seed)
    env.start_services()
    sampler = RssSampler(env.services).start()
    try:
        stored: list[ics.Planned] = []
        for target, phase in zip(options.checkpoints, phases(people, options.checkpoints), strict=False):
            stored += phase
            results.checkpoints.append(_checkpoint(env, options, sampler, target, phase, stored))
            results.rss, results.wall_seconds = sampler.peaks, time.perf_counter() - started
            if on_checkpoint:
                on_checkpoint(results)
        sampler.stage = "scale-out"
        results.scale = scaleout.measure(env, options.scale_events, options.seed + 1)
    finally:
        sampler.stop()
    results.rss = sampler.peaks
    results.wall_seconds = time.perf_counter() - started
    return results


def _checkpoint(env: Environment, options: Options, sampler: RssSampler, target: int, phase: list[ics.Planned],
                stored: list[ics.Planned]) -> Checkpoint:
    point = Checkpoint(target)
    sampler.stage = f"ingest to {target:,}"
    since = baseline.db_now(env.dsn)
    _say(f"ingesting {len(phase)} people towards {target:,} resources")
    for drive in (feeds.gp_fhir, feeds.hl7_mllp, feeds.community_csv, feeds.social_care):
        result = drive(env, phase)
        _say(f"  {result.feed}: {result.versions} versions in {result.seconds:.1f}s = {result.rate:.0f}/s")
        point.feeds.append(result)
    _analyze(env)
    point.copy = baseline.measure(env.dsn, since)
    point.preferences = feeds.record_preferences(env, phase)
    _census(env, point, stored)
    sampler.stage = f"reads at {target:,}"
    _reads(env, options, point, stored)
    sampler.stage = f"consent at {target:,}"
    _consent(env, options, point, stored)
    sampler.stage = f"export at {target:,}"
    point.export = export.measure(env)
    _say(f"  export: {point.export.resources:,} resources in {point.export.job_seconds:.1f}s "
         f"= {point.export.rate:,.0f}/s {point.export.error}")
    return point


def _analyze(env: Environment) -> None:
    """Fresh planner statistics after a bulk load, as autovacuum would give them a little later."""
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")


def _census(env: Environment, point: Checkpoint, stored: list[ics.Planned]) -> None:
    with psycopg.connect(env.dsn) as conn:
        point.stored = int(conn.execute("SELECT count(*) FROM resource").fetchone()[0])  # type: ignore[index]
        point.versions = int(conn.execute("SELECT count(*) FROM resource_version").fetchone()[0])  # type: ignore[index]
        point.persons = int(conn.execute("SELECT count(*) FROM person").fetchone()[0])  # type: ignore[index]
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        point.database_mb = size / 2**20
    _say(f"  stored {point.stored:,} resources ({point.versions:,} versions), {point.persons:,} persons")


def person_ids(env: Environment, numbers: list[str]) -> dict[str, str]:
    with psycopg.connect(env.dsn) as conn:
        rows = conn.execute("SELECT nhs_number, id FROM person WHERE nhs_number = ANY(%s) AND status = 'active'",
                            (numbers,)).fetchall()
    return {number: person_id for number, person_id in rows}


def _reads(env: Environment, options: Options, point: Checkpoint, stored: list[ics.Planned]) -> None:
    heavy = [p.nhs_number for p in ics.heavy(stored) if p.nhs_number]
    ids = list(person_ids(env, heavy).values())
    searchable = [p.person.nhs_number for p in stored if p.person.nhs_number and p.person.verified
                  and p.profile.admissions and not p.person.objects][:500]
    point.everything_persons = len(ids)
    point.everything_size = reads.everything_size(env, ids[0])
    for clients in reads.CONCURRENCY:
        point.reads.append(reads.everything(env, ids, clients, options.seconds))
        point.reads.append(reads.nhs_search(env, searchable, clients, options.seconds))
        _say(f"  reads at {clients} clients: $everything p95 {point.reads[-2][0].pct(0.95):.1f} ms, "
             f"search p95 {point.reads[-1][0].pct(0.95):.1f} ms")


def _consent(env: Environment, options: Options, point: Checkpoint, stored: list[ics.Planned]) -> None:
    numbers = [p.person.nhs_number for p in stored if p.person.nhs_number][:2000]
    pairs = list(person_ids(env, numbers).items())
    point.decisions = consent.in_process(env, pairs, options.decisions)
    point.http_decisions = consent.over_http(env, pairs, max(200, options.decisions // 10))
    subject = next(p.person for p in stored if p.person.nhs_number and p.person.verified and p.profile.admissions
                   and not p.person.objects and not p.person.heavy and not p.person.national_opt_out)
    subject_id = person_ids(env, [subject.nhs_number or ""])[subject.nhs_number or ""]
    point.change = consent.change_to_effect(env, subject.nhs_number or "", subject_id, options.change_trials)
    _say(f"  consent: in-process p95 {point.decisions[0].pct(0.95):.3f} ms, HTTP p95 "
         f"{point.http_decisions[0].pct(0.95):.1f} ms, change effective in max {max(point.change.delays_ms):.0f} ms")


def software_versions(env: Environment) -> dict[str, Any]:
    import platform
    from importlib.metadata import version

    from tools.peers.kafka import KAFKA_LIB

    with psycopg.connect(env.dsn) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        durability = ", ".join(f"{name} {conn.execute(f'SHOW {name}').fetchone()[0]}"  # type: ignore[index]
                               for name in ("fsync", "synchronous_commit", "shared_buffers"))
    kafka = next((j.name.removeprefix("kafka_2.13-").removesuffix(".jar") for j in KAFKA_LIB.glob("kafka_2.13-*.jar")),
                 "?")
    return {"Python": platform.python_version(), "PostgreSQL": postgres, "PostgreSQL settings": durability,
            "Apache Kafka (KRaft)": kafka,
            **{name: version(name) for name in ("fastapi", "uvicorn", "sqlalchemy", "psycopg", "fhir.resources",
                                                 "kafka-python", "pydantic")}}


def _say(text: str) -> None:
    print(text, flush=True)
