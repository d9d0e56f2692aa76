"""The record API as the EPRs use it: a running service process (real PostgreSQL and Kafka) driven by a real FHIR
client library (fhirpy), not by hand-made requests.

The record comes from `seeded_record`, which writes the store the way ingest does for every feed (GP FHIR,
acute HL7 v2, community CSV, social-care events). The assertions use only what `RecordUnderTest` names, so the
same test can later run over a record that came in through the real ingest service: swap the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome as FhirOperationOutcome

from services.record_api.duplicates import ALSO_RECORDED_BY
from shared.fhir import NHS_NUMBER_SYSTEM, ODS_ORG_SYSTEM
from tests.integration.record_api.pdp import DecisionDouble
from tests.support import data
from tests.support.record_store import RecordStore, Scenario
from tests.support.services import service_env
from tools.peers.ports import free_port
from tools.processes import ServiceProcess

pytestmark = pytest.mark.integration


@dataclass
class RecordUnderTest:
    """What the test knows about one person's record, however it got into the store."""

    person_id: str
    nhs_number: str
    local_identifiers: list[tuple[str, str]]  # one per source: (system, value)
    source_organisations: set[str]  # every organisation that sent something
    duplicated_concepts: set[str]  # codes recorded by more than one source (allergy, medication)
    withheld_from_acute: set[str]  # ids an acute clinician must not see (sensitive categories, sealed)


@pytest.fixture
def seeded_record(pg_url: str) -> Iterator[RecordUnderTest]:
    store = RecordStore(pg_url)
    scenario = Scenario.build(store)
    yield RecordUnderTest(
        person_id=scenario.person, nhs_number=scenario.nhs_number,
        local_identifiers=[("https://emis.example/Id/patient", "E1001"), ("https://fhir.rr8.nhs.uk/Id/mrn", "MRN123"),
                           ("https://fhir.ry6.nhs.uk/Id/local", "C-77"), ("https://mosaic.example/Id/person", "M-42")],
        source_organisations={data.GP_ODS, data.ACUTE_ODS, data.COMMUNITY_ODS, data.SOCIAL_CARE_ODS},
        duplicated_concepts={"91936005", "322236009"},
        withheld_from_acute=scenario.withheld_by_default)
    store.close()


@pytest.fixture
def record_api(tokens, pg_url, kafka, pdp, pdp_token: Path, tmp_path) -> Iterator[ServiceProcess]:
    env = service_env(tokens, pg_url, SCR_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap, SCR_CONSENT_URL=pdp.url,
                      SCR_CONSENT_TOKEN_FILE=str(pdp_token))
    process = ServiceProcess("record_api", free_port(), env, tmp_path / "record_api.log").start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
    assert "Traceback" not in (tmp_path / "record_api.log").read_text()


def _client(service: ServiceProcess, token: str, **headers: str) -> SyncFHIRClient:
    return SyncFHIRClient(f"{service.url}/fhir", authorization=f"Bearer {token}", extra_headers=headers or None)


