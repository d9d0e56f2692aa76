"""The migration hook Job's containers, run as rendered against a real PostgreSQL: they migrate the schema, then the
grants leave the raw archive (raw_message) to ingest's role alone while every service role can use the store."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.deploy.chart import PRODUCTION_VALUES, ROOT, Manifest, full_name, named, render

pytestmark = pytest.mark.integration

ROLES = {"ingest": "scr_ingest", "recordApi": "scr_record_api", "consent": "scr_consent"}


def _run(command: list[str], database_url: str, replacements: dict[str, str]) -> str:
    """Run a container command from the rendered Job on this machine, with its environment and mounted files
    mapped to local ones."""
    for mounted, local in replacements.items():
        command = [part.replace(mounted, local) for part in command]
    assert command[0] == "python"
    env = {**os.environ, "SCR_DATABASE_URL": database_url, "SCR_LOG_LEVEL": "INFO"}
    result = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _dsn(url: str, user: str) -> str:
    return url.replace("postgresql+psycopg://scr@", f"postgresql://{user}@")


@pytest.fixture
def migrated_with_grants(postgres: Any, tmp_path: Path) -> str:
    """A fresh database, three service roles, then the rendered hook Job's containers in order (twice: upgrades
    re-run them)."""
    url = postgres.create_database(f"roles_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(_dsn(url, "scr"), autocommit=True) as conn:
        for role in ROLES.values():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(f'CREATE ROLE "{role}" LOGIN')
    manifests: list[Manifest] = render(None, PRODUCTION_VALUES)
    job = named(manifests, "Job", full_name("migrate"))["spec"]["template"]["spec"]
    grants_sql = named(manifests, "ConfigMap", full_name("db-grants"))["data"]["grants.sql"]
    (tmp_path / "grants.sql").write_text(grants_sql)
    (grants,) = job["containers"]
    mount = next(m for m in grants["volumeMounts"] if m["name"] == "grants")["mountPath"]
    for _attempt in range(2):
        for spec in [*job["initContainers"], grants]:
            _run(spec["command"], url, {mount: str(tmp_path)})
    return url


def _privileges(url: str, role: str, table: str) -> set[str]:
    with psycopg.connect(_dsn(url, "scr")) as conn:
        return {p for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
                if conn.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, p)).fetchone()[0]}


def test_only_ingest_may_read_or_write_the_raw_archive(migrated_with_grants: str) -> None:
    url = migrated_with_grants
    assert _privileges(url, ROLES["ingest"], "raw_message") == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    for key in ("recordApi", "consent"):
        assert _privileges(url, ROLES[key], "raw_message") == set()
        with psycopg.connect(_dsn(url, ROLES[key])) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT content FROM raw_message")  # the archived bytes: ingest's alone
    with psycopg.connect(_dsn(url, ROLES["consent"])) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT count(*) FROM raw_message")
    with psycopg.connect(_dsn(url, ROLES["ingest"])) as conn:
        assert conn.execute("SELECT count(*) FROM raw_message").fetchone() == (0,)


def test_the_record_api_sees_only_the_channel_of_an_archived_message(migrated_with_grants: str) -> None:
    with psycopg.connect(_dsn(migrated_with_grants, ROLES["recordApi"])) as conn:
        assert conn.execute("SELECT id, channel FROM raw_message").fetchall() == []
    for column in ("content", "*"):
        with psycopg.connect(_dsn(migrated_with_grants, ROLES["recordApi"])) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT {column} FROM raw_message")


def test_every_service_role_can_use_the_rest_of_the_store(migrated_with_grants: str) -> None:
    url = migrated_with_grants
    for role in ROLES.values():
        for table in ("resource", "resource_version", "search_param", "person", "person_link", "audit_event"):
            assert _privileges(url, role, table) == {"SELECT", "INSERT", "UPDATE", "DELETE"}, (role, table)
        with psycopg.connect(_dsn(url, role)) as conn:
            assert conn.execute("SELECT count(*) FROM resource").fetchone() == (0,)


def test_the_schema_version_stays_the_migration_roles(migrated_with_grants: str) -> None:
    for role in ROLES.values():
        assert _privileges(migrated_with_grants, role, "alembic_version") == {"SELECT"}
