"""The Helm chart, rendered by the real Helm engine (helm-python-sdk), validated against the
Kubernetes schemas; the alert rules checked and unit-tested by promtool; every metric the alerts
and the dashboard use checked against a real node's /metrics."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import helm_python
import kubernetes_validate
import pydicom
import pytest
import yaml

from node.config import HttpConfig, NodeConfig, load_config
from node.testing.ehr import MllpListener
from node.testing.loopback import LOOPBACK
from node.testing.pacs import Orthanc
from node.testing.synthetic import write_cr_study
from tests.helpers import get, wait_for
from tests.reference import lesion_answer

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "qoq-node"
DASHBOARD = REPO / "deploy" / "grafana" / "qoq-node.json"
KUBERNETES_VERSION = "1.33.0"
CUSTOM_RESOURCES = {"monitoring.coreos.com/v1"}  # Prometheus Operator CRDs: no core schema

VALUE_SETS = {
    "defaults": {},
    "tls": {"dicom": {"tls": {"enabled": True, "secretName": "qoq-dicom-tls", "verifyClients": True}},
            "pacsTls": {"secretName": "pacs-ca"}, "stowTokens": {"secretName": "stow-tokens"},
            "config": {"dicomweb": {"stow": {"enabled": True,
                                             "tokens_file": "/etc/qoq-node/stow-tokens/tokens.yaml"}}}},
    "loadbalancer": {"service": {"dicom": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.20.0.0/16"]}}},
    "nodeport": {"service": {"dicom": {"type": "NodePort", "nodePort": 31112}}},
    "networkpolicy-off": {"networkPolicy": {"enabled": False}},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                   "prometheusRule": {"enabled": True, "noStudies": {"enabled": True}}},
    "production": {
        "model": {"existingClaim": "qoq-med-weights", "subPath": "QoQ-Med-VL-32B"},
        "gpu": {"count": 2},
        "networkPolicy": {"pacsCIDRs": ["10.1.2.0/24"], "egressCIDRs": ["10.1.2.0/24", "10.9.0.5/32"],
                          "hl7CIDRs": ["10.9.0.7/32"]},
        "hl7": {"enabled": True},
        "config": {"dicom": {"allowed_calling_ae_titles": ["PACS1"]}, "context": {"pacs": "pacs"},
                   "hl7_listener": {"allowed_sending_applications": ["RIS", "LIS"]}, "destinations": {
            "dicom": [{"name": "pacs", "ae_title": "PACS1", "host": "pacs.hospital.org", "port": 104}],
            "hl7": [{"name": "ehr", "host": "ehr.hospital.org", "port": 2575, "receiving_application": "EPIC"}]}},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
    },
    "feedback": {"feedbackTokens": {"secretName": "qoq-feedback-tokens"},
                 "stowTokens": {"secretName": "qoq-stow-tokens"},
                 "config": {"dicomweb": {"stow": {"enabled": True}}},
                 "networkPolicy": {"feedbackCIDRs": ["10.9.0.8/32"]}},
    "stow-listener": {
        "stowTokens": {"secretName": "stow-tokens"},
        "stowTls": {"enabled": True, "secretName": "qoq-stow-tls", "verifyClients": True},
        "service": {"stow": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.4.0.0/16"]}},
        "ingress": {"enabled": True, "className": "nginx", "host": "qoq.hospital.org", "tlsSecretName": "qoq-web",
                    "annotations": {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}},
        "networkPolicy": {"stowCIDRs": ["10.4.0.0/16"]},
        "config": {"dicomweb": {"stow": {"enabled": True, "port": 8443}}},
    },
    "stow-on-metrics": {
        "ingress": {"enabled": True},
        "networkPolicy": {"stowCIDRs": ["10.4.0.0/16"]},
        "config": {"dicomweb": {"stow": {"enabled": True, "tokens_file": "/etc/qoq-node/stow-tokens/tokens.yaml"}}},
    },
    "dicomweb": {
        "dicomwebSecrets": {"secretName": "archive-credentials"},
        "networkPolicy": {"egressCIDRs": ["10.3.0.0/24"]},
        "config": {"context": {"pacs": "archive"}, "destinations": {"dicomweb": [
            {"name": "archive", "url": "https://vna.hospital.org/dicomweb",
             "auth": {"kind": "oauth2", "token_url": "https://idp.hospital.org:8443/token", "client_id": "qoq",
                      "client_secret_file": "/etc/qoq-node/dicomweb/client-secret"}},
            {"name": "orthanc", "url": "http://orthanc.hospital.org:8042/dicom-web"}]}},
    },
    "scale-out": {
        "model": {"existingClaim": "qoq-med-weights", "subPath": "QoQ-Med-VL-32B"},
        "gpu": {"count": 0},
        "engineServer": {"enabled": True, "replicas": 3, "gpusPerReplica": 2, "extraArgs": ["--max_seq_len=8192"]},
        "config": {"pipeline": {"batch_size": 16, "batches_in_flight": 4},
                   "engine": {"openai": {"max_concurrency": 64}}},
    },
}


def render(values: dict) -> list[dict]:
    """Every object the chart renders with ``values`` (release "qoq" in namespace "radiology")."""
    chart = helm_python.Chart.load(CHART)
    try:
        manifests = chart.render(values, name="qoq", namespace="radiology", is_install=True)
    finally:
        chart.close()
    return [obj for path, text in manifests.items() if path.endswith(".yaml")
            for obj in yaml.safe_load_all(text) if obj]


def by_kind(objects: list[dict], kind: str) -> dict:
    [obj] = [o for o in objects if o["kind"] == kind]
    return obj


def node_yaml(objects: list[dict]) -> dict:
    return yaml.safe_load(by_kind(objects, "ConfigMap")["data"]["node.yaml"])


def test_chart_lints_clean() -> None:
    report = helm_python.lint(CHART, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_value_set_renders_valid_kubernetes_objects(name: str) -> None:
    objects = render(VALUE_SETS[name])
    for obj in objects:
        if obj["apiVersion"] not in CUSTOM_RESOURCES:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    # The rendered node.yaml is a configuration the node itself accepts (the Secret's files, which exist
    # only in the pod, are looked for at start, not by the model).
    NodeConfig.model_validate(node_yaml(objects))


def test_scale_out_runs_trtllm_serve_on_gpu_pods_and_points_the_node_at_them() -> None:
    objects = render(VALUE_SETS["scale-out"])
    deployment = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert container["command"] == ["trtllm-serve"]
    # No served name: trtllm-serve lists a local checkpoint by its directory's name (1.2.x has no name flag).
    assert container["args"][:5] == ["/models/QoQ-Med-VL-32B", "--host=0.0.0.0", "--port=8000",
                                     "--tp_size=2", "--max_batch_size=32"]
    assert container["args"][-1] == "--max_seq_len=8192"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "qoq-med-weights", "readOnly": True}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    # The node: the openai backend on the engine Service, no GPU of its own.
    [service] = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "qoq-qoq-node-engine"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    engine = node_yaml(objects)["engine"]
    assert (engine["backend"], engine["openai"]["url"], engine["openai"]["served_model"]) == (
        "openai", "http://qoq-qoq-node-engine:8000/v1", "QoQ-Med-VL-32B")
    assert engine["openai"]["max_concurrency"] == 64 and node_yaml(objects)["pipeline"]["batches_in_flight"] == 4
    assert engine["cache_dir"] == "/var/lib/qoq-node/engine-cache"  # on the data volume: /models is read-only
    [node] = by_kind(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in node["resources"].get("limits", {})
    # Only the node may send studies to the engine, and the node may reach it.
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    engine_policy = policies["qoq-qoq-node-engine"]["spec"]
    assert engine_policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "qoq-node"
    egress = policies["qoq-qoq-node"]["spec"]["egress"]
    assert any(rule.get("ports") == [{"port": 8000, "protocol": "TCP"}] for rule in egress)
    with pytest.raises(Exception, match=r"engineServer\.enabled needs the weights"):
        render({"engineServer": {"enabled": True}})


def test_the_node_runs_the_slim_image_when_the_engine_runs_on_its_own_pods() -> None:
    def node_image(values: dict) -> str:
        [node] = by_kind(render(values), "StatefulSet")["spec"]["template"]["spec"]["containers"]
        return node["image"]

    repository = "registry.example.org/qoq/qoq-node"
    assert node_image({}) == f"{repository}:0.1.0"  # the GPU image: the engine in the node's process
    assert node_image(VALUE_SETS["scale-out"]) == f"{repository}:0.1.0-slim"  # the base install, no torch
    pinned = {**VALUE_SETS["scale-out"], "image": {"repository": "r/q", "tag": "2.0", "slimTag": "2.0-cpu"}}
    assert node_image(pinned) == "r/q:2.0-cpu"
    assert node_image({**pinned, "engineServer": {"enabled": False}}) == "r/q:2.0"


def test_a_served_model_name_goes_to_trtllm_serve_and_to_the_node() -> None:
    values = copy.deepcopy(VALUE_SETS["scale-out"])
    values["engineServer"]["servedModel"] = "qoq-med"
    objects = render(values)
    [container] = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["args"][3] == "--served-model-name=qoq-med"  # TensorRT-LLM 1.3.0rc7 or later
    assert node_yaml(objects)["engine"]["openai"]["served_model"] == "qoq-med"


def test_statefulset_is_hardened_keeps_its_data_and_sees_the_gpu() -> None:
    objects = render(VALUE_SETS["production"])
    statefulset = by_kind(objects, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert statefulset["spec"]["replicas"] == 1
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/startupz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # the node listens on loopback by default; the kubelet's probes come to the pod's address
    assert node_yaml(objects)["http"]["host"] == "0.0.0.0" and HttpConfig().host == "127.0.0.1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    # Spool and state on a volume claim template: a rescheduled pod gets its claim back.
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "200Gi"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"]["mountPath"] == node_yaml(objects)["storage"]["root"]
    # The weights: read-only, from the existing claim, where engine.model points.
    assert mounts["models"]["readOnly"] is True
    [models] = [v for v in pod["volumes"] if v["name"] == "models"]
    assert models["persistentVolumeClaim"] == {"claimName": "qoq-med-weights", "readOnly": True}
    assert node_yaml(objects)["engine"]["model"] == "/models/QoQ-Med-VL-32B"


def test_a_config_change_restarts_the_pod() -> None:
    def checksum(values: dict) -> str:
        return by_kind(render(values), "StatefulSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"study": {"stable_seconds": 10}}})


def test_tls_secrets_are_mounted_not_inlined() -> None:
    objects = render(VALUE_SETS["tls"])
    pod = by_kind(objects, "StatefulSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "qoq-dicom-tls"
    assert volumes["pacs-tls"]["secret"]["secretName"] == "pacs-ca"
    assert volumes["stow-tokens"]["secret"]["secretName"] == "stow-tokens"
    assert node_yaml(objects)["dicomweb"]["stow"]["tokens_file"] == "/etc/qoq-node/stow-tokens/tokens.yaml"
    assert node_yaml(objects)["dicom"]["tls"] == {"enabled": True, "certificate": "/etc/qoq-node/tls/tls.crt",
                                                  "private_key": "/etc/qoq-node/tls/tls.key",
                                                  "ca": "/etc/qoq-node/tls/ca.crt"}
    assert not [o for o in objects if o["kind"] == "Secret"]


def test_dicomweb_credentials_are_mounted_and_its_ports_opened() -> None:
    objects = render(VALUE_SETS["dicomweb"])
    pod = by_kind(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["dicomweb-secrets"]["secret"]["secretName"] == "archive-credentials"
    [container] = pod["containers"]
    assert {"name": "dicomweb-secrets", "mountPath": "/etc/qoq-node/dicomweb", "readOnly": True} in \
        container["volumeMounts"]
    _, destinations = by_kind(objects, "NetworkPolicy")["spec"]["egress"]
    assert {p["port"] for p in destinations["ports"]} == {443, 8443, 8042}  # the archives' and the token endpoint's


def test_stow_rs_on_its_own_listener_gets_a_port_a_service_its_tls_secret_an_ingress_and_a_policy_rule() -> None:
    """Issue 25's review: STOW-RS's own port (config.dicomweb.stow.port) had no containerPort, Service, TLS mount
    or NetworkPolicy rule; now the chart opens it, to stowCIDRs and the ingress controller only."""
    objects = render(VALUE_SETS["stow-listener"])
    pod = by_kind(objects, "StatefulSet")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {"name": "stow", "containerPort": 8443, "protocol": "TCP"} in container["ports"]
    assert {v["name"]: v for v in pod["volumes"]}["stow-tls"]["secret"]["secretName"] == "qoq-stow-tls"
    assert {"name": "stow-tls", "mountPath": "/etc/qoq-node/stow-tls", "readOnly": True} in container["volumeMounts"]
    stow = node_yaml(objects)["dicomweb"]["stow"]
    assert (stow["host"], stow["port"], stow["tokens_file"]) == ("0.0.0.0", 8443, "/etc/qoq-node/stow-tokens")
    assert stow["tls"] == {"enabled": True, "certificate": "/etc/qoq-node/stow-tls/tls.crt",
                           "private_key": "/etc/qoq-node/stow-tls/tls.key", "ca": "/etc/qoq-node/stow-tls/ca.crt"}
    NodeConfig.model_validate(node_yaml(objects))  # a node.yaml the node takes
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "qoq-qoq-node-stow")
    assert service["spec"]["ports"] == [{"name": "stow", "port": 8443, "targetPort": "stow", "protocol": "TCP"}]
    assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["loadBalancerSourceRanges"] == ["10.4.0.0/16"]
    ingress = by_kind(objects, "Ingress")["spec"]
    [rule] = ingress["rules"]
    assert rule["host"] == "qoq.hospital.org"
    assert ingress["tls"] == [{"secretName": "qoq-web", "hosts": ["qoq.hospital.org"]}]
    assert rule["http"]["paths"] == [{"path": "/dicomweb/", "pathType": "Prefix", "backend": {"service": {
        "name": "qoq-qoq-node-stow", "port": {"name": "stow"}}}}]
    stow_rule = next(r for r in by_kind(objects, "NetworkPolicy")["spec"]["ingress"] if r["ports"][0]["port"] == "stow")
    assert stow_rule["from"] == [{"ipBlock": {"cidr": "10.4.0.0/16"}}, {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}}]
    # Without a port of its own: the metrics port is opened to the STOW-RS clients, the Ingress goes there.
    on_metrics = render(VALUE_SETS["stow-on-metrics"])
    assert not [o for o in on_metrics if o["kind"] == "Service" and o["metadata"]["name"].endswith("-stow")]
    assert "host" not in node_yaml(on_metrics)["dicomweb"]["stow"]
    backend = by_kind(on_metrics, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "qoq-qoq-node-metrics", "port": {"name": "metrics"}}
    first, *_ = by_kind(on_metrics, "NetworkPolicy")["spec"]["ingress"]
    assert first["ports"] == [{"port": "metrics", "protocol": "TCP"}] and first["from"][0] == {
        "ipBlock": {"cidr": "10.4.0.0/16"}}
    # Off by default: no Ingress, no STOW-RS rule.
    defaults = render({})
    assert not [o for o in defaults if o["kind"] == "Ingress"]
    assert len(by_kind(defaults, "NetworkPolicy")["spec"]["ingress"]) == 1  # the monitoring namespace's


def test_services_and_network_policy() -> None:
    loadbalancer = [o for o in render(VALUE_SETS["loadbalancer"]) if o["kind"] == "Service"]
    dicom = next(s for s in loadbalancer if s["metadata"]["name"].endswith("-dicom"))
    assert dicom["spec"]["type"] == "LoadBalancer" and dicom["spec"]["loadBalancerSourceRanges"] == ["10.20.0.0/16"]
    assert dicom["spec"]["externalTrafficPolicy"] == "Local"
    assert not [o for o in render(VALUE_SETS["networkpolicy-off"]) if o["kind"] == "NetworkPolicy"]
    policy = by_kind(render(VALUE_SETS["production"]), "NetworkPolicy")["spec"]
    dicom_rule, hl7_rule, metrics_rule = policy["ingress"]
    assert dicom_rule["from"] == [{"ipBlock": {"cidr": "10.1.2.0/24"}}] and dicom_rule["ports"][0]["port"] == "dicom"
    assert hl7_rule["from"] == [{"ipBlock": {"cidr": "10.9.0.7/32"}}] and hl7_rule["ports"][0]["port"] == "hl7"
    production = render(VALUE_SETS["production"])
    hl7 = next(o for o in production if o["kind"] == "Service" and o["metadata"]["name"].endswith("-hl7"))
    assert hl7["spec"]["ports"][0] == {"name": "hl7", "port": 2575, "targetPort": "hl7", "protocol": "TCP"}
    listener = node_yaml(production)["hl7_listener"]
    assert listener["enabled"] is True and listener["host"] == "0.0.0.0" and listener["port"] == 2575
    assert listener["allowed_sending_applications"] == ["RIS", "LIS"]
    assert not [o for o in render({}) if o["kind"] == "Service" and o["metadata"]["name"].endswith("-hl7")]
    assert metrics_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    dns, destinations = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert {p["port"] for p in destinations["ports"]} == {104, 2575}  # only the destinations' ports
    # No PACS CIDRs configured: nobody may open a DICOM association.
    default_policy = by_kind(render({}), "NetworkPolicy")["spec"]
    assert all(rule["ports"][0]["port"] != "dicom" for rule in default_policy["ingress"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"service": {"dicom": {"type": "ExternalName"}}}, "/service/dicom/type"),
        ({"config": {"dicom": {"ae_title": "NAME_LONGER_THAN_16"}}}, "/config/dicom/ae_title"),
        ({"config": {"storage": {"root": "/elsewhere"}}}, "'root' not allowed"),  # the chart manages it
        ({"config": {"destinations": {"hl7": [{"name": "ehr"}]}}}, "missing properties 'host', 'port'"),
        ({"dicom": {"tls": {"enabled": True}}}, "/dicom/tls/secretName"),
        ({"stowTls": {"enabled": True}}, "/stowTls/secretName"),
        ({"stowTls": {"enabled": True, "secretName": "tls"}}, "'/config/dicomweb/stow': missing property 'port'"),
        ({"config": {"dicomweb": {"stow": {"host": "0.0.0.0"}}}}, "'host' not allowed"),  # the chart manages it
        ({"config": {"http": {"port": 8080}}}, "'port' not allowed"),  # the chart's (metrics.port)
        ({"config": {"http": {"body_idle_seconds": 0.5}}}, "/config/http/body_idle_seconds"),
        ({"model": {"existingClaim": "weights", "hostPath": "/srv/models"}}, "/model/hostPath"),
        ({"networkPolicy": {"pacsCIDRs": ["pacs.hospital.org"]}}, "/networkPolicy/pacsCIDRs/0"),
        ({"gpu": {"count": -1}}, "/gpu/count"),
        ({"unknown": 1}, "'unknown' not allowed"),
        ({"feedback": {"tokensSecret": "qoq-feedback-tokens"}}, "'feedback' not allowed"),  # now feedbackTokens
        ({"config": {"feedback": {"tokens_file": "/elsewhere"}}}, "'tokens_file' not allowed"),  # the chart manages it
    ],
)
def test_bad_values_are_rejected_with_the_key(values: dict, message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render(values)


def test_the_request_body_pause_is_set_in_config_beside_the_charts_http_host_and_port() -> None:
    http = node_yaml(render({"config": {"http": {"body_idle_seconds": 120}}, "metrics": {"port": 9200}}))["http"]
    assert http == {"host": "0.0.0.0", "port": 9200, "body_idle_seconds": 120}


def test_values_schema_is_generated_from_the_node_config() -> None:
    spec = importlib.util.spec_from_file_location("generate_schema", REPO / "deploy" / "helm" / "generate_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (CHART / "values.schema.json").read_text() == module.render(), \
        "values.schema.json is stale: run .venv/bin/python deploy/helm/generate_schema.py"


def _rules(tmp_path: Path) -> Path:
    rule = by_kind(render(VALUE_SETS["monitoring"]), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


@pytest.mark.usefixtures("promtool")
def test_alert_rules_pass_promtool_and_fire_when_they_should(tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    check = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    labels = 'namespace="radiology", job="qoq-qoq-node-metrics"'
    cases = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f'qoqnode_outbox_items{{{labels}, destination="pacs", state="dead"}}', "values": "0 0 1x10"},
                {"series": f'qoqnode_storage_free_bytes{{{labels}}}', "values": "9e9x5 1e9x10"},
                {"series": f'qoqnode_model_loaded{{{labels}}}', "values": "0x20"},
                {"series": f'up{{{labels}}}', "values": "1x20"},
                {"series": f'qoqnode_cstore_failures_total{{{labels}, reason="uid_conflict"}}', "values": "0x5 1x15"},
                {"series": f'qoqnode_cstore_failures_total{{{labels}, reason="out_of_space"}}', "values": "0x5 9x15"},
                {"series": f'qoqnode_hl7_messages_received_total{{{labels}, type="ORU^R01", outcome="error"}}',
                 "values": "0x5 1x15"},
                {"series": f'qoqnode_hl7_messages_received_total{{{labels}, type="ORM^O01", outcome="accepted"}}',
                 "values": "0x5 40x15"},
                {"series": f'qoqnode_context_retrieval_failures_total{{{labels}, step="find"}}',
                 "values": "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "QoqNodeDeadLetters", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "QoqNodeDeadLetters",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "destination": "pacs"}, "exp_annotations": {
                     "summary": "results for pacs were dead-lettered",
                     "description": "1 results were refused or retried too long; fix the destination, then "
                                    "'qoq-node outbox retry-all'."}}]},
                {"eval_time": "10m", "alertname": "QoqNodeDiskFull", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "namespace": "radiology", "job": "qoq-qoq-node-metrics"},
                    "exp_annotations": {
                        "summary": "qoq-node refuses studies for lack of disk",
                        "description": "Free space is below storage.min_free_bytes: C-STORE answers Out of "
                                       "Resources and the pod is not ready."}}]},
                {"eval_time": "4m", "alertname": "QoqNodeInstancesRefused", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "QoqNodeInstancesRefused", "exp_alerts": [{  # not out_of_space
                    "exp_labels": {"severity": "warning", "reason": "uid_conflict"},
                    "exp_annotations": {
                        "summary": "the node refused instances from the PACS (uid_conflict)",
                        "description": "1 C-STORE requests failed with uid_conflict in the last hour; refused objects "
                                       "are kept aside ('qoq-node quarantine' lists them), storage and internal "
                                       "errors are in the node's log."}}]},
                {"eval_time": "10m", "alertname": "QoqNodeHl7MessagesRefused", "exp_alerts": [{  # accepted: no alert
                    "exp_labels": {"severity": "warning", "type": "ORU^R01", "outcome": "error"},
                    "exp_annotations": {
                        "summary": "the node answered AE to ORU^R01 messages (error)",
                        "description": "1 HL7 messages could not be used (error: kept aside, 'qoq-node quarantine' "
                                       "says why) or stored (failed: disk or database, the sender resends) in the "
                                       "last hour; studies read meanwhile lack that context."}}]},
                {"eval_time": "10m", "alertname": "QoqNodePriorRetrievalFailing", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "QoqNodePriorRetrievalFailing", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "step": "find"},
                    "exp_annotations": {
                        "summary": "the node cannot find prior studies in the PACS",
                        "description": "20 C-FIND/C-GET failures in the last hour: studies are read without their "
                                       "priors. Check context.pacs and that the PACS lets the node's AE query and "
                                       "retrieve."}}]},
                {"eval_time": "10m", "alertname": "QoqNodeDown", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "QoqNodeModelNotLoaded", "exp_alerts": []},
            ],
        }],
    }
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump(cases))
    result = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_feedback_tokens_secret_is_mounted_and_configured() -> None:
    """The Secret is mounted read-only, the node's config points at it, and the integrations may reach the port;
    the STOW-RS clients' Secret the same way (both are read as a directory of name → token)."""
    objects = render(VALUE_SETS["feedback"])
    pod = by_kind(objects, "StatefulSet")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "feedback-tokens"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "feedback-tokens"]
    assert volume["secret"]["secretName"] == "qoq-feedback-tokens" and mount["readOnly"]
    assert node_yaml(objects)["feedback"]["tokens_file"] == mount["mountPath"]
    [stow_mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "stow-tokens"]
    assert node_yaml(objects)["dicomweb"]["stow"] == {**node_yaml(objects)["dicomweb"]["stow"], "enabled": True,
                                                      "tokens_file": stow_mount["mountPath"]}
    ingress = by_kind(objects, "NetworkPolicy")["spec"]["ingress"]
    assert {"from": [{"ipBlock": {"cidr": "10.9.0.8/32"}}], "ports": [{"port": "metrics", "protocol": "TCP"}]} \
        in ingress
    assert "tokens_file" not in node_yaml(render({})).get("feedback", {})  # no Secret: the API stays off


