"""docs/BENCHMARKS.md from one run's results: the machine, the command, every figure with its same-run baseline
ratio, the targets, the scale-out and the sizing for a 3-million-person ICS (arithmetic shown). The profiler
findings are written by people, in tools/bench/FINDINGS.md, and included as they are."""

from __future__ import annotations

import math
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from tools.bench.reads import Latency
from tools.bench.runner import Checkpoint, Results

FINDINGS = Path(__file__).with_name("FINDINGS.md")
TIMES = "\N{MULTIPLICATION SIGN}"
TARGETS = {"ingest": 10_000.0, "everything_p95": 25.0, "search_p95": 5.0, "decision_ms": 1.0, "change_ms": 1000.0,
           "rss_mb": 300.0}
EXPORT_RSS_GROWTH = 0.25
# Sizing assumptions for the 3-million-person ICS (stated, not measured; see the section's text).
ICS_PEOPLE = 3_000_000
RESOURCES_PER_PERSON = 300
DAILY_VERSIONS = {"GP (2% of people seen a day, ~8 resources each)": 3_000_000 * 0.02 * 8,
                  "acute ADT (~30,000 messages a day, ~4 versions each)": 30_000 * 4,
                  "community (~15,000 contacts a day, ~2 versions each)": 15_000 * 2,
                  "social care (~6,000 events a day, ~2.5 versions each)": 6_000 * 2.5}
PEAK_FACTOR = 5
INITIAL_LOAD_DAYS = 7


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal")), 0)
    os_name = next((line.split("=", 1)[1].strip('"') for line in _read("/etc/os-release").splitlines()
                    if line.startswith("PRETTY_NAME")), platform.system())
    return {"CPU": cpu, "cores": str(os.cpu_count()), "RAM": f"{mem_kb / 2**20:.1f} GiB",
            "OS": f"{os_name}, kernel {platform.release()}"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.1f}"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.1f}{TIMES}" if base else "n/a"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render(results: Results, command: str) -> str:
    parts = [_head(results, command), _summary(results)]
    for point in results.checkpoints:
        parts += [_ingest(point), _reads(point), _consent(point), _export(point, results)]
    if results.scale is None:
        parts.append("## Scale-out and sizing\n\n*Not measured yet: the run is still going (or stopped before).*\n")
        return "\n".join([*parts, _memory(results), FINDINGS.read_text().strip() + "\n"])
    parts += [_memory(results), _scale(results), _sizing(results), FINDINGS.read_text().strip() + "\n"]
    return "\n".join(parts)


def _head(results: Results, command: str) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in (machine() | results.versions).items())
    sizes = " and ".join(f"{c:,}" for c in results.options.checkpoints)
    return f"""# Benchmarks

Written by `make bench` (`python -m tools.bench`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; the whole run took
{results.wall_seconds / 60:.1f} minutes. Every figure below comes from that one run, measured at {sizes} stored
resources, against real PostgreSQL and a real Kafka broker started by the harness, with the three services running
as separate processes. Each figure is given as a ratio to a baseline measured in the same run, because the machine
is shared and noisy: compare ratios across runs, not absolute numbers.

**Command:** `{command}`

| machine / software | |
|---|---|
{rows}

Rerun: `make bench` (100k resources, about 15 minutes) or `make bench BENCH_RESOURCES=1000000` (1M: measures at
100k and at 1M in one run); `make bench BENCH_ARGS=--quick` for a smoke run at 2,000 resources.
"""


