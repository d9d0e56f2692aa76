"""Population health against real PostgreSQL: the record API in-process (lifespan and export worker running),
the real consent service served over HTTP in a thread (the record API reaches it exactly as in production), the
store seeded the way ingest writes it, and consents recorded through the consent service's own service API."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.consent.app import create_app as consent_app
from services.consent.service import ConsentService
from services.consent.settings import ConsentSettings
from services.record_api.app import create_app as record_app
from services.record_api.settings import RecordApiSettings
from shared.auth import Principal, parse_scopes
from shared.fhir import NHS_NUMBER_SYSTEM, SNOMED
from tests.support import data
from tests.support.record_store import RecordStore
from tests.support.services import settings_for
from tests.support.tokens import TokenFactory
from tools.peers.ports import free_port

RECIPIENT_ODS, OTHER_RECIPIENT_ODS = "QWO", "X26"  # an ICB and a commissioning support unit (ODS code shapes)


class ServedApp:
    """A FastAPI app served by uvicorn on a free loopback port in a thread, lifespan included."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     access_log=False))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("served app did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("population-key") / "pseudonym.key"
    path.write_text(base64.b64encode(os.urandom(48)).decode())
    return path


@pytest.fixture(scope="session")
def consent_token_file(tokens: TokenFactory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("population-token") / "record-api.token"
    path.write_text(tokens.system())
    return path


@pytest.fixture
def consent(pg_url: str, tokens: TokenFactory) -> Iterator[ServedApp]:
    served = ServedApp(consent_app(settings_for(ConsentSettings, tokens, pg_url, consumers_enabled=False))).start()
    yield served
    served.stop()


@pytest.fixture
def record_store(pg_url: str) -> Iterator[RecordStore]:
    store = RecordStore(pg_url)
    yield store
    store.close()


@pytest.fixture
def population_settings(tokens: TokenFactory, pg_url: str, consent: ServedApp, consent_token_file: Path,
                        key_file: Path) -> Callable[..., RecordApiSettings]:
    def build(**overrides: Any) -> RecordApiSettings:
        values: dict[str, Any] = dict(consent_url=consent.url, consent_token_file=str(consent_token_file),
                                      export_pseudonym_key_file=str(key_file), export_poll_seconds=0.2,
                                      population_suppression_threshold=3)
        return settings_for(RecordApiSettings, tokens, pg_url, **(values | overrides))

    return build


@pytest.fixture
def make_api(population_settings: Callable[..., RecordApiSettings]) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(record_app(population_settings(**overrides)), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., TestClient]) -> TestClient:
    return make_api()


# ---------------------------------------------------------------- callers


def recipient_token(tokens: TokenFactory, sub: str = "ics-planning", ods: str = RECIPIENT_ODS,
                    scope: str = "system/*.read") -> str:
    return tokens.token({"sub": sub, "scope": scope, "ods_code": ods})


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} | extra


def kick_off_headers(token: str) -> dict[str, str]:
    return bearer(token, Prefer="respond-async", Accept="application/fhir+json")


# ---------------------------------------------------------------- consents, through the consent service itself


@dataclass
class Consents:
    service: ConsentService

    def preferences(self, nhs: str, *, direct_care: str = "share", withheld: tuple[str, ...] = (),
                    denied: tuple[str, ...] = (), opt_out: bool = False) -> None:
        citizen = Principal("citizen", f"nhslogin-{nhs}", nhs_number=nhs, identity_proofing_level="P9")
        document = {"direct_care": direct_care, "withheld_categories": list(withheld),
                    "denied_organisations": list(denied), "national_data_opt_out": opt_out}
        version = self.service.citizen_view(nhs).version  # a later save carries If-Match, as the page does
        self.service.put_preferences(citizen, document, f'W/"{version}"' if version else None)

    def gp_dissent(self, nhs: str) -> None:
        gp = Principal("clinician", "555000000077", parse_scopes("user/Consent.cruds"), ods_code=data.GP_ODS,
                       role="R0260")
        self.service.record_professional(gp, {
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                      "code": "INFA"}]}],
            "patient": {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": nhs}},
            "dateTime": "2026-01-01T09:00:00+00:00",
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTOUT"}]},
            "provision": {"type": "deny", "code": [{"coding": [{"system": SNOMED, "code": "416409005"}]}]}})


@pytest.fixture
def consents(consent: ServedApp) -> Consents:
    return Consents(consent.app.state.consent_service)


# ---------------------------------------------------------------- waiting for and reading an export


def wait_for(client: TestClient, status_url: str, headers: dict[str, str], timeout: float = 90) -> Any:
    """Poll the status URL as a Bulk Data client does, until the job is no longer in progress."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(status_url, headers=headers)
        if response.status_code != 202:
            return response
        assert response.headers["X-Progress"] and response.headers["Retry-After"].isdigit()
        if time.monotonic() > deadline:
            raise AssertionError(f"export still running after {timeout}s: {response.headers['X-Progress']}")
        time.sleep(0.1)


def run_export(client: TestClient, token: str, path: str = "/fhir/$export") -> tuple[dict[str, Any],
                                                                                    dict[str, str]]:
    """Kick off, wait, download: the manifest and every file's text by URL."""
    kicked = client.get(path, headers=kick_off_headers(token))
    assert kicked.status_code == 202, kicked.text
    done = wait_for(client, kicked.headers["Content-Location"], bearer(token))
    assert done.status_code == 200, done.text
    manifest = done.json()
    files = {}
    for output in manifest["output"]:
        response = client.get(output["url"], headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        files[output["url"]] = response.text
    return manifest, files
