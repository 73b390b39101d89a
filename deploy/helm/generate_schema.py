"""Write the chart's ``values.schema.json``: the chart's own values, and ``config`` checked by the
node's configuration model itself (pydantic's JSON schema), so the chart and the node never disagree
on what a valid node.yaml is. Keys the chart manages are left out of ``config`` (and so rejected).

    .venv/bin/python deploy/helm/generate_schema.py     # rewrites deploy/helm/qoq-node/values.schema.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from node.config import NodeConfig

SCHEMA_PATH = Path(__file__).parent / "qoq-node" / "values.schema.json"

#: node.yaml keys the chart sets from its own values (section, dotted for a nested one → keys).
MANAGED: dict[str, list[str]] = {
    "dicom": ["host", "port", "tls"],
    "storage": ["root"],
    "http": ["host", "port"],
    "engine": ["model", "cache_dir"],
    "hl7_listener": ["enabled", "host", "port"],
    "feedback": ["tokens_file"],
    "dicomweb.stow": ["host", "tls"],
}

CIDR = {"type": "string", "pattern": r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
QUANTITY = {"type": ["string", "integer"], "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            **({"required": required} if required else {})}


def _clean(node: Any) -> Any:
    """Drop pydantic's titles and its non-standard "path" format."""
    if isinstance(node, dict):
        return {key: _clean(value) for key, value in node.items()
                if key != "title" and not (key == "format" and value == "path")}
    if isinstance(node, list):
        return [_clean(item) for item in node]
    return node


def config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ``config`` property's schema, the definitions it refers to), managed keys removed."""
    schema = _clean(NodeConfig.model_json_schema())
    definitions = schema.pop("$defs")
    for section, keys in MANAGED.items():
        definition = schema
        for name in section.split("."):
            definition = definitions[definition["properties"][name]["$ref"].split("/")[-1]]
        for key in keys:
            definition["properties"].pop(key)
    schema["description"] = ("The node's configuration (conf/node.yaml) without the keys the chart manages: "
                             "dicom.host/port/tls, storage.root, http.host/port, engine.model, engine.cache_dir, "
                             "hl7_listener.enabled/host/port, feedback.tokens_file and dicomweb.stow.host/tls.")
    schema.pop("required", None)
    return schema, definitions


