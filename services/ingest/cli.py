"""Operator commands for ingest, run against SCR_DATABASE_URL (and Kafka when configured):

    python -m services.ingest.cli list [--status failed|unfinished|...] [--limit 50]
    python -m services.ingest.cli retry RAW_ID [RAW_ID ...]
    python -m services.ingest.cli retry --all-failed          # failed and unfinished messages
    python -m services.ingest.cli reviews [--status open]
    python -m services.ingest.cli review REVIEW_ID link|reject --reviewer USER_ID
    python -m services.ingest.cli undo-merge MERGE_ID
    python -m services.ingest.cli replay --since 2026-12-01T00:00Z [--until ...] [--channel hl7v2] [--dry-run]
    python -m services.ingest.cli reindex [--type Observation]
    python -m services.ingest.cli relabel [--dry-run]

Each prints one JSON object per line; exit status 1 if anything asked for could not be done. The long ones
(reindex, relabel) report their progress on stderr and their totals on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from services.ingest import maintenance
from services.ingest.labelling import load_code_lists
from services.ingest.service import UNFINISHED, Outcome, Pipeline
from services.ingest.settings import IngestSettings
from shared.db import create_db_engine, make_session_factory
from shared.errors import ScrError
from shared.events import create_event_bus
from shared.observability import configure_logging

_PROGRESS_EVERY = 10_000  # resources between progress lines
STATUSES = ["received", "processed", "failed", "rejected"]
CHANNELS = ["fhir", "hl7v2", "mllp", "community", "socialcare"]


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.ingest.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="archived raw messages, newest first")
    listing.add_argument("--status", choices=[*STATUSES, UNFINISHED],
                         help="unfinished: still received SCR_RAW_UNFINISHED_AFTER_SECONDS after arrival")
    listing.add_argument("--limit", type=int, default=50)
    retry = commands.add_parser("retry", help="process archived messages again")
    retry.add_argument("raw_ids", nargs="*")
    retry.add_argument("--all-failed", action="store_true",
                       help="every message whose processing failed, or was cut off (unfinished)")
    reviews = commands.add_parser("reviews", help="possible matches and their explanations")
    reviews.add_argument("--status", default="open", choices=["open", "linked", "rejected"])
    reviews.add_argument("--limit", type=int, default=50)
    review = commands.add_parser("review", help="decide a possible match")
    review.add_argument("review_id")
    review.add_argument("decision", choices=["link", "reject"])
    review.add_argument("--reviewer", required=True)
    undo = commands.add_parser("undo-merge", help="undo an A40 merge")
    undo.add_argument("merge_id")
    replay = commands.add_parser("replay", help="process again every archived message received in a period, "
                                                "oldest first, whatever became of it (after a mapping fix)")
    replay.add_argument("--since", required=True, type=_moment, help="ISO 8601; a time without a zone is UTC")
    replay.add_argument("--until", type=_moment, help="ISO 8601, exclusive; default: now")
    replay.add_argument("--channel", action="append", choices=CHANNELS, help="only these channels (repeatable)")
    replay.add_argument("--status", action="append", choices=STATUSES, help="only messages now in these states "
                                                                            "(repeatable; default: every state)")
    replay.add_argument("--dry-run", action="store_true", help="list the messages, process none")
    reindex = commands.add_parser("reindex", help="rebuild the search rows from the stored bodies")
    reindex.add_argument("--type", dest="resource_type", help="only resources of this type")
    relabel = commands.add_parser("relabel", help="add the labels the current code lists give to stored records")
    relabel.add_argument("--dry-run", action="store_true", help="count what would change, change nothing")
    return parser


def _print(item: dict[str, Any]) -> None:
    print(json.dumps(item, default=str), flush=True)


def _progress(report: dict[str, Any]) -> None:
    if report["resources"] % _PROGRESS_EVERY < maintenance.BATCH:
        print(json.dumps(report), file=sys.stderr, flush=True)


def run(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Carry out one command; the exit status."""
    if args.command == "replay":
        return _replay(args, pipeline)
    if args.command == "reindex":
        _print(maintenance.reindex(pipeline.sessions, resource_type=args.resource_type, progress=_progress).as_dict())
        return 0
    if args.command == "relabel":
        code_lists = load_code_lists(pipeline.settings.label_code_lists)
        _print(maintenance.relabel(pipeline.sessions, code_lists, dry_run=args.dry_run, progress=_progress).as_dict())
        return 0
    if args.command == "list":
        for item in pipeline.list_raw(args.status, args.limit):
            _print(item)
        return 0
    if args.command == "reviews":
        for item in pipeline.list_reviews(args.status, args.limit):
            _print(item)
        return 0
    if args.command == "retry":
        return _retry(args, pipeline)
    if args.command == "review":
        changes = pipeline.admin_change("review", review_id=args.review_id, decision=args.decision,
                                        reviewer=args.reviewer)
    else:
        changes = pipeline.admin_change("undo-merge", merge_id=args.merge_id)
    _print({"command": args.command, "changes": len(changes)})
    return 0


def _retry(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Named messages, then with --all-failed every failed one and every unfinished one. An unfinished message is
    claimed as it is processed (Pipeline.recover): one that another replica or operator is at is passed over."""
    status = 0
    for raw_id in args.raw_ids:
        status |= _report(raw_id, pipeline.retry(raw_id))
    if args.all_failed:
        for raw in pipeline.list_raw("failed", 10_000):
            status |= _report(raw["id"], pipeline.retry(raw["id"]))
        for raw in pipeline.list_raw(UNFINISHED, 10_000):
            status |= _report(raw["id"], pipeline.recover(raw["id"]))
    return status


def _report(raw_id: str, outcome: Outcome | None) -> int:
    """Print what became of one message; 1 unless it was stored (or passed over: someone else is at it)."""
    if outcome is None:
        _print({"raw_id": raw_id, "status": "skipped", "changes": 0,
                "error": "being processed elsewhere, or finished meanwhile"})
        return 0
    _print({"raw_id": raw_id, "status": outcome.status, "changes": len(outcome.changes),
            "error": outcome.error_text or None})
    return int(outcome.status != "processed")


def _replay(args: argparse.Namespace, pipeline: Pipeline) -> int:
    """Each message is processed as on arrival: idempotent by source key, and never older over newer."""
    totals: dict[str, int] = {}
    until = args.until or datetime.now(UTC)  # what arrives while it runs is processed as it arrives, not again
    for raw in pipeline.received(args.since, until, channels=args.channel, statuses=args.status):
        if args.dry_run:
            outcome_status, changes, error = raw["status"], None, None
        else:
            outcome = pipeline.process(raw["id"])
            outcome_status, changes, error = outcome.status, sum(c.changed for c in outcome.changes), \
                outcome.error_text or None
        _print(raw | {"status": outcome_status, "changes": changes, "error": error})
        totals[outcome_status] = totals.get(outcome_status, 0) + 1
    _print({"command": "replay", "dry_run": args.dry_run, "messages": sum(totals.values())} | totals)
    return int(not args.dry_run and totals.get("failed", 0) > 0)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = IngestSettings()
    configure_logging("ingest-cli", settings.log_level)  # JSON logs on stderr: stdout is the command's answer
    engine = create_db_engine(settings.database_url)
    bus = create_event_bus(settings, engine)
    try:
        return run(args, Pipeline(make_session_factory(engine), bus, settings))
    except ScrError as exc:
        print(f"ingest: {exc.message}", file=sys.stderr)
        return 1
    finally:
        bus.flush()
        bus.close()
        engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