def test_an_epr_finds_the_patient_and_reads_the_unified_record(record_api, seeded_record, tokens) -> None:
    record = seeded_record
    fhir = _client(record_api, tokens.clinician(ods=data.ACUTE_ODS))
    by_nhs = fhir.resources("Patient").search(identifier=f"{NHS_NUMBER_SYSTEM}|{record.nhs_number}").fetch_all()
    assert [p.id for p in by_nhs] == [record.person_id]
    for system, value in record.local_identifiers:
        assert fhir.resources("Patient").search(identifier=f"{system}|{value}").get().id == record.person_id
    patient = fhir.reference("Patient", record.person_id).to_resource()
    held = {(i["system"], i["value"]) for i in patient["identifier"]}
    assert (NHS_NUMBER_SYSTEM, record.nhs_number) in held and set(record.local_identifiers) <= held
    for link in patient["link"]:  # every source record is reachable and is a Patient of its own
        source = fhir.reference(reference=link["other"]["reference"]).to_resource()
        assert source.resourceType == "Patient" and source.id != record.person_id

    bundle = fhir.reference("Patient", record.person_id).execute("$everything", method="get",
                                                                 params={"_count": 4})
    entries = list(bundle["entry"])
    while (nxt := next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)) is not None:
        bundle = fhir.execute(nxt, method="get")
        entries += bundle["entry"]
    shown = [e["resource"] for e in entries if e["resource"]["resourceType"] != "OperationOutcome"]
    organisations = {t["code"] for r in shown[1:] for t in r["meta"]["tag"] if t["system"] == ODS_ORG_SYSTEM}
    assert organisations == record.source_organisations
    assert record.withheld_from_acute.isdisjoint({r["id"] for r in shown})
    warnings = [i for e in entries if e["resource"]["resourceType"] == "OperationOutcome"
                for i in e["resource"]["issue"]]
    assert any(c["code"] == "confidential-items" for i in warnings for c in i.get("details", {}).get("coding", []))
    for code in record.duplicated_concepts:
        holders = [r for r in shown if code in str(r.get("code", r.get("medicationCodeableConcept", "")))]
        assert len(holders) == 1, code
        assert any(x["url"] == ALSO_RECORDED_BY for x in holders[0]["extension"])


def test_an_epr_searches_pages_and_rereads_conditionally(record_api, seeded_record, tokens) -> None:
    record = seeded_record
    fhir = _client(record_api, tokens.clinician(ods=data.ACUTE_ODS))
    everything = fhir.resources("Observation").search(patient=record.person_id).limit(1)
    observations = everything.fetch_all()  # fhirpy follows the next links
    assert len(observations) == everything.count() >= 1
    assert len({o.id for o in observations}) == len(observations)
    newest = fhir.resources("Observation").search(patient=record.person_id).sort("-date").first()
    assert newest["effectiveDateTime"] == max(o["effectiveDateTime"] for o in observations)
    condition = fhir.resources("Condition").search(subject=f"Patient/{record.person_id}").first()
    version = condition["meta"]["versionId"]
    condition.refresh()  # If-None-Match: the server answers 304 and the client keeps its copy
    assert condition["meta"]["versionId"] == version
    lenient = fhir.resources("Condition").search(patient=record.person_id, colour="blue").fetch()
    assert [c.id for c in lenient] == [condition.id]  # unknown parameters are ignored by default...
    strict = _client(record_api, tokens.clinician(ods=data.ACUTE_ODS), Prefer="handling=strict")
    with pytest.raises(FhirOperationOutcome) as refused:  # ...and refused when the client asks for strictness
        strict.resources("Condition").search(patient=record.person_id, colour="blue").fetch()
    assert "colour" in str(refused.value)


def test_an_epr_at_an_organisation_with_no_relationship_is_refused_unless_it_breaks_glass(
        record_api, seeded_record, tokens, pdp: DecisionDouble) -> None:
    stranger = tokens.clinician(ods=data.OTHER_TRUST_ODS)
    with pytest.raises(Exception) as refused:
        _client(record_api, stranger).reference("Patient", seeded_record.person_id).to_resource()
    assert "no legitimate relationship" in str(refused.value)
    glass = _client(record_api, stranger, **{"X-Break-Glass-Reason": "Collapsed in our ED, unresponsive"})
    assert glass.reference("Patient", seeded_record.person_id).to_resource().id == seeded_record.person_id
    assert pdp.requests[-1]["purpose"] == "ETREAT"
    officer = _client(record_api, tokens.clinician(ods=data.ACUTE_ODS, role="S8002:G8003:R5100",
                                                   scope="user/AuditEvent.rs"))
    trail = officer.resources("AuditEvent").search(patient=seeded_record.person_id,
                                                   subtype="http://dicom.nema.org/resources/ontology/DCM|110127").fetch()
    assert len(trail) == 1
    assert trail[0]["agent"][1]["who"]["identifier"]["value"] == data.OTHER_TRUST_ODS
