"""A token's `ods_code` as identity providers and feeds may write it (lower case, padded) names the same
organisation in all three services (CONTRACTS.md §4 "Claim types"): normalised once where the token is read
(shared.auth), and stored normalised by ingest, so every comparison with stored codes holds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.consent.app import create_app as consent_app
from services.consent.settings import ConsentSettings
from services.ingest.app import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.record_api.app import create_app as record_app
from services.record_api.settings import RecordApiSettings
from shared.db import create_db_engine
from shared.schema import AuditEventRow, RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.security.conftest import ThreadedServer
from tests.support import data
from tests.support.services import settings_for
from tests.support.tokens import TokenFactory
from tests.unit.consent.builders import professional_body

pytestmark = pytest.mark.integration
A = data.NHS_NUMBERS[0]  # the NHS number messages.patient() and messages.adt() carry
GP_AS_WRITTEN, ACUTE_AS_WRITTEN = f" {data.GP_ODS.lower()}", f"{data.ACUTE_ODS.lower()} "


@dataclass
class Services:
    ingest: TestClient
    consent: TestClient
    record: TestClient
    db: Session


@pytest.fixture
def services(pg_url: str, tokens: TokenFactory, tmp_path) -> Iterator[Services]:
    token_file = tmp_path / "record-api.token"
    token_file.write_text(tokens.system())
    consent_settings = settings_for(ConsentSettings, tokens, pg_url, consumers_enabled=False)
    server = ThreadedServer(consent_app(consent_settings)).start()  # the decision point the record API asks
    engine = create_db_engine(pg_url)
    try:
        with TestClient(ingest_app(settings_for(IngestSettings, tokens, pg_url, mllp_enabled=False,
                                                consumers_enabled=False)), raise_server_exceptions=False) as ingest, \
                TestClient(consent_app(consent_settings), raise_server_exceptions=False) as consent, \
                TestClient(record_app(settings_for(RecordApiSettings, tokens, pg_url, consent_url=server.url,
                                                   consent_token_file=str(token_file))),
                           raise_server_exceptions=False) as record, Session(engine) as db:
            yield Services(ingest, consent, record, db)
    finally:
        server.stop()
        engine.dispose()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _gp_record_with_dissent() -> dict[str, Any]:
    dissent = professional_body("deny", code="416409005") | {"patient": {"reference": "urn:uuid:patient-1"}}
    return messages.bundle([messages.patient(), messages.condition("195967001", "Asthma", ident="P1"), dissent])


def test_a_lower_case_padded_ods_claim_is_the_same_organisation_in_every_service(services: Services,
                                                                                  tokens: TokenFactory) -> None:
    # Ingest: the feed token's code is the sender, stored as every service compares it; the ADT's MSH-4 (RR8)
    # agrees with a token naming "rr8 ".
    gp = services.ingest.post("/ingest/fhir", json=_gp_record_with_dissent(),
                              headers=_bearer(tokens.feed(ods=GP_AS_WRITTEN)))
    assert gp.status_code == 200, gp.text
    adt = services.ingest.post("/ingest/hl7v2", content=messages.adt("A01").encode(),
                               headers=_bearer(tokens.feed(ods=ACUTE_AS_WRITTEN)))
    assert "MSA|AA|" in adt.text, adt.text
    stored = services.db.execute(select(Resource.resource_type, Resource.source_org)
                                 .where(Resource.person_id.is_not(None))).all()
    assert {org for _type, org in stored} == {data.GP_ODS, data.ACUTE_ODS}
    assert set(services.db.scalars(select(RawMessage.sender_org))) == {data.GP_ODS, data.ACUTE_ODS}

    # Consent: the dissent's sender is known from its feed token, and it is the registered practice's.
    consent_id = services.db.scalars(select(Resource.id).where(Resource.resource_type == "Consent")).one()
    assert services.consent.app.state.consent_service.import_source_consent(consent_id) == "created"

    # Record API: under the objection the GP still sees what it recorded, however its token writes its code.
    person_id = next(p for t, p in services.db.execute(select(Resource.resource_type, Resource.person_id))
                     if t == "Patient")
    gp_user = tokens.clinician(ods=GP_AS_WRITTEN, role="S8000:G8000:R0260")
    everything = services.record.get(f"/fhir/Patient/{person_id}/$everything", headers=_bearer(gp_user))
    assert everything.status_code == 200, everything.text
    types = {e["resource"]["resourceType"] for e in everything.json()["entry"]}
    assert "Condition" in types and "Encounter" not in types  # its own asthma; the trust's admission withheld

    # Consent: a citizen's denied organisation is refused whatever case its token writes the code in, and the
    # access log names it as the citizen listed it.
    citizen = _bearer(tokens.citizen(A))
    saved = services.consent.put("/consent/me", headers=citizen, json={
        "direct_care": "object", "withheld_categories": [], "denied_organisations": [data.OTHER_TRUST_ODS],
        "national_data_opt_out": False})
    assert saved.status_code in (200, 201), saved.text
    other = tokens.clinician(ods=f" {data.OTHER_TRUST_ODS.lower()}")
    refused = services.consent.get("/fhir/Consent", params={
        "patient:identifier": f"https://fhir.nhs.uk/Id/nhs-number|{A}"}, headers=_bearer(other))
    assert refused.status_code == 403
    services.db.expire_all()
    actors = set(services.db.scalars(select(AuditEventRow.actor_ods).where(AuditEventRow.nhs_number == A)))
    assert actors <= {data.GP_ODS, data.ACUTE_ODS, data.OTHER_TRUST_ODS, None}
    assert data.OTHER_TRUST_ODS in actors
