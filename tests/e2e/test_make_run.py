"""`make run` (tools/run_embedded.py) as a developer uses it: it comes up with demo data on the embedded default,
serves, and Ctrl-C or TERM stops every service, even when the signal comes twice (make and the terminal both
forward it), leaving no service behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from shared.settings import DEV_DIR, ServiceSettings
from tools.devkeys import PROFILES, ensure_signing_key, mint
from tools.peers.ports import free_port
from tools.processes import REPO_ROOT

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start(tmp_path: Path, ports: list[int], mllp: int) -> tuple[subprocess.Popen[str], list[str], threading.Event]:
    env = os.environ | {"SCR_DATABASE_URL": f"sqlite:///{tmp_path / 'scr.db'}", "SCR_MLLP_PORT": str(mllp),
                        "SCR_RUN_PORTS": ",".join(map(str, ports))}
    run = subprocess.Popen([sys.executable, "-m", "tools.run_embedded"], cwd=REPO_ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert run.stdout is not None
        for line in run.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    return run, lines, ready


def _clinician_token() -> str:
    settings = ServiceSettings()
    key, _ = ensure_signing_key(DEV_DIR)  # the dev key `make run` trusts
    return mint(key, PROFILES["clinician"], issuer=settings.jwt_issuer, audience=settings.jwt_audience)


def test_make_run_serves_the_demo_and_stops_every_service_even_when_signalled_twice(tmp_path: Path) -> None:
    ports, mllp = [free_port() for _ in range(3)], free_port()
    run, lines, ready = _start(tmp_path, ports, mllp)
    try:
        assert ready.wait(240), "".join(lines)
        output = "".join(lines)
        assert "demo data loaded" in output and f"MLLP on 127.0.0.1:{mllp}" in output
        assert httpx.get(f"http://127.0.0.1:{ports[0]}/fhir/metadata").status_code == 200
        # A clinical read needs the consent service, which is on the chosen port too (not 8003): 200, not 503.
        search = httpx.get(f"http://127.0.0.1:{ports[0]}/fhir/Patient", params={"family": "demo"},
                           headers={"Authorization": f"Bearer {_clinician_token()}"}, timeout=30)
        assert search.status_code == 200, search.text
        assert all(_listening(port) for port in [*ports, mllp])
        run.send_signal(signal.SIGINT)  # Ctrl-C ...
        time.sleep(0.5)
        run.send_signal(signal.SIGTERM)  # ... and make's TERM while the services are stopping
        assert run.wait(60) == 0, "".join(lines)
    finally:
        if run.poll() is None:
            run.kill()
    output = "".join(lines)
    assert "stopped." in output and "Traceback" not in output, output
    assert not any(_listening(port) for port in [*ports, mllp])
