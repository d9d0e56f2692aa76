"""Patient search by name on PostgreSQL: a prefix (FHIR's default string match) finds what it should, including
names in other scripts, and its plan reads the matching search rows, not every row of the parameter, whether
PostgreSQL plans it for the value given or once for any value (the generic plan of a prepared statement)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from services.record_api import store
from services.record_api.query import Criterion
from shared.search import STRING
from tests.support.plans import PLAN_CACHE_MODES, loaded, rows_read

pytestmark = pytest.mark.integration

PERSONS = 20_000
SURNAMES = "ARRAY['smith', 'jones', 'taylor', 'brown', 'patel', 'khan', 'nowak', 'okafor', 'begum', 'evans']"


@pytest.fixture
def register(pg_url: str) -> Iterator[Engine]:
    """20,000 persons, each with one source Patient named `<surname><n>` (n below 3,000), and a few whose
    names are in other scripts or end in characters outside the Basic Multilingual Plane."""
    with loaded(pg_url, f"""INSERT INTO person (id, status, version, created, updated)
            SELECT 'P' || g, 'active', 1, now(), now() FROM generate_series(1, {PERSONS + 3}) g""",
                f"""INSERT INTO resource (resource_type, id, version_id, person_id, source_system,
                source_org, content_hash, labels, last_updated, deleted, body)
            SELECT 'Patient', 'p' || g, 1, 'P' || g, 'test', 'X1', 'h', '[]'::jsonb, now(), false, '{{}}'::jsonb
            FROM generate_series(1, {PERSONS + 3}) g""",
                f"""INSERT INTO search_param (resource_type, resource_id, person_id, param, text)
            SELECT 'Patient', 'p' || g, 'P' || g, 'family', ({SURNAMES})[g % 10 + 1] || (g % 3000)
            FROM generate_series(1, {PERSONS}) g
            UNION ALL VALUES ('Patient', 'p{PERSONS + 1}', 'P{PERSONS + 1}', 'family', 'жуков'),
                             ('Patient', 'p{PERSONS + 2}', 'P{PERSONS + 2}', 'family', 'жук'),
                             ('Patient', 'p{PERSONS + 3}', 'P{PERSONS + 3}', 'family', 'zed\U0001F600')""") as engine:
        yield engine


def _family(prefix: str) -> list[Criterion]:
    return [Criterion("family", STRING, None, (prefix,))]


def _found(engine: Engine, prefix: str) -> set[str]:
    with Session(engine) as session:
        return {p.id for p in store.matching_persons(session, _family(prefix), limit=500)}


def test_a_prefix_finds_every_name_that_starts_with_it_and_no_other(register: Engine) -> None:
    expected = {f"P{g}" for g in range(1, PERSONS + 1) if g % 10 == 0 and str(g % 3000).startswith("10")}
    assert _found(register, "smith10") == expected and expected
    assert _found(register, "жу") == {f"P{PERSONS + 1}", f"P{PERSONS + 2}"}
    assert _found(register, "жуко") == {f"P{PERSONS + 1}"}
    assert _found(register, "zed") == {f"P{PERSONS + 3}"}
    assert _found(register, "smith_") == set()  # LIKE's wildcards are the searcher's literal characters


@pytest.mark.parametrize("plan_cache_mode", PLAN_CACHE_MODES)
def test_a_prefix_search_reads_the_matching_rows_not_every_family_name(register: Engine,
                                                                      plan_cache_mode: str) -> None:
    statement = store.persons_statement(_family("smith100"), limit=50)
    read = rows_read(register, statement, {}, plan_cache_mode=plan_cache_mode, table="search_param")
    matches = len(_found(register, "smith100"))
    assert read <= 2 * matches + 2, f"{read} search rows read for {matches} matches under {plan_cache_mode}"
