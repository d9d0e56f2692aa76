"""The operator CLI as a real process against PostgreSQL: list failed messages, retry them, undo a merge, rebuild
the search index, apply changed code lists."""

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select, text

from shared.schema import PatientMerge, RawMessage, Resource, ResourceVersion
from tests.fixtures.ingest import messages
from tests.support.services import service_env
from tools.processes import REPO_ROOT

pytestmark = pytest.mark.integration


def _cli(tokens, pg_url, *args: str) -> tuple[int, list[dict], str]:
    return _cli_env(tokens, pg_url, {}, *args)


def _cli_env(tokens, pg_url, env: dict[str, str], *args: str) -> tuple[int, list[dict], str]:
    result = subprocess.run([sys.executable, "-m", "services.ingest.cli", *args], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, env=os.environ | service_env(tokens, pg_url) | env)
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


def _raws(ingest) -> list[RawMessage]:
    with ingest.sessions() as session:
        return list(session.scalars(select(RawMessage)))


def _search_rows(ingest) -> list[tuple]:
    with ingest.sessions() as session:
        return sorted(session.execute(text(
            "SELECT resource_type, resource_id, person_id, param, system, code, text, date_low, date_high, ref_type, "
            "ref_id FROM search_param")).all(), key=repr)


def test_reindex_rebuilds_the_search_rows_from_the_stored_bodies(ingest, tokens, pg_url) -> None:
    bundle = messages.bundle([messages.patient(), messages.condition("38341003", "Hypertension", ident="P1")])
    assert ingest.post_fhir(bundle).status_code == 200
    before = _search_rows(ingest)
    assert {row[0] for row in before} >= {"Patient", "Condition"}
    with ingest.sessions.begin() as session:  # lose some rows and corrupt others
        session.execute(text("DELETE FROM search_param WHERE resource_type = 'Patient'"))
        session.execute(text("UPDATE search_param SET code = 'wrong' WHERE resource_type = 'Condition'"))

    code, lines, progress = _cli(tokens, pg_url, "reindex", "--type", "Patient")
    assert code == 0 and lines[-1]["resources"] == 1
    assert [row for row in _search_rows(ingest) if row[0] == "Patient"] == [r for r in before if r[0] == "Patient"]
    assert any(row[5] == "wrong" for row in _search_rows(ingest))  # --type left the Conditions alone

    code, lines, progress = _cli(tokens, pg_url, "reindex")
    assert code == 0 and lines == [{"command": "reindex", "resources": ingest.count(Resource),
                                    "search_rows": len(before)}]
    assert json.loads(progress.splitlines()[-1])["through"]
    assert _search_rows(ingest) == before


def test_relabel_adds_what_new_code_lists_give_to_stored_versions_and_nothing_else(ingest, tokens, pg_url,
                                                                                    tmp_path) -> None:
    first = messages.condition("38341003", "Hypertension", ident="P1")
    second = messages.condition("386810004", "Phobic disorder", ident="P1")  # the same problem, recoded
    other = messages.condition("195967001", "Asthma", ident="P2")
    assert ingest.post_fhir(messages.bundle([messages.patient(), first, other])).status_code == 200
    assert ingest.post_fhir(messages.bundle([messages.patient(), second])).status_code == 200
    problem = next(r for r in ingest.rows("Condition") if r.version_id == 2)
    assert "PSY" not in problem.labels
    lists = json.loads((REPO_ROOT / "services/ingest/labels.json").read_text())
    lists["PSY"]["snomed"].append("386810004")
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(lists))
    env = {"SCR_LABEL_CODE_LISTS": str(path)}

    code, lines, _ = _cli_env(tokens, pg_url, env, "relabel", "--dry-run")
    assert code == 0 and lines[0] | {"resources": 0} == {
        "command": "relabel", "dry_run": True, "resources": 0, "relabelled": 1, "versions_relabelled": 1,
        "labels_added": {"PSY": 1}}
    assert "PSY" not in ingest.get(Resource, Resource.id == problem.id).labels

    code, lines, _ = _cli_env(tokens, pg_url, env, "relabel")
    assert code == 0 and lines[0]["relabelled"] == 1 and lines[0]["resources"] == ingest.count(Resource)
    current = ingest.get(Resource, Resource.id == problem.id)
    assert "PSY" in current.labels and current.version_id == 2  # a label is not a new version ($meta-add)
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"} in \
        [{k: c[k] for k in ("system", "code")} for c in current.body["meta"]["security"]]
    v1, v2 = ingest.versions("Condition", problem.id)
    assert "PSY" not in v1.labels and "PSY" in v2.labels and v2.body["meta"]["security"] == current.body["meta"][
        "security"]
    asthma = next(r for r in ingest.rows("Condition") if r.id != problem.id)
    assert "PSY" not in asthma.labels

    code, lines, _ = _cli_env(tokens, pg_url, env, "relabel")
    assert code == 0 and lines[0]["relabelled"] == 0  # nothing left to add


def test_replay_processes_a_period_of_the_archive_again_in_received_order(ingest, tokens, pg_url) -> None:
    ids = [ingest.post_hl7(messages.adt(event, control=f"C{n}", ts=f"2024030{n + 1}101500")).headers[
        "x-raw-message-id"] for n, event in enumerate(["A28", "A01", "A03"])]
    refused = ingest.post_hl7("MSH|^~\\&|broken").headers["x-raw-message-id"]
    times = {ids[0]: "2026-11-30T09:00:00+00:00", ids[1]: "2026-12-01T09:00:00+00:00",
             ids[2]: "2026-12-01T10:00:00+00:00", refused: "2026-12-01T11:00:00+00:00"}
    with ingest.sessions.begin() as session:
        for raw_id, moment in times.items():
            session.execute(text("UPDATE raw_message SET received_at = :t WHERE id = :id"), {"t": moment, "id": raw_id})
    versions_before = ingest.count(ResourceVersion)

    code, lines, _ = _cli(tokens, pg_url, "replay", "--since", "2026-12-01", "--dry-run")
    assert code == 0 and [line.get("id") for line in lines[:-1]] == [ids[1], ids[2], refused]
    assert lines[-1] == {"command": "replay", "dry_run": True, "messages": 3, "processed": 2, "rejected": 1}

    code, lines, _ = _cli(tokens, pg_url, "replay", "--since", "2026-12-01T00:00Z", "--until", "2026-12-01T10:30",
                          "--channel", "hl7v2")
    assert code == 0 and [(line["id"], line["status"], line["changes"]) for line in lines[:-1]] == [
        (ids[1], "processed", 0), (ids[2], "processed", 0)]  # the same bytes again: nothing new to store
    assert ingest.count(ResourceVersion) == versions_before
    attempts = {r.id: r.attempts for r in _raws(ingest)}
    assert (attempts[ids[0]], attempts[ids[1]], attempts[ids[2]], attempts[refused]) == (1, 2, 2, 1)

    code, lines, _ = _cli(tokens, pg_url, "replay", "--since", "2026-12-01", "--status", "rejected")
    assert code == 0 and lines[-1] == {"command": "replay", "dry_run": False, "messages": 1, "rejected": 1}
    code, _, error = _cli(tokens, pg_url, "replay", "--since", "last week")
    assert code == 2 and "not an ISO 8601" in error
