"""Resident memory (RSS) of each service process, sampled in the background while a stage runs."""

from __future__ import annotations

import threading
from pathlib import Path

from tools.processes import ServiceProcess


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """The peak RSS per service, per named stage, sampled every `interval` seconds."""

    def __init__(self, services: dict[str, ServiceProcess], interval: float = 0.25) -> None:
        self.services, self.interval = services, interval
        self.peaks: dict[str, dict[str, float]] = {}
        self.stage = "idle"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def sample(self) -> None:
        stage = self.peaks.setdefault(self.stage, {})
        for name, service in list(self.services.items()):
            if service.proc is not None:
                stage[name] = max(stage.get(name, 0.0), rss_mb(service.proc.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, service: str) -> float:
        return max((stage.get(service, 0.0) for stage in self.peaks.values()), default=0.0)
