"""Database engines and sessions (SQLAlchemy 2): PostgreSQL in real mode, SQLite in the embedded default."""

from __future__ import annotations

import json
import random
import select
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import pq
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Engine, Table, create_engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_db_engine(url: str, pool_size: int = 10, prepared_statements: bool = True) -> Engine:
    """One engine per service process. SQLite gets WAL and a busy timeout so three processes can share it.
    PostgreSQL: the most recently used connection is reused first (LIFO), so the statements it has prepared stay
    warm and surplus connections go idle."""
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               json_deserializer=load_stored_json)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        pool_use_lifo=True,
        json_deserializer=load_stored_json,
        connect_args={"connect_timeout": 5, "prepare_threshold": 1 if prepared_statements else None},
    )
    event.listen(engine, "checkout", _replace_if_hung_up)  # survive a PostgreSQL restart: no dead connections
    event.listen(engine, "connect", _utc_session)
    return engine


def load_stored_json(text: str | bytes) -> Any:
    """Parse stored JSON (JSONB columns, `body::text`) with orjson: about three times as fast as `json` on
    resource bodies, and every read parses some. orjson reads an integer beyond 64 bits as a float, losing digits
    (`json` keeps them), and refuses numbers beyond a double's range (JSONB's numeric holds both): text with a run
    of 19 digits, which any such integer has, is read by `json` instead, as it always was. The run is looked for
    with `bytes.translate` (every digit made a 0): a regular expression cost more than the parse it guarded."""
    data = text.encode() if isinstance(text, str) else text
    if _NINETEEN_ZEROS not in data.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_ZEROS = b"0" * 19


def _utc_session(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """Sessions in UTC, as everything stored is: timestamps then arrive in `datetime.UTC` and need no converting
    (converting each one was a few percent of a long read). A SET rather than a startup option, which poolers such as
    PgBouncer refuse."""
    dbapi_connection.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _replace_if_hung_up(dbapi_connection, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
    """The pool's liveness check on checkout, without a round trip. An idle connection has nothing to read, so
    a readable socket means the server has said goodbye: a restart, a terminated backend or an idle timeout
    (PostgreSQL sends a FATAL message and closes) or the socket was reset. Such a connection is replaced (the
    pool retries the checkout with a new one). SQLAlchemy's `pool_pre_ping` sent a `SELECT 1` instead on every
    checkout: a round trip that was an eighth of a Patient search here. A peer that vanished without closing
    the socket is found by the first statement instead, as the ping would have found it only by timing out."""
    if dbapi_connection.closed:
        raise DisconnectionError("the connection is closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server closed the connection or sent to an idle one")


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for requests that read, then append their audit rows: on PostgreSQL in autocommit. Under READ
    COMMITTED every statement takes its own snapshot anyway, so a transaction around the reads bought nothing but
    its BEGIN and COMMIT round trips; the audit rows get a transaction of their own (`shared.audit`). SQLite keeps
    transactions: its audit chain relies on holding the write lock from the lock to the insert."""
    if engine.dialect.name != "postgresql":
        return make_session_factory(engine)
    return sessionmaker(bind=engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)


# SQLSTATEs of a transaction that lost to a concurrent one and would succeed run again as it was: a deadlock (40P01),
# a serialization failure (40001: REPEATABLE READ or SERIALIZABLE, a Citus distributed deadlock, a hot standby's
# conflict with recovery) and lock_not_available (55P03: a lock_timeout an operator set on the role, or NOWAIT).
# PostgreSQL has rolled the whole transaction back in each case, so running it again cannot store anything twice.
TRANSIENT_CONFLICTS = {"40P01": "deadlock", "40001": "serialization", "55P03": "lock-timeout"}
_CONFLICT_BACKOFF_SECONDS, _CONFLICT_BACKOFF_CAP = 0.05, 1.0


def transient_conflict(exc: BaseException) -> str | None:
    """The kind of transient conflict (a value of TRANSIENT_CONFLICTS) `exc` reports, or None for any other error.
    Takes SQLAlchemy's wrapped errors and psycopg's own (append_rows raises those, IntegrityError aside)."""
    error = exc.orig if isinstance(exc, DBAPIError) else exc
    return TRANSIENT_CONFLICTS.get(getattr(error, "sqlstate", None) or "")


# A server going away says so before it closes its connections: admin_shutdown (57P01: a fast stop or restart, or
# the backend terminated), crash_shutdown (57P02), cannot_connect_now (57P03: starting up or shutting down).
SERVER_GOING_AWAY = frozenset({"57P01", "57P02", "57P03"})


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` is the database connection failing (the server restarting, a terminated backend, the network),
    not a fault of the message or the code: SQLAlchemy found the connection dead (`connection_invalidated`), or psycopg
    reports a connection exception (SQLSTATE class 08), the server going away, or a connection libpq holds broken (a
    connect refused or timed out). A statement timeout, a missing table or a bug is none of these."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    error = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = error.sqlstate or ""
    broken = error.pgconn is not None and error.pgconn.status == pq.ConnStatus.BAD
    return sqlstate.startswith("08") or sqlstate in SERVER_GOING_AWAY or broken


def conflict_backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...) of a transaction that lost a conflict: doubling from 50 ms
    to at most 1 s, the upper half random, so the two transactions that deadlocked do not meet again in step."""
    ceiling = min(_CONFLICT_BACKOFF_CAP, _CONFLICT_BACKOFF_SECONDS * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with factory() as session, session.begin():
        yield session


def append_rows(session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert rows (values in `columns` order) in the session's transaction, in one round trip. On PostgreSQL a few
    rows go as one pipelined batch of INSERTs and more as a COPY, the bulk path it is built for (but a COPY is two
    round trips, which is most of its cost for the few rows of a small message); elsewhere an executemany. JSON
    columns take plain values."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        session.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    json_at = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, JSON)]
    values = [_with_json(row, json_at) for row in rows] if json_at else rows
    names = ", ".join(columns)
    try:
        with connection.connection.cursor() as cursor:
            if len(rows) <= _INSERTED_AT_MOST:
                statement = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"
                cursor.executemany(statement, values)  # pipelined by psycopg: one round trip
            else:
                statement = f"COPY {table.name} ({names}) FROM STDIN"
                with cursor.copy(statement) as copy:
                    for row in values:
                        copy.write_row(row)
    except psycopg.IntegrityError as exc:  # as SQLAlchemy raises it, so callers retrying a unique race see it
        raise IntegrityError(statement, None, exc) from exc


_INSERTED_AT_MOST = 50


def _with_json(row: Sequence[Any], json_at: list[int]) -> list[Any]:
    values = list(row)
    for i in json_at:
        values[i] = Jsonb(values[i])
    return values


def check_database(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query (readiness and start-up checks)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def migrate(url: str) -> None:
    """Bring the schema at `url` to the newest revision of every migration branch."""
    from alembic import command
    from alembic.config import Config

    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "heads")