def _summary(results: Results) -> str:
    last = results.checkpoints[-1]
    ingest = max(f.rate for f in last.feeds)
    everything = next(a for a, _ in last.reads if a.what == "$everything" and a.clients == 8)
    search = max(a.pct(0.95) for a, _ in last.reads if a.what.startswith("Patient search") and a.clients == 8)
    decision = last.decisions[0].pct(0.95)
    change = max(last.change.delays_ms) if last.change else float("nan")
    rss = max(stage.get(name, 0.0) for stage in results.rss.values() for name in ("ingest", "consent", "record_api"))
    rows = [("ingest ≥ 10,000 resources/s (best feed)", f"{ingest:,.0f}/s", ingest >= TARGETS["ingest"]),
            ("`$everything` p95 ≤ 25 ms, 8 clients", f"{everything.pct(0.95):.1f} ms",
             everything.pct(0.95) <= TARGETS["everything_p95"]),
            ("NHS number search p95 ≤ 5 ms, 8 clients", f"{search:.1f} ms", search <= TARGETS["search_p95"]),
            ("consent decision ≤ 1 ms in-process (p95)", f"{decision:.3f} ms", decision <= TARGETS["decision_ms"]),
            ("consent change effective on the next read ≤ 1 s (worst)", f"{change:.0f} ms",
             change <= TARGETS["change_ms"]),
            ("no service above 300 MB RSS", f"{rss:.0f} MB", rss <= TARGETS["rss_mb"]),
            _export_target(results)]
    table = "\n".join(f"| {name} | {value} | {_met(ok)} |" for name, value, ok in rows)
    return f"""## Targets at {last.stored:,} stored resources

| target | measured | |
|---|---|---|
{table}
"""


def _export_target(results: Results) -> tuple[str, str, bool]:
    """The bulk export finishes at every checkpoint, and the record API's peak during it grows by at most
    EXPORT_RSS_GROWTH from the first checkpoint's export to the last (flat memory, issue 9)."""
    name = f"bulk export finishes; record API RSS during it grows ≤ {EXPORT_RSS_GROWTH:.0%} between checkpoints"
    peaks = [results.rss.get(f"export at {p.target:,}", {}).get("record_api", 0.0) for p in results.checkpoints]
    finished = all(p.export is not None and not p.export.error for p in results.checkpoints)
    if not finished or not all(peaks):
        return name, "did not finish", False
    growth = peaks[-1] / peaks[0] - 1
    return name, " → ".join(f"{peak:.0f} MB" for peak in peaks) + f" ({growth:+.0%})", growth <= EXPORT_RSS_GROWTH


def _ingest(point: Checkpoint) -> str:
    copy = point.copy
    assert copy is not None
    rows = "\n".join(f"| {f.feed} | {f.messages:,} | {f.versions:,} | {f.seconds:.1f} | {f.rate:,.0f} | "
                     f"{f.rate / copy.rate:.3f} ({copy.rate / f.rate:.0f}{TIMES} slower) | {f.refused} |"
                     for f in point.feeds)
    total_v = sum(f.versions for f in point.feeds)
    total_s = sum(f.seconds for f in point.feeds)
    total_rate = total_v / total_s if total_s else 0.0
    copied = f"{copy.versions:,} ({copy.rows:,} rows, {copy.megabytes:,.0f} MB)"
    return f"""## Ingest, phase ending at {point.target:,} resources

Stored after the phase: {point.stored:,} resources ({point.versions:,} versions), {point.persons:,} persons,
database {point.database_mb:,.0f} MB; {point.preferences} citizens' objections and opt-outs recorded through the
consent service. Resource versions committed per second, end to end (sent → archived raw → validated → linked →
labelled → stored with versions, search rows and Provenance → answered/committed).

| feed | messages | versions | seconds | versions/s | ratio to COPY | refused |
|---|---|---|---|---|---|---|
{rows}
| **all feeds** | | {total_v:,} | {total_s:.1f} | {total_rate:,.0f} | {total_rate / copy.rate:.3f} | |
| *baseline: binary COPY of the same rows* | | {copied} | {copy.seconds:.2f} | {copy.rate:,.0f} | 1 | |
"""


def _reads(point: Checkpoint) -> str:
    rows = []
    for api, sql in point.reads:
        rows.append(f"| {api.what} | {api.clients} | {_ms(api.p50)} | {_ms(api.pct(0.95))} | {_ms(api.pct(0.99))} | "
                    f"{api.rps:,.0f} | {api.errors} | {_ms(sql.p50)} / {_ms(sql.pct(0.95))} | {sql.rps:,.0f} | "
                    f"{_ratio(api.pct(0.95), sql.pct(0.95))} |")
    return f"""### Reads at {point.target:,} resources (consent enforcement on, every read audited)

`$everything` returns the whole record in one page (`_count=1000`; {point.everything_size} entries for the first
subject, {point.everything_persons} long-record subjects in rotation); the search is
`Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|N` over up to 500 people. The baseline is the bare SQL that
fetches the same rows (bodies as text) with the same number of concurrent clients. Latencies in ms.

| request | clients | p50 | p95 | p99 | req/s | errors | bare SQL p50 / p95 | SQL req/s | p95 ratio |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


def _latency_row(item: Latency, base: Latency) -> str:
    return (f"| {item.what} | {len(item.samples):,} | {_ms(item.p50)} | {_ms(item.pct(0.95))} | "
            f"{_ms(item.pct(0.99))} | {base.what} | {_ms(base.p50)} | {_ratio(item.p50, base.p50)} |")


def _consent(point: Checkpoint) -> str:
    hot, cold, sql = point.decisions
    http, health = point.http_decisions
    change = point.change
    assert change is not None
    delays = sorted(change.delays_ms)
    kafka = sorted(change.kafka_round_trip_ms)
    return f"""### Consent at {point.target:,} resources

