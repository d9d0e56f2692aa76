"""docker-compose.yml and the Helm chart stay in step: the same SCR_ settings per service (same values where the
deployment does not dictate otherwise), the same commands, file paths, user and read-only root filesystem."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.chart import COMPONENTS, ROOT, Manifest, container, deployment, environment, full_name, named

# Values that differ by nature between one machine and a cluster.
PER_DEPLOYMENT = {"SCR_DATABASE_URL", "SCR_KAFKA_BOOTSTRAP_SERVERS", "SCR_CONSENT_URL"}
# Set by the chart only when its optional Secret is configured (production-like values); compose always mounts one.
OPTIONAL_SECRET_FILES = {"SCR_EXPORT_PSEUDONYM_KEY_FILE"}
# Compose trusts the 24-hour dev tokens of `make tokens` (nothing renews the record API's there); the chart keeps
# the one-hour production default.
DEV_TOKEN_SETTINGS = {"SCR_MAX_TOKEN_LIFETIME_SECONDS": "86400"}
COMPOSE_NAMES = {"recordApi": "record_api", "ingest": "ingest", "consent": "consent"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_compose_sets_the_same_settings_as_the_default_chart(default: list[Manifest], production: list[Manifest],
                                                             key: str) -> None:
    chart_env = environment(default, key)
    compose_env = {k: str(v) for k, v in _compose()["services"][COMPOSE_NAMES[key]]["environment"].items()}
    for name in OPTIONAL_SECRET_FILES & set(compose_env):
        assert compose_env.pop(name) == environment(production, key)[name], f"{key}: {name} differs"
    assert set(compose_env) == set(chart_env), (
        f"{key}: only in compose {sorted(set(compose_env) - set(chart_env))}, "
        f"only in the chart {sorted(set(chart_env) - set(compose_env))}")
    for name in set(chart_env) - PER_DEPLOYMENT - set(DEV_TOKEN_SETTINGS):
        assert compose_env[name] == chart_env[name], f"{key}: {name} differs"
    for name, value in DEV_TOKEN_SETTINGS.items():
        assert (compose_env[name], chart_env[name]) == (value, "3600"), f"{key}: {name}"


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_compose_runs_the_same_command_as_the_chart_with_the_same_files(default: list[Manifest], key: str) -> None:
    service = _compose()["services"][COMPOSE_NAMES[key]]
    spec = container(deployment(default, key))
    assert service["command"] == spec["command"]
    mounted = {volume.split(":")[1] for volume in service["volumes"]}
    chart_env = environment(default, key)
    assert chart_env["SCR_JWKS"] in mounted
    if key == "recordApi":
        assert chart_env["SCR_CONSENT_TOKEN_FILE"] in mounted
        assert service["environment"]["SCR_EXPORT_PSEUDONYM_KEY_FILE"] in mounted
    healthcheck = " ".join(service["healthcheck"]["test"])
    assert spec["readinessProbe"]["httpGet"]["path"] in healthcheck
    assert f":{spec['ports'][0]['containerPort']}/" in healthcheck


def test_compose_runs_as_the_charts_user_with_a_read_only_root(default: list[Manifest]) -> None:
    pod = deployment(default, "ingest")["spec"]["template"]["spec"]["securityContext"]
    services = _compose()["services"]
    for name in [*COMPOSE_NAMES.values(), "migrate"]:
        service = services[name]
        assert service["user"] == f"{pod['runAsUser']}:{pod['runAsGroup']}", name
        assert service["read_only"] is True
        assert "/tmp" in service["tmpfs"]
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_compose_migrates_like_the_charts_hook_before_the_services_start(default: list[Manifest]) -> None:
    services = _compose()["services"]
    job = named(default, "Job", full_name("migrate"))["spec"]["template"]["spec"]["containers"][0]
    assert services["migrate"]["command"] == job["command"]
    for name in COMPOSE_NAMES.values():
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_stop_grace_matches_the_pods(default: list[Manifest]) -> None:
    grace = deployment(default, "consent")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    for name in COMPOSE_NAMES.values():
        assert _compose()["services"][name]["stop_grace_period"] == f"{grace}s"


def test_the_one_line_start_is_documented_where_people_look() -> None:
    line = "docker compose up --build"
    assert line in (ROOT / "docker-compose.yml").read_text().splitlines()[2]
    assert line in (ROOT / "docs" / "OPERATIONS.md").read_text()
