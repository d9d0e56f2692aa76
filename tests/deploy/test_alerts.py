"""deploy/prometheus/alerts.yml is a valid Prometheus rule file whose expressions use only the metrics (and label
names) fixed in docs/CONTRACTS.md §5, covers what on-call needs, and every alert has its runbook entry."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    COMPONENTS,
    ROOT,
    container,
    deployment,
    of_kind,
    pod_labels,
    render,
    selects,
    settings_class,
)

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE = ROOT / "deploy" / "prometheus" / "scrape.yml"
CONTRACTS = ROOT / "docs" / "CONTRACTS.md"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"

# From the scrape job (deploy/prometheus/scrape.yml), not the services.
SCRAPE_METRICS = {"up": {"job", "instance", "component", "pod", "namespace", "release"}}
TARGET_LABELS = {"job", "instance", "component", "pod", "namespace", "release"}
FUNCTIONS = {"rate", "increase", "delta", "deriv", "irate", "histogram_quantile", "absent", "absent_over_time",
             "min_over_time", "max_over_time", "avg_over_time", "sum_over_time", "clamp_min", "clamp_max", "vector",
             "time", "abs", "label_replace"}
AGGREGATIONS = {"sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile", "stddev", "count_values", "group"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def contract_metrics() -> dict[str, tuple[str, set[str]]]:
    """metric name -> (type, label names), read from the §5 table of docs/CONTRACTS.md."""
    text = CONTRACTS.read_text()
    section = text[text.index("## 5. Metrics"):]
    metrics: dict[str, tuple[str, set[str]]] = {}
    for row in re.finditer(r"^\|\s*`(scr_[a-z_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", section, re.MULTILINE):
        name, kind, labels = row.groups()
        labels = re.sub(r"\([^)]*\)", "", labels)  # documented values, e.g. outcome (`accepted`, ...)
        metrics[name] = (kind, {label.strip() for label in labels.split(",") if label.strip()})
    return metrics


def documented_values() -> dict[tuple[str, str], set[str]]:
    """(metric, label) -> the values §5 lists for it, where it lists them."""
    text = CONTRACTS.read_text()
    section = text[text.index("## 5. Metrics"):]
    values: dict[tuple[str, str], set[str]] = {}
    for row in re.finditer(r"^\|\s*`(scr_[a-z_]+)`\s*\|[^|]*\|([^|]*)\|", section, re.MULTILINE):
        for label, listed in re.findall(r"(\w+) \(([^)]*)\)", row.group(2)):
            values[(row.group(1), label)] = set(re.findall(r"`([^`]+)`", listed))
    return values


def series_names() -> dict[str, set[str]]:
    """Every series name an expression may select, with the label names it carries."""
    names: dict[str, set[str]] = dict(SCRAPE_METRICS)
    for name, (kind, labels) in contract_metrics().items():
        if kind == "histogram":
            names[f"{name}_bucket"] = labels | {"le"} | TARGET_LABELS
            names[f"{name}_sum"] = names[f"{name}_count"] = labels | TARGET_LABELS
        else:
            names[name] = labels | TARGET_LABELS
    return names


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """The series selectors of a PromQL expression: (metric name, {label: matcher}). Raises on anything it does not
    recognise, so a typo in a function or metric name fails the test."""
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    assert expr.count("[") == expr.count("]"), expr
    for duration in re.findall(r"\[([^\]]+)\]", expr):
        assert DURATION.match(duration), f"bad range {duration!r} in {expr}"
    found: list[tuple[str, dict[str, str]]] = []
    # Grouping clauses list label names, not series.
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    for duration in re.findall(r"\boffset\s+([^\s)]+)", stripped):
        assert DURATION.match(duration), f"bad offset {duration!r} in {expr}"
    stripped = re.sub(r"\boffset\s+[^\s)]+", " ", stripped)
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})|([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", stripped):
        name, matchers, bare, call = match.groups()
        if matchers is not None:
            assert name, f"selector without a metric name in {expr}"
            pairs = re.findall(r'([a-zA-Z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers)
            assert len(pairs) == matchers.count('"') // 2, f"unparsed matcher in {matchers}"
            found.append((name, {label: value for label, _, value in pairs}))
        elif call:
            assert bare in FUNCTIONS | AGGREGATIONS, f"unknown function {bare!r} in {expr}"
        elif bare not in KEYWORDS:
            found.append((bare, {}))
    return found


def test_the_file_is_a_prometheus_rule_file() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    group_names = [g["name"] for g in document["groups"]]
    assert len(group_names) == len(set(group_names))
    alerts = [r["alert"] for r in rules()]
    assert len(alerts) == len(set(alerts)), "alert names must be unique"
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule["alert"]
            assert re.fullmatch(r"Scr[A-Za-z]+", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert rule["labels"]["team"] in {"platform", "integration", "data-quality", "privacy-officer"}
            assert {"summary", "description", "runbook"} <= set(rule["annotations"])
            for text in rule["annotations"].values():  # Go templates must at least balance
                assert text.count("{{") == text.count("}}")


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_expressions_use_only_contract_metrics_and_their_labels(rule: dict[str, Any]) -> None:
    known = series_names()
    found = selectors(rule["expr"])
    assert found, rule["expr"]
    for name, matchers in found:
        assert name in known, f"{rule['alert']}: {name} is not a metric in docs/CONTRACTS.md §5"
        assert set(matchers) <= known[name], f"{rule['alert']}: {name} has no label {set(matchers) - known[name]}"
        for label, value in matchers.items():
            listed = documented_values().get((name, label))
            if label == "service":  # the service label is each service's SCR_SERVICE_NAME
                listed = {settings_class(key).model_fields["service_name"].default for key in COMPONENTS}
                assert set(value.split("|")) <= listed, f"{rule['alert']}: no service is called {value!r}"
                continue
            if listed is not None and re.fullmatch(r"[\w-]+", value):
                assert value in listed, f"{rule['alert']}: {name}{{{label}}} is never {value!r} (§5: {listed})"
    grouping = [label.strip() for clause in re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"])
                for label in clause.split(",")]
    labels_available = set().union(*(known[name] for name, _ in found))
    assert set(grouping) <= labels_available, f"{rule['alert']}: groups by a label no selected metric has"


def test_the_selector_parser_rejects_what_it_should() -> None:
    assert selectors('sum by (route) (rate(scr_http_requests_total{route="/readyz"}[5m]))') == [
        ("scr_http_requests_total", {"route": "/readyz"})]
    for broken in ("sum(rate(scr_http_requests_total[5m])", "rat(scr_http_requests_total[5m])",
                   "rate(scr_http_requests_total[5 minutes])"):
        with pytest.raises(AssertionError):
            selectors(broken)


def test_the_alerts_cover_what_on_call_needs() -> None:
    by_metric: dict[str, list[str]] = {}
    for rule in rules():
        for name, matchers in selectors(rule["expr"]):
            by_metric.setdefault(name, []).append(rule["expr"])
            by_metric.setdefault(f"{name}{sorted(matchers.items())}", []).append(rule["expr"])
    for needed in ("scr_ingest_consumer_lag", "scr_ingest_dlq_total", "scr_ingest_raw_failed",
                   "scr_ingest_match_reviews_open", "scr_consent_decision_seconds_bucket", "scr_break_glass_total",
                   "scr_audit_write_failures_total", "scr_http_request_duration_seconds_bucket", "up",
                   "scr_ingest_messages_total", "scr_ingest_conflicts_retried_total", "scr_ingest_raw_unfinished"):
        assert needed in by_metric, f"no alert on {needed}"
    assert any("histogram_quantile(0.95" in e and "route" in e
               for e in by_metric["scr_http_request_duration_seconds_bucket"]), "p95 latency per route"
    readiness = [e for e in by_metric["scr_http_requests_total"] if 'route="/readyz"' in e and '"503"' in e]
    assert readiness, "readiness failing"
    decisions = [e for e in by_metric["scr_http_requests_total"] if "/consent/decide" in e and '5..' in e]
    assert decisions, "decision API errors"


def test_every_alert_and_every_metric_is_explained_in_the_runbook() -> None:
    text = OPERATIONS.read_text()
    headings = {h.strip() for h in re.findall(r"^#{2,5} (.+)$", text, re.MULTILINE)}
    for rule in rules():
        assert rule["alert"] in headings, f"docs/OPERATIONS.md has no section for {rule['alert']}"
        assert rule["annotations"]["runbook"] == f"docs/OPERATIONS.md#{rule['alert'].lower()}"
    for metric in contract_metrics():
        assert f"`{metric}`" in text, f"docs/OPERATIONS.md does not explain {metric}"


def test_the_scrape_job_finds_the_charts_pods_on_their_http_port() -> None:
    job = yaml.safe_load(SCRAPE.read_text())["scrape_configs"][0]
    assert {f'up{{job="{job["job_name"]}"}}' in r["expr"] for r in rules() if "up{" in r["expr"]} == {True}
    keep = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    part_of = keep[("__meta_kubernetes_pod_label_app_kubernetes_io_part_of",)]
    port_name = keep[("__meta_kubernetes_pod_container_port_name",)]
    manifests = render()
    for workload in of_kind(manifests, "Deployment"):
        assert re.fullmatch(part_of, pod_labels(workload)["app.kubernetes.io/part-of"])
        assert any(re.fullmatch(port_name, p["name"]) for p in container(workload)["ports"])
    ingest_ports = [p["name"] for p in container(deployment(manifests, "ingest"))["ports"]]
    assert [p for p in ingest_ports if re.fullmatch(port_name, p)] == ["http"]  # MLLP is not scraped
    targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    assert targets <= TARGET_LABELS


def test_the_chart_annotates_pods_for_annotation_based_scraping() -> None:
    for workload in of_kind(render(), "Deployment"):
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        port = next(p["containerPort"] for p in container(workload)["ports"] if p["name"] == "http")
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_with_the_prometheus_operator_the_chart_ships_the_same_rules_and_scrape() -> None:
    manifests = render({"metrics": {"podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                                    "prometheusRule": {"enabled": True}}})
    (rule,) = of_kind(manifests, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]  # one file, no drift
    (monitor,) = of_kind(manifests, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    job = next(r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job")
    assert job == yaml.safe_load(SCRAPE.read_text())["scrape_configs"][0]["job_name"]
    assert {r["targetLabel"] for r in endpoint["relabelings"]} <= TARGET_LABELS
    for workload in of_kind(manifests, "Deployment"):
        assert selects(monitor["spec"]["selector"], pod_labels(workload))
    assert not of_kind(render(), "PrometheusRule") and not of_kind(render(), "PodMonitor")
