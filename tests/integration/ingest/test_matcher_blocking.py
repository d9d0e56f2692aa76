"""The matcher's family-name-and-postcode block on PostgreSQL: it finds the right source Patients, and its plan
reads the Patients at the postcode, not every Patient with the surname, whether PostgreSQL plans it for the
values given (a custom plan) or once for any values (the generic plan a prepared statement moves to); and a
birth date shared by more Patients than a block keeps never pushes out the record holding the same NHS number."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from services.ingest import store
from shared.db import create_db_engine
from tests.support.plans import PLAN_CACHE_MODES, rows_read

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


@pytest.mark.parametrize("plan_cache_mode", PLAN_CACHE_MODES)
def test_the_block_reads_the_patients_at_the_postcode_not_every_smith(register: Engine, plan_cache_mode: str) -> None:
    read = rows_read(register, store._BY_NAME_AND_POSTCODE, {"family": "smith", "postcode": "PC7"},
                     plan_cache_mode=plan_cache_mode, table="search_param")
    at_postcode = 12_000 // POSTCODES + 1
    # Each Patient at the postcode is read, then its own rows by resource id (two here: name and postcode) to
    # find the family name: a handful, not 10,000.
    assert read <= 3 * at_postcode + 2, f"{read} search rows read under {plan_cache_mode}"


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
