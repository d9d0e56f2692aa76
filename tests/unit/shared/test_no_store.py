"""Every response says Cache-Control: no-store unless its route chose a policy (shared/service.py NoStore)."""

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from shared.errors import Unauthenticated
from shared.service import NoStore, install_error_handlers


def _client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(NoStore)

    @app.get("/record")
    def record(request: Request) -> Response:
        if request.headers.get("if-none-match") == 'W/"1"':
            return Response(status_code=304, headers={"ETag": 'W/"1"'})
        return JSONResponse({"resourceType": "Patient"}, headers={"ETag": 'W/"1"'})

    @app.get("/asset")
    def asset() -> Response:
        return Response("body{}", headers={"Cache-Control": "no-cache"})

    @app.get("/refused")
    def refused() -> Response:
        raise Unauthenticated("no")

    @app.get("/broken")
    def broken() -> Response:
        raise RuntimeError("boom")

    return TestClient(app, raise_server_exceptions=False)


def test_answers_errors_and_not_found_are_no_store() -> None:
    client = _client()
    for path, status in [("/record", 200), ("/refused", 401), ("/broken", 500), ("/nowhere", 404)]:
        response = client.get(path)
        assert response.status_code == status
        assert response.headers["cache-control"] == "no-store", path


def test_a_route_that_chose_its_own_policy_keeps_it() -> None:
    assert _client().get("/asset").headers["cache-control"] == "no-cache"


def test_conditional_reads_still_work() -> None:
    client = _client()
    etag = client.get("/record").headers["etag"]
    again = client.get("/record", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["cache-control"] == "no-store"
