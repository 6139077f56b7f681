#!/usr/bin/env python3
"""Validates the custom resources in rendered overlays against their own
schemas (kubernetes-validate knows the built-in kinds only).

    crds.py RENDERED.yaml ...

The schemas below are the parts of the Prometheus operator's CRDs
(monitoring.coreos.com/v1) that deploy/components/monitoring uses, strict:
a field outside them is an error, so a typo cannot pass. A custom resource
of any other kind is an error too (add its schema here).
"""

from __future__ import annotations

import sys

import jsonschema
import yaml

LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https"]},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "honorLabels": {"type": "boolean"},
    },
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": {"type": "object"}, "namespace": {"type": "string"}},
}


def monitor(endpoints: str) -> dict:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"type": "string"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", endpoints],
                "additionalProperties": False,
                "properties": {
                    "selector": LABEL_SELECTOR,
                    "namespaceSelector": {"type": "object"},
                    "jobLabel": {"type": "string"},
                    endpoints: {"type": "array", "minItems": 1, "items": ENDPOINT},
                },
            },
        },
    }


SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): monitor("podMetricsEndpoints"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitor("endpoints"),
}
BUILT_IN_GROUPS = ("v1", "apps/", "policy/", "autoscaling/", "networking.k8s.io/", "batch/", "rbac.authorization.k8s.io/")


def main(paths: list[str]) -> int:
    errors, checked = [], 0
    for path in paths:
        for doc in (d for d in yaml.safe_load_all(open(path)) if d):
            api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
            if api == "v1" or api.startswith(BUILT_IN_GROUPS[1:]):
                continue
            schema = SCHEMAS.get((api, kind))
            if schema is None:
                errors.append(f"{path}: {api} {kind}: no schema for this custom resource")
                continue
            checked += 1
            for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
                where = ".".join(str(p) for p in error.absolute_path)
                errors.append(f"{path}: {kind}/{doc['metadata'].get('name')}: {where}: {error.message}")
    for error in errors:
        print(error)
    print(f"custom resources: {checked} checked, {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
