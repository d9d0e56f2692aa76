"""The embedded default: every feed into the SQLite store, record.changed into the event-log table."""

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from services.ingest import maintenance
from services.ingest.app import create_app
from services.ingest.consumer import SocialCareConsumer
from services.ingest.labelling import load_code_lists
from services.ingest.service import Pipeline
from services.ingest.settings import IngestSettings
from shared.db import create_db_engine, make_session_factory
from shared.events import DatabaseEventLog
from shared.schema import EventLogEntry, RawMessage, Resource, SearchParam
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import Ingest, ingest_settings
from tests.support import data

pytestmark = pytest.mark.integration


def test_every_feed_works_on_sqlite_with_the_event_log(sqlite_url, tokens) -> None:
    engine = create_db_engine(sqlite_url)
    with TestClient(create_app(ingest_settings(tokens, sqlite_url))) as client:
        ingest = Ingest(client, tokens, make_session_factory(engine))
        assert ingest.post_fhir(messages.load_json("gp_record_bundle.json")).status_code == 200
        assert ingest.post_hl7(messages.text("adt_a01_itk.hl7")).status_code == 200
        late = ingest.post_hl7(messages.adt("A03", ts="20240229100000", control="LATE", discharged="20240229100000"))
        assert late.status_code == 400 and "no stay under way" in late.text  # dated before the admission
        csv = client.post("/ingest/community", content=messages.text("community_contacts.csv").encode(),
                          headers=ingest.feed(data.COMMUNITY_ODS))
        assert csv.status_code == 200
        event = messages.event("safeguarding.concern_raised", messages.EVENT_BODIES["safeguarding.concern_raised"])
        assert client.post("/ingest/socialcare", json=event,
                           headers=ingest.feed(data.SOCIAL_CARE_ODS)).status_code == 200
        # The GP, PAS and social-care records of 9990000018/...34 etc.: GP and PAS share one verified number.
        gp_and_pas = {r.person_id for r in ingest.rows("Patient") if r.source_org in (data.GP_ODS, data.ACUTE_ODS)}
        assert len(gp_and_pas) == 1
        encounter = next(r for r in ingest.rows("Encounter") if r.source_org == data.ACUTE_ODS)
        assert encounter.body["status"] == "in-progress"  # the late, older discharge was refused
        assert [r.labels for r in ingest.rows("Flag") if r.source_org == data.SOCIAL_CARE_ODS] == [["SDV", "SOC"]]
        assert {e["resource_type"] for e in ingest.events()} >= {"Patient", "Encounter", "Flag", "EpisodeOfCare"}
    engine.dispose()


def test_reindex_and_relabel_run_on_sqlite(sqlite_url, tokens) -> None:
    engine = create_db_engine(sqlite_url)
    sessions = make_session_factory(engine)
    with TestClient(create_app(ingest_settings(tokens, sqlite_url))) as client:
        ingest = Ingest(client, tokens, sessions)
        assert ingest.post_fhir(messages.load_json("gp_record_bundle.json")).status_code == 200
    stored = ingest.count(Resource)
    with sessions.begin() as session:
        before = session.scalar(select(func.count()).select_from(SearchParam))
        session.execute(delete(SearchParam))
    report = maintenance.reindex(sessions, batch=3)  # several batches: the keyset paging is exercised
    assert (report.resources, report.search_rows) == (stored, before) and ingest.count(SearchParam) == before

    condition = ingest.rows("Condition")[0]
    code = condition.body["code"]["coding"][0]
    shipped = load_code_lists(IngestSettings().label_code_lists)  # cached: changed only in a copy
    lists = replace(shipped, exact=shipped.exact | {(code["system"], code["code"]): frozenset({"ETH"})})
    report = maintenance.relabel(sessions, lists, batch=3)
    assert report.relabelled >= 1 and report.added["ETH"] >= 1 and report.resources == stored
    assert "ETH" in ingest.get(Resource, Resource.id == condition.id).labels
    engine.dispose()


def test_an_event_that_is_not_json_is_dead_lettered_as_such_and_archived_byte_for_byte(sqlite_url, tokens) -> None:
    engine = create_db_engine(sqlite_url)
    settings = ingest_settings(tokens, sqlite_url, mllp_enabled=False)
    event_log, sessions = DatabaseEventLog(engine), make_session_factory(engine)
    not_json = b"{this is not json \xff"
    event_log.publish_raw(settings.socialcare_topic, "9990000034", not_json)
    consumer = SocialCareConsumer(event_log, Pipeline(sessions, event_log, settings), settings)
    assert consumer.poll_once(consumer.open()) == 1
    with sessions() as session:
        (letter,) = session.scalars(select(EventLogEntry.payload)
                                    .where(EventLogEntry.topic == settings.socialcare_dlq_topic))
        (raw,) = session.scalars(select(RawMessage).where(RawMessage.channel == "socialcare"))
        assert (letter["reason"], raw.content, raw.status) == ("not-json", not_json, "rejected")
        assert letter["raw_message_id"] == raw.id and "not valid JSON" in letter["detail"]
    engine.dispose()
