"""`python -m tools.bench --quick` end to end at a tiny size: real PostgreSQL and Kafka started by the harness,
the services as processes, every feed, reads, consent, scale-out, and a report with every section. Correctness
only: speed is measured by the benchmark itself, never asserted in tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.bench import report, runner
from tools.bench.environment import environment

pytestmark = pytest.mark.integration

SECTIONS = ("## Targets at", "## Ingest, phase ending at", "### Reads at", "### Consent at", "### Bulk export at",
            "## Memory",
            "## Scale-out: two ingest workers", "## What an ICS of 3 million people would need",
            "## Profiler findings")


def test_a_tiny_run_measures_every_figure_and_writes_every_section(tmp_path: Path) -> None:
    options = runner.Options(1_000, seconds=0.3, decisions=200, change_trials=2, scale_events=40, quick=True)
    with environment(tmp_path / "work") as env:
        results = runner.run(env, options)
    point = results.checkpoints[0]
    assert [f.feed for f in point.feeds] == ["GP FHIR Bundles (HTTP)", "acute HL7 v2 ADT (MLLP)",
                                             "community CSV (HTTP)", "social-care events (Kafka)"]
    assert all(f.versions > 0 and f.refused == 0 for f in point.feeds)
    assert point.copy is not None and point.copy.versions == sum(f.versions for f in point.feeds)
    assert all(api.samples and sql.samples and not api.errors for api, sql in point.reads)
    assert point.change is not None and len(point.change.delays_ms) == 2
    assert point.export is not None and not point.export.error, point.export
    # One Patient per person at most, no Provenance or source Patients: fewer resources than the store holds.
    assert 0 < point.export.resources == point.export.downloaded < point.export.copy_rows
    assert 0 < point.export.by_type["Patient"] <= point.persons
    assert "record_api" in results.rss[f"export at {point.target:,}"]
    assert results.scale is not None and sorted(p for ps in results.scale.assignment.values() for p in ps) == \
        [0, 1, 2, 3]
    assert {"ingest", "consent", "record_api"} <= set(results.rss["idle"])
    out = tmp_path / "BENCHMARKS.md"
    report.write(results, "python -m tools.bench --quick", out)
    text = out.read_text()
    assert all(section in text for section in SECTIONS)
