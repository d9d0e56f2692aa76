"""The consent service in-process against a real PostgreSQL database (and, where a test asks, real Kafka)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.consent.app import create_app
from services.consent.settings import ConsentSettings
from shared.db import create_db_engine
from shared.fhir import ODS_ORG_SYSTEM
from shared.schema import ConsentVersion, Person, RawMessage, Resource, ResourceVersion
from tests.support import data
from tests.support.services import settings_for
from tests.support.tokens import TokenFactory
from tests.unit.consent.builders import professional_body

DOC = {"direct_care": "share", "withheld_categories": [], "denied_organisations": [], "national_data_opt_out": False}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def make_client(tokens: TokenFactory) -> Iterator[Callable[..., TestClient]]:
    """Start consent apps (lifespan running); each is stopped at the end of the test."""
    clients: list[TestClient] = []

    def make(database_url: str, **overrides: Any) -> TestClient:
        overrides.setdefault("consumers_enabled", False)
        client = TestClient(create_app(settings_for(ConsentSettings, tokens, database_url, **overrides)),
                            raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client, pg_url: str) -> TestClient:
    return make_client(pg_url)


@pytest.fixture
def db(pg_url: str) -> Iterator[Session]:
    engine = create_db_engine(pg_url)
    with Session(engine) as session:
        yield session
    engine.dispose()


def version_count(session: Session, nhs_number: str) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(ConsentVersion)
                          .where(ConsentVersion.nhs_number == nhs_number)) or 0


def add_person(session: Session, person_id: str, nhs_number: str) -> None:
    now = datetime.now(UTC)
    session.add(Person(id=person_id, nhs_number=nhs_number, status="active", version=1, created=now, updated=now))
    session.commit()


def register_with_practice(session: Session, person_id: str, nhs_number: str, practice: str) -> None:
    """The person and a source Patient record naming `practice` as their registered GP (as ingest stores one)."""
    add_person(session, person_id, nhs_number)
    add_source_patient(session, person_id, f"pat-{person_id}", practice, source_org=practice,
                       source_system="GP")


def add_source_patient(session: Session, person_id: str, record_id: str, practice: str | None, *, source_org: str,
                       source_system: str = "PAS", updated: datetime | None = None, active: bool = True,
                       gp: dict[str, Any] | None = None, vouched: bool = True) -> None:
    """A source Patient record linked to the person, sent by `source_org` at `updated` (the sender's time), naming
    `practice` as the registered GP by ODS code (or `gp` as given). `vouched`: the message that sent it came with a
    feed token naming `source_org` (False: none did, as over MLLP, where `source_org` is only MSH-4's claim)."""
    now = datetime.now(UTC)
    body: dict[str, Any] = {"resourceType": "Patient", "id": record_id}
    if gp or practice:
        body["generalPractitioner"] = [gp or {"type": "Organization",
                                              "identifier": {"system": ODS_ORG_SYSTEM, "value": practice}}]
    if not active:
        body["active"] = False
    session.add(Resource(resource_type="Patient", id=record_id, version_id=1, person_id=person_id,
                         source_patient_id=record_id, source_system=source_system, source_org=source_org,
                         source_key=f"patient:{record_id}", source_updated=updated, content_hash="0" * 64,
                         labels=[], last_updated=now, body=body))
    raw_id = str(uuid.uuid4())
    session.add(RawMessage(id=raw_id, channel="fhir" if vouched else "mllp", received_at=now, content_hash="0" * 64,
                           content=b"{}", content_type="application/fhir+json",
                           sender_org=source_org if vouched else None, status="processed"))
    session.add(ResourceVersion(resource_type="Patient", id=record_id, version_id=1, person_id=person_id,
                                source_org=source_org, raw_message_id=raw_id, labels=[], last_updated=now,
                                deleted=False, body=body))
    session.commit()


def decide_body(nhs_number: str, *, ods: str = "RR8", role: str = "S8000:G8000:R8000", purpose: str = "TREAT",
                labels: list[str] | None = None, relationship: str = "registered",
                reason: str | None = None) -> dict[str, Any]:
    return {"patient": {"nhs_number": nhs_number, "person_id": "p-1"},
            "actor": {"kind": "clinician", "ods_code": ods, "role_code": role, "user_id": "555000000001"},
            "purpose": purpose, "labels": labels or [], "legitimate_relationship": relationship,
            "break_glass_reason": reason}


def store_source_consent(session: Session, resource_id: str, person_id: str, *, version: int = 1,
                         deleted: bool = False, body: dict[str, Any] | None = None, source_org: str = data.GP_ODS,
                         sender: str | None = None, channel: str = "fhir") -> None:
    """A Consent as ingest stores one (CONTRACTS §1.5): patient -> the person, sent by `source_org`. `sender`: the
    ODS code the feed token of the message that wrote this version named (None: no token, as over MLLP)."""
    body = (body or professional_body("deny", code="416409005")) | {"id": resource_id, "patient": {
        "reference": f"Patient/{person_id}"}, "meta": {"versionId": str(version),
                                                   "source": f"urn:scr:ods:{source_org}:GP"}}
    now = datetime.now(UTC)
    row = session.get(Resource, ("Consent", resource_id))
    if row is None:
        row = Resource(resource_type="Consent", id=resource_id, person_id=person_id, source_patient_id=None,
                       source_system="GP", source_org=source_org, source_key=f"consent:{resource_id}",
                       content_hash="0" * 64, labels=[], last_updated=now)
        session.add(row)
    # A later version with another person is a relink (ingest re-points the resource with its source record).
    row.version_id, row.deleted, row.body, row.source_updated, row.person_id = version, deleted, body, now, person_id
    raw_id = str(uuid.uuid4())
    session.add(RawMessage(id=raw_id, channel=channel, received_at=now, content_hash="0" * 64, content=b"{}",
                           content_type="application/fhir+json", sender_org=sender, status="processed"))
    session.add(ResourceVersion(resource_type="Consent", id=resource_id, version_id=version, person_id=person_id,
                                source_org=source_org, raw_message_id=raw_id, labels=[], last_updated=now,
                                deleted=deleted, body=body))
    session.commit()
