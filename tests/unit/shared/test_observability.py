"""The JSON log format: library exceptions summarised on one line, our own kept whole."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared import observability


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
