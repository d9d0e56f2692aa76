"""Data protection end to end: the three services as real processes on PostgreSQL and Kafka, driven through every
feed (GP FHIR, HL7 v2 over HTTP and MLLP, community CSV, social-care events on Kafka, good and bad), clinicians'
reads (searches by NHS number and name, $everything, break-glass, denials), the citizen's API and a privacy
officer's audit search. Then every log line of every service is searched: no NHS number, name, address, postcode,
phone number, clinical text or break-glass reason may appear."""

from __future__ import annotations

import json
import socket
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from shared.events import KafkaEventBus
from shared.schema import AuditEventRow, Resource
from tests.fixtures.ingest import messages
from tests.support import data
from tools.load.stack import Signer, Stack

pytestmark = pytest.mark.integration
REASON = "Unconscious in resus after collapse at 14 Wharf Street; family says allergic to latex"
# Everything below appears in what the test sends; none of it may reach a log line.
SECRETS = [*data.NHS_NUMBERS[:5], data.INVALID_NHS_NUMBER, "Okafor", "Chidi", "LS6 2QT", "Cardigan Road",
           "ORANGE", "Blossom", "Park Lane", "LS1 4AB", "0113 496 0123", "Nowak", "Zofia", "LS9 7TF", "Begum",
           "Rukhsana", "Nasreen", "BD7 1AB", "07700 900461", "Pneumonia", "HIV disease", "Penicillin", "penicillin",
           "Depressive", "Diabetes mellitus", "Metformin", "Hard of hearing", "Appendicectomy", "Cashew", "Latex",
           "latex", "Wharf Street", "Unconscious", "Homecare", "self-neglect", "Whitfield"]


def _mllp(port: int, message: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"\x0b" + message.encode() + b"\x1c\r")
        reply = b""
        while b"\x1c\r" not in reply:
            chunk = conn.recv(65536)
            assert chunk
            reply += chunk
    return reply.decode()


def test_no_patient_data_reaches_any_log_line_in_an_end_to_end_run(pg_url, kafka, tmp_path) -> None:
    signer = Signer(tmp_path / "keys")
    topic = f"socialcare.events.logs-{uuid.uuid4().hex[:8]}"
    kafka.create_topics([topic, f"{topic}.dlq"], partitions=1)
    stack = Stack(pg_url, kafka.bootstrap, signer.jwks_path, signer.issuer, signer.audience, tmp_path / "logs",
                  signer.system(), extra_env={"SCR_SOCIALCARE_TOPIC": topic, "SCR_SOCIALCARE_DLQ_TOPIC": f"{topic}.dlq",
                                              "SCR_CONSUMER_GROUP": f"ingest-{uuid.uuid4().hex[:8]}",
                                              "SCR_LOG_LEVEL": "DEBUG"})
    try:
        stack.start()
        _drive(stack, signer, kafka.bootstrap, topic)
    finally:
        stack.stop()
    logs = stack.logs()
    assert set(logs) == {"ingest", "consent", "record_api"}
    everything = "\n".join(logs.values())
    # The search reads real log lines: each service logged its requests by route template.
    for route in ("/ingest/fhir", "/ingest/hl7v2", "/ingest/community", "/fhir/Patient/{id}/$everything",
                  "/fhir/{resource_type}", "/consent/me", "/consent/decide", "/fhir/AuditEvent"):
        assert f'"route": "{route}"' in everything, route
    found = {secret: name for name, text in logs.items() for secret in SECRETS if secret in text}
    assert not found, f"patient data in the logs: {found}"
    assert "Traceback" not in everything