| what | n | p50 ms | p95 ms | p99 ms | baseline | baseline p50 ms | p50 ratio |
|---|---|---|---|---|---|---|---|
{_latency_row(hot, sql)}
{_latency_row(cold, sql)}
{_latency_row(http, health)}

**A citizen's change → the next record read.** {change.trials} changes (objection on, then off, ...) through
`PUT /consent/me`, each followed by `$everything` reads as an acute-trust clinician until the answer changed
(objection: only the trust's own items). Delay from the PUT's answer to the first read showing the change:
median {delays[len(delays) // 2]:.0f} ms, worst {delays[-1]:.0f} ms; the very next read already showed it
{change.next_read_effective} of {change.trials} times. Baseline: a Kafka produce → consume round trip (the
transport `consent.changed` rides on), median {kafka[len(kafka) // 2]:.1f} ms, worst {kafka[-1]:.1f} ms (median
ratio {_ratio(delays[len(delays) // 2], kafka[len(kafka) // 2])}).
"""


def _export(point: Checkpoint, results: Results) -> str:
    result = point.export
    if result is None:
        return ""
    if result.error:
        return f"### Bulk export at {point.target:,} resources\n\n**Failed:** {result.error}\n"
    rss = results.rss.get(f"export at {point.target:,}", {}).get("record_api", 0.0)
    idle = results.rss.get("idle", {}).get("record_api", 0.0)
    types = ", ".join(f"{name} {count:,}" for name, count in sorted(result.by_type.items()))
    return f"""### Bulk export at {point.target:,} resources

A system-level `$export` (`Prefer: respond-async`) through the record API's background worker: every person with
the National Data Opt-out or an objection left out, sensitive items removed, identifiers pseudonymised; then every
file downloaded. Baseline: a raw `COPY (SELECT body FROM resource ...) TO STDOUT` of the same store's exportable
rows in the same run (no exclusions, no de-identification, no Patient built per person).

| what | resources | files | seconds | resources/s | ratio to COPY | record API peak RSS |
|---|---|---|---|---|---|---|
| kick-off → manifest | {result.resources:,} | {result.files} | {result.job_seconds:.1f} | {result.rate:,.0f} | \
{_ratio(result.rate, result.copy_rate)} | {rss:.0f} MB (idle {idle:.0f} MB) |
| download all files | {result.downloaded:,} lines | | {result.download_seconds:.1f} | \
{result.downloaded / max(result.download_seconds, 1e-9):,.0f} | | |
| *baseline: raw COPY out* | {result.copy_rows:,} rows | | {result.copy_seconds:.2f} | {result.copy_rate:,.0f} | 1 | |

Exported by type: {types}. Downloaded lines {"equal" if result.downloaded == result.resources else "**differ from**"}
the manifest's counts.
"""


def _memory(results: Results) -> str:
    names = ("ingest", "consent", "record_api", "ingest-2")
    rows = "\n".join(f"| {stage} | " + " | ".join(f"{peaks[n]:.0f}" if n in peaks else "" for n in names) + " |"
                     for stage, peaks in results.rss.items())
    return f"""## Memory (peak RSS in MB per stage; baseline: the `idle` row, just after start)

| stage | {' | '.join(names)} |
|---|---|---|---|---|
{rows}
"""


def _scale(results: Results) -> str:
    scale = results.scale
    assert scale is not None
    speedup = f"{scale.speedup:.2f}{TIMES}"
    members = "\n".join(f"| `{member}` | {', '.join(map(str, parts))} |" for member, parts in scale.assignment.items())
    return f"""## Scale-out: two ingest workers in one consumer group

`socialcare.events` has 4 partitions. A fresh batch of {scale.one.messages:,} social-care events went to the
running ingest service alone; then a second ingest process joined consumer group `ingest` on the same machine and
another {scale.two.messages:,} events of the same shape were sent.

| workers | events | versions | seconds | versions/s | ratio to one worker |
|---|---|---|---|---|---|
| 1 | {scale.one.messages:,} | {scale.one.versions:,} | {scale.one.seconds:.1f} | {scale.one.rate:,.0f} | 1 |
| 2 | {scale.two.messages:,} | {scale.two.versions:,} | {scale.two.seconds:.1f} | {scale.two.rate:,.0f} | {speedup} |

Partition assignment with two workers:

| member | partitions |
|---|---|
{members}
"""


def _sizing(results: Results) -> str:
    last = results.checkpoints[-1]
    bytes_per = last.database_mb * 2**20 / max(1, last.stored)
    mixed = sum(f.versions for f in last.feeds) / max(1e-9, sum(f.seconds for f in last.feeds))
    scale = results.scale
    per_worker = scale.two.rate / 2 if scale else mixed
    total = ICS_PEOPLE * RESOURCES_PER_PERSON
    daily = sum(DAILY_VERSIONS.values())
    peak = daily / 86_400 * PEAK_FACTOR
    load_rate = total / (INITIAL_LOAD_DAYS * 86_400)
    workers = math.ceil(load_rate / mixed)
    db_tb = total * bytes_per / 2**40
    year_gb = daily * 365 * bytes_per / 2**30
    daily_rows = "\n".join(f"| {name} | {value:,.0f} |" for name, value in DAILY_VERSIONS.items())
    return f"""## What an ICS of 3 million people would need

Measured here (last checkpoint): {bytes_per:,.0f} bytes of database per stored resource (everything: current
rows, versions, search rows, raw archive, person index, audit, indexes: {last.database_mb:,.0f} MB /
{last.stored:,}); {mixed:,.0f} versions/s for one ingest process over the feed mix; {per_worker:,.0f} versions/s
per worker when two share the social-care topic.

Assumed (not measured): {RESOURCES_PER_PERSON} resources per person once history is loaded (the synthetic
population averages {last.stored / max(1, last.persons):.0f}; a real GP record holds hundreds of coded items), and
this daily change volume:

| feed | resource versions a day |
|---|---|
{daily_rows}
| **total** | **{daily:,.0f}** |

* **Resources:** {ICS_PEOPLE:,} {TIMES} {RESOURCES_PER_PERSON} = **{total:,}**.
* **Database:** {total:,} {TIMES} {bytes_per:,.0f} B = **{db_tb:.2f} TiB**, growing
  {daily:,.0f} {TIMES} 365 {TIMES} {bytes_per:,.0f} B = **{year_gb:,.0f} GiB a year** (before versions pile up on
  frequently updated records). That is past one comfortable PostgreSQL primary for `$everything` latency: Citus
  with `person_id` as distribution column (DESIGN.md).
* **Daily feeds:** {daily:,.0f} versions a day = {daily / 86_400:.1f}/s on average, ~{peak:.0f}/s in a peak hour
  ({TIMES}{PEAK_FACTOR}): one ingest worker at {mixed:,.0f}/s has {mixed / peak:.0f}{TIMES} headroom; run **2** for
  availability.
* **Initial load** in {INITIAL_LOAD_DAYS} days: {total:,} / ({INITIAL_LOAD_DAYS} {TIMES} 86,400 s) = {load_rate:,.0f}/s
  → {load_rate:,.0f} / {mixed:,.0f} = **{workers} ingest workers** at this machine's per-worker rate (each with its
  own cores; the database, not the workers, then sets the pace: the COPY baseline here was
  {last.copy.rate if last.copy else 0:,.0f} versions/s on two shared cores).
* **Partitions:** at least the largest worker count, with room to grow without re-keying: **{max(12, 2 * workers)}**
  partitions for `socialcare.events` and `record.changed` (keyed by person, so a person's events stay ordered).
"""


def write(results: Results, command: str, out: Path) -> None:
    out.write_text(render(results, command))
