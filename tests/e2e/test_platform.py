"""The whole platform as it runs in real mode: the three services as processes on a real PostgreSQL and a real
Kafka broker. Data arrives through every feed as its sender would send it (a GP's FHIR Bundle over HTTP, the
acute trust's ADT over MLLP, a community CSV, social-care events on Kafka); an EPR reads it with a real FHIR
client (fhirpy); a citizen objects on the consent service and the next reads reflect it; break-glass is
audited into the citizen's access log; and no service logs patient data along the way."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpy import SyncFHIRClient
from kafka import KafkaProducer

from services.record_api.duplicates import ALSO_RECORDED_BY
from shared.fhir import NHS_NUMBER_SYSTEM, ODS_ORG_SYSTEM
from tests.support.services import service_env
from tests.support.tokens import TokenFactory
from tools import demo
from tools.peers.ports import free_port
from tools.processes import ServiceProcess

pytestmark = pytest.mark.integration

NHS = demo.DEMO_NHS
SOURCES = {demo.GP, demo.ACUTE, demo.COMMUNITY, demo.SOCIAL_CARE}
# What must never appear in a log line: the demo person's identifiers, names, address and clinical words.
SECRETS = [NHS, "Demo", "Alex", "Park Row", "LS1 5HD", "0113 496 0000", "penicillin", "immunodeficiency"]


class Platform:
    def __init__(self, services: dict[str, ServiceProcess], mllp_port: int, kafka: Any, logs: Path) -> None:
        self.services, self.mllp_port, self.kafka, self.logs = services, mllp_port, kafka, logs

    def url(self, name: str) -> str:
        return self.services[name].url


@pytest.fixture
def platform(tokens: TokenFactory, pg_url: str, kafka: Any, tmp_path: Path) -> Iterator[Platform]:
    token_file = tmp_path / "record-api.token"
    token_file.write_text(tokens.system())
    ports = {name: free_port() for name in ("consent", "record_api", "ingest")}
    mllp = free_port()
    common = service_env(tokens, pg_url, SCR_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap)
    extra = {"consent": {}, "ingest": {"SCR_MLLP_PORT": str(mllp)},
             "record_api": {"SCR_CONSENT_URL": f"http://127.0.0.1:{ports['consent']}",
                            "SCR_CONSENT_TOKEN_FILE": str(token_file)}}
    started: dict[str, ServiceProcess] = {}
    try:
        for name in ("consent", "record_api", "ingest"):
            started[name] = ServiceProcess(name, ports[name], common | extra[name], tmp_path / f"{name}.log").start()
            started[name].wait_ready()
        yield Platform(started, mllp, kafka, tmp_path)
    finally:
        for service in reversed(list(started.values())):
            service.stop()


def _feed(tokens: TokenFactory, ods: str, system: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.feed(ods=ods)}", "X-Source-System": system}


def _mllp_exchange(port: int, messages: list[str]) -> list[str]:
    """Send every message on one connection, framed per HL7 MLLP, and read one ACK per message."""
    acks: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        buffer = b""
        for message in messages:
            conn.sendall(b"\x0b" + message.encode() + b"\x1c\r")
            while b"\x1c\r" not in buffer:
                buffer += conn.recv(65536)
            frame, buffer = buffer.split(b"\x1c\r", 1)
            acks.append(frame.lstrip(b"\x0b").decode())
    return acks


def _publish_social_care(bootstrap: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for event in demo.social_care_events():
        producer.send("socialcare.events", key=NHS.encode(), value=json.dumps(event).encode())
    producer.flush()
    producer.close()


def _eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _ingest_every_feed(platform: Platform, tokens: TokenFactory) -> None:
    ingest = platform.url("ingest")
    gp = httpx.post(f"{ingest}/ingest/fhir", content=json.dumps(demo.gp_bundle()),
                    headers=_feed(tokens, demo.GP, "EMIS-Web") | {"Content-Type": "application/fhir+json"})
    assert gp.status_code == 200, gp.text
    assert all(e["response"]["status"].startswith("201") for e in gp.json()["entry"])
    acks = _mllp_exchange(platform.mllp_port, demo.acute_messages())
    assert [a.split("\r")[1].split("|")[1] for a in acks] == ["AA", "AA", "AA"]
    community = httpx.post(f"{ingest}/ingest/community", content=demo.community_csv(),
                           headers=_feed(tokens, demo.COMMUNITY, "SystmOne") | {"Content-Type": "text/csv"})
    assert community.status_code == 200, community.text
    _publish_social_care(platform.kafka.bootstrap)


def _fhir(platform: Platform, token: str, **headers: str) -> SyncFHIRClient:
    return SyncFHIRClient(f"{platform.url('record_api')}/fhir", authorization=f"Bearer {token}",
                          extra_headers=headers or None)


def _everything(client: SyncFHIRClient, person_id: str) -> list[dict[str, Any]]:
    bundle = client.reference("Patient", person_id).execute("$everything", method="get", params={"_count": 50})
    entries = list(bundle.get("entry", []))
    while (nxt := next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)) is not None:
        bundle = client.execute(nxt, method="get")
        entries += bundle.get("entry", [])
    return entries


def _sources(entries: list[dict[str, Any]]) -> set[str]:
    return {t["code"] for e in entries if e["resource"]["resourceType"] not in ("Patient", "OperationOutcome")
            for t in e["resource"]["meta"].get("tag", []) if t["system"] == ODS_ORG_SYSTEM}


def test_every_feed_to_one_consent_enforced_audited_record(platform: Platform, tokens: TokenFactory) -> None:
    _ingest_every_feed(platform, tokens)
    acute = _fhir(platform, tokens.clinician(ods=demo.ACUTE))

    # One person, one Patient, found by NHS number, with every source's identifier and record linked (GP, acute,
    # community and social care: the last arrives asynchronously through Kafka, so wait for its source record).
    def linked_from_every_source() -> list[Any]:
        found = acute.resources("Patient").search(identifier=f"{NHS_NUMBER_SYSTEM}|{NHS}").fetch_all()
        return found if len(found) != 1 or len(found[0]["link"]) == 4 else []

    people = _eventually(linked_from_every_source, "the social-care source record linked to the person")
    assert len(people) == 1
    person = people[0]
    assert len(person["link"]) == 4
    assert acute.resources("Patient").search(identifier="urn:scr:local-patient-id:RR8|RR8-445566").get().id \
        == person.id

    # The unified view holds every source (social care arrives asynchronously through Kafka).
    entries = _eventually(lambda: (e := _everything(acute, person.id)) and _sources(e) == SOURCES and e,
                          "social-care events consumed from Kafka into the record")
    shown = [e["resource"] for e in entries if e["resource"]["resourceType"] != "OperationOutcome"]
    allergies = [r for r in shown if r["resourceType"] == "AllergyIntolerance"]
    assert len(allergies) == 1  # the GP's and the hospital's penicillin allergy, presented once...
    assert any(x["url"] == ALSO_RECORDED_BY for x in allergies[0].get("extension", []))  # ...with both sources
    assert "86406008" not in json.dumps(shown)  # HIV diagnosis withheld by default...
    notices = [i for e in entries if e["resource"]["resourceType"] == "OperationOutcome"
               for i in e["resource"]["issue"]]
    assert any(c["code"] == "confidential-items" for i in notices for c in i.get("details", {}).get("coding", []))

    # The citizen objects; the community clinician's next reads show only what the community service recorded.
    community = _fhir(platform, tokens.clinician(ods=demo.COMMUNITY))
    assert _sources(_everything(community, person.id)) == SOURCES
    citizen = {"Authorization": f"Bearer {tokens.citizen(NHS)}"}
    consent = platform.url("consent")
    current = httpx.get(f"{consent}/consent/me", headers=citizen)
    saved = httpx.put(f"{consent}/consent/me", json=current.json() | {"direct_care": "object"},
                      headers=citizen | {"If-Match": current.headers["etag"]})
    assert saved.status_code in (200, 201), saved.text
    _eventually(lambda: _sources(_everything(community, person.id)) == {demo.COMMUNITY},
                "the objection reaching the record API over consent.changed", timeout=30)

    # Break-glass lifts the objection for a clinical role with a reason, and the citizen can see it happened.
    glass = _fhir(platform, tokens.clinician(ods=demo.COMMUNITY),
                  **{"X-Break-Glass-Reason": "Found unresponsive at home visit"})
    assert _sources(_everything(glass, person.id)) == SOURCES
    log = httpx.get(f"{consent}/consent/me/access-log", headers=citizen).json()["entries"]
    assert any(entry.get("break_glass_reason") == "Found unresponsive at home visit" for entry in log), log

    _assert_no_patient_data_in_logs(platform.logs)


def _assert_no_patient_data_in_logs(directory: Path) -> None:
    for path in directory.glob("*.log"):
        text = path.read_text()
        assert text, f"{path.name} is empty: the services should have logged requests"
        for secret in SECRETS:
            assert secret not in text, f"{path.name} logs {secret!r}"


def _post(platform: Platform, tokens: TokenFactory, path: str, ods: str, system: str, content: str,
          content_type: str) -> httpx.Response:
    response = httpx.post(f"{platform.url('ingest')}{path}", content=content,
                          headers=_feed(tokens, ods, system) | {"Content-Type": content_type})
    assert response.status_code == 200 and ("MSA|AA" in response.text or path != "/ingest/hl7v2"), response.text
    return response


def _gp_consent_bundle() -> dict[str, Any]:
    """The GP system's record of the person's consent to share (SNOMED 425691002), made now."""
    patient = demo.gp_bundle()["entry"][0]
    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                         "code": "INFA"}]}],
               "patient": {"reference": patient["fullUrl"]}, "dateTime": datetime.now(UTC).isoformat(),
               "identifier": [{"system": "urn:emis:y12345", "value": "CN-1"}],
               "provision": {"type": "permit", "code": [{"coding": [{"system": "http://snomed.info/sct",
                                                                      "code": "425691002"}]}]}}
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [patient, {"fullUrl": "urn:uuid:6f1c2a4e-0d3b-4c55-9a43-0000000000c1", "resource": consent,
                                "request": {"method": "POST", "url": "Consent"}}]}


def test_an_imported_consent_ends_an_objection_only_from_the_registered_practice(platform: Platform,
                                                                                 tokens: TokenFactory) -> None:
    _post(platform, tokens, "/ingest/fhir", demo.GP, "EMIS-Web", json.dumps(demo.gp_bundle()),
          "application/fhir+json")
    for message in demo.acute_messages():
        _post(platform, tokens, "/ingest/hl7v2", demo.ACUTE, "PAS", message, "x-application/hl7-v2+er7")
    acute = _fhir(platform, tokens.clinician(ods=demo.ACUTE))
    person = acute.resources("Patient").search(identifier=f"{NHS_NUMBER_SYSTEM}|{NHS}").get()
    assert _sources(_everything(acute, person.id)) == {demo.GP, demo.ACUTE}

    citizen = {"Authorization": f"Bearer {tokens.citizen(NHS)}"}
    consent = platform.url("consent")
    current = httpx.get(f"{consent}/consent/me", headers=citizen)
    assert httpx.put(f"{consent}/consent/me", json=current.json() | {"direct_care": "object"},
                     headers=citizen | {"If-Match": current.headers["etag"]}).status_code in (200, 201)
    _eventually(lambda: _sources(_everything(acute, person.id)) == {demo.ACUTE}, "the objection enforced")

    # The hospital's PAS says the patient consents (ZU8-2 = 1), after the objection: kept, not in force.
    time.sleep(1.1)  # HL7 times are to the second: stated strictly after the objection
    when = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    _post(platform, tokens, "/ingest/hl7v2", demo.ACUTE, "PAS",
          demo._adt("A31", "ADT_A05", "CONSENT-1", when, ["ZU8||1"]), "x-application/hl7-v2+er7")

    def held() -> list[dict[str, Any]]:
        entries = httpx.get(f"{consent}/consent/me/history", headers=citizen).json()["entries"]
        return [e for e in entries if e["consent_id"].endswith("-held")]

    [kept] = _eventually(held, "the hospital's consent imported and held")
    assert (kept["status"], kept["recorded_by"]["organisation"]) == ("rejected", demo.ACUTE)
    assert httpx.get(f"{consent}/consent/me", headers=citizen).json()["direct_care"] == "object"
    log = httpx.get(f"{consent}/consent/me/access-log", headers=citizen).json()["entries"]
    assert any((e["action"], e["outcome"], e["who"]["organisation"]) == ("consent-change", "denied", demo.ACUTE)
               for e in log), log
    assert _sources(_everything(acute, person.id)) == {demo.ACUTE}  # the record API still withholds

    # The registered practice's own feed records the patient's consent: that ends the objection.
    _post(platform, tokens, "/ingest/fhir", demo.GP, "EMIS-Web", json.dumps(_gp_consent_bundle()),
          "application/fhir+json")
    _eventually(lambda: httpx.get(f"{consent}/consent/me", headers=citizen).json()["direct_care"] == "share",
                "the practice's consent in force")
    _eventually(lambda: _sources(_everything(acute, person.id)) == {demo.GP, demo.ACUTE},
                "sharing resumed on the record API", timeout=30)
