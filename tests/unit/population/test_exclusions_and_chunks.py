"""The exclusions client fails closed on every kind of bad answer, and export output is written in bounded
chunks and files (against the embedded SQLite store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.record_api.population import store
from services.record_api.population.delivery import CurrentExclusions, deliver, stored_line
from services.record_api.population.exclusions import ExclusionClient, ExclusionsUnavailable, PersonExclusions
from services.record_api.population.export import ChunkWriter
from services.record_api.population.models import ExportChunk
from shared.db import create_db_engine, make_session_factory


def _client(tmp_path: Path, handler: Any, token: str = "t0ken", page_size: int = 2) -> ExclusionClient:
    token_file = tmp_path / "token"
    token_file.write_text(token)
    return ExclusionClient("http://consent.test", str(token_file), page_size=page_size,
                           transport=httpx.MockTransport(handler))


def test_pages_are_followed_and_combined(tmp_path: Path) -> None:
    asked: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params) | {"auth": request.headers["authorization"]})
        if "after" not in request.url.params:
            refused = [{"nhs_number": "9990000018", "rule": "national-data-opt-out"},
                       {"nhs_number": "9990000026", "rule": "objection-secondary-use"}]
            return httpx.Response(200, json={"excluded": refused, "withheld": [], "next_after": "9990000026"})
        withheld = [{"nhs_number": "9990000034", "labels": ["SOC"]}]
        return httpx.Response(200, json={"excluded": [], "withheld": withheld, "next_after": None})

    found = _client(tmp_path, handler).fetch("HRESCH", "QWO")
    assert found.refused == {"9990000018": "national-data-opt-out", "9990000026": "objection-secondary-use"}
    assert found.withheld == {"9990000034": frozenset({"SOC"})}
    assert found.rules() == {"national-data-opt-out": 1, "objection-secondary-use": 1}
    assert asked[0] == {"purpose": "HRESCH", "_count": "2", "organisation": "QWO", "auth": "Bearer t0ken"}
    assert asked[1]["after"] == "9990000026"


@pytest.mark.parametrize("answer", [
    httpx.Response(503, json={"resourceType": "OperationOutcome"}),
    httpx.Response(403, json={"resourceType": "OperationOutcome"}),
    httpx.Response(200, text="not json"),
    httpx.Response(200, json={"excluded": "everyone", "withheld": []}),
    httpx.Response(200, json={"excluded": [{"nhs_number": "9990000019", "rule": "x"}], "withheld": []}),
    httpx.Response(200, json={"excluded": [{"rule": "x"}], "withheld": []}),
    httpx.Response(200, json={"withheld": []}),
    httpx.Response(200, json={"excluded": [], "withheld": [], "next_after": 5}),
])
def test_any_bad_answer_means_no_export(tmp_path: Path, answer: httpx.Response) -> None:
    with pytest.raises(ExclusionsUnavailable):
        _client(tmp_path, lambda _request: answer).fetch("HOPERAT", None)


def test_an_unreachable_service_or_a_missing_token_means_no_export(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ExclusionsUnavailable, match="unreachable"):
        _client(tmp_path, refuse).fetch("HOPERAT", None)
    with pytest.raises(ExclusionsUnavailable, match="token file is empty"):
        _client(tmp_path, lambda _r: httpx.Response(200), token="").fetch("HOPERAT", None)


def test_output_is_stored_in_bounded_chunks_and_split_into_files(sqlite_url: str) -> None:
    sessions = make_session_factory(create_db_engine(sqlite_url))
    beats: list[str] = []
    writer = ChunkWriter(sessions, "job-1", chunk_rows=3, file_max=7, checkpoint=beats.append)
    for index in range(16):
        writer.add("Observation", json.dumps({"n": index}))
    for index in range(2):
        writer.add("Patient", json.dumps({"p": index}))
    writer.flush()
    with sessions() as session:
        chunks = list(session.scalars(select(ExportChunk).order_by(ExportChunk.resource_type, ExportChunk.part,
                                                                   ExportChunk.seq)))
        files = store.output_files(session, "job-1")
    assert [(c.resource_type, c.part, c.seq, c.lines) for c in chunks] == [
        ("Observation", 1, 1, 3), ("Observation", 1, 2, 3), ("Observation", 1, 3, 1),
        ("Observation", 2, 1, 3), ("Observation", 2, 2, 3), ("Observation", 2, 3, 1),
        ("Observation", 3, 1, 2), ("Patient", 1, 1, 2)]
    assert [(f.name, f.count) for f in files] == [("Observation-1.ndjson", 7), ("Observation-2.ndjson", 7),
                                                  ("Observation-3.ndjson", 2), ("Patient-1.ndjson", 2)]
    assert len(beats) == len(chunks)  # a heartbeat (and a chance to stop) after every chunk
    text = b"".join(store.read_file(sessions, "job-1", "Observation", 2)).decode()
    assert [json.loads(line)["n"] for line in text.splitlines()] == list(range(7, 14))


def test_a_download_leaves_out_lines_the_exclusions_in_force_now_refuse() -> None:
    now = CurrentExclusions(PersonExclusions(frozenset({"p-out"}), {"p-soc": frozenset({"SOC"})}),
                            survivors={"p-retired": "p-out"})
    stored = "".join(f"{stored_line(persons, labels, json.dumps({'n': n}))}\n" for n, (persons, labels) in enumerate([
        (["p-in"], None),                # kept
        (["p-out"], None),               # opted out since the job ran
        (["p-in", "p-out"], None),       # refers to someone who opted out since
        (["p-retired"], None),           # merged since into someone who opted out
        (["p-soc"], ["SOC"]),            # a category withheld since
        (["p-soc"], None),               # that person's other items stay
        ([], None),                      # a directory resource
    ]))
    legacy = '{"n": 99}\n'  # stored without its persons: cannot be re-checked
    text = b"".join(deliver([stored.encode(), legacy.encode()], now.allows)).decode()
    assert [json.loads(line)["n"] for line in text.splitlines()] == [0, 5, 6]
    assert "p-in" not in text and "\t" not in text  # the recipient gets the NDJSON line alone
