"""Each service as a real process: clear one-line refusals on bad configuration, health/readiness/metrics,
JSON logs without patient data, and graceful shutdown on SIGTERM."""

import json
import signal
import subprocess
import sys

import httpx
import pytest

from tests.support.services import service_env
from tools.peers.ports import free_port
from tools.processes import REPO_ROOT, ServiceProcess

pytestmark = pytest.mark.integration
SERVICES = ["ingest", "consent", "record_api"]


def _run_expecting_refusal(service: str, env: dict[str, str]) -> str:
    import os

    result = subprocess.run([sys.executable, "-m", f"services.{service}"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, env=os.environ | env | {"SCR_PORT": str(free_port())})
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one clear line, not a traceback
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("service", SERVICES)
def test_missing_jwks_stops_the_service_with_one_line(service, tokens, sqlite_url, tmp_path) -> None:
    env = service_env(tokens, sqlite_url, SCR_JWKS=str(tmp_path / "nope.json"))
    line = _run_expecting_refusal(service, env)
    assert line.startswith(f"{service}: cannot start: JWKS file") and "does not exist" in line


@pytest.mark.parametrize("service", SERVICES)
def test_unreachable_database_stops_the_service_with_one_line(service, tokens) -> None:
    url = f"postgresql+psycopg://scr:secret@127.0.0.1:{free_port()}/scr"
    line = _run_expecting_refusal(service, service_env(tokens, url))
    assert "database at postgresql+psycopg://scr:***@127.0.0.1" in line and "unreachable" in line
    assert "secret" not in line


def test_unreachable_kafka_stops_the_service_with_one_line(tokens, sqlite_url) -> None:
    env = service_env(tokens, sqlite_url, SCR_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    line = _run_expecting_refusal("ingest", env)
    assert line.startswith("ingest: cannot start: Kafka at 127.0.0.1:") and "unreachable" in line
    assert "Unable to bootstrap" in line  # the broker is absent; not a client misconfiguration


@pytest.mark.parametrize("service", SERVICES)
def test_real_mode_service_is_healthy_ready_measured_and_stops_gracefully(service, tokens, pg_url, kafka,
                                                                          tmp_path) -> None:
    log = tmp_path / f"{service}.log"
    env = service_env(tokens, pg_url, SCR_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap)
    proc = ServiceProcess(service, free_port(), env, log).start()
    try:
        proc.wait_ready()
        assert httpx.get(f"{proc.url}/healthz").json()["status"] == "ok"
        ready = httpx.get(f"{proc.url}/readyz").json()
        assert ready == {"status": "ready", "checks": {"database": "ok", "kafka": "ok"}}
        # A request that carries an NHS number in its path and query must not put it in the logs.
        httpx.get(f"{proc.url}/no-such-route/9990000018?identifier=9990000018&family=Smith")
        metrics = httpx.get(f"{proc.url}/metrics").text
        assert "scr_http_requests_total" in metrics and f'service="{service}"' in metrics
    finally:
        code = proc.stop()
    # uvicorn finishes its graceful shutdown, then re-raises SIGTERM so supervisors see why it ended.
    assert code in (0, -signal.SIGTERM)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = [entry.get("event") for entry in lines]
    assert events.index("service stopped") < events.index("Application shutdown complete.")
    text = log.read_text()
    assert "9990000018" not in text and "Smith" not in text
    assert any(entry.get("route") == "unmatched" and entry.get("status") == 404 for entry in lines)
