"""Two messages seeing the same new record at the same moment: one wins the insert, the other loses the unique
race on (sender, type, source key), rolls back and is processed again, finding the record. Forced here by a
writer that holds the same new rows uncommitted while the pipeline inserts, so the race is certain."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, text

from services.ingest.feeds import hl7v2
from services.ingest.service import Outcome, Pipeline
from shared import db
from shared.db import create_db_engine, make_session_factory
from shared.schema import RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import ingest_settings
from tests.support import data

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("inserted_at_most", [50, 0], ids=["pipelined-inserts", "copy"])
def test_a_record_first_seen_by_two_messages_at_once_is_stored_once_and_both_are_processed(
        pg_url, tokens, monkeypatch, inserted_at_most: int) -> None:
    monkeypatch.setattr(db, "_INSERTED_AT_MOST", inserted_at_most)  # both ways rows are appended
    engine = create_db_engine(pg_url)
    sessions = make_session_factory(engine)
    pipeline = Pipeline(sessions, None, ingest_settings(tokens, pg_url))
    # No NHS number: the person has no unique key to collide on first, so the resource rows are where they meet.
    admission = messages.adt("A01", ts="20240301100000", ward="WARD01", control="RACE1", nhs=None)
    try:
        with sessions() as rival:
            rival.begin()
            mapped = hl7v2.map_adt(admission)
            mapped.source_system = "PAS"
            pipeline.writer.write(rival, "rival", "hl7v2", mapped, first_attempt=True)  # rows written, uncommitted
            outcome: list[Outcome] = []
            racer = threading.Thread(target=lambda: outcome.append(pipeline.receive(
                "hl7v2", admission.replace("RACE1", "RACE2").encode(), content_type="x-application/hl7-v2+er7",
                sender_org=data.ACUTE_ODS, sender_system="PAS")))
            racer.start()
            assert _waiting_on_a_lock(sessions), "the pipeline's insert never met the rival's rows"
            rival.commit()
        racer.join(30)
        assert outcome and outcome[0].status == "processed", outcome and outcome[0].error_text
        assert {c.change for c in outcome[0].changes} <= {"update", "unchanged"}  # the retry found the record
        with sessions() as session:
            per_key = session.execute(select(Resource.resource_type, Resource.source_key, func.count())
                                      .where(Resource.resource_type.in_(["Patient", "Encounter"]))
                                      .group_by(Resource.resource_type, Resource.source_key)).all()
            assert per_key and all(count == 1 for _type, _key, count in per_key)
            assert session.scalar(select(RawMessage.attempts).where(RawMessage.id == outcome[0].raw_id)) == 1
    finally:
        engine.dispose()


def _waiting_on_a_lock(sessions, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with sessions() as session:
            if session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND datname = current_database()")):
                return True
        time.sleep(0.05)
    return False
