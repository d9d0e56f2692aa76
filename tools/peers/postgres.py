"""A throwaway PostgreSQL cluster for tests and benchmarks, started from Debian's server binaries."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tools.peers.ports import free_port

_SERVER_USER = "postgres"  # PostgreSQL refuses to run as root; Debian's package creates this account.


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found; run tools/ensure_postgres.sh")
    return Path(candidates[0]).parent


class PostgresServer:
    """One cluster in a temporary directory on a free loopback port, with trust auth for user `scr`.

    Tests run it without durability (no fsync, asynchronous commit): a crash loses a throwaway cluster, and every
    commit is cheaper. The benchmark asks for `durable=True`, PostgreSQL's own defaults, so that a commit costs what
    it costs in production (the raw archive's commit-first promise rests on it)."""

    def __init__(self, base_dir: str | None = None, port: int | None = None, durable: bool = False) -> None:
        self.durable = durable
        self.port = port or free_port()
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="scr-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._bin = _bin_dir()
        self._as_root = os.geteuid() == 0

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://scr@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "scr") -> str:
        return f"postgresql+psycopg://scr@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self._bin / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", _SERVER_USER, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def start(self) -> PostgresServer:
        self.base.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            user = pwd.getpwnam(_SERVER_USER)
            os.chown(self.base, user.pw_uid, user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "scr", "--auth=trust", "-E", "UTF8",
                      "--locale=C.UTF-8", "--no-sync")
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start; see {self.log}") from None
                time.sleep(0.2)

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=scr dbname={database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
