"""The store schema against the real databases: PostgreSQL (real mode) and SQLite (embedded default)."""

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

import services.record_api.population.models  # noqa: F401  (its tables are part of the store's metadata)
from shared.audit import AuditRecord, verify_chain, write_audit, write_audits
from shared.auth import Principal
from shared.db import create_db_engine, make_read_session_factory, make_session_factory, migrate, transaction
from shared.schema import AuditEventRow, Base, Resource, ResourceVersion
from tests.support.data import NHS_NUMBERS

pytestmark = pytest.mark.integration

OBSERVATION = {
    "resourceType": "Observation", "id": "obs-1", "meta": {"versionId": "1", "lastUpdated": "2024-03-05T10:15:00Z"},
    "status": "final", "subject": {"reference": "Patient/person-1"},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "271649006", "display": "Systolic BP"}]},
    "valueQuantity": {"value": 128.5, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
    "note": [{"text": "Ünïcödé and \"quotes\" survive; so does a very long number 12345678901234567890"}],
}


@pytest.mark.parametrize("which", ["pg_url", "sqlite_url"])
def test_migrations_build_every_table_on_an_empty_database(which: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(which)
    migrate(url)  # a second run is a no-op
    tables = set(inspect(create_db_engine(url)).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


@pytest.mark.parametrize("which", ["pg_url", "sqlite_url"])
def test_the_migrated_schema_is_exactly_what_the_models_declare(which: str, request: pytest.FixtureRequest) -> None:
    """Tables, columns, types and indexes: a migration and a model that disagree fail here, not in production."""
    url = request.getfixturevalue(which)
    migrate(url)
    engine = create_db_engine(url)
    with engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert drift == []


def test_a_resource_written_to_postgresql_reads_back_identical(pg_url: str) -> None:
    from datetime import UTC, datetime

    engine = create_db_engine(pg_url)
    assert engine.dialect.name == "postgresql"
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        session.add(Resource(resource_type="Observation", id="obs-1", version_id=1, person_id="person-1",
                             source_system="EMIS", source_org="Y12345", source_key="obs:1", content_hash="h",
                             labels=["SOC"], last_updated=now, body=OBSERVATION))
        session.add(ResourceVersion(resource_type="Observation", id="obs-1", version_id=1, person_id="person-1",
                                    source_org="Y12345", labels=["SOC"], last_updated=now, body=OBSERVATION))
    engine.dispose()
    # A new engine (new connections) so nothing can come from a session cache.
    fresh = make_session_factory(create_db_engine(pg_url))
    with fresh() as session:
        stored = session.scalar(select(Resource).where(Resource.id == "obs-1"))
        assert stored.body == OBSERVATION
        assert stored.labels == ["SOC"]
        assert stored.last_updated == now
        assert session.scalar(select(ResourceVersion.body)) == OBSERVATION


def test_source_identity_is_unique(pg_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy.exc import IntegrityError

    sessions = make_session_factory(create_db_engine(pg_url))
    row = dict(resource_type="Encounter", version_id=1, source_system="PAS", source_org="RR8", source_key="V1",
               content_hash="h", last_updated=datetime.now(UTC), body={})
    with transaction(sessions) as session:
        session.add(Resource(id="a", **row))
    with pytest.raises(IntegrityError), transaction(sessions) as session:
        session.add(Resource(id="b", **row))


def test_audit_rows_are_hash_chained_per_person_and_tampering_shows(pg_url: str) -> None:
    sessions = make_session_factory(create_db_engine(pg_url))
    clinician = Principal("clinician", "555000000001", ods_code="RR8", role="R8000")
    for action in ("search", "read", "everything"):
        with transaction(sessions) as session:
            write_audit(session, AuditRecord("record_api", action, "success", clinician, person_id="person-1",
                                             nhs_number=NHS_NUMBERS[0], purpose="ETREAT",
                                             # not ASCII: PostgreSQL hashes the same UTF-8 bytes verify_chain does
                                             break_glass_reason="unconscious in A&E — Zoë, déjà admitted",
                                             entities=["Observation/obs-1"]))
    with transaction(sessions) as session:
        write_audit(session, AuditRecord("record_api", "read", "denied", clinician, person_id="person-2"))
    with sessions() as session:
        rows = list(session.scalars(select(AuditEventRow).where(AuditEventRow.person_id == "person-1")
                                    .order_by(AuditEventRow.id)))
        assert len(rows) == 3 and verify_chain(rows)
        assert rows[0].body["agent"][0]["who"]["identifier"]["value"] == "555000000001"
        rows[1].body = rows[1].body | {"outcome": "4"}
        assert not verify_chain(rows)


@pytest.mark.parametrize("which", ["sqlite", "postgresql", "postgresql-autocommit"])
def test_concurrent_audit_writers_of_one_person_never_fork_the_chain(which: str, request: pytest.FixtureRequest
                                                                      ) -> None:
    """Two processes' worth of writers (threads with their own connections) append to two persons' chains at
    once, two rows a request; every row must link to the row before it, on PostgreSQL (advisory lock; in the
    caller's transaction, or in one of its own from the record API's autocommit read sessions) and on SQLite
    (write lock)."""
    url = request.getfixturevalue("sqlite_url" if which == "sqlite" else "pg_url")
    migrate(url)
    engines = [create_db_engine(url) for _ in range(4)]
    clinician = Principal("clinician", "555000000001", ods_code="RR8", role="R8000")
    factory = make_read_session_factory if which == "postgresql-autocommit" else make_session_factory

    def writer(engine) -> None:
        sessions = factory(engine)
        for _ in range(25):
            with sessions() as session:
                session.execute(select(AuditEventRow.id).limit(1)).all()  # a read first, as a record API read does
                ids = write_audits(session, [
                    AuditRecord("record_api", "read", "success", clinician, person_id=person)
                    for person in ("person-c", "person-d")])
                assert len(ids) == 2 and ids[0] < ids[1]
                session.commit()

    threads = [threading.Thread(target=writer, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with make_session_factory(engines[0])() as session:
        chains = [list(session.scalars(select(AuditEventRow).where(AuditEventRow.person_id == person)
                                       .order_by(AuditEventRow.id))) for person in ("person-c", "person-d")]
    for engine in engines:
        engine.dispose()
    assert [len(rows) for rows in chains] == [100, 100] and all(verify_chain(rows) for rows in chains)
