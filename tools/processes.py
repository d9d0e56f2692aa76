"""Start the three services as separate processes (as `make run` and the end-to-end tests do) and stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("consent", "record_api", "ingest")  # start order: the record API asks consent; ingest is last


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = os.environ | self.env | {"SCR_PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", f"services.{self.name}"], cwd=REPO_ROOT, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if out is not subprocess.DEVNULL:
            out.close()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready on port {self.port} after {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL if it does not go."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def kill(self) -> None:
        """Die now, mid-whatever (fault-injection tests)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_all(ports: dict[str, int], env: dict[str, str], log_dir: Path | None) -> dict[str, ServiceProcess]:
    """Start every service, each ready before the next starts; on failure stop those already running."""
    started: dict[str, ServiceProcess] = {}
    try:
        for name in SERVICES:
            log_path = log_dir / f"{name}.log" if log_dir else None
            started[name] = ServiceProcess(name, ports[name], env, log_path).start()
            started[name].wait_ready()
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(services: dict[str, ServiceProcess]) -> None:
    for service in reversed(list(services.values())):
        service.stop()
