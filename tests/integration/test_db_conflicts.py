"""shared.db.transient_conflict against a real PostgreSQL: a real deadlock, serialization failure and lock timeout
between two connections are each named as the conflict they are (so ingest retries them), and other errors are
not."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from shared.db import TRANSIENT_CONFLICTS, conflict_backoff, create_db_engine, transient_conflict

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = create_db_engine(pg_url, pool_size=2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE scratch (id int PRIMARY KEY, n int NOT NULL)"))
        conn.execute(text("INSERT INTO scratch VALUES (1, 0), (2, 0)"))
    try:
        yield engine
    finally:
        engine.dispose()


def _lock(conn: Connection, row: int) -> None:
    conn.execute(text("SELECT n FROM scratch WHERE id = :id FOR UPDATE"), {"id": row})


def test_two_transactions_locking_two_rows_in_opposite_orders_deadlock_and_the_loser_is_named(engine) -> None:
    caught: list[BaseException] = []
    with engine.connect() as loser, engine.connect() as winner:
        winner.execute(text("SET LOCAL deadlock_timeout = '30s'"))  # so PostgreSQL's check picks the other
        _lock(loser, 1)
        _lock(winner, 2)

        def lose() -> None:
            try:
                _lock(loser, 2)
            except DBAPIError as exc:
                caught.append(exc)

        thread = threading.Thread(target=lose)
        thread.start()
        _wait_for_a_lock_wait(engine)
        _lock(winner, 1)  # the cycle: PostgreSQL aborts the loser, whose wait began first
        thread.join(30)
        winner.rollback()
        loser.rollback()
    assert caught, "no deadlock"
    assert transient_conflict(caught[0]) == "deadlock"
    assert transient_conflict(caught[0].orig) == "deadlock"  # psycopg's own error, as append_rows raises it


def test_a_serialization_failure_under_repeatable_read_is_named(engine) -> None:
    with engine.connect() as reader, engine.connect() as writer:
        reader.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        reader.execute(text("SELECT n FROM scratch WHERE id = 1"))  # its snapshot is taken
        writer.execute(text("UPDATE scratch SET n = n + 1 WHERE id = 1"))
        writer.commit()
        with pytest.raises(DBAPIError) as caught:
            reader.execute(text("UPDATE scratch SET n = n + 1 WHERE id = 1"))
        reader.rollback()
    assert caught.value.orig.sqlstate == "40001"
    assert transient_conflict(caught.value) == "serialization"


def test_a_lock_timeout_is_named(engine) -> None:
    with engine.connect() as holder, engine.connect() as waiter:
        _lock(holder, 1)
        waiter.execute(text("SET LOCAL lock_timeout = '100ms'"))
        with pytest.raises(DBAPIError) as caught:
            _lock(waiter, 1)
        waiter.rollback()
        holder.rollback()
    assert transient_conflict(caught.value) == "lock-timeout"


def test_other_database_errors_are_not_transient_conflicts(engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(IntegrityError) as duplicate:
            conn.execute(text("INSERT INTO scratch VALUES (1, 0)"))
        conn.rollback()
        with pytest.raises(DBAPIError) as missing:
            conn.execute(text("SELECT * FROM no_such_table"))
        conn.rollback()
    assert transient_conflict(duplicate.value) is None
    assert transient_conflict(missing.value) is None
    assert transient_conflict(psycopg.OperationalError("connection refused")) is None
    assert transient_conflict(ValueError("not a database error")) is None
    assert set(TRANSIENT_CONFLICTS) == {"40P01", "40001", "55P03"}


def test_the_backoff_doubles_from_50_ms_to_at_most_a_second_with_its_upper_half_random() -> None:
    for attempt, ceiling in [(1, 0.05), (2, 0.1), (3, 0.2), (5, 0.8), (6, 1.0), (12, 1.0)]:
        waits = [conflict_backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 1  # jittered


def _wait_for_a_lock_wait(engine: Engine, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    with engine.connect() as watcher:
        while time.monotonic() < deadline:
            if watcher.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                    "AND datname = current_database()")).scalar():
                return
            watcher.rollback()
            time.sleep(0.02)
    raise AssertionError("no transaction ever waited on a lock")
