"""A system-level FHIR Bulk Data `$export` through the running record API (its background worker, consent's
secondary-use exclusions applied, pseudonymised), timed from kick-off to the manifest and to the last file
downloaded; baseline: the same store's resource bodies read out with PostgreSQL's raw `COPY ... TO STDOUT` in the
same run. The record API's RSS during the export is sampled by the run's RssSampler (stage `export at N`), so the
checkpoints side by side show whether its memory stays flat as the data grows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import psycopg

from tools.bench.environment import Environment

# Text format: one line per row (newlines inside a body are escaped), so counting lines counts rows.
COPY_SQL = ("COPY (SELECT body FROM resource WHERE NOT deleted AND resource_type NOT IN "
            "('Provenance', 'Consent', 'DocumentReference')) TO STDOUT")


@dataclass
class ExportResult:
    resources: int = 0  # lines in the manifest
    downloaded: int = 0  # NDJSON lines actually downloaded: must equal `resources`
    files: int = 0
    job_seconds: float = 0.0  # kick-off to a complete manifest
    download_seconds: float = 0.0
    copy_rows: int = 0
    copy_seconds: float = 0.0
    by_type: dict[str, int] = field(default_factory=dict)
    error: str = ""

    @property
    def rate(self) -> float:
        return self.resources / self.job_seconds if self.job_seconds else 0.0

    @property
    def copy_rate(self) -> float:
        return self.copy_rows / self.copy_seconds if self.copy_seconds else 0.0


def measure(env: Environment, timeout: float = 6 * 3600) -> ExportResult:
    result = ExportResult()
    headers = {"Authorization": f"Bearer {env.tokens.system()}", "Accept": "application/fhir+json"}
    with httpx.Client(base_url=env.url("record_api"), headers=headers, timeout=120) as client:
        started = time.perf_counter()
        kick_off = client.get("/fhir/$export", headers={"Prefer": "respond-async"})
        if kick_off.status_code != 202:
            result.error = f"kick-off answered {kick_off.status_code}: {kick_off.text[:200]}"
            return result
        status_url = kick_off.headers["Content-Location"]
        manifest = _wait_for_manifest(client, status_url, started + timeout, result)
        result.job_seconds = time.perf_counter() - started
        if manifest is None:
            return result
        for output in manifest["output"]:
            result.by_type[output["type"]] = result.by_type.get(output["type"], 0) + int(output["count"])
        result.resources, result.files = sum(result.by_type.values()), len(manifest["output"])
        started = time.perf_counter()
        result.downloaded = sum(_download(client, output["url"]) for output in manifest["output"])
        result.download_seconds = time.perf_counter() - started
        client.delete(status_url)  # the job's chunks leave the database, as a recipient would leave them
    result.copy_rows, result.copy_seconds = _copy_out(env)
    return result


def _wait_for_manifest(client: httpx.Client, status_url: str, deadline: float, result: ExportResult) -> dict | None:
    while time.perf_counter() < deadline:
        response = client.get(status_url)
        if response.status_code == 200:
            return response.json()
        if response.status_code != 202:
            result.error = f"status answered {response.status_code}: {response.text[:200]}"
            return None
        time.sleep(1.0)
    result.error = "the export did not finish in time"
    return None


def _download(client: httpx.Client, url: str) -> int:
    """NDJSON lines of one file, streamed (nothing held but the current block)."""
    lines = 0
    with client.stream("GET", url, headers={"Accept": "application/fhir+ndjson"}) as response:
        response.raise_for_status()
        for block in response.iter_bytes():
            lines += block.count(b"\n")
    return lines


def _copy_out(env: Environment) -> tuple[int, float]:
    """Rows and seconds for the raw COPY of the exportable resource bodies."""
    rows = 0
    started = time.perf_counter()
    with psycopg.connect(env.dsn) as conn, conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
        for block in copy:
            rows += bytes(block).count(b"\n")
    return rows, time.perf_counter() - started
