"""The bounded load run of `make soak` (tools/load/run.py), short: mixed reads and ingest against the three services
as real processes, with no errors, no memory growth past warm-up, an AuditEvent for every successful read and every
input stored exactly once. `make soak` runs the same for several minutes."""

from __future__ import annotations

import pytest

from tools.load.run import Config, run

pytestmark = pytest.mark.integration


def test_a_short_bounded_load_run_has_no_errors_no_memory_growth_and_loses_no_audit_event(
        pg_url, kafka, tmp_path, figures) -> None:
    config = Config(duration=20, operations=300, people=30, work_dir=tmp_path)
    report = run(config, database_url=pg_url, kafka_bootstrap=kafka.bootstrap, log=lambda _line: None)
    figures.update({k: v for k, v in report.as_json().items() if k != "memory_kib"})
    assert sum(report.operations.values()) >= 290
    assert not report.errors, report.error_samples
    assert report.reads_ok > 0 and report.audit_rows == report.reads_ok
    assert report.stored == {"encounters": report.sent["hl7_admissions"],
                             "related_persons": report.sent["socialcare_events"],
                             "conditions": 3 * report.sent["gp_bundles"]}
    assert all(growth <= config.memory_growth_limit_mib for growth in report.memory_growth_mib.values())
    assert report.ok, report.failures
