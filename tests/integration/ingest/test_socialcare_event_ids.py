"""A social-care `event_id` against a real PostgreSQL: two deliveries of one id at the same moment (two consumers,
or HTTP and the topic at once) store it once, and events stored before migration ingest_0003 hold their ids."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.ingest import cli
from services.ingest.service import Outcome, Pipeline
from services.ingest.store import Inbound
from shared.db import MIGRATIONS_DIR, create_db_engine, make_session_factory, migrate, transaction
from shared.events import DatabaseEventLog
from shared.schema import RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import Ingest, ingest_settings
from tests.support import data
from tests.support.services import service_env

pytestmark = pytest.mark.integration

ROUNDS = 12


def _contact(event_id: str, contact_id: str) -> dict[str, Any]:
    return messages.event("contact.recorded", {"contact": {"id": contact_id, "relationship": "neighbour"}},
                          event_id=event_id, person={"local_id": "MOS-9", "family_name": "Begum"})


def _inbound(event: dict[str, Any]) -> Inbound:
    return Inbound("socialcare", json.dumps(event).encode(), "application/json")


@pytest.fixture
def pipelines(pg_url, tokens) -> Iterator[tuple[sessionmaker[Session], list[Pipeline]]]:
    """Two pipelines on engines of their own: two ingest workers of one consumer group."""
    engines = [create_db_engine(pg_url) for _ in range(2)]
    settings = ingest_settings(tokens, pg_url)
    built = [Pipeline(make_session_factory(e), DatabaseEventLog(e), settings) for e in engines]
    yield make_session_factory(engines[0]), built
    for engine in engines:
        engine.dispose()


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together; their results in order (an exception re-raised)."""
    barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # handed to the test thread, which re-raises it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _related_people(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return sorted(r.source_key for r in session.scalars(select(Resource).where(
            Resource.resource_type == "RelatedPerson")))


