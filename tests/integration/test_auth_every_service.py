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
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_token_without_any_smart_scope_gets_403_on_every_protected_endpoint(service, tokens) -> None:
    _name, client, routes = service
    for method, path in routes:
        response = client.request(method, path, headers={"Authorization": f"Bearer {tokens.no_scope()}"})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["issue"][0]["code"] == "forbidden"


def test_public_endpoints_need_no_token(service) -> None:
    _name, client, _routes = service
    for path in ("/healthz", "/metrics"):
        assert client.get(path).status_code == 200
