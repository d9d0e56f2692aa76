"""Rendering the Helm chart with the real helm CLI and reading what it rendered: the helpers every deploy test uses."""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "shared-care-record"
PRODUCTION_VALUES = ROOT / "deploy" / "helm" / "values-production.yaml"
HELM = ROOT / ".peers" / "helm" / "bin" / "helm"
ENSURE_HELM = ROOT / "tools" / "ensure_helm.sh"
RELEASE = "scr"
NAMESPACE = "scr"
# The chart's floor (Chart.yaml kubeVersion); tests also validate against the newest schemas available.
MIN_KUBE_VERSION = "1.27.0"

# values key -> (Kubernetes component name, Python module, settings module path, HTTP port)
COMPONENTS = {
    "recordApi": ("record-api", "services.record_api", "services.record_api.settings:RecordApiSettings", 8001),
    "ingest": ("ingest", "services.ingest", "services.ingest.settings:IngestSettings", 8002),
    "consent": ("consent", "services.consent", "services.consent.settings:ConsentSettings", 8003),
}
SECRET_SETTINGS = frozenset({"SCR_DATABASE_URL", "SCR_KAFKA_SASL_PASSWORD"})

Manifest = dict[str, Any]


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


def ensure_helm() -> Path:
    """Install helm into .peers/helm (instant when already there) and return its path."""
    subprocess.run(["bash", str(ENSURE_HELM)], check=True, timeout=1200)
    return HELM


def run_helm(*args: str) -> str:
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise HelmError(result.stderr.strip() or result.stdout.strip())
    return result.stdout


def _template(values: dict[str, Any] | None, files: tuple[Path, ...], kube_version: str) -> str:
    with tempfile.TemporaryDirectory(prefix="scr-helm-") as tmp:
        args = [arg for path in files for arg in ("-f", str(path))]
        if values:
            # JSON is YAML: one override file keeps types (booleans, lists, nulls) exactly as given.
            override = Path(tmp) / "override.yaml"
            override.write_text(json.dumps(values))
            args += ["-f", str(override)]
        return run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version,
                        *args)


def render(values: dict[str, Any] | None = None, *files: Path, kube_version: str = "1.30.0") -> list[Manifest]:
    """`helm template` the chart and return the manifests (hooks included)."""
    return copy.deepcopy(list(_render_cached(json.dumps(values or {}, sort_keys=True), files, kube_version)))


@functools.lru_cache(maxsize=64)
def _render_cached(values_json: str, files: tuple[Path, ...], kube_version: str) -> tuple[Manifest, ...]:
    output = _template(json.loads(values_json), files, kube_version)
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def render_error(values: dict[str, Any] | None = None, *files: Path) -> str:
    """Render values the chart must refuse; return helm's error message."""
    try:
        _template(values, files, "1.30.0")
    except HelmError as exc:
        return str(exc)
    raise AssertionError(f"helm rendered values it should refuse: {values}")


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def full_name(component: str) -> str:
    return f"{RELEASE}-shared-care-record-{component}"


def deployment(manifests: list[Manifest], key: str) -> Manifest:
    return named(manifests, "Deployment", full_name(COMPONENTS[key][0]))


def container(workload: Manifest) -> Manifest:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def pod_labels(workload: Manifest) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Does a label selector (matchLabels and matchExpressions In/NotIn/Exists/DoesNotExist) select these labels?"""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        ok = {"In": present and labels.get(key) in values, "NotIn": not present or labels.get(key) not in values,
              "Exists": present, "DoesNotExist": not present}[operator]
        if not ok:
            return False
    return True


def environment(manifests: list[Manifest], key: str) -> dict[str, Any]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps (rendered by the chart), then env.
    Secret-backed variables map to their secretKeyRef, literal ones to their string value."""
    spec = container(deployment(manifests, key))
    env: dict[str, Any] = {}
    for source in spec.get("envFrom", []):
        config_map = named(manifests, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    for variable in spec.get("env", []):
        if "valueFrom" in variable:
            env[variable["name"]] = variable["valueFrom"]
        else:
            env[variable["name"]] = variable["value"]
    return env


def settings_class(key: str) -> type:
    module_name, class_name = COMPONENTS[key][2].split(":")
    module = __import__(module_name, fromlist=[class_name])
    return getattr(module, class_name)


def scr_variables(settings_cls: type) -> set[str]:
    return {f"SCR_{name.upper()}" for name in settings_cls.model_fields}