def _statuses(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return sorted(session.scalars(select(RawMessage.status)))


def test_two_consumers_given_one_event_id_for_different_events_store_exactly_one(pipelines) -> None:
    sessions, (first, second) = pipelines
    for n in range(ROUNDS):
        outcomes: list[list[Outcome]] = _at_once(
            lambda n=n: first.receive_many([_inbound(_contact(f"race-{n}", f"CON-A{n}"))]),
            lambda n=n: second.receive_many([_inbound(_contact(f"race-{n}", f"CON-B{n}")),
                                             _inbound(_contact(f"other-{n}", f"CON-C{n}"))]))
        statuses = sorted(o.status for o in outcomes[0] + outcomes[1][:1])
        assert statuses == ["processed", "rejected"], (n, outcomes)
        assert outcomes[1][1].status == "processed"
        (refused,) = [o for o in outcomes[0] + outcomes[1][:1] if o.status == "rejected"]
        assert refused.error_text.startswith("event_id: event_id already used for a different event")
    people = _related_people(sessions)
    assert len(people) == 2 * ROUNDS
    assert len({p.removeprefix("contact:CON-")[1:] for p in people if not p.startswith("contact:CON-C")}) == ROUNDS


def test_one_event_delivered_twice_at_once_is_stored_once_and_answered_as_a_resend(pipelines) -> None:
    sessions, (first, second) = pipelines
    for n in range(ROUNDS):
        event = _contact(f"twice-{n}", f"CON-{n}")
        outcomes = _at_once(lambda e=event: first.receive_many([_inbound(e)]),
                            lambda e=event: second.receive_many([_inbound(e)]))
        assert [o.status for (o,) in outcomes] == ["processed", "processed"], outcomes
        assert sum(o.duplicate_of is not None for (o,) in outcomes) == 1
    assert len(_related_people(sessions)) == ROUNDS
    with sessions() as session:
        assert all(r.version_id == 1 for r in session.scalars(select(Resource).where(
            Resource.resource_type == "RelatedPerson")))


def test_an_event_id_posted_and_consumed_at_once_is_stored_once_and_never_a_server_error(ingest: Ingest, pipelines
                                                                                         ) -> None:
    sessions, (consumer, _) = pipelines
    headers = ingest.feed(data.SOCIAL_CARE_ODS)
    for n in range(ROUNDS):
        posted, consumed = _at_once(
            lambda n=n: ingest.client.post("/ingest/socialcare", json=_contact(f"both-{n}", f"CON-H{n}"),
                                           headers=headers),
            lambda n=n: consumer.receive_many([_inbound(_contact(f"both-{n}", f"CON-K{n}"))]))
        assert posted.status_code in (200, 400), posted.text
        assert (posted.status_code == 200) != (consumed[0].status == "processed"), (posted.text, consumed)
        if posted.status_code == 400:
            (issue,) = posted.json()["issue"]
            assert issue["expression"] == ["event.event_id"]
    assert len(_related_people(sessions)) == ROUNDS
    assert _statuses(sessions) == ["processed"] * ROUNDS + ["rejected"] * ROUNDS


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade(url: str, revision: str) -> None:
    command.upgrade(_config(url), revision)


def _downgrade(url: str, revision: str) -> None:
    command.downgrade(_config(url), revision)


def _archived(sessions: sessionmaker[Session], rows: list[tuple[str, dict[str, Any], str, str | None]]) -> None:
    """Archived messages as an ingest before ingest_0004 left them: (id, event, status, key), received in order."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction(sessions) as session:
        for n, (raw_id, event, status, key) in enumerate(rows):
            content = json.dumps(event).encode()
            session.add(RawMessage(id=raw_id, channel="socialcare", received_at=start + timedelta(minutes=n),
                                   content_hash=hashlib.sha256(content).hexdigest(), content=content,
                                   content_type="application/json", sender_org=data.SOCIAL_CARE_ODS, status=status,
                                   attempts=1, detail={}, message_key=key))


@pytest.mark.parametrize("which", ["postgresql", "sqlite"])
def test_events_stored_before_ingest_0003_hold_their_ids_after_ingest_0004(which: str, postgres, tmp_path,
                                                                           tokens) -> None:
    url = (postgres.create_database(f"t_{uuid.uuid4().hex[:12]}") if which == "postgresql"
           else f"sqlite:///{tmp_path / 'scr.db'}")
    _upgrade(url, "ingest_0003")
    engine = create_db_engine(url)
    sessions = make_session_factory(engine)
    old, other, key = _contact("evt-1", "CON-1"), _contact("evt-1", "CON-2"), f"socialcare:{data.SOCIAL_CARE_ODS}:evt-"
    _archived(sessions, [("a-old", old, "processed", None), ("b-resent", old, "processed", None),
                         ("c-other", other, "processed", None),
                         ("d-refused", _contact("evt-2", "CON-3"), "rejected", None),
                         ("e-keyed", _contact("evt-3", "CON-4"), "processed", f"{key}3"),
                         ("f-keyed-resent", _contact("evt-3", "CON-4"), "processed", f"{key}3")])
    migrate(url)
    with sessions() as session:
        keys = {row.id: row.message_key for row in session.execute(select(RawMessage.id, RawMessage.message_key))}
    assert keys == {"a-old": f"{key}1", "b-resent": None, "c-other": None, "d-refused": None, "e-keyed": f"{key}3",
                    "f-keyed-resent": None}
    pipeline = Pipeline(sessions, DatabaseEventLog(engine), ingest_settings(tokens, url))
    again, reused = pipeline.receive_many([_inbound(old)]), pipeline.receive_many([_inbound(other)])
    assert (again[0].status, again[0].duplicate_of) == ("processed", "a-old")
    assert reused[0].status == "rejected" and "(raw message a-old)" in reused[0].error_text
    engine.dispose()



def _as_before_ingest_0003(sessions: sessionmaker[Session], raw_id: str) -> None:
    """Leave a processed event as an ingest before ingest_0003 did: no key, no digest recorded."""
    with transaction(sessions) as session:
        raw = session.get(RawMessage, raw_id)
        raw.message_key, raw.detail = None, {k: v for k, v in raw.detail.items() if k != "message_digest"}


def _replay(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, tokens: Any
            ) -> tuple[int, list[dict[str, Any]]]:
    """`python -m services.ingest.cli replay` of everything archived, in this process; its exit status and lines."""
    for name, value in service_env(tokens, url).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = cli.main(["replay", "--since", "2000-01-01"])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_a_replay_keeps_an_event_stored_under_a_reused_id_before_the_check_processed(
        pg_url, tokens, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A provider that reused an event_id before the check existed: both events were stored, and ingest_0004 leaves
    the id with the first. A replay must not refuse the second (it was accepted when it arrived, and its contact stays
    in the record), or the archive would say `rejected` of an event the store holds."""
    engine = create_db_engine(pg_url)
    sessions = make_session_factory(engine)
    pipeline = Pipeline(sessions, DatabaseEventLog(engine), ingest_settings(tokens, pg_url))
    raw_ids = []
    for contact in ("CON-1", "CON-2"):
        (outcome,) = pipeline.receive_many([_inbound(_contact("evt-1", contact))])
        assert outcome.status == "processed"
        _as_before_ingest_0003(sessions, outcome.raw_id)
        raw_ids.append(outcome.raw_id)
    _downgrade(pg_url, "ingest_0003")
    migrate(pg_url)  # ingest_0004 again: the key back on the first, none on the second
    with sessions() as session:
        assert [session.get(RawMessage, raw_id).message_key for raw_id in raw_ids] == [
            f"socialcare:{data.SOCIAL_CARE_ODS}:evt-1", None]

    code, lines = _replay(monkeypatch, capsys, pg_url, tokens)
    assert code == 0
    assert [(line["id"], line["status"], line["error"]) for line in lines[:-1]] == [
        (raw_ids[0], "processed", None), (raw_ids[1], "processed", None)]
    assert _statuses(sessions) == ["processed", "processed"]
    assert _related_people(sessions) == ["contact:CON-1", "contact:CON-2"]
    with sessions() as session:  # the id stays with the first: a new event under it is still refused
        assert [session.get(RawMessage, raw_id).message_key for raw_id in raw_ids] == [
            f"socialcare:{data.SOCIAL_CARE_ODS}:evt-1", None]
    assert pipeline.receive_many([_inbound(_contact("evt-1", "CON-3"))])[0].status == "rejected"

    with transaction(sessions) as session:  # as a replay before this fix left it: refused, its contact stored
        session.get(RawMessage, raw_ids[1]).status = "rejected"
    assert pipeline.retry(raw_ids[1]).status == "processed"  # the operator's retry puts the archive right
    assert _related_people(sessions) == ["contact:CON-1", "contact:CON-2"]
    engine.dispose()
