"""What PostgreSQL reads to answer a statement, under a forced plan-cache mode: the rows each scan of a table
produced over all its loops, read from EXPLAIN ANALYZE. Row counts, not timings, so a test can hold a query to
reading what it needs however busy the machine is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect
from sqlalchemy.sql import Executable

from shared.db import create_db_engine

PLAN_CACHE_MODES = ("force_custom_plan", "force_generic_plan")


@contextmanager
def loaded(url: str, *statements: str) -> Iterator[Engine]:
    """An engine on the database at `url` once `statements` have run (in one transaction), with the planner's
    statistics brought up to date as autovacuum keeps them for a table that size."""
    engine = create_db_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
            connection.commit()
        yield engine
    finally:
        engine.dispose()


def rows_read(engine: Engine, statement: Executable, values: dict[str, Any], *, plan_cache_mode: str,
              table: str) -> int:
    """Prepare `statement` as the service sends it (every value a parameter), run it past the five custom plans
    after which PostgreSQL may settle on a generic one, then count the rows its plan reads from `table`."""
    compiled = statement.compile(dialect=pg_dialect.dialect(paramstyle="numeric_dollar"))
    expanded = compiled.construct_expanded_state(values)  # a list parameter (IN) as one parameter an item
    arguments = sql.SQL(", ").join(sql.Literal(expanded.parameters[name]) for name in expanded.positiontup or ())
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.Identifier(plan_cache_mode)))
        connection.execute(sql.SQL("PREPARE measured AS {}").format(sql.SQL(expanded.statement)))  # type: ignore[arg-type]
        execute = sql.SQL("EXECUTE measured ({})").format(arguments)
        for _ in range(6):
            connection.execute(execute).fetchall()
        (plan,), = connection.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(execute))
    return _read_from(json.loads(plan) if isinstance(plan, str) else plan, table)


def _read_from(plan: Any, table: str) -> int:
    nodes = plan if isinstance(plan, list) else [plan]
    total = 0
    for node in nodes:
        node = node.get("Plan", node)
        if node.get("Relation Name") == table:  # EXPLAIN gives rows and rows removed per loop
            fetched = node["Actual Rows"] + node.get("Rows Removed by Filter", 0) + node.get(
                "Rows Removed by Index Recheck", 0)
            total += round(fetched * node["Actual Loops"])
        total += sum(_read_from(child, table) for child in node.get("Plans", []))
    return total