def _quality_series(labels: str, task: str, concordance: str, psi: str, rejection: str) -> list[dict]:
    """A task's quality gauges over 60 minutes (decided verdicts 40, baseline concordance 0.8)."""
    return [{"series": f'qoqnode_quality_{name}{{{labels}, task="{task}"}}', "values": values} for name, values in (
        ("concordance", concordance), ("baseline_concordance", "0.8x60"), ("concordance_decided", "40x60"),
        ("label_psi", psi), ("rejection_rate", rejection))]


@pytest.mark.usefixtures("promtool")
def test_quality_alerts_fire_on_a_drifting_task_and_stay_silent_on_a_healthy_one(tmp_path: Path) -> None:
    """Concordance 0.15 below the baseline over 40 verdicts, PSI 0.35, 12 % rejected: each alert fires on the
    drifting task after its 30 minutes; the healthy task (concordance 0.78, PSI 0.05, 1 % rejected) never."""
    labels = 'namespace="radiology", job="qoq-qoq-node-metrics"'
    series = (_quality_series(labels, "chest_xray", "0.65x60", "0.35x60", "0.12x60")
              + _quality_series(labels, "ct_head", "0.78x60", "0.05x60", "0.01x60"))
    expected = {
        "QoqNodeConcordanceBelowBaseline": (
            "radiologists agree less with the chest_xray answers than at the baseline",
            "Concordance over the last verdicts is 0.15 below the baseline (margin 0.1, at least 30 decided "
            "verdicts). 'qoq-node quality' shows the figures with their interval; look for a change in the studies, "
            "the protocol or the model."),
        "QoqNodeLabelDrift": (
            "the chest_xray answers drift from the baseline's label distribution",
            "The population stability index of the last answers' labels is 0.35 (limit 0.2): the studies or the "
            "model's answers have shifted. 'qoq-node quality' shows the distributions."),
        "QoqNodeRejectionRateHigh": (
            "many chest_xray results are rejected",
            "12% of the last answers were rejected (IOCM rejection note or the feedback API's reject; limit 0.05)."),
    }
    tests = []
    for alert, (summary, description) in expected.items():
        tests.append({"eval_time": "20m", "alertname": alert, "exp_alerts": []})  # not for 30 minutes yet
        tests.append({"eval_time": "45m", "alertname": alert, "exp_alerts": [{
            "exp_labels": {"severity": "warning", "task": "chest_xray", "namespace": "radiology",
                           "job": "qoq-qoq-node-metrics"},
            "exp_annotations": {"summary": summary, "description": description}}]})
    few = _quality_series(labels, "mri", "0.1x60", "0.0x60", "0.0x60")  # far below, but over 5 verdicts only
    few[2]["values"] = "5x60"
    cases = {"rule_files": [str(_rules(tmp_path))], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": series, "alert_rule_test": tests},
        {"interval": "1m", "input_series": few, "alert_rule_test": [
            {"eval_time": "45m", "alertname": "QoqNodeConcordanceBelowBaseline", "exp_alerts": []}]}]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(cases))
    result = subprocess.run(["promtool", "test", "rules", str(tmp_path / "tests.yaml")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


#: The series names Prometheus sees for each metric type (a family is declared even before its first sample).
SERIES_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
                   "info": ("_info",), "summary": ("_sum", "_count", "")}


def _exported_series(metrics_text: str) -> set[str]:
    """Every series name a /metrics page exports: its samples, and the series of every declared family."""
    series = {line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines() if line.startswith("qoqnode_")}
    for family, kind in re.findall(r"^# TYPE (qoqnode_\w+) (\w+)$", metrics_text, re.MULTILINE):
        series |= {family.removesuffix("_total") + suffix if kind == "counter" else family + suffix
                   for suffix in SERIES_SUFFIXES[kind]}
    return series


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bqoqnode_[a-z0-9_]+", text))


@pytest.mark.usefixtures("dcmtk")
def test_every_metric_of_the_alerts_and_dashboard_is_exported(orthanc: Orthanc, make_node, tmp_path: Path) -> None:
    """Run a real node through a study (so every labelled series exists), with its STOW-RS receiver on, then
    compare."""
    cr = write_cr_study(tmp_path / "cr", size=256)
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"*": lesion_answer(pydicom.dcmread(cr.files[0]), "Mass")}))
    (tmp_path / "stow-tokens.yaml").write_text('[{name: CLOUDPACS, token: "cloud-pacs-token-0123456789"}]')
    with MllpListener() as ehr:
        node = make_node(engine={"backend": "replay", "replay_responses": responses}, destinations={
            "dicom": [{"name": "pacs", "ae_title": orthanc.aet, "host": LOOPBACK, "port": orthanc.dicom_port}],
            "hl7": [{"name": "ehr", "host": LOOPBACK, "port": ehr.port}]},
            dicomweb={"stow": json.dumps({"enabled": True, "tokens_file": str(tmp_path / "stow-tokens.yaml")})})
        subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.scp.port), str(cr.files[0])], check=True,
                       capture_output=True)
        subprocess.run(["storescu", "-aec", "WRONG", LOOPBACK, str(node.scp.port), str(cr.files[0])],
                       capture_output=True)  # a rejected association, so that series exists too
        wait_for(lambda: node.store.studies.summaries()[0].state == "complete", timeout=30)
        status, exported_text = get(node, "/metrics")
    exported = _exported_series(exported_text)
    rule = by_kind(render(VALUE_SETS["monitoring"]), "PrometheusRule")
    used_by_alerts = _metric_names(json.dumps(rule["spec"]))
    used_by_dashboard = _metric_names(DASHBOARD.read_text())
    assert status == 200 and used_by_alerts and used_by_dashboard
    assert used_by_alerts - exported == set()
    assert used_by_dashboard - exported == set()


def test_shipped_node_config_matches_the_chart_defaults() -> None:
    """The chart's defaults are the node's defaults (conf/node.yaml), except what the chart manages."""
    chart_config = node_yaml(render({}))
    # Helm values cannot hold a null (it deletes the key): compare what is set.
    shipped = load_config(REPO / "conf" / "node.yaml", environ={}).model_dump(mode="json", exclude_none=True)
    for section, values in chart_config.items():
        for key, value in values.items():
            if (section, key) in {("dicom", "host"), ("dicom", "tls"), ("storage", "root"),
                                  ("http", "host"), ("engine", "cache_dir"), ("hl7_listener", "host")}:
                continue
            expected = shipped[section][key]
            if (section, key) == ("dicomweb", "stow"):  # its host and tls are the chart's (with a port)
                expected = {name: setting for name, setting in expected.items() if name not in ("host", "tls")}
            assert expected == value, f"{section}.{key}"
