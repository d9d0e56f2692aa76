"""The chart's NetworkPolicies, evaluated the way Kubernetes does: who may open a connection to whom, on which port.

Only the record API may call the consent decision API; only listed senders reach MLLP; every pod may reach DNS,
PostgreSQL and Kafka and nothing else. (Which tables each service may touch, the raw archive above all, is the
database roles' job: tests/deploy/test_database_roles.py.)"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.deploy.chart import (
    COMPONENTS,
    NAMESPACE,
    PRODUCTION_VALUES,
    Manifest,
    deployment,
    full_name,
    named,
    of_kind,
    pod_labels,
    render,
    selects,
)


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, its labels, the namespace's labels) or an address outside the cluster."""

    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


def _peer_matches(peer: dict[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], other.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    return not ports or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def _allowed_one_way(policies: list[Manifest], subject: Endpoint, other: Endpoint, port: int, protocol: str,
                     direction: str) -> bool:
    """Is `subject` (a pod) allowed to receive from (Ingress) or send to (Egress) `other` on `port`?"""
    if subject.namespace is None:
        return True  # outside the cluster: no NetworkPolicy applies
    relevant = [p for p in policies if (p["metadata"].get("namespace") or NAMESPACE) == subject.namespace
                and selects(p["spec"]["podSelector"], subject.labels) and direction in p["spec"]["policyTypes"]]
    if not relevant:
        return True  # not isolated in this direction
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in relevant:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            if _port_matches(rule.get("ports"), port, protocol) and (
                    not peers or any(_peer_matches(peer, subject.namespace, other) for peer in peers)):
                return True
    return False


def connects(policies: list[Manifest], source: Endpoint, destination: Endpoint, port: int,
             protocol: str = "TCP") -> bool:
    """A connection needs the source's egress and the destination's ingress to allow it."""
    return (_allowed_one_way(policies, source, destination, port, protocol, "Egress")
            and _allowed_one_way(policies, destination, source, port, protocol, "Ingress"))


def _pods(manifests: list[Manifest]) -> dict[str, Endpoint]:
    pods = {key: Endpoint(NAMESPACE, pod_labels(deployment(manifests, key))) for key in COMPONENTS}
    job = named(manifests, "Job", full_name("migrate"))
    pods["migrate"] = Endpoint(NAMESPACE, job["spec"]["template"]["metadata"]["labels"])
    return pods


PORTS = {key: port for key, (_, _, _, port) in COMPONENTS.items()}
STRANGER = Endpoint(NAMESPACE, {"app": "something-else"})
OTHER_NAMESPACE = Endpoint("team-x", {"app": "anything"})
PROMETHEUS = Endpoint("monitoring", {"app.kubernetes.io/name": "prometheus"})
KUBE_DNS = Endpoint("kube-system", {"k8s-app": "kube-dns"})
CITIZEN_INGRESS = Endpoint("ingress-nginx-public", {"app.kubernetes.io/name": "ingress-nginx"})
API_GATEWAY = Endpoint("api-gateway", {"app": "gateway"})
DATABASE = Endpoint(ip="10.30.1.10")
KAFKA = Endpoint("kafka", {"strimzi.io/cluster": "scr-kafka", "strimzi.io/kind": "Kafka"})
PAS_ENGINE = Endpoint(ip="10.20.4.7")
UNKNOWN_SENDER = Endpoint(ip="192.0.2.10")
INTERNET_IDP = Endpoint(ip="203.0.113.5")


@pytest.fixture(params=["default", "production"])
def policies_and_pods(request: pytest.FixtureRequest) -> tuple[str, list[Manifest], dict[str, Endpoint]]:
    manifests = render() if request.param == "default" else render(None, PRODUCTION_VALUES)
    return request.param, of_kind(manifests, "NetworkPolicy"), _pods(manifests)


def test_every_pod_of_the_release_is_isolated_both_ways(
    policies_and_pods: tuple[str, list[Manifest], dict[str, Endpoint]],
) -> None:
    _, policies, pods = policies_and_pods
    for name, pod in pods.items():
        types = {t for p in policies if selects(p["spec"]["podSelector"], pod.labels) for t in p["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, name


def test_only_the_record_api_may_call_the_consent_decision_api(
    policies_and_pods: tuple[str, list[Manifest], dict[str, Endpoint]],
) -> None:
    variant, policies, pods = policies_and_pods
    consent = pods["consent"]
    assert connects(policies, pods["recordApi"], consent, 8003)
    for name in ("ingest", "consent", "migrate"):
        assert not connects(policies, pods[name], consent, 8003), name
    for outsider in (STRANGER, OTHER_NAMESPACE):
        assert not connects(policies, outsider, consent, 8003)
    # The citizen page's ingress controller and the gateway for clinicians' /fhir/Consent when configured
    # (production; each routes only its own paths), and nobody in their place by default.
    assert connects(policies, CITIZEN_INGRESS, consent, 8003) == (variant == "production")
    assert connects(policies, API_GATEWAY, consent, 8003) == (variant == "production")
    assert not connects(policies, pods["recordApi"], consent, 8001)


def test_both_sides_refuse_other_callers_of_the_decision_api(
    policies_and_pods: tuple[str, list[Manifest], dict[str, Endpoint]],
) -> None:
    # Defence in depth: neither the callers' egress nor consent's ingress alone may let them through.
    _, policies, pods = policies_and_pods
    consent = pods["consent"]
    assert _allowed_one_way(policies, pods["recordApi"], consent, 8003, "TCP", "Egress")
    for name in ("ingest", "consent", "migrate"):
        assert not _allowed_one_way(policies, pods[name], consent, 8003, "TCP", "Egress"), name
        assert not _allowed_one_way(policies, consent, pods[name], 8003, "TCP", "Ingress"), name


def test_mllp_is_open_only_to_the_listed_senders(
    policies_and_pods: tuple[str, list[Manifest], dict[str, Endpoint]],
) -> None:
    variant, policies, pods = policies_and_pods
    ingest = pods["ingest"]
    assert connects(policies, PAS_ENGINE, ingest, 2575) == (variant == "production")
    for sender in (UNKNOWN_SENDER, STRANGER, OTHER_NAMESPACE, PROMETHEUS):
        assert not connects(policies, sender, ingest, 2575)
    assert not connects(policies, PAS_ENGINE, pods["recordApi"], 2575)


def test_front_doors_are_open_as_configured_and_only_on_their_http_port(
    policies_and_pods: tuple[str, list[Manifest], dict[str, Endpoint]],
) -> None:
    variant, policies, pods = policies_and_pods
    for key in ("recordApi", "ingest"):
        assert connects(policies, API_GATEWAY, pods[key], PORTS[key])
        # Default: any caller (every endpoint but metadata and probes needs a token); production: the gateway only.
        assert connects(policies, OTHER_NAMESPACE, pods[key], PORTS[key]) == (variant == "default")
        assert not connects(policies, API_GATEWAY, pods[key], 5432)
    assert not connects(policies, pods["ingest"], pods["recordApi"], 8001)
    assert not connects(policies, pods["consent"], pods["recordApi"], 8001)


def test_prometheus_may_scrape_every_service(
    policies_and_pods: tuple[str, list[Manifest], dict[str, Endpoint]],
) -> None:
    _, policies, pods = policies_and_pods
    for key in COMPONENTS:
        assert connects(policies, PROMETHEUS, pods[key], PORTS[key]), key


def test_egress_is_dns_database_and_kafka_and_nothing_else(
    policies_and_pods: tuple[str, list[Manifest], dict[str, Endpoint]],
) -> None:
    variant, policies, pods = policies_and_pods
    for key in COMPONENTS:
        pod = pods[key]
        assert connects(policies, pod, KUBE_DNS, 53, "UDP") and connects(policies, pod, KUBE_DNS, 53, "TCP")
        assert connects(policies, pod, DATABASE, 5432)
        assert connects(policies, pod, KAFKA, 9093)
        assert not connects(policies, pod, DATABASE, 22)
        assert not connects(policies, pod, INTERNET_IDP, 80)
        assert not connects(policies, pod, OTHER_NAMESPACE, 8080)
        # The JWKS comes from a mounted ConfigMap by default; production fetches it from the IdP's URL.
        assert connects(policies, pod, INTERNET_IDP, 443) == (variant == "production")
        if variant == "production":  # pinned destinations: the same ports elsewhere are closed
            assert not connects(policies, pod, Endpoint(ip="198.51.100.7"), 5432)
            assert not connects(policies, pod, OTHER_NAMESPACE, 9093)
            assert not connects(policies, pod, Endpoint(ip="10.1.2.3"), 443)


def test_the_migration_job_reaches_only_dns_and_the_database(
    policies_and_pods: tuple[str, list[Manifest], dict[str, Endpoint]],
) -> None:
    _, policies, pods = policies_and_pods
    migrate = pods["migrate"]
    assert connects(policies, migrate, DATABASE, 5432)
    assert connects(policies, migrate, KUBE_DNS, 53, "UDP")
    assert not connects(policies, migrate, KAFKA, 9093)
    assert not connects(policies, migrate, pods["consent"], 8003)
    assert not connects(policies, STRANGER, migrate, 8080)


def test_the_evaluator_itself_sees_an_open_door_when_there_is_one() -> None:
    # Without policies every pod is open both ways: the assertions above are not vacuous.
    pods = _pods(render())
    assert connects([], pods["ingest"], pods["consent"], 8003)
    assert connects([], UNKNOWN_SENDER, pods["ingest"], 2575)
    disabled = render({"networkPolicy": {"enabled": False}})
    assert not of_kind(disabled, "NetworkPolicy")
