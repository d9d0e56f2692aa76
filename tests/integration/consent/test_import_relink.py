"""Imported consents follow their source record (docs/CONSENT.md "Relinked source records"): when ingest relinks
the record an imported Consent came with to another person, the consent leaves the previous person's NHS number
and is filed under the new one; the citizen's own choices never move."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.consent import store
from services.consent.consumers import import_handler
from services.ingest.app import create_app as create_ingest_app
from shared.events import CONSENT_CHANGED, RECORD_CHANGED, Event
from shared.schema import ConsentRecord, EventLogEntry, Person
from tests.fixtures.ingest import messages
from tests.integration.consent.conftest import (
    DOC,
    add_person,
    bearer,
    decide_body,
    register_with_practice,
    store_source_consent,
)
from tests.integration.ingest.conftest import ingest_settings
from tests.support import data
from tests.unit.consent.builders import professional_body

pytestmark = pytest.mark.integration
A, B = data.NHS_NUMBERS[2], data.NHS_NUMBERS[3]
GP, ACUTE = data.GP_ODS, data.ACUTE_ODS


@pytest.fixture
def ingest(pg_url: str, tokens) -> Iterator[TestClient]:
    with TestClient(create_ingest_app(ingest_settings(tokens, pg_url)), raise_server_exceptions=False) as client:
        yield client


def _post(ingest: TestClient, tokens, resources: list[dict[str, Any]]) -> None:
    response = ingest.post("/ingest/fhir", json=messages.bundle(resources),
                           headers=bearer(tokens.feed(ods=GP)))
    assert response.status_code == 200, response.text


def _dissent() -> dict[str, Any]:
    return professional_body("deny", code="416409005") | {
        "patient": {"reference": "urn:uuid:patient-1"},
        "identifier": [{"system": "https://fhir.y12345.nhs.uk/Id/consent", "value": "CNS-1"}]}


def _import_announced(db, service, after: int = 0) -> int:
    """Hand every record.changed event after id `after` to the consent service's import handler, as its consumer
    does; returns the id of the last event handled."""
    db.expire_all()
    rows = db.scalars(select(EventLogEntry).where(EventLogEntry.topic == RECORD_CHANGED, EventLogEntry.id > after)
                      .order_by(EventLogEntry.id)).all()
    handle = import_handler(service)
    for row in rows:
        handle(Event(topic=row.topic, key=row.key, payload=row.payload, raw=b""))
    return rows[-1].id if rows else after


def _rule(client, tokens, nhs: str) -> str:
    return client.post("/consent/decide", json=decide_body(nhs), headers=bearer(tokens.system())).json()["rule"]


def _history(client, tokens, nhs: str) -> list[tuple[str, int, str, str]]:
    entries = client.get("/consent/me/history", headers=bearer(tokens.citizen(nhs))).json()["entries"]
    return [(e["consent_id"], e["version"], e["kind"], e["status"]) for e in entries]


def _imports_logged(client, tokens, nhs: str) -> list[dict[str, Any]]:
    entries = client.get("/consent/me/access-log", headers=bearer(tokens.citizen(nhs))).json()["entries"]
    return [e for e in entries if e["who"]["user"] == "consent-import"]


def _consent_events(db) -> list[tuple[str, str, int]]:
    db.expire_all()
    rows = db.scalars(select(EventLogEntry).where(EventLogEntry.topic == CONSENT_CHANGED)
                      .order_by(EventLogEntry.id)).all()
    return [(r.key, r.payload["consent_id"], r.payload["version_id"]) for r in rows]


def _row(db, consent_id: str) -> ConsentRecord | None:
    db.expire_all()
    return db.scalars(select(ConsentRecord).where(ConsentRecord.id == consent_id)).first()


def test_a_dissent_follows_its_source_record_to_the_person_a_corrected_nhs_number_names(ingest, client, tokens,
                                                                                         db) -> None:
    service = client.app.state.consent_service
    _post(ingest, tokens, [messages.patient(nhs=A, local_id="EMIS-1"), _dissent()])
    _post(ingest, tokens, [messages.patient(nhs=B, local_id="EMIS-2", family="Adeyemi", given="Tola",
                                            birth="1975-03-02", postcode="LS2 7AA", gender="female")])
    seen = _import_announced(db, service)
    consent_id = db.scalars(select(ConsentRecord.id)).one()
    assert _row(db, consent_id).nhs_number == A and _rule(client, tokens, A) == "objection"
    assert _rule(client, tokens, B) == "default-share"
    # The citizen A's own choices are theirs, by their token: a relink of a source record never moves them.
    assert client.put("/consent/me", headers=bearer(tokens.citizen(A)),
                      json=DOC | {"withheld_categories": ["PSY"]}).status_code == 201

    # The GP corrects the NHS number on its record: ingest relinks it, and the dissent with it, to B's person.
    _post(ingest, tokens, [messages.patient(nhs=B, local_id="EMIS-1")])
    _import_announced(db, service, seen)

    row = _row(db, consent_id)
    assert (row.nhs_number, row.status, row.version_id) == (B, "active", 3)
    assert row.body["patient"]["identifier"]["value"] == B
    assert _rule(client, tokens, B) == "objection"
    assert _rule(client, tokens, A) == "share"  # their own saved choices, the objection gone
    mine = client.get("/consent/me", headers=bearer(tokens.citizen(A))).json()
    assert (mine["direct_care"], mine["withheld_categories"]) == ("share", ["PSY"])
    # A's history: the dissent as it was filed under them, then taken off their record; B's: the dissent as theirs.
    assert [h for h in _history(client, tokens, A) if h[0] == consent_id] == [
        (consent_id, 2, "dissent", "inactive"), (consent_id, 1, "dissent", "active")]
    assert _history(client, tokens, B) == [(consent_id, 3, "dissent", "active")]
    assert _consent_events(db)[-2:] == [(A, consent_id, 2), (B, consent_id, 3)]
    assert f"Consent/{consent_id}/_history/2" in _imports_logged(client, tokens, A)[0]["what"]
    assert f"Consent/{consent_id}/_history/3" in _imports_logged(client, tokens, B)[0]["what"]

    # Re-delivery of the relink changes nothing.
    events = len(_consent_events(db))
    _import_announced(db, service, seen)
    assert _row(db, consent_id).version_id == 3 and len(_consent_events(db)) == events


def test_a_relinked_consent_that_would_end_the_new_persons_objection_is_held_there(client, tokens, db) -> None:
    service = client.app.state.consent_service
    register_with_practice(db, "person-a", A, GP)
    register_with_practice(db, "person-b", B, GP)
    assert client.put("/consent/me", headers=bearer(tokens.citizen(B)),
                      json=DOC | {"direct_care": "object"}).status_code == 201
    consent = professional_body("permit", code="425691002", stated=datetime.now(UTC))  # after B's objection
    store_source_consent(db, "zu8", "person-a", body=consent, source_org=ACUTE, sender=ACUTE, channel="hl7v2")
    assert service.import_source_consent("zu8") == "created"

    # An A40 from the trust re-points its record to B's person: the trust is not B's practice.
    store_source_consent(db, "zu8", "person-b", version=2, body=consent, source_org=ACUTE, sender=ACUTE,
                         channel="hl7v2")
    assert service.import_source_consent("zu8") == "held"
    assert _rule(client, tokens, B) == "objection"
    held = _row(db, "src-zu8-held")
    assert (held.nhs_number, held.status) == (B, "rejected")
    moved = _row(db, "src-zu8")
    assert (moved.nhs_number, moved.status) == (A, "inactive")  # off A's record, in force for no one
    assert service.import_source_consent("zu8") == "unchanged"


def test_a_relink_to_a_person_without_an_nhs_number_leaves_the_consent_where_it_is(client, tokens, db) -> None:
    service = client.app.state.consent_service
    add_person(db, "person-a", A)
    now = datetime.now(UTC)
    db.add(Person(id="person-x", nhs_number=None, status="active", version=1, created=now, updated=now))
    db.commit()
    store_source_consent(db, "gp-1", "person-a")
    assert service.import_source_consent("gp-1") == "created"
    store_source_consent(db, "gp-1", "person-x", version=2)
    assert service.import_source_consent("gp-1") == "skipped"
    assert (_row(db, "src-gp-1").nhs_number, _rule(client, tokens, A)) == (A, "objection")



def test_a_citizens_own_consent_is_never_refiled_under_another_number(client, tokens, db) -> None:
    assert client.put("/consent/me", headers=bearer(tokens.citizen(A)),
                      json=DOC | {"direct_care": "object"}).status_code == 201
    row = db.scalars(select(ConsentRecord).where(ConsentRecord.nhs_number == A)).one()
    with pytest.raises(ValueError, match="citizen"):
        store.new_version(db, row, recorded=datetime.now(UTC), body=row.body, nhs_number=B)
    db.rollback()
    assert _row(db, row.id).nhs_number == A
