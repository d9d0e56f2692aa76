"""The JSON log format (library exceptions summarised on one line, our own kept whole) and the middleware every
service runs: the access log and metrics, and unexpected errors answered without their text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from shared import observability, service


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    observability.configure_logging("test", "INFO")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:], root.level = handlers, level


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_kafka_client_exception_is_one_line_with_its_type(captured: io.StringIO) -> None:
    try:
        None.recv(4096)  # type: ignore[attr-defined]  # what kafka-python's reader hits on a closed socket
    except AttributeError:
        logging.getLogger("kafka.net.transport").exception("Error receiving network data closing socket")
    (line,) = _lines(captured)
    assert line["event"] == "Error receiving network data closing socket"
    assert line["error_type"] == "AttributeError"
    assert line["level"] == "error"
    assert "exception" not in line and "Traceback" not in captured.getvalue()


def test_our_own_exceptions_keep_their_traceback(captured: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("scr.ingest").exception("failed")
    (line,) = _lines(captured)
    assert "Traceback" in line["exception"] and "ValueError: boom" in line["exception"]


def _app_with_shell_middleware() -> FastAPI:
    app = FastAPI()
    service.install_error_handlers(app)
    observability.install_observability(app, "mwtest", lambda: {"database": "ok"})

    @app.get("/boom/{thing}")
    def boom(thing: str) -> None:
        raise RuntimeError(f"SELECT * FROM person WHERE nhs_number = '{thing}'")  # what a driver error can quote

    @app.get("/db-down")
    def db_down() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    @app.get("/fine/{thing}")
    def fine(thing: str) -> dict[str, str]:
        return {"ok": thing}

    return app


def _requests(route: str, status: str) -> float:
    return REGISTRY.get_sample_value("scr_http_requests_total", {"service": "mwtest", "method": "GET",
                                                                   "route": route, "status": status}) or 0.0


def test_an_unexpected_error_is_an_operation_outcome_logged_without_its_text(captured: io.StringIO) -> None:
    before = _requests("/boom/{thing}", "500")
    with TestClient(_app_with_shell_middleware(), raise_server_exceptions=False) as client:
        answer = client.get("/boom/9434765919")
    assert answer.status_code == 500
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert _requests("/boom/{thing}", "500") == before + 1
    logged = captured.getvalue()
    assert "9434765919" not in logged and "Traceback" not in logged
    access = [line for line in _lines(captured) if line["event"] == "request"]
    assert access[-1]["route"] == "/boom/{thing}" and access[-1]["status"] == 500


def test_an_unreachable_database_is_a_503_with_retry_after(captured: io.StringIO) -> None:
    with TestClient(_app_with_shell_middleware(), raise_server_exceptions=False) as client:
        answer = client.get("/db-down")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.json()["issue"][0]["code"] == "transient"


def test_the_access_log_names_the_route_template_and_status_never_the_path(captured: io.StringIO) -> None:
    before = _requests("/fine/{thing}", "200")
    with TestClient(_app_with_shell_middleware()) as client:
        assert client.get("/fine/9434765919").json() == {"ok": "9434765919"}
        assert client.get("/healthz").status_code == 200
    assert _requests("/fine/{thing}", "200") == before + 1
    access = [line for line in _lines(captured) if line["event"] == "request"]
    assert [(a["route"], a["status"]) for a in access] == [("/fine/{thing}", 200)]  # /healthz is not logged
    assert "9434765919" not in captured.getvalue()
