"""The Helm chart: `helm lint`, every rendered manifest valid against the Kubernetes schemas, and the properties an
ICS platform team checks (probes, settings from ConfigMaps and existing Secrets, hooks, autoscaling, disruption
budgets, resources, security context) asserted on what helm actually renders."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from shared.settings import ServiceSettings
from tests.deploy.chart import (
    CHART,
    COMPONENTS,
    MIN_KUBE_VERSION,
    PRODUCTION_VALUES,
    ROOT,
    SECRET_SETTINGS,
    Manifest,
    container,
    deployment,
    environment,
    full_name,
    named,
    of_kind,
    pod_labels,
    render,
    render_error,
    run_helm,
    scr_variables,
    selects,
    settings_class,
)

PUBLIC_JWKS = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
                                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})

# Value sets every test of schema validity runs over: the defaults, the production-like example, and the other
# branches of the templates (inline and Secret JWKS, no autoscaling, a LoadBalancer MLLP, no NetworkPolicies).
VARIANTS: dict[str, tuple[dict[str, Any] | None, tuple[Path, ...]]] = {
    "default": (None, ()),
    "production": (None, (PRODUCTION_VALUES,)),
    "inline-jwks-no-autoscaling": ({
        "jwks": {"existingConfigMap": {"name": ""}, "json": PUBLIC_JWKS},
        "services": {"recordApi": {"autoscaling": {"enabled": False}}, "ingest": {"autoscaling": {"enabled": False}}},
    }, ()),
    "secret-jwks-loadbalancer-mllp": ({
        "jwks": {"existingConfigMap": {"name": ""}, "existingSecret": {"name": "idp-jwks", "key": "keys.json"}},
        "services": {"ingest": {"mllp": {"service": {"type": "LoadBalancer",
                                                     "loadBalancerSourceRanges": ["10.1.0.0/16"]}}}},
        "database": {"roles": {"enabled": True, "extraSql": "REVOKE DELETE ON audit_event FROM scr_consent;"}},
    }, ()),
    "no-network-policy-no-migration": ({"networkPolicy": {"enabled": False}, "migration": {"enabled": False}}, ()),
}


# The newest Kubernetes the installed schemas describe (major.minor.0).
NEWEST_KUBE_VERSION = kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version()) + ".0"


def _variant(name: str, kube_version: str = "1.30.0") -> list[Manifest]:
    values, files = VARIANTS[name]
    return render(values, *files, kube_version=kube_version)


# --- helm lint and Kubernetes schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("files", [(), (PRODUCTION_VALUES,)], ids=["default", "production"])
def test_helm_lint_passes_strictly(files: tuple[Path, ...]) -> None:
    args = [arg for path in files for arg in ("-f", str(path))]
    output = run_helm("lint", str(CHART), "--strict", "--kube-version", "1.30.0", *args)
    assert "1 chart(s) linted, 0 chart(s) failed" in output


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("kube_version", [MIN_KUBE_VERSION, NEWEST_KUBE_VERSION])
def test_every_rendered_manifest_is_valid_against_the_kubernetes_schema(variant: str, kube_version: str) -> None:
    manifests = _variant(variant, kube_version)
    assert len(manifests) >= 15
    for manifest in manifests:
        # Strict: unknown fields (a typo in a template) fail too. The schemas ship with the package: no network.
        kubernetes_validate.validate(manifest, kube_version, strict=True)


def test_the_schema_check_would_catch_a_broken_manifest(default: list[Manifest]) -> None:
    broken = deployment(default, "ingest")
    container(broken)["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, MIN_KUBE_VERSION, strict=True)


# --- Deployments, Services, probes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_each_service_has_a_deployment_with_its_command_port_and_probes(default: list[Manifest], key: str) -> None:
    _, module, _, port = COMPONENTS[key]
    spec = container(deployment(default, key))
    assert spec["command"] == ["python", "-m", module]
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in spec["ports"]
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert spec["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # The image is the one image for every service and the migration job.
    job = named(default, "Job", full_name("migrate"))
    assert spec["image"] == job["spec"]["template"]["spec"]["containers"][0]["image"] == "shared-care-record:0.1.0"


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_each_service_has_a_cluster_service_that_selects_its_pods(default: list[Manifest], key: str) -> None:
    name, _, _, port = COMPONENTS[key]
    service = named(default, "Service", full_name(name))
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    for other, workload in ((k, deployment(default, k)) for k in COMPONENTS):
        chosen = selects({"matchLabels": service["spec"]["selector"]}, pod_labels(workload))
        assert chosen == (other == key), f"{full_name(name)} selection of {other} pods"


def test_mllp_has_its_own_service_selecting_the_ingest_pods(
    default: list[Manifest], production: list[Manifest]
) -> None:
    mllp = named(default, "Service", full_name("ingest-mllp"))
    assert mllp["spec"]["type"] == "ClusterIP"
    assert mllp["spec"]["ports"] == [{"name": "mllp", "port": 2575, "targetPort": "mllp", "protocol": "TCP"}]
    ingest = container(deployment(default, "ingest"))
    assert {"name": "mllp", "containerPort": 2575, "protocol": "TCP"} in ingest["ports"]
    assert selects({"matchLabels": mllp["spec"]["selector"]}, pod_labels(deployment(default, "ingest")))
    assert not selects({"matchLabels": mllp["spec"]["selector"]}, pod_labels(deployment(default, "recordApi")))
    # HTTP is not on the MLLP Service, and MLLP is not on the HTTP one.
    assert [p["port"] for p in named(default, "Service", full_name("ingest"))["spec"]["ports"]] == [8002]

    exposed = named(production, "Service", full_name("ingest-mllp"))["spec"]
    assert exposed["type"] == "LoadBalancer"
    assert exposed["externalTrafficPolicy"] == "Local"
    assert exposed["loadBalancerSourceRanges"] == ["10.20.0.0/16"]
    annotations = named(production, "Service", full_name("ingest-mllp"))["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/azure-load-balancer-internal"] == "true"


# --- Settings: every SCR_ variable, non-secret ones from ConfigMaps, secrets from existing Secrets -----------------


# Settings the chart sets itself because they describe the deployment (every shared one, and these per service);
# the services' tuning settings keep their code defaults and are set through services.<name>.extraConfig.
DEPLOYMENT_SETTINGS = {
    "recordApi": {"SCR_CONSENT_URL", "SCR_CONSENT_TOKEN_FILE", "SCR_PUBLIC_BASE_URL"},
    "ingest": {"SCR_MLLP_HOST", "SCR_MLLP_PORT"},
    "consent": {"SCR_BREAK_GLASS_OVERRIDES_OBJECTION"},
}
_SECRET_LOOKING = re.compile(r"password|secret|credential|private|api_key|token$")


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_the_chart_sets_every_shared_and_deployment_setting(production: list[Manifest], key: str) -> None:
    env = environment(production, key)
    required = scr_variables(ServiceSettings) | DEPLOYMENT_SETTINGS[key]
    assert required <= scr_variables(settings_class(key)), "a setting the chart sets was renamed or removed"
    missing = required - set(env)
    assert not missing, f"{key}: deployment settings the chart does not set: {sorted(missing)}"
    stray = {name for name in env if name.startswith("SCR_")} - scr_variables(settings_class(key))
    assert not stray, f"{key}: the chart sets variables the service does not read: {sorted(stray)}"


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_every_other_setting_is_settable_through_extra_config(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_cls = settings_class(key)
    rendered = set(environment(render(None, PRODUCTION_VALUES), key))
    extra = {}
    for field_name, field in settings_cls.model_fields.items():
        variable = f"SCR_{field_name.upper()}"
        if variable in rendered or field.default is None:
            continue
        default = field.default
        extra[variable] = json.dumps(default) if isinstance(default, (list, dict, bool)) else str(default)
    manifests = render({"services": {key: {"extraConfig": extra}}}, PRODUCTION_VALUES)
    env = environment(manifests, key)
    for variable, value in extra.items():
        assert env[variable] == value
        monkeypatch.setenv(variable, value)
    loaded = settings_cls()
    for variable in extra:
        field_name = variable.removeprefix("SCR_").lower()
        assert getattr(loaded, field_name) == settings_cls.model_fields[field_name].default, variable
    for other in set(COMPONENTS) - {key}:  # extraConfig is per service
        assert not set(extra) & (set(environment(manifests, other)) - set(environment(render(None, PRODUCTION_VALUES),
                                                                                        other)))


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_no_setting_that_looks_like_a_secret_would_come_from_a_configmap(key: str) -> None:
    for variable in scr_variables(settings_class(key)):
        if _SECRET_LOOKING.search(variable.removeprefix("SCR_").lower()):
            assert variable in SECRET_SETTINGS, (f"{variable} looks like a credential: give it a secretKeyRef or a "
                                                 "mounted Secret in the chart, and add it to SECRET_SETTINGS")


@pytest.mark.parametrize("key", sorted(COMPONENTS))
def test_the_rendered_settings_load_into_the_services_settings_class(
    production: list[Manifest], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(production, key)
    for name, value in env.items():
        # Secret-backed values are not in the manifests; stand-ins of the right shape prove the rest parses.
        stand_in = {"SCR_DATABASE_URL": "postgresql+psycopg://role@db/scr", "SCR_KAFKA_SASL_PASSWORD": "x"}
        monkeypatch.setenv(name, stand_in[name] if isinstance(value, dict) else value)
    settings = settings_class(key)()
    _, _, _, port = COMPONENTS[key]
    assert settings.port == port
    assert settings.host == "0.0.0.0"
    assert settings.service_name == settings_class(key).model_fields["service_name"].default
    assert settings.real_mode
    assert settings.jwks == "https://auth.ics.example.nhs.uk/.well-known/jwks.json"
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_username == {"recordApi": "scr-record-api", "ingest": "scr-ingest",
                                            "consent": "scr-consent"}[key]
    assert settings.api_docs is False
    if key == "ingest":
        assert (settings.mllp_host, settings.mllp_port) == ("0.0.0.0", 2575)
    if key == "recordApi":
        assert settings.consent_url == f"http://{full_name('consent')}:8003"
    if key == "consent":
        assert settings.break_glass_overrides_objection is True


@pytest.mark.parametrize("fixture", ["default", "production"])
def test_secrets_come_only_from_existing_secrets(fixture: str, request: pytest.FixtureRequest) -> None:
    manifests: list[Manifest] = request.getfixturevalue(fixture)
    assert not of_kind(manifests, "Secret"), "the chart must never create Secrets from values"
    workloads = [*of_kind(manifests, "Deployment"), *of_kind(manifests, "Job")]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        for spec in [*pod.get("initContainers", []), *pod["containers"]]:
            for variable in spec.get("env", []):
                if variable["name"] in SECRET_SETTINGS:
                    assert "value" not in variable, f"{variable['name']} as a literal in {workload['metadata']['name']}"
                    assert set(variable["valueFrom"]) == {"secretKeyRef"}
    for config_map in of_kind(manifests, "ConfigMap"):
        assert not SECRET_SETTINGS & set(config_map["data"]), config_map["metadata"]["name"]
        assert not any("postgresql" in str(v) and "@" in str(v) for v in config_map["data"].values())


def test_each_service_and_the_migration_use_their_own_database_secret_in_production(
    production: list[Manifest],
) -> None:
    expected = {"recordApi": "scr-db-record-api", "ingest": "scr-db-ingest", "consent": "scr-db-consent"}
    for key, secret in expected.items():
        assert environment(production, key)["SCR_DATABASE_URL"] == {"secretKeyRef": {"name": secret, "key": "url"}}
        sasl = environment(production, key)["SCR_KAFKA_SASL_PASSWORD"]
        assert sasl == {"secretKeyRef": {"name": f"scr-kafka-{COMPONENTS[key][0]}", "key": "password"}}
    job = named(production, "Job", full_name("migrate"))["spec"]["template"]["spec"]
    for spec in [*job["initContainers"], *job["containers"]]:
        database = next(v for v in spec["env"] if v["name"] == "SCR_DATABASE_URL")
        assert database["valueFrom"]["secretKeyRef"] == {"name": "scr-db-migrate", "key": "url"}


def test_the_default_chart_takes_the_database_url_from_the_common_secret(default: list[Manifest]) -> None:
    for key in COMPONENTS:
        env = environment(default, key)
        assert env["SCR_DATABASE_URL"] == {"secretKeyRef": {"name": "scr-database", "key": "url"}}
        assert "SCR_KAFKA_SASL_PASSWORD" not in env  # PLAINTEXT by default: no credentials


def test_the_consent_token_is_a_mounted_secret_file_that_follows_rotation(default: list[Manifest]) -> None:
    record_api = deployment(default, "recordApi")
    token_file = environment(default, "recordApi")["SCR_CONSENT_TOKEN_FILE"]
    mount = next(m for m in container(record_api)["volumeMounts"] if m["name"] == "consent-token")
    assert token_file == f"{mount['mountPath']}/token"
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees the rotated Secret
    volume = next(v for v in record_api["spec"]["template"]["spec"]["volumes"] if v["name"] == "consent-token")
    assert volume["secret"]["secretName"] == "scr-record-api-consent-token"
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]
    for key in ("ingest", "consent"):
        assert "SCR_CONSENT_TOKEN_FILE" not in environment(default, key)
        mounts = [m["name"] for m in container(deployment(default, key))["volumeMounts"]]
        assert "consent-token" not in mounts


def test_the_public_base_url_and_token_lifetime_are_set_from_values(default: list[Manifest],
                                                                   production: list[Manifest]) -> None:
    assert environment(production, "recordApi")["SCR_PUBLIC_BASE_URL"] == "https://scr-api.ics.example.nhs.uk"
    for key in ("ingest", "consent"):  # only the record API builds absolute URLs
        assert "SCR_PUBLIC_BASE_URL" not in environment(production, key)
    assert "SCR_PUBLIC_BASE_URL" not in environment(default, "recordApi")  # unset: the request's own base
    for key in COMPONENTS:
        assert environment(default, key)["SCR_MAX_TOKEN_LIFETIME_SECONDS"] == "3600"


def test_jwks_from_a_configmap_is_mounted_as_a_whole_directory(default: list[Manifest]) -> None:
    for key in COMPONENTS:
        workload = deployment(default, key)
        jwks = environment(default, key)["SCR_JWKS"]
        mount = next(m for m in container(workload)["volumeMounts"] if m["name"] == "jwks")
        assert jwks == f"{mount['mountPath']}/jwks.json"
        assert "subPath" not in mount
        volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == "jwks")
        assert volume["configMap"] == {"name": "scr-jwks", "items": [{"key": "jwks.json", "path": "jwks.json"}]}


def test_jwks_from_a_url_needs_no_volume_and_gets_an_egress_rule(production: list[Manifest]) -> None:
    for key, (name, *_rest) in COMPONENTS.items():
        assert environment(production, key)["SCR_JWKS"].startswith("https://")
        assert "jwks" not in [v["name"] for v in deployment(production, key)["spec"]["template"]["spec"]["volumes"]]
        egress = named(production, "NetworkPolicy", full_name(name))["spec"]["egress"]
        assert any([p["port"] for p in rule["ports"]] == [443] for rule in egress)


def test_jwks_inline_becomes_a_configmap_and_a_secret_source_is_mounted() -> None:
    inline = _variant("inline-jwks-no-autoscaling")
    assert json.loads(named(inline, "ConfigMap", full_name("jwks"))["data"]["jwks.json"]) == json.loads(PUBLIC_JWKS)
    volumes = deployment(inline, "consent")["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == "jwks")
    assert volume["configMap"]["name"] == full_name("jwks")
    secret = _variant("secret-jwks-loadbalancer-mllp")
    volume = next(v for v in deployment(secret, "ingest")["spec"]["template"]["spec"]["volumes"] if v["name"] == "jwks")
    assert volume["secret"] == {"secretName": "idp-jwks", "items": [{"key": "keys.json", "path": "jwks.json"}]}


def test_config_changes_roll_the_pods() -> None:
    before = deployment(render(), "consent")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    after = deployment(render({"logLevel": "DEBUG"}), "consent")["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/config"] != before


# --- What the chart refuses -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, message", [
    ({"database": {"password": "hunter2"}}, "additional properties 'password' not allowed"),
    ({"database": {"url": "postgresql+psycopg://scr:hunter2@db/scr"}}, "additional properties 'url' not allowed"),
    ({"kafka": {"sasl": {"password": "hunter2"}}}, "additional properties 'password' not allowed"),
    ({"services": {"ingest": {"extraConfig": {"SCR_DATABASE_URL": "postgresql+psycopg://a:b@c/d"}}}}, "'not' failed"),
    ({"services": {"recordApi": {"extraConfig": {"SCR_EXPORT_PSEUDONYM_KEY": "k" * 40}}}}, "'not' failed"),
    ({"services": {"consent": {"extraConfig": {"LOG_LEVEL": "DEBUG"}}}}, "does not match pattern"),
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    ({"jwks": {"url": "https://idp.example/jwks"}}, "set exactly one JWKS source"),
    ({"jwks": {"existingConfigMap": {"name": ""}}}, "set exactly one JWKS source"),
    ({"jwks": {"url": "http://idp.example/jwks", "existingConfigMap": {"name": ""}}}, "does not match pattern"),
    ({"jwks": {"existingConfigMap": {"name": ""}, "json": json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})}},
     "private key material"),
    ({"services": {"consent": {"ingress": {"enabled": True, "paths": [{"path": "/", "pathType": "Prefix"}]}}}},
     "would expose the decision API"),
    ({"services": {"consent": {"ingress": {"enabled": True, "paths": [{"path": "/consent", "pathType": "Prefix"}]}}}},
     "would expose the decision API"),
    ({"services": {"consent": {"ingress": {"enabled": True,
                                           "paths": [{"path": "/consent/secondary-use", "pathType": "Exact"}]}}}},
     "system-only endpoint"),
    ({"services": {"ingest": {"autoscaling": {"minReplicas": 8, "maxReplicas": 4}}}}, "minReplicas is above"),
    ({"database": {"existingSecret": {"name": ""}}}, "database/existingSecret/name"),
    ({"services": {"recordApi": {"publicBaseUrl": "scr.example.nhs.uk"}}}, "does not match pattern"),
    ({"services": {"recordApi": {"publicBaseUrl": "https://scr.example.nhs.uk/?x=1"}}}, "does not match pattern"),
])
def test_the_chart_refuses_unsafe_or_inconsistent_values(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


def test_an_exact_citizen_path_is_allowed_and_routes_only_to_consent() -> None:
    manifests = render({"services": {"consent": {"ingress": {"enabled": True, "host": "care.example.nhs.uk"}}}})
    rules = named(manifests, "Ingress", full_name("citizen"))["spec"]["rules"]
    paths = rules[0]["http"]["paths"]
    assert {(p["path"], p["pathType"]) for p in paths} == {("/", "Exact"), ("/consent/me", "Prefix"),
                                                           ("/static", "Prefix")}
    assert {p["backend"]["service"]["name"] for p in paths} == {full_name("consent")}
    for path in paths:  # no routed path reaches the decision API
        assert not (path["pathType"] != "Exact" and "/consent/decide".startswith(path["path"]))


# --- Migration hook -------------------------------------------------------------------------------------------------


def _hook(manifest: Manifest) -> tuple[set[str], int, set[str]]:
    annotations = manifest["metadata"]["annotations"]
    return (set(annotations["helm.sh/hook"].split(",")), int(annotations["helm.sh/hook-weight"]),
            set(annotations["helm.sh/hook-delete-policy"].split(",")))


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(default: list[Manifest]) -> None:
    job = named(default, "Job", full_name("migrate"))
    hooks, weight, delete = _hook(job)
    assert hooks == {"pre-install", "pre-upgrade"}
    assert delete == {"before-hook-creation", "hook-succeeded"}  # a failed Job stays for its logs
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (spec,) = pod["containers"]
    assert spec["command"] == ["python", "-m", "shared.migrate"]
    assert spec["image"] == container(deployment(default, "ingest"))["image"]
    database = next(v for v in spec["env"] if v["name"] == "SCR_DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {"name": "scr-database", "key": "url"}
    # Its NetworkPolicy is a hook too (the release's own resources do not exist yet at pre-install), created first.
    policy = named(default, "NetworkPolicy", full_name("migrate"))
    policy_hooks, policy_weight, _ = _hook(policy)
    assert policy_hooks == hooks and policy_weight < weight
    assert selects(policy["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"])
    # Nothing else the Job needs is a regular release resource: no ConfigMap, no ServiceAccount.
    assert "envFrom" not in spec and "serviceAccountName" not in pod


def test_with_database_roles_the_hook_migrates_then_applies_the_grants(production: list[Manifest]) -> None:
    job = named(production, "Job", full_name("migrate"))
    pod = job["spec"]["template"]["spec"]
    assert [c["command"] for c in pod["initContainers"]] == [["python", "-m", "shared.migrate"]]
    (grants,) = pod["containers"]
    assert grants["command"][:2] == ["python", "-c"]
    grants_config = named(production, "ConfigMap", full_name("db-grants"))
    hooks, weight, _ = _hook(grants_config)
    assert hooks == {"pre-install", "pre-upgrade"} and weight < _hook(job)[1]
    volume = next(v for v in pod["volumes"] if v["name"] == "grants")
    assert volume["configMap"]["name"] == full_name("db-grants")
    mount = next(m for m in grants["volumeMounts"] if m["name"] == "grants")
    assert f"{mount['mountPath']}/grants.sql" in grants["command"][2]


# --- Autoscaling, disruption budgets, resources ----------------------------------------------------------------------


def test_record_api_and_ingest_autoscale_on_cpu_and_consent_does_not(production: list[Manifest]) -> None:
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(production, "HorizontalPodAutoscaler")}
    assert set(hpas) == {full_name("record-api"), full_name("ingest")}
    for key in ("recordApi", "ingest"):
        hpa = hpas[full_name(COMPONENTS[key][0])]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                         "name": full_name(COMPONENTS[key][0])}
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
        assert hpa["metrics"] == [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 65}}}]
        # The HPA owns the replica count: a fixed one in the Deployment would fight it on every upgrade.
        assert "replicas" not in deployment(production, key)["spec"]
    assert deployment(production, "consent")["spec"]["replicas"] == 3


def test_without_autoscaling_the_deployments_carry_their_replicas() -> None:
    manifests = _variant("inline-jwks-no-autoscaling")
    assert not of_kind(manifests, "HorizontalPodAutoscaler")
    assert all(deployment(manifests, key)["spec"]["replicas"] == 2 for key in COMPONENTS)


@pytest.mark.parametrize("fixture", ["default", "production"])
def test_every_service_has_a_disruption_budget_that_selects_its_pods(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    manifests: list[Manifest] = request.getfixturevalue(fixture)
    budgets = of_kind(manifests, "PodDisruptionBudget")
    assert len(budgets) == 3
    for key in COMPONENTS:
        labels = pod_labels(deployment(manifests, key))
        (budget,) = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert ("maxUnavailable" in budget["spec"]) != ("minAvailable" in budget["spec"])
    consent = named(manifests, "PodDisruptionBudget", full_name("consent"))["spec"]
    assert consent.get("minAvailable", consent.get("maxUnavailable")) == (2 if fixture == "production" else 1)


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}


def _quantity(value: str | int) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|m|)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


@pytest.mark.parametrize("fixture", ["default", "production"])
def test_every_container_has_requests_within_limits_and_services_fit_their_memory_target(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    manifests: list[Manifest] = request.getfixturevalue(fixture)
    for workload in [*of_kind(manifests, "Deployment"), *of_kind(manifests, "Job")]:
        pod = workload["spec"]["template"]["spec"]
        for spec in [*pod.get("initContainers", []), *pod["containers"]]:
            resources = spec["resources"]
            for resource in ("cpu", "memory"):
                assert _quantity(resources["requests"][resource]) <= _quantity(resources["limits"][resource])
            # Design target: a service stays under ~300 MB RSS; the limit leaves headroom but not a blank cheque.
            assert 256 * 2**20 <= _quantity(resources["limits"]["memory"]) <= 1 * 2**30


# --- Security context -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["default", "production"])
def test_every_pod_runs_non_root_with_a_read_only_root_filesystem(fixture: str, request: pytest.FixtureRequest) -> None:
    manifests: list[Manifest] = request.getfixturevalue(fixture)
    workloads = [*of_kind(manifests, "Deployment"), *of_kind(manifests, "Job")]
    assert len(workloads) == 4
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp
        for spec in [*pod.get("initContainers", []), *pod["containers"]]:
            security = spec["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["runAsNonRoot"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert {"name": "tmp", "mountPath": "/tmp"} in spec["volumeMounts"]


def test_the_image_user_is_the_pods_user(default: list[Manifest]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pod = deployment(default, "ingest")["spec"]["template"]["spec"]["securityContext"]
    assert f"USER {pod['runAsUser']}:{pod['runAsGroup']}" in dockerfile
    assert f"--uid {pod['runAsUser']}" in dockerfile and f"--gid {pod['runAsGroup']}" in dockerfile


def test_graceful_shutdown_outlasts_the_drain(default: list[Manifest]) -> None:
    for key in COMPONENTS:
        workload = deployment(default, key)
        grace = int(environment(default, key)["SCR_SHUTDOWN_GRACE_SECONDS"])
        sleep = int(container(workload)["lifecycle"]["preStop"]["exec"]["command"][1])
        assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace + sleep
        assert workload["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
