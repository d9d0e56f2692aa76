"""The connection pool's liveness check against a real PostgreSQL: a connection whose server side has gone is
replaced on checkout without the caller seeing an error, and a healthy idle connection is reused as it is."""

import time
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import Engine, text

from shared.db import create_db_engine

pytestmark = pytest.mark.integration


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pg_url: str, pid: int) -> None:
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the terminated backend did not exit"
            time.sleep(0.02)


def test_a_healthy_idle_connection_is_reused_without_a_new_connection(pg_url: str) -> None:
    engine = create_db_engine(pg_url, pool_size=1)
    try:
        first = _backend_pid(engine)
        assert [_backend_pid(engine) for _ in range(5)] == [first] * 5
    finally:
        engine.dispose()


def test_a_connection_whose_backend_was_terminated_is_replaced_on_checkout(pg_url: str) -> None:
    engine = create_db_engine(pg_url, pool_size=1)
    try:
        first = _backend_pid(engine)
        _terminate(pg_url, first)
        with engine.connect() as conn:  # no error: the pool saw the hang-up and connected afresh
            assert conn.execute(text("SELECT 41 + 1")).scalar_one() == 42
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != first
    finally:
        engine.dispose()


def test_every_pooled_connection_is_replaced_after_all_backends_go(pg_url: str) -> None:
    """As after a restart: several idle connections, every backend gone; each checkout still succeeds."""
    engine = create_db_engine(pg_url, pool_size=3)
    try:
        held = [engine.connect() for _ in range(3)]
        pids = [int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in held]
        for conn in held:
            conn.close()
        for pid in pids:
            _terminate(pg_url, pid)
        held = [engine.connect() for _ in range(3)]
        fresh = {int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in held}
        for conn in held:
            conn.close()
        assert fresh.isdisjoint(pids)
    finally:
        engine.dispose()


def test_sessions_are_in_utc_so_timestamps_arrive_in_utc(pg_url: str) -> None:
    engine = create_db_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW TIME ZONE")).scalar_one() == "UTC"
            stamp = conn.execute(text("SELECT TIMESTAMPTZ '2026-03-29 01:30:00+01'")).scalar_one()
        assert stamp.tzinfo is UTC and stamp == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    finally:
        engine.dispose()
