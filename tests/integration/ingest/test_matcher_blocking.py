"""The matcher's family-name-and-postcode block on PostgreSQL: it finds the right source Patients, and its plan
reads the Patients at the postcode, not every Patient with the surname, whether PostgreSQL plans it for the
values given (a custom plan) or once for any values (the generic plan a prepared statement moves to); and a
birth date shared by more Patients than a block keeps never pushes out the record holding the same NHS number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect

from services.ingest import store
from shared.db import create_db_engine

pytestmark = pytest.mark.integration

COMMON_SURNAME_PATIENTS = 10_000  # one surname shared by many, as SMITH is in any English register
POSTCODES = 5_000


@pytest.fixture
def register(pg_url: str) -> Iterator[Engine]:
    """Search rows for 12,000 source Patients: 10,000 named smith, the rest jones or patel; postcodes spread
    over 5,000 (a few Patients each, as in life); p1 and p2 share a postcode with each other only."""
    engine = create_db_engine(pg_url)
    rows = f"""INSERT INTO search_param (resource_type, resource_id, param, text)
        SELECT 'Patient', 'p' || g, 'family', CASE WHEN g <= {COMMON_SURNAME_PATIENTS} THEN 'smith'
                                                   WHEN g % 2 = 0 THEN 'jones' ELSE 'patel' END
        FROM generate_series(3, 12000) g
        UNION ALL SELECT 'Patient', 'p' || g, 'address-postalcode', 'PC' || (g % {POSTCODES})
        FROM generate_series(3, 12000) g
        UNION ALL VALUES ('Patient', 'p1', 'family', 'smith'), ('Patient', 'p1', 'address-postalcode', 'LS14AB'),
                         ('Patient', 'p2', 'family', 'jones'), ('Patient', 'p2', 'address-postalcode', 'LS14AB')"""
    with engine.begin() as connection:
        connection.execute(text(rows))
    with engine.connect() as connection:
        connection.execute(text("ANALYZE search_param"))
        connection.commit()
    try:
        yield engine
    finally:
        engine.dispose()


def _block(engine: Engine, family: str, postcode: str) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(store._BY_NAME_AND_POSTCODE, {"family": family, "postcode": postcode}))


def test_the_block_finds_the_same_family_at_the_same_postcode_only(register: Engine) -> None:
    assert _block(register, "smith", "LS14AB") == {"p1"}
    assert _block(register, "jones", "LS14AB") == {"p2"}
    assert _block(register, "patel", "LS14AB") == set()
    assert _block(register, "smith", "PC7") == {f"p{g}" for g in range(3, 10_001) if g % POSTCODES == 7}


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
def test_the_block_reads_the_patients_at_the_postcode_not_every_smith(register: Engine, plan_cache_mode: str) -> None:
    statement = store._BY_NAME_AND_POSTCODE.compile(dialect=pg_dialect.dialect(paramstyle="numeric_dollar"))
    values = statement.construct_params({"family": "smith", "postcode": "PC7"})
    arguments = sql.SQL(", ").join(sql.Literal(values[name]) for name in statement.positiontup or ())
    url = register.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.Identifier(plan_cache_mode)))
        connection.execute(sql.SQL("PREPARE block AS {}").format(sql.SQL(str(statement))))  # type: ignore[arg-type]
        for _ in range(6):  # past the five custom plans after which PostgreSQL may settle on a generic one
            connection.execute(sql.SQL("EXECUTE block ({})").format(arguments)).fetchall()
        (plan,), = connection.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE block ({})").format(arguments))
    read = _rows_read(json.loads(plan) if isinstance(plan, str) else plan)
    at_postcode = 12_000 // POSTCODES + 1
    # Each Patient at the postcode is read once, and once more for its family name: a handful, not 10,000.
    assert read <= 2 * at_postcode + 2, f"{read} search rows read under {plan_cache_mode}"


def _rows_read(plan: Any) -> int:
    """Rows produced by every scan of search_param in an EXPLAIN ANALYZE plan, over all its loops."""
    nodes = plan if isinstance(plan, list) else [plan]
    total = 0
    for node in nodes:
        node = node.get("Plan", node)
        if node.get("Relation Name") == "search_param":
            total += int(node["Actual Rows"] * node["Actual Loops"]) + int(node.get("Rows Removed by Filter", 0))
        total += sum(_rows_read(child) for child in node.get("Plans", []))
    return total


def test_a_crowded_birth_date_never_crowds_out_the_record_with_the_same_nhs_number(pg_url: str) -> None:
    # More source Patients born on one day than a block keeps, all stored before the one holding the number.
    engine = create_db_engine(pg_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"""INSERT INTO search_param (resource_type, resource_id, param, date_low)
                SELECT 'Patient', 'born' || g, 'birthdate', timestamptz '1950-01-01 00:00:00+00'
                FROM generate_series(1, {store.CANDIDATE_LIMIT + 50}) g"""))
            connection.execute(text("""INSERT INTO search_param (resource_type, resource_id, param, system, code)
                VALUES ('Patient', 'numbered', 'identifier', :system, '9990001234')"""),
                               {"system": store.NHS_NUMBER_SYSTEM})
        with engine.connect() as connection:
            found = list(connection.scalars(store._BLOCKED[(True, True)], {
                "lows": [datetime(1950, 1, 1, tzinfo=UTC)], "nhs": "9990001234"}))
    finally:
        engine.dispose()
    assert len(found) == store.CANDIDATE_LIMIT and "numbered" in found
