"""Population health from the command line, with the record API's settings (SCR_ environment variables):

    python -m services.record_api.population.cli aggregates --dimension age_band,deprivation_decile
    python -m services.record_api.population.cli export --recipient planning-team --organisation QWO --out DIR

`aggregates` prints the suppressed tables (JSON or CSV). `export` runs one export synchronously in this process
(no worker, no HTTP), exactly as a replica's worker would, and prints what it wrote: counts per type, files,
elapsed seconds and peak resident memory, which is what the benchmark measures. Both fetch the secondary-use
exclusions from the consent service first and fail (exit 1) rather than go on without them; both are audited.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import resource
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from services.record_api.population import delivery, store
from services.record_api.population.aggregates import MEASURES, parse_dimensions
from services.record_api.population.api import PATIENT_TYPES, PURPOSES, SYSTEM_ONLY_TYPES
from services.record_api.population.models import ExportJob
from services.record_api.population.service import Population
from services.record_api.settings import RecordApiSettings
from shared.audit import AuditRecord, write_audit
from shared.auth import ConfigurationError, Principal
from shared.db import create_db_engine, make_session_factory
from shared.errors import ScrError
from shared.ods import normalise as normalise_ods


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.record_api.population.cli",
                                     description="Population health: aggregates and bulk export")
    commands = parser.add_subparsers(dest="command", required=True)
    aggregates = commands.add_parser("aggregates", help="suppressed counts by one or two dimensions")
    aggregates.add_argument("--dimension", default="age_band", help="one or two of the dimensions, comma-separated")
    aggregates.add_argument("--format", choices=("json", "csv"), default="json")
    aggregates.add_argument("--date", help="the day ages are worked out on (YYYY-MM-DD; default today)")
    export = commands.add_parser("export", help="run one bulk export now and report what it wrote")
    export.add_argument("--recipient", required=True, help="the recipient (pseudonyms are keyed to it)")
    export.add_argument("--level", choices=("system", "patient", "group"), default="system")
    export.add_argument("--group", help="for --level group: practice-<ODS>")
    export.add_argument("--type", help="comma-separated resource types (default: every exportable type)")
    export.add_argument("--since", help="only resources changed after this instant (ISO 8601)")
    export.add_argument("--out", help="also write the NDJSON files into this directory")
    for sub in (aggregates, export):
        sub.add_argument("--purpose", choices=PURPOSES, default="HOPERAT")
        sub.add_argument("--organisation", help="the recipient's ODS code (people who denied it are left out)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = RecordApiSettings()
        population = Population(settings)
    except ConfigurationError as exc:
        print(f"population: cannot start: {exc}", file=sys.stderr)
        return 2
    engine = create_db_engine(settings.database_url)
    population.bind(make_session_factory(engine))
    try:
        return _aggregates(population, args) if args.command == "aggregates" else _export(population, args)
    except ScrError as exc:
        print(f"population: {exc.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _principal(subject: str, organisation: str | None) -> Principal:
    # As a token's ods_code is (shared.auth): the recipient's pseudonyms and its jobs are keyed by the code.
    return Principal("system", subject, ods_code=normalise_ods(organisation) if organisation else None)


def _aggregates(population: Population, args: argparse.Namespace) -> int:
    breakdown = parse_dimensions(args.dimension)
    today = date.fromisoformat(args.date) if args.date else datetime.now(UTC).date()
    table = population.aggregates(purpose=args.purpose, organisation=args.organisation, breakdowns=[breakdown],
                                  today=today)[0]
    with population.sessions.begin() as session:
        write_audit(session, AuditRecord(service="record_api", action="export", outcome="success",
                                         principal=_principal(f"cli:{getpass.getuser()}", args.organisation),
                                         purpose=args.purpose,
                                         description=f"population aggregates by {' x '.join(breakdown)} (CLI)"))
    if args.format == "json":
        print(json.dumps({"purpose": args.purpose, "reference_date": today.isoformat(), **table}, indent=2))
    else:
        _write_csv(table)
    return 0


def _write_csv(table: dict[str, Any]) -> None:
    dimensions = table["dimensions"]
    writer = csv.writer(sys.stdout)
    writer.writerow([*dimensions, *MEASURES])
    cells = {m: table["measures"][m]["cells"] for m in MEASURES}
    for index, cell in enumerate(cells[MEASURES[0]]):
        counts = [cells[m][index]["count"] for m in MEASURES]
        writer.writerow([cell[d] for d in dimensions] + ["suppressed" if c is None else c for c in counts])


def _export(population: Population, args: argparse.Namespace) -> int:
    types = [t.strip() for t in args.type.split(",")] if args.type else \
        list(PATIENT_TYPES + (SYSTEM_ONLY_TYPES if args.level == "system" else ()))
    since = datetime.fromisoformat(args.since.replace("Z", "+00:00")) if args.since else None
    request = store.JobRequest(args.level, args.group, types, since, args.purpose, args.recipient, args.organisation,
                               f"cli:export {' '.join(sys.argv[1:])}"[:2000])
    with population.sessions.begin() as session:
        job_id = population.queue_export(session, request).id
    worker = f"cli-{getpass.getuser()}"
    if not store.claim(population.sessions, job_id, worker):
        print("population: the job was claimed by a running record API worker", file=sys.stderr)
        return 1
    started = time.perf_counter()
    status = population.runner().run(job_id, worker)
    report = _report(population, job_id, status, time.perf_counter() - started)
    if args.out and status == store.COMPLETED:
        _write_files(population, job_id, Path(args.out), report["files"])
    print(json.dumps(report, indent=2))
    return 0 if status == store.COMPLETED else 1


def _report(population: Population, job_id: str, status: str, elapsed: float) -> dict[str, Any]:
    with population.sessions() as session:
        job = session.get(ExportJob, job_id)
        files = store.output_files(session, job_id)
        counts, error = (job.counts, job.error) if job else ({}, None)
    return {"job": job_id, "status": status, "error": error, "elapsed_seconds": round(elapsed, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "resources": counts.get("resources", {}), "skipped": counts.get("skipped", {}),
            "files": [{"name": f.name, "type": f.resource_type, "count": f.count} for f in files]}


def _write_files(population: Population, job_id: str, out: Path, files: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for entry in files:
        part = int(entry["name"].rsplit("-", 1)[1].split(".")[0])
        with (out / entry["name"]).open("wb") as handle:
            for chunk in delivery.deliver(store.read_file(population.sessions, job_id, entry["type"], part),
                                          delivery.everything):
                handle.write(chunk)


if __name__ == "__main__":
    raise SystemExit(main())