def values_schema() -> dict[str, Any]:
    """The whole values schema."""
    config, definitions = config_schema()
    probe = _obj({"periodSeconds": {"type": "integer", "minimum": 1},
                  "failureThreshold": {"type": "integer", "minimum": 1}})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "qoq-node chart values",
        "type": "object",
        "additionalProperties": False,
        "$defs": definitions,
        "properties": {
            "global": {"type": "object"},
            "image": _obj({"repository": {"type": "string", "minLength": 1}, "tag": {"type": "string"},
                           "slimTag": {"type": "string"},
                           "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}, ["repository"]),
            "imagePullSecrets": {"type": "array", "items": _obj({"name": {"type": "string"}}, ["name"])},
            "nameOverride": {"type": "string"},
            "fullnameOverride": {"type": "string"},
            "config": config,
            "dicom": _obj({"port": PORT, "tls": _obj({
                "enabled": {"type": "boolean"}, "secretName": {"type": "string"},
                "verifyClients": {"type": "boolean"}})}),
            "pacsTls": _obj({"secretName": {"type": "string"}}),
            "stowTls": _obj({"enabled": {"type": "boolean"}, "secretName": {"type": "string"},
                             "verifyClients": {"type": "boolean"}}),
            "ingress": _obj({"enabled": {"type": "boolean"}, "className": {"type": "string"},
                             "host": {"type": "string"}, "tlsSecretName": {"type": "string"},
                             "annotations": LABELS, "controllerNamespace": {"type": "string", "minLength": 1}}),
            "dicomwebSecrets": _obj({"secretName": {"type": "string"}}),
            "metrics": _obj({"port": PORT}),
            "feedbackTokens": _obj({"secretName": {"type": "string"}}),
            "hl7": _obj({"enabled": {"type": "boolean"}, "port": PORT}),
            "stowTokens": _obj({"secretName": {"type": "string"}}),
            "model": _obj({"existingClaim": {"type": "string"}, "hostPath": {"type": "string"},
                           "subPath": {"type": "string"}}),
            "engineServer": _obj({
                "enabled": {"type": "boolean"},
                "image": _obj({"repository": {"type": "string", "minLength": 1}, "tag": {"type": "string",
                                                                                       "minLength": 1},
                               "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}, ["repository", "tag"]),
                "replicas": {"type": "integer", "minimum": 1},
                "gpusPerReplica": {"type": "integer", "minimum": 1, "maximum": 16},
                "servedModel": {"type": "string", "pattern": r"^[A-Za-z0-9._-]*$"},
                "port": PORT,
                "maxBatchSize": {"type": "integer", "minimum": 1},
                "maxNumTokens": {"type": "integer", "minimum": 256},
                "kvCacheFraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "extraArgs": {"type": "array", "items": {"type": "string", "pattern": "^--"}},
                "resources": _obj({"requests": {"type": "object", "additionalProperties": QUANTITY},
                                   "limits": {"type": "object", "additionalProperties": QUANTITY}}),
                "shmSize": QUANTITY,
                "startupFailureThreshold": {"type": "integer", "minimum": 1},
                "nodeSelector": LABELS,
                "tolerations": {"type": "array", "items": {"type": "object"}}}),
            "persistence": _obj({"size": QUANTITY, "storageClassName": {"type": "string"},
                                 "accessModes": {"type": "array", "minItems": 1, "items": {
                                     "enum": ["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]}}}),
            "gpu": _obj({"count": {"type": "integer", "minimum": 0, "maximum": 16}}),
            "resources": _obj({"requests": {"type": "object", "additionalProperties": QUANTITY},
                               "limits": {"type": "object", "additionalProperties": QUANTITY}}),
            "nodeSelector": LABELS,
            "tolerations": {"type": "array", "items": {"type": "object"}},
            "affinity": {"type": "object"},
            "podAnnotations": LABELS,
            "podLabels": LABELS,
            "priorityClassName": {"type": "string"},
            "probes": _obj({"startup": probe, "liveness": probe, "readiness": probe}),
            "terminationGracePeriodSeconds": {"type": "integer", "minimum": 35},
            "service": _obj({
                "dicom": _obj({
                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "port": PORT,
                    "nodePort": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 30000,
                                                              "maximum": 32767}]},
                    "loadBalancerIP": {"type": "string"},
                    "loadBalancerSourceRanges": {"type": "array", "items": CIDR},
                    "externalTrafficPolicy": {"enum": ["Local", "Cluster"]},
                    "annotations": LABELS}),
                "hl7": _obj({
                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "port": PORT,
                    "nodePort": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 30000,
                                                              "maximum": 32767}]},
                    "annotations": LABELS}),
                "metrics": _obj({"port": PORT}),
                "stow": _obj({
                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "loadBalancerSourceRanges": {"type": "array", "items": CIDR},
                    "annotations": LABELS})}),
            "networkPolicy": _obj({"enabled": {"type": "boolean"}, "pacsCIDRs": {"type": "array", "items": CIDR},
                                   "hl7CIDRs": {"type": "array", "items": CIDR},
                                   "feedbackCIDRs": {"type": "array", "items": CIDR},
                                   "stowCIDRs": {"type": "array", "items": CIDR},
                                   "monitoringNamespace": {"type": "string", "minLength": 1},
                                   "egressCIDRs": {"type": "array", "items": CIDR},
                                   "dnsNamespace": {"type": "string", "minLength": 1}}),
            "podDisruptionBudget": _obj({"enabled": {"type": "boolean"},
                                         "minAvailable": {"type": "integer", "minimum": 0}}),
            "serviceAccount": _obj({"create": {"type": "boolean"}, "name": {"type": "string"}}),
            "serviceMonitor": _obj({"enabled": {"type": "boolean"},
                                    "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                                    "labels": LABELS}),
            "prometheusRule": _obj({
                "enabled": {"type": "boolean"},
                "labels": LABELS,
                "thresholds": _obj({"inferenceP95Seconds": {"type": "number", "exclusiveMinimum": 0},
                                    "outboxBacklog": {"type": "integer", "minimum": 0},
                                    "lowDiskFactor": {"type": "number", "minimum": 1}}),
                "noStudies": _obj({"enabled": {"type": "boolean"},
                                   "for": {"type": "string", "pattern": r"^[0-9]+(m|h)$"},
                                   "startHourUTC": {"type": "integer", "minimum": 0, "maximum": 23},
                                   "endHourUTC": {"type": "integer", "minimum": 1, "maximum": 24}}),
            }),
        },
        "allOf": [
            {"if": {"properties": {"dicom": {"properties": {"tls": {"properties": {"enabled": {"const": True}}}}}}},
             "then": {"properties": {"dicom": {"properties": {"tls": {"properties": {
                 "secretName": {"minLength": 1}}}}}}}},
            {"if": {"properties": {"stowTls": {"properties": {"enabled": {"const": True}}}}},
             "then": {"properties": {  # HTTPS is on the receiver's own listener: it needs its port
                 "stowTls": {"properties": {"secretName": {"minLength": 1}}},
                 "config": {"properties": {"dicomweb": {"properties": {"stow": {"required": ["port"]}}}}}}}},
            {"if": {"properties": {"model": {"properties": {"existingClaim": {"minLength": 1}},
                                             "required": ["existingClaim"]}}},
             "then": {"properties": {"model": {"properties": {"hostPath": {
                 "maxLength": 0, "description": "model: set existingClaim or hostPath, not both"}}}}}},
        ],
    }


def render() -> str:
    """The schema as the committed file holds it."""
    return json.dumps(values_schema(), indent=2) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render())
    print(f"wrote {SCHEMA_PATH}")
