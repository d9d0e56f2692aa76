"""The ingest baseline: the rows one phase of ingest wrote (current resources, versions and search rows),
exported and loaded again with PostgreSQL's raw binary COPY into tables shaped like the originals (same
columns, indexes and constraints). That is the floor for "storing these resources" on this machine, in this
run: no parsing, validation, identity, labelling or network in it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

_EXPORTS = {
    "resource": "SELECT * FROM resource WHERE last_updated >= %(since)s",
    "resource_version": "SELECT * FROM resource_version WHERE last_updated >= %(since)s",
    "search_param": "SELECT s.* FROM search_param s JOIN resource r ON r.resource_type = s.resource_type "
                    "AND r.id = s.resource_id WHERE r.last_updated >= %(since)s",
}


@dataclass
class CopyBaseline:
    versions: int
    rows: int
    megabytes: float
    seconds: float

    @property
    def rate(self) -> float:
        return self.versions / self.seconds if self.seconds else 0.0


def db_now(dsn: str) -> datetime:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]


def _export(conn: psycopg.Connection, query: str, since: datetime) -> list[bytes]:
    blocks = []
    literal = f"'{since.isoformat()}'::timestamptz"  # our own timestamp, not input: safe to inline
    with conn.cursor() as cursor, cursor.copy(
            f"COPY ({query.replace('%(since)s', literal)}) TO STDOUT (FORMAT binary)") as copy:
        blocks = [bytes(block) for block in copy]
    return blocks


def measure(dsn: str, since: datetime) -> CopyBaseline:
    """Binary COPY of everything written since `since`, timed on the load side only."""
    with psycopg.connect(dsn) as conn:
        exported = {table: _export(conn, query, since) for table, query in _EXPORTS.items()}
        versions = int(conn.execute("SELECT count(*) FROM resource_version WHERE last_updated >= %s",
                                    (since,)).fetchone()[0])  # type: ignore[index]
        rows = int(sum(conn.execute(f"SELECT count(*) FROM ({q}) x", {"since": since}).fetchone()[0]  # type: ignore[index]
                       for q in _EXPORTS.values()))
        for table in exported:
            conn.execute(f"DROP TABLE IF EXISTS bench_copy_{table}")
            conn.execute(f"CREATE TABLE bench_copy_{table} (LIKE {table} INCLUDING ALL)")
        conn.commit()
        started = time.perf_counter()
        for table, blocks in exported.items():
            with conn.cursor() as cursor, cursor.copy(f"COPY bench_copy_{table} FROM STDIN (FORMAT binary)") as copy:
                for block in blocks:
                    copy.write(block)
        conn.commit()
        seconds = time.perf_counter() - started
        for table in exported:
            conn.execute(f"DROP TABLE bench_copy_{table}")
        conn.commit()
    size = sum(len(b) for blocks in exported.values() for b in blocks) / 2**20
    return CopyBaseline(versions, rows, size, seconds)