def _drive(stack: Stack, signer: Signer, bootstrap: str, topic: str) -> None:
    ingest, record, consent = (httpx.Client(base_url=stack.url(n), timeout=60)
                               for n in ("ingest", "record_api", "consent"))

    def feed(ods: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {signer.feed(ods)}"}

    # --- every feed, good and bad
    assert ingest.post("/ingest/fhir", json=messages.load_json("gp_record_bundle.json"),
                       headers=feed(data.GP_ODS)).status_code == 200
    bad_bundle = messages.bundle([messages.patient(nhs=data.INVALID_NHS_NUMBER, family="Whitfield", local_id="B-1")])
    assert ingest.post("/ingest/fhir", json=bad_bundle, headers=feed(data.GP_ODS)).status_code == 400
    assert ingest.post("/ingest/hl7v2", content=messages.text("adt_a01_itk.hl7").encode(),
                       headers=feed(data.ACUTE_ODS)).status_code == 200
    refused = ingest.post("/ingest/hl7v2", content=messages.adt("A01", nhs=data.INVALID_NHS_NUMBER,
                                                                control="BAD-1").encode(), headers=feed(data.ACUTE_ODS))
    assert "MSA|AE" in refused.text or "MSA|AR" in refused.text
    assert "MSA|AA" in _mllp(stack.ports["mllp"], messages.adt("A03", control="MLLP-1", ts="20240303101500",
                                                                discharged="20240303101500"))
    assert "MSA|A" in _mllp(stack.ports["mllp"], "MSH|^~\\&|PAS|RR8|garbage Okafor 9990000018\r")
    csv = messages.text("community_contacts.csv")
    assert ingest.post("/ingest/community", content=csv.encode(), headers=feed(data.COMMUNITY_ODS)).status_code == 200
    bad_csv = csv.splitlines()[0] + "\nX-1,P-1,9990000019,01,Nowak,Zofia,1952-13-45,female,LS9 7TF,DN,DN,DN,x,x,x\n"
    assert ingest.post("/ingest/community", content=bad_csv.encode(), headers=feed(data.COMMUNITY_ODS)).status_code \
        == 400
    bus = KafkaEventBus(bootstrap, "logs-test-provider")
    for event_type in ("care_package.started", "safeguarding.concern_raised", "carer.recorded"):
        bus.publish(topic, data.NHS_NUMBERS[2], messages.event(event_type, messages.EVENT_BODIES[event_type],
                                                                event_id=f"evt-{event_type}"))
    bus.publish(topic, data.NHS_NUMBERS[2], {"event_type": "carer.recorded", "person": {"family_name": "Begum",
                                                                                      "nhs_number": "9990000034"}})
    bus.flush()
    bus.close()
    engine_url = stack.database_url
    from shared.db import create_db_engine, make_session_factory

    engine = create_db_engine(engine_url, pool_size=1)
    sessions = make_session_factory(engine)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sessions() as session:
            if session.scalar(select(func.count()).select_from(Resource)
                              .where(Resource.resource_type == "RelatedPerson", Resource.source_org == "A1B2C")):
                break
        time.sleep(0.5)
    else:
        raise AssertionError("the social-care events were not stored")

    # --- clinicians' reads, a break-glass read, denials
    acute = {"Authorization": f"Bearer {signer.clinician(ods=data.ACUTE_ODS)}"}
    stranger = {"Authorization": f"Bearer {signer.clinician(ods=data.OTHER_TRUST_ODS, sub='555000000099')}"}
    found = record.get("/fhir/Patient", params={"identifier": f"https://fhir.nhs.uk/Id/nhs-number|{data.NHS_NUMBERS[0]}"},
                       headers=acute)
    assert found.status_code == 200
    person = found.json()["entry"][0]["resource"]["id"]
    for params in ({"family": "Okafor"}, {"family": "ORANGE", "given": "Blossom", "birthdate": "1980-01-01"},
                   {"address-postalcode": "LS6 2QT"}, {"name": "Nowak"}):
        assert record.get("/fhir/Patient", params=params, headers=acute).status_code == 200
    assert record.get(f"/fhir/Patient/{person}/$everything", headers=acute).status_code in (200, 403)
    assert record.get("/fhir/Condition", params={"patient": person, "code": "http://snomed.info/sct|86406008"},
                      headers=acute).status_code in (200, 403)
    glass = record.get(f"/fhir/Patient/{person}/$everything", headers=stranger | {"X-Break-Glass-Reason": REASON})
    assert glass.status_code == 200, glass.text[:300]
    assert record.get(f"/fhir/Patient/{person}/$everything", headers=stranger).status_code == 403
    assert record.get(f"/fhir/Patient/{data.NHS_NUMBERS[0]}", headers=acute).status_code == 404
    assert record.get(f"/nowhere/{data.NHS_NUMBERS[0]}/Okafor?name=Okafor").status_code == 404
    officer = {"Authorization": "Bearer " + signer.token({"sub": "555000000009", "scope": "user/AuditEvent.rs",
                                                          "ods_code": "RR8", "role_code": "S8002:G8003:R5100"})}
    assert record.get("/fhir/AuditEvent", params={"patient": person}, headers=officer).status_code == 200

    # --- the citizen, and a professional recording consent
    citizen = {"Authorization": f"Bearer {signer.citizen(data.NHS_NUMBERS[0])}"}
    assert consent.get("/consent/me", headers=citizen).status_code == 200
    current = consent.get("/consent/me", headers=citizen)
    document = {"direct_care": "share", "withheld_categories": ["PSY"], "denied_organisations": ["RH8"],
                "national_data_opt_out": True}
    put = consent.put("/consent/me", json=document, headers=citizen | {"If-Match": current.headers["etag"]})
    assert put.status_code in (200, 201), put.text[:300]
    log = consent.get("/consent/me/access-log", headers=citizen)
    assert log.status_code == 200 and "Wharf" in json.dumps(log.json())  # the citizen sees the reason; logs do not
    assert consent.get("/consent/me", params={"nhs_number": data.NHS_NUMBERS[1]}, headers=citizen).status_code == 400
    gp = {"Authorization": "Bearer " + signer.token({"sub": "555000000077", "scope": "user/Consent.cruds",
                                                     "ods_code": data.GP_ODS, "role_code": "S8000:G8000:R0260"})}
    identifier = {"patient:identifier": f"https://fhir.nhs.uk/Id/nhs-number|{data.NHS_NUMBERS[0]}"}
    assert consent.get("/fhir/Consent", params=identifier, headers=gp).status_code == 200
    with sessions() as session:  # the run really was audited, so there was something to leak
        assert session.scalar(select(func.count()).select_from(AuditEventRow)) >= 5
    engine.dispose()
    for client in (ingest, record, consent):
        client.close()
