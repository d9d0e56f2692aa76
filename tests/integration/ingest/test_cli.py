"""The operator CLI as a real process against PostgreSQL: list failed messages, retry them, undo a merge."""

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from shared.schema import PatientMerge, RawMessage, Resource
from tests.fixtures.ingest import messages
from tests.support.services import service_env
from tools.processes import REPO_ROOT

pytestmark = pytest.mark.integration


def _cli(tokens, pg_url, *args: str) -> tuple[int, list[dict], str]:
    result = subprocess.run([sys.executable, "-m", "services.ingest.cli", *args], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, env=os.environ | service_env(tokens, pg_url))
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, lines, result.stderr


def test_failed_messages_are_listed_and_retried_from_the_archive(ingest, tokens, pg_url) -> None:
    with ingest.sessions.begin() as session:
        session.execute(text("ALTER TABLE resource_version RENAME TO resource_version_away"))
    response = ingest.post_hl7(messages.adt("A28"))
    assert response.status_code == 500
    with ingest.sessions.begin() as session:
        session.execute(text("ALTER TABLE resource_version_away RENAME TO resource_version"))

    code, listed, _ = _cli(tokens, pg_url, "list", "--status", "failed")
    assert code == 0 and [r["id"] for r in listed] == [response.headers["x-raw-message-id"]]
    code, retried, _ = _cli(tokens, pg_url, "retry", "--all-failed")
    assert code == 0 and retried[0]["status"] == "processed" and retried[0]["changes"] >= 1
    assert ingest.get(RawMessage, RawMessage.id == listed[0]["id"]).status == "processed"
    assert ingest.count(Resource, Resource.resource_type == "Patient") == 1


def test_a_merge_is_undone_from_the_cli_and_unknown_ids_say_so(ingest, tokens, pg_url) -> None:
    ingest.post_hl7(messages.adt("A28", mrn="A1", control="C1"))
    ingest.post_hl7(messages.adt("A28", mrn="A2", control="C2", nhs=None, given="Bloss"))
    ingest.post_hl7(messages.adt("A40", mrn="A1", control="C3", mrg="A2^^^RR8^MR", ts="20240302101500"))
    merge = ingest.get(PatientMerge)
    code, lines, _ = _cli(tokens, pg_url, "undo-merge", merge.id)
    assert code == 0 and lines[0]["changes"] >= 3
    assert ingest.get(PatientMerge, PatientMerge.id == merge.id).undone_at is not None
    code, _, error = _cli(tokens, pg_url, "undo-merge", "no-such-merge")
    assert code == 1 and error.strip() == "ingest: no merge no-such-merge"
