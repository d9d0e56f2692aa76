"""Every protected endpoint of every service refuses bad callers with 401/403 and an OperationOutcome.

Routes are enumerated from each app, so an endpoint added without authentication fails this suite.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.consent.app import create_app as consent_app
from services.consent.settings import ConsentSettings
from services.ingest.app import create_app as ingest_app
from services.ingest.settings import IngestSettings
from services.record_api.app import create_app as record_app
from services.record_api.settings import RecordApiSettings
from tests.support.services import settings_for
from tests.support.tokens import TokenFactory

# DESIGN.md: the only endpoints that need no token.
PUBLIC = {"/healthz", "/readyz", "/metrics", "/fhir/metadata", "/", "/openapi.json", "/docs", "/redoc",
          "/docs/oauth2-redirect"}
PUBLIC_PREFIXES = ("/static/",)

FACTORIES = {"ingest": (ingest_app, IngestSettings), "consent": (consent_app, ConsentSettings),
             "record_api": (record_app, RecordApiSettings)}

UNAUTHENTICATED = ["none", "garbage", "expired", "wrong_issuer", "wrong_audience", "wrong_key", "alg_none"]


def protected_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    for path, operations in app.openapi()["paths"].items():
        if path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            continue
        for method in operations:
            yield method.upper(), re.sub(r"\{[^}]+\}", "x", path)


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def service(request, tokens: TokenFactory, tmp_path_factory) -> tuple[str, TestClient, list[tuple[str, str]]]:
    from shared.db import migrate

    url = f"sqlite:///{tmp_path_factory.mktemp(request.param) / 'scr.db'}"
    migrate(url)
    build, settings_cls = FACTORIES[request.param]
    app = build(settings_for(settings_cls, tokens, url))
    return request.param, TestClient(app, raise_server_exceptions=False), list(protected_routes(app))


def _header(tokens: TokenFactory, kind: str) -> dict[str, str]:
    if kind == "none":
        return {}
    token = "not-a-jwt" if kind == "garbage" else getattr(tokens, kind)()
    return {"Authorization": f"Bearer {token}"}


def test_each_service_has_protected_endpoints(service) -> None:
    name, _client, routes = service
    assert routes, f"{name} exposes no protected endpoint"


@pytest.mark.parametrize("caller", UNAUTHENTICATED)
def test_unauthenticated_callers_get_401_on_every_protected_endpoint(service, caller: str,
                                                                     tokens: TokenFactory) -> None:
    _name, client, routes = service
    for method, path in routes:
        response = client.request(method, path, headers=_header(tokens, caller))
        assert response.status_code == 401, (method, path, caller, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
        # RFC 6750 §3.1: a request without credentials is challenged without an error code.
        expected = 'Bearer realm="scr"' if caller == "none" else 'Bearer realm="scr", error="invalid_token"'
        assert response.headers["www-authenticate"] == expected, (method, path, caller)


def test_a_token_without_any_smart_scope_gets_403_on_every_protected_endpoint(service, tokens) -> None:
    _name, client, routes = service
    for method, path in routes:
        response = client.request(method, path, headers={"Authorization": f"Bearer {tokens.no_scope()}"})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["issue"][0]["code"] == "forbidden"
        assert response.headers["www-authenticate"] == 'Bearer realm="scr", error="insufficient_scope"', (method, path)


def test_a_scope_that_covers_other_types_is_challenged_as_insufficient_scope(service, tokens) -> None:
    """Scopes that exist but do not reach this route (a clinician who may read only Observations reading Patients; a
    system client who may read only Observations exporting Patients) are RFC 6750 `insufficient_scope` as well."""
    name, client, _routes = service
    if name != "record_api":
        return
    narrow = {"clinician": tokens.clinician(scope="user/Observation.rs"),
              "system": tokens.system(scope="system/Observation.rs")}
    for path, token, extra in (("/fhir/Patient?family=x", narrow["clinician"], {}),
                               ("/fhir/$export?_type=Patient", narrow["system"], {"Prefer": "respond-async"})):
        response = client.get(path, headers={"Authorization": f"Bearer {token}"} | extra)
        assert response.status_code == 403, (path, response.text)
        assert response.headers["www-authenticate"] == 'Bearer realm="scr", error="insufficient_scope"', path


# Correctly signed tokens whose claims have the wrong JSON type: each once answered 500, or 503 with an audit-write
# failure (raising ScrAuditWriteFailures), because code downstream took the claim for text.
WRONG_TYPES = [
    ("role_code", {"scope": "user/*.read", "ods_code": "RR8", "role_code": ["R8000"]}),
    ("role_code", {"scope": "user/*.read", "ods_code": "RR8", "role_code": 8000}),
    ("ods_code", {"scope": "user/*.read", "ods_code": ["RR8", "Y12345"], "role_code": "R8000"}),
    ("ods_code", {"scope": "user/*.read", "ods_code": {"a": 1}, "role_code": "R8000"}),
    ("ods_code", {"scope": "system/*.write system/*.read", "ods_code": ["Y12345"]}),
    ("nhs_number", {"nhs_number": 9990000018, "identity_proofing_level": "P9"}),
    ("nhs_number", {"nhs_number": "999O000018", "identity_proofing_level": "P9"}),
    ("identity_proofing_level", {"nhs_number": "9990000018", "identity_proofing_level": ["P9"]}),
    ("scope", {"scope": {"user/*.read": True}, "ods_code": "RR8", "role_code": "R8000"}),
    ("scp", {"scp": ["user/*.read", 7], "ods_code": "RR8", "role_code": "R8000"}),
    ("legitimate_relationship", {"scope": "user/*.read", "ods_code": "RR8", "role_code": "R8000",
                                 "legitimate_relationship": "self_claimed"}),
    ("role_code", {"scope": "user/*.read", "ods_code": "RR8", "role_code": "R8000" * 100}),
]


@pytest.mark.parametrize(("claim", "claims"), WRONG_TYPES)
def test_claims_of_the_wrong_type_get_401_naming_the_claim_on_every_protected_endpoint(
        service, claim: str, claims: dict, tokens: TokenFactory) -> None:
    _name, client, routes = service
    token = tokens.token({"sub": "555000000001"} | claims)
    for method, path in routes:
        response = client.request(method, path, headers={"Authorization": f"Bearer {token}",
                                                         "Prefer": "respond-async"})
        assert response.status_code == 401, (method, path, claim, response.text)
        assert f"'{claim}'" in response.json()["issue"][0]["diagnostics"], response.text


def test_public_endpoints_need_no_token(service) -> None:
    _name, client, _routes = service
    for path in ("/healthz", "/metrics"):
        assert client.get(path).status_code == 200
