"""Malformed HL7, JSON and CSV through the whole pipeline on PostgreSQL: every message is archived, every bad
one is answered `rejected` with a reason (never `failed`, never an exception), and a refused message leaves no
resource, person or search row behind: no partial writes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from services.ingest.service import Pipeline
from shared.db import create_db_engine, make_session_factory
from shared.events import DatabaseEventLog
from shared.schema import Person, RawMessage, Resource, SearchParam
from tests.fixtures.ingest import messages
from tests.integration.ingest.conftest import ingest_settings
from tests.support import data
from tests.unit.ingest.test_fuzz import HL7_ALPHABET, JSON_VALUES, VALID_ADT, VALID_BUNDLE, VALID_CSV, mutated

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(postgres, tokens):
    import uuid

    from shared.db import migrate

    url = postgres.create_database(f"fuzz_{uuid.uuid4().hex[:8]}")
    migrate(url)
    engine = create_db_engine(url)
    yield Pipeline(make_session_factory(engine), DatabaseEventLog(engine), ingest_settings(tokens, url))
    engine.dispose()


def _footprint(pipeline: Pipeline) -> tuple[int, int, int]:
    with pipeline.sessions() as session:
        return tuple(session.scalar(select(func.count()).select_from(model)) or 0  # type: ignore[return-value]
                     for model in (Resource, Person, SearchParam))


def _check(pipeline: Pipeline, channel: str, content: bytes, sender: str) -> None:
    before = _footprint(pipeline)
    outcome = pipeline.receive(channel, content, content_type="fuzz", sender_org=sender, sender_system="FUZZ")
    assert outcome.status in ("processed", "rejected"), outcome.issues
    with pipeline.sessions() as session:
        raw = session.get(RawMessage, outcome.raw_id)
        assert raw is not None and raw.content == content and raw.status == outcome.status
    if outcome.status == "rejected":
        assert outcome.issues and all(i.diagnostics for i in outcome.issues)
        assert _footprint(pipeline) == before


@given(mutated(VALID_ADT, HL7_ALPHABET))
def test_malformed_hl7_is_answered_and_never_half_stored(pipeline, text: str) -> None:
    _check(pipeline, "hl7v2", text.encode("utf-8", "surrogatepass"), data.ACUTE_ODS)


@given(st.one_of(mutated(VALID_BUNDLE), JSON_VALUES.map(json.dumps), st.binary(max_size=200).map(
    lambda b: b.decode("latin-1"))))
def test_malformed_json_bundles_are_answered_and_never_half_stored(pipeline, text: str) -> None:
    _check(pipeline, "fhir", text.encode("utf-8", "surrogatepass"), data.GP_ODS)


@given(st.one_of(mutated(json.dumps(messages.event("carer.recorded", messages.EVENT_BODIES["carer.recorded"]))),
                 JSON_VALUES.map(json.dumps)))
def test_malformed_social_care_events_are_answered_and_never_half_stored(pipeline, text: str) -> None:
    _check(pipeline, "socialcare", text.encode("utf-8", "surrogatepass"), data.SOCIAL_CARE_ODS)


@given(st.one_of(mutated(VALID_CSV, st.sampled_from(list(',"\r\n\x00ab019-/:'))), st.binary(max_size=300)
                 .map(lambda b: b.decode("latin-1"))))
def test_malformed_csv_is_answered_and_bad_rows_never_half_stored(pipeline, text: str) -> None:
    _check(pipeline, "community", text.encode("utf-8", "surrogatepass"), data.COMMUNITY_ODS)


@pytest.mark.parametrize("channel, content", [
    ("hl7v2", VALID_ADT.replace("12 Park Lane", "\x0012 Park Lane").encode()),  # PostgreSQL text holds no NUL
    ("fhir", VALID_BUNDLE.replace('"Okafor"', '"Oka\\u0000for"').encode()),
    ("fhir", VALID_BUNDLE.replace('"Okafor"', '"Oka\\ud800for"').encode()),  # an unpaired surrogate
    ("socialcare", b'{"event_type": "carer.recorded", "person": {"local_id": "\\u0000"}}'),
])
def test_characters_the_store_cannot_hold_are_refused_not_failed(pipeline, channel: str, content: bytes) -> None:
    _check(pipeline, channel, content, data.GP_ODS if channel == "fhir" else data.ACUTE_ODS)
    with pipeline.sessions() as session:
        assert session.scalar(select(RawMessage.status).where(RawMessage.content == content)) == "rejected"
