"""Several messages stored together (Pipeline.receive_many, what the social-care consumer does with a poll) on
a real PostgreSQL: archived in one insert, processed in one transaction with a savepoint each. A refused message
is rejected alone, a message that fails otherwise is rolled back alone and processed again on its own, and the
others are stored exactly as if each had come on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.ingest.service import Pipeline
from services.ingest.store import Inbound
from shared.db import create_db_engine, make_session_factory
from shared.events import DatabaseEventLog
from shared.schema import EventLogEntry, RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import ingest_settings

pytestmark = pytest.mark.integration


def _contact(n: int, person: str) -> Inbound:
    event_ = messages.event("contact.recorded", {"contact": {"id": f"CON-{n}", "relationship": "neighbour"}},
                            event_id=f"evt-{n}", person={"local_id": person, "family_name": "Begum"})
    return Inbound("socialcare", json.dumps(event_).encode(), "application/json")


def _poison() -> Inbound:
    return Inbound("socialcare", json.dumps({"event_type": "care_package.started", "event_id": "x"}).encode(),
                   "application/json")


@pytest.fixture
def parts(pg_url, tokens) -> Iterator[tuple[sessionmaker[Session], Pipeline, list[str]]]:
    engine = create_db_engine(pg_url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: statements.append(statement.split()[0].upper()))
    sessions = make_session_factory(engine)
    bus = DatabaseEventLog(engine)  # record.changed lands in the event-log table, in the change's transaction
    yield sessions, Pipeline(sessions, bus, ingest_settings(tokens, pg_url)), statements
    engine.dispose()


def _count(sessions: sessionmaker[Session], model, *where) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_a_batch_keeps_its_good_messages_rejects_the_bad_alone_and_commits_once(parts) -> None:
    sessions, pipeline, statements = parts
    batch = [_contact(1, "MOS-1"), _poison(), _contact(2, "MOS-2"), Inbound("socialcare", b"{nope", "x"),
             _contact(3, "MOS-1")]
    outcomes = pipeline.receive_many(batch)

    assert [o.status for o in outcomes] == ["processed", "rejected", "processed", "rejected", "processed"]
    assert "care_package" in outcomes[1].error_text and "JSON" in outcomes[3].error_text
    assert statements.count("COMMIT") <= 3  # the archive, the batch, at most a review recount: not one per message
    assert statements.count("SAVEPOINT") == 3  # one per message that reached the database (the refused two did not)
    with sessions() as session:
        raws = {r.id: r for r in session.scalars(select(RawMessage))}
        assert [raws[o.raw_id].status for o in outcomes] == [o.status for o in outcomes]
        assert [raws[o.raw_id].content for o in outcomes] == [m.content for m in batch]  # every one archived
        assert raws[outcomes[1].raw_id].error and not raws[outcomes[0].raw_id].error
        people = session.scalars(select(Resource).where(Resource.resource_type == "Patient")).all()
        assert sorted(p.source_key for p in people) == ["person:MOS-1", "person:MOS-2"]  # one per person, not per event
        related = session.scalars(select(Resource).where(Resource.resource_type == "RelatedPerson")).all()
        assert len(related) == 3 and all(r.version_id == 1 for r in related)
        provenance_raws = {p.body["entity"][0]["what"]["reference"] for p in session.scalars(
            select(Resource).where(Resource.resource_type == "Provenance"))}
        assert provenance_raws == {f"urn:scr:raw:{outcomes[i].raw_id}" for i in (0, 2, 4)}
        assert {r.id for r in related} <= set(_announced(session))


def test_a_message_that_fails_inside_a_batch_is_rolled_back_alone_and_processed_on_its_own(parts,
                                                                                          monkeypatch) -> None:
    sessions, pipeline, _ = parts
    write, faults = pipeline.writer.write, []

    def flaky(session, raw_id, channel, mapped, **kwargs):
        changes = write(session, raw_id, channel, mapped, **kwargs)  # written, then the fault: must roll back
        if b"CON-2" in _content(session, raw_id) and not faults:
            faults.append(raw_id)
            raise RuntimeError("a fault half-way through the message")
        return changes

    monkeypatch.setattr(pipeline.writer, "write", flaky)
    outcomes = pipeline.receive_many([_contact(1, "MOS-1"), _contact(2, "MOS-2"), _contact(3, "MOS-3")])

    assert [o.status for o in outcomes] == ["processed"] * 3 and faults == [outcomes[1].raw_id]
    assert _count(sessions, Resource, Resource.resource_type == "RelatedPerson") == 3
    assert _count(sessions, Resource, Resource.resource_type == "Provenance") == 3
    with sessions() as session:  # the rolled-back attempt left nothing behind: one version, one announcement each
        assert {r.version_id for r in session.scalars(select(Resource))} == {1}
        related = session.scalars(select(Resource.id).where(Resource.resource_type == "RelatedPerson")).all()
        assert sorted(_announced(session)) == sorted(set(_announced(session))) and set(related) <= set(
            _announced(session))


def test_on_sqlite_a_batch_is_processed_message_by_message(sqlite_url, tokens) -> None:
    engine = create_db_engine(sqlite_url)
    sessions = make_session_factory(engine)
    pipeline = Pipeline(sessions, None, ingest_settings(tokens, sqlite_url))
    outcomes = pipeline.receive_many([_contact(1, "MOS-1"), _poison(), _contact(2, "MOS-1")])
    assert [o.status for o in outcomes] == ["processed", "rejected", "processed"]
    assert _count(sessions, Resource, Resource.resource_type == "RelatedPerson") == 2
    engine.dispose()


def _announced(session: Session) -> list[str]:
    return [row.payload["id"] for row in session.scalars(select(EventLogEntry).where(
        EventLogEntry.topic == "record.changed"))]


def _content(session: Session, raw_id: str) -> bytes:
    return session.scalar(select(RawMessage.content).where(RawMessage.id == raw_id)) or b""

