"""The matcher's family-name-and-postcode block on PostgreSQL: it finds the right source Patients, and its plan
reads the Patients at the postcode, not every Patient with the surname, whether PostgreSQL plans it for the
values given (a custom plan) or once for any values (the generic plan a prepared statement moves to); and a
birth date shared by more Patients than a block keeps never pushes out the record holding the same NHS number."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from services.ingest import store
from services.ingest.identity import INDEXED_PARAMS
from shared.db import create_db_engine
from shared.schema import MatchReview, PersonLink
from tests.fixtures.ingest import messages
from tests.support.plans import PLAN_CACHE_MODES, loaded, rows_read

pytestmark = pytest.mark.integration

COMMON_SURNAME_PATIENTS = 10_000  # one surname shared by many, as SMITH is in any English register
POSTCODES = 5_000


@pytest.fixture
def register(pg_url: str) -> Iterator[Engine]:
    """Search rows for 12,000 source Patients: 10,000 named smith, the rest jones or patel; postcodes spread
    over 5,000 (a few Patients each, as in life); p1 and p2 share a postcode with each other only."""
    with loaded(pg_url, f"""INSERT INTO search_param (resource_type, resource_id, param, text)
        SELECT 'Patient', 'p' || g, 'family', CASE WHEN g <= {COMMON_SURNAME_PATIENTS} THEN 'smith'
                                                   WHEN g % 2 = 0 THEN 'jones' ELSE 'patel' END
        FROM generate_series(3, 12000) g
        UNION ALL SELECT 'Patient', 'p' || g, 'address-postalcode', 'PC' || (g % {POSTCODES})
        FROM generate_series(3, 12000) g
        UNION ALL VALUES ('Patient', 'p1', 'family', 'smith'), ('Patient', 'p1', 'address-postalcode', 'LS14AB'),
                         ('Patient', 'p2', 'family', 'jones'), ('Patient', 'p2', 'address-postalcode', 'LS14AB')"""
                ) as engine:
        yield engine


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


BORN_EACH_DAY = 300  # as in a register of a few million, before the transposed day doubles the block
DAYS = 40


@pytest.fixture
def crowded_register(pg_url: str) -> Iterator[Engine]:
    """Search rows for 12,000 source Patients born over 40 days, each with names, sex and a postcode."""
    patients = f"generate_series(1, {BORN_EACH_DAY * DAYS}) g"
    with loaded(pg_url, f"""INSERT INTO search_param (resource_type, resource_id, param, date_low)
                    SELECT 'Patient', 'p' || g, 'birthdate',
                           timestamptz '1970-01-01 00:00:00+00' + (g % {DAYS}) * interval '1 day'
                    FROM {patients}""",
                f"""INSERT INTO search_param (resource_type, resource_id, param, text)
                    SELECT 'Patient', 'p' || g, param, param || g FROM {patients},
                           unnest(ARRAY['family', 'given', 'address-postalcode']) param""",
                f"""INSERT INTO search_param (resource_type, resource_id, param, code)
                    SELECT 'Patient', 'p' || g, 'gender', CASE WHEN g % 2 = 0 THEN 'male' ELSE 'female' END
                    FROM {patients}""") as engine:
        yield engine


@pytest.mark.parametrize("plan_cache_mode", PLAN_CACHE_MODES)
def test_a_crowded_block_is_sifted_on_its_own_rows_not_every_patients(crowded_register: Engine,
                                                                        plan_cache_mode: str) -> None:
    values = {"lows": [datetime(1970, 1, 2, tzinfo=UTC)], "params": list(INDEXED_PARAMS),
              "limit": store.BIRTH_DATE_BLOCK_LIMIT + 1}
    with Session(crowded_register) as session:
        fields = session.execute(store._BIRTH_DATE_BLOCK_FIELDS, values).all()
    assert len({row.resource_id for row in fields}) == BORN_EACH_DAY and len(fields) == 5 * BORN_EACH_DAY
    read = rows_read(crowded_register, store._BIRTH_DATE_BLOCK_FIELDS, values, plan_cache_mode=plan_cache_mode,
                     table="search_param")
    # The day's birth-date rows, then each Patient's five rows by resource id: not the 60,000 of the register.
    assert read <= 2 * 6 * BORN_EACH_DAY, f"{read} search rows read under {plan_cache_mode}"


def test_a_crowded_birth_date_never_crowds_out_the_record_with_the_same_nhs_number(pg_url: str) -> None:
    # More source Patients born on one day than a birth-date block keeps (a placeholder date), all stored before
    # the one holding the number.
    engine = create_db_engine(pg_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"""INSERT INTO search_param (resource_type, resource_id, param, date_low)
                SELECT 'Patient', 'born' || g, 'birthdate', timestamptz '1900-01-01 00:00:00+00'
                FROM generate_series(1, {store.BIRTH_DATE_BLOCK_LIMIT + 50}) g"""))
            connection.execute(text("""INSERT INTO search_param (resource_type, resource_id, param, system, code)
                VALUES ('Patient', 'numbered', 'identifier', :system, '9990001234')"""),
                               {"system": store.NHS_NUMBER_SYSTEM})
        with Session(engine) as session:
            blocks = store.blocked_patients(session, birth_dates=[date(1900, 1, 1)], nhs="9990001234", family=None,
                                            postcode=None, exclude="new")
            sifted = store.birth_date_block_fields(session, [date(1900, 1, 1)], ["birthdate"])
    finally:
        engine.dispose()
    assert blocks.certain == {"numbered"} and blocks.crowded
    # One beyond the limit, so the matcher can tell the block was cut and say so.
    assert len({row.resource_id for row in sifted}) == store.BIRTH_DATE_BLOCK_LIMIT + 1


def _stranger(rng: random.Random, position: int) -> dict:
    """A source Patient born on the crowded day, alike in nothing else: random names, a district of its own."""
    def name() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(9)).capitalize()

    return messages.patient(nhs=None, local_id=f"CROWD-{position}", family=name(), given=name(),
                            gender=rng.choice(["male", "female"]), birth=CROWDED_DAY, postcode=f"ZX{position} 1AA")


CROWDED_DAY = "1970-04-01"  # day <= 12: the transposed day, 1970-01-04, is searched as well


def test_a_match_born_on_a_crowded_day_is_found_however_many_share_the_day(ingest) -> None:
    # More source Patients born that day than a block scores in full, stored before the two who will be matched:
    # a block cut at its first rows would never score them.
    rng = random.Random(20261206)
    crowd = [_stranger(rng, i) for i in range(store.CANDIDATE_LIMIT + 100)]
    chidi = messages.patient(nhs=None, local_id="CHIDI", family="Okonkwo", given="Chidi", birth=CROWDED_DAY,
                             postcode="LS6 2QT")
    ada = messages.patient(nhs=None, local_id="ADA", family="Okoro", given="Adaeze", gender="female",
                           birth=CROWDED_DAY, postcode="LS7 3AB")
    first, rest = crowd[:store.CANDIDATE_LIMIT], [*crowd[store.CANDIDATE_LIMIT:], chidi, ada]
    assert ingest.post_fhir(messages.bundle(first, kind="batch")).status_code == 200
    with ingest.sessions() as session:  # statistics as autovacuum keeps them for a register this size
        session.execute(text("ANALYZE search_param"))
        session.commit()
    response = ingest.post_fhir(messages.bundle(rest, kind="batch"))
    assert response.status_code == 200, response.text

    # The hospital sees Chidi, no NHS number, moved within the district: strong enough to link.
    assert ingest.post_hl7(messages.adt("A28", nhs=None, mrn="H1", family="OKONKWO", given="Chidi", sex="M",
                                        dob="19700401", postcode="LS6 9ZZ", control="C1")).status_code == 200
    # And Adaeze under a married name: only a review.
    assert ingest.post_hl7(messages.adt("A28", nhs=None, mrn="H2", family="ADEBAYO", given="Adaeze", sex="F",
                                        dob="19700401", postcode="LS7 3AB", control="C2")).status_code == 200

    def person(key: str) -> str:
        return next(r.person_id for r in ingest.rows("Patient") if r.source_key.endswith(key))

    assert person("H1") == person("CHIDI")
    link = ingest.get(PersonLink, PersonLink.source_patient_id == next(
        r.id for r in ingest.rows("Patient") if r.source_key.endswith("H1")))
    assert link.method == "demographic" and "birth_date_block_cut_at" not in link.explanation
    review = ingest.get(MatchReview, MatchReview.status == "open")
    assert review is not None and review.candidate_person_id == person("ADA") != person("H2")


def test_a_block_cut_at_its_limit_is_said_in_the_decision_and_counted(ingest, monkeypatch) -> None:
    # A placeholder birth date shared by thousands: the limit is set low here to stand for that many.
    monkeypatch.setattr(store, "CANDIDATE_LIMIT", 3)
    monkeypatch.setattr(store, "BIRTH_DATE_BLOCK_LIMIT", 5)
    cut_before = REGISTRY.get_sample_value("scr_ingest_match_blocks_cut_total") or 0.0
    rng = random.Random(7)
    assert ingest.post_fhir(messages.bundle([_stranger(rng, i) for i in range(8)], kind="batch")).status_code == 200
    assert ingest.post_hl7(messages.adt("A28", nhs=None, mrn="H1", dob="19700401", control="C1")).status_code == 200
    link = ingest.get(PersonLink, PersonLink.source_patient_id == next(
        r.id for r in ingest.rows("Patient") if r.source_key.endswith("H1")))
    assert link.explanation["birth_date_block_cut_at"] == 5
    # Every Patient after the sixth found a block of more than five: the last two strangers and the hospital's.
    assert REGISTRY.get_sample_value("scr_ingest_match_blocks_cut_total") == cut_before + 3
