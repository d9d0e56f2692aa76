"""`python -m tools.bench [--resources N | --quick]`: run the benchmark and write docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

from tools.bench import report, runner
from tools.bench.environment import environment
from tools.synth.ics import DEFAULT_SEED

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> tuple[runner.Options, Path]:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("--resources", type=int, default=100_000,
                        help="stored resources to reach (1000..1000000); above 100k, also measured at 100k")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 resources, short load levels")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--seconds", type=float, default=None, help="duration of each read load level")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        options = runner.Options(2_000, args.seed, seconds=1.0, decisions=2_000, change_trials=4, scale_events=120,
                                 quick=True)
    else:
        options = runner.Options(max(1_000, min(args.resources, 1_000_000)), args.seed,
                                 scale_events=4_000 if args.resources > 100_000 else 2_000)
    if args.seconds:
        options.seconds = args.seconds
    return options, args.out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, out = parse(argv)
    command = shlex.join(["python", "-m", "tools.bench", *argv])
    with environment() as env:  # the report is rewritten after each checkpoint: a long run leaves its figures
        results = runner.run(env, options, lambda partial: report.write(partial, command, out))
    report.write(results, command, out)
    raw = REPO_ROOT / "var" / "bench" / "results.json"  # every sample, for a later look (git-ignored var/)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(dataclasses.asdict(results), default=str))
    print(f"wrote {out} and {raw}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
