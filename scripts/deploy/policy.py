#!/usr/bin/env python3
"""The promises of deploy/ (issue 13), checked on rendered overlays.

    policy.py OVERLAY=RENDERED.yaml ...    check each rendered overlay
    policy.py --self-test OVERLAY=RENDERED.yaml ...
                                           also break each promise once in a
                                           copy and require a violation

OVERLAY names what is expected beyond the common rules: `dev` (one replica,
memory store, the emulator), `production` (an HPA with minReplicas 3+, PDB, Redis,
TLS) and `production+monitoring` (production and a PodMonitor).

Exit status 1 with one line per violation.
"""

from __future__ import annotations

import base64
import copy
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "flowgate"
CONFIG_PATH = "/etc/flowgate/flowgate.toml"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
SECRETISH = re.compile(r"(key|secret|password|token)", re.IGNORECASE)


def duration_seconds(text: str) -> float:
    """flowgate durations: "30s", "500ms", "5m", "1h"."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def emulator_keys() -> set[str]:
    """The emulator's published demo keys, the only Secret values allowed."""
    text = (ROOT / "crates/flowgate-emulator/src/keys.rs").read_text()
    return set(re.findall(r'pub const \w+: &str = "([^"]+)";', text))


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def walk_config(table: dict, prefix: str = ""):
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from walk_config(value, path + ".")
        else:
            yield path, key, value


class Checker:
    def __init__(self, overlay: str, docs: list[dict]):
        self.overlay = overlay
        self.docs = docs
        self.violations: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.violations.append(f"{self.overlay}: {where}: {message}")

    def of_kind(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc.get("kind") == kind]

    def named(self, kind: str, name: str) -> dict | None:
        for doc in self.of_kind(kind):
            if doc["metadata"]["name"] == name:
                return doc
        return None

    # -- everything that runs ------------------------------------------------

    def check_workload(self, doc: dict) -> None:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            self.fail(where, "automountServiceAccountToken must be false")
        if doc["kind"] == "Deployment":
            rolling = doc["spec"].get("strategy", {}).get("rollingUpdate", {})
            if rolling.get("maxUnavailable") != 0:
                self.fail(where, "rolling update needs maxUnavailable: 0")
        for container in pod.get("initContainers", []) + pod["containers"]:
            cwhere = f"{where} container {container['name']}"
            image = container.get("image", "")
            name_part = image.split("@", 1)[0].rsplit("/", 1)[-1]
            if "@sha256:" not in image and (":" not in name_part or name_part.endswith(":latest")):
                self.fail(cwhere, f"image {image!r} must carry a pinned tag or digest, never latest")
            resources = container.get("resources", {})
            for kind in ("cpu", "memory"):
                if kind not in resources.get("requests", {}):
                    self.fail(cwhere, f"resources.requests.{kind} missing")
            if "memory" not in resources.get("limits", {}):
                self.fail(cwhere, "resources.limits.memory missing")
            sc = container.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                self.fail(cwhere, "allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                self.fail(cwhere, "readOnlyRootFilesystem must be true")
            if sc.get("privileged"):
                self.fail(cwhere, "privileged")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                self.fail(cwhere, "capabilities: drop ALL, add none")
            if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
                self.fail(cwhere, "runAsNonRoot must be true")
            if sc.get("runAsUser", pod_sc.get("runAsUser", 65532)) == 0:
                self.fail(cwhere, "runAsUser 0")
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                self.fail(cwhere, "seccompProfile RuntimeDefault missing")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    self.fail(cwhere, f"{probe} missing")
            for env in container.get("env", []):
                if "value" in env and SECRETISH.search(env["name"]):
                    self.fail(cwhere, f"env {env['name']} has a literal value; take it from a Secret")

    # -- the gateway ------------------------------------------------------------

    def gateway_config(self, pod: dict, container: dict) -> dict | None:
        mount_dir = CONFIG_PATH.rsplit("/", 1)[0]
        volume_name = next(
            (m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == mount_dir), None
        )
        volume = next((v for v in pod.get("volumes", []) if v["name"] == volume_name), None)
        if volume is None or "configMap" not in volume:
            self.fail("gateway", f"no ConfigMap volume mounted at {mount_dir}")
            return None
        config_map = self.named("ConfigMap", volume["configMap"]["name"])
        if config_map is None or "flowgate.toml" not in config_map.get("data", {}):
            self.fail("gateway", f"ConfigMap {volume['configMap']['name']} with flowgate.toml not rendered")
            return None
        return tomllib.loads(config_map["data"]["flowgate.toml"])

    def check_gateway(self) -> None:
        deployment = self.named("Deployment", GATEWAY)
        if deployment is None:
            self.fail("gateway", "Deployment flowgate missing")
            return
        pod = deployment["spec"]["template"]["spec"]
        container = next((c for c in pod["containers"] if c["name"] == GATEWAY), None)
        if container is None:
            self.fail("gateway", "container flowgate missing")
            return
        config = self.gateway_config(pod, container)
        if config is None:
            return
        if CONFIG_PATH not in container.get("args", []) + container.get("command", []):
            self.fail("gateway", f"args must serve --config {CONFIG_PATH}")
        server = config.get("server", {})
        grpc_port = port_of(server.get("listen", "127.0.0.1:50051"))
        admin_port = port_of(server.get("admin_listen", "127.0.0.1:9464"))
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if ports.get("grpc") != grpc_port:
            self.fail("gateway", f"containerPort grpc must be server.listen's port {grpc_port}")
        if ports.get("admin") != admin_port:
            self.fail("gateway", f"containerPort admin must be server.admin_listen's port {admin_port}")
        ingress = config.get("webhooks", {}).get("listen")
        if ingress and ports.get("ingress") != port_of(ingress):
            self.fail("gateway", "webhooks.listen is set: containerPort ingress must match it")

        # Probes: native gRPC on the health service while the listener is
        # plaintext; with TLS the kubelet's gRPC probe cannot connect, so a
        # gRPC probe there would never pass: then HTTP on the admin port
        # (/readyz for startup and readiness, which follows the health
        # service and drains; /healthz for liveness).
        tls = "tls" in server
        if "startupProbe" not in container:
            self.fail("gateway", "startupProbe missing")
        for name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(name, {})
            if not tls:
                if probe.get("grpc", {}).get("port") != grpc_port:
                    self.fail("gateway", f"{name} must be a native gRPC probe on port {grpc_port}")
            else:
                if "grpc" in probe:
                    self.fail("gateway", f"{name} is gRPC but server.tls is on (kubelet probes are plaintext)")
                else:
                    http = probe.get("httpGet", {})
                    path = "/healthz" if name == "livenessProbe" else "/readyz"
                    if http.get("port") not in ("admin", admin_port) or http.get("path") != path:
                        self.fail("gateway", f"{name} must be GET {path} on the admin port (server.tls is on)")

        # Shutdown: endpoints drain (preStop), then calls get shutdown_grace.
        grace = duration_seconds(server.get("shutdown_grace", "30s"))
        pre_stop = container.get("lifecycle", {}).get("preStop", {})
        pause = pre_stop.get("sleep", {}).get("seconds", 0)
        if not pause:
            self.fail("gateway", "preStop pause missing")
        period = pod.get("terminationGracePeriodSeconds", 30)
        if not period > grace + pause:
            self.fail(
                "gateway",
                f"terminationGracePeriodSeconds {period} must exceed preStop {pause}s + shutdown_grace {grace:g}s",
            )

        keys = {c.get("topologyKey") for c in pod.get("topologySpreadConstraints", [])}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
            if key not in keys:
                self.fail("gateway", f"topologySpreadConstraints over {key} missing")

        # Secrets: the config names files and variables, never values; every
        # file is in a read-only Secret (or ConfigMap) mount, every variable
        # comes from a Secret.
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        env = {e["name"]: e for e in container.get("env", [])}
        for path, key, value in walk_config(config):
            if key.endswith("_file") and isinstance(value, str):
                mount = next((m for d, m in mounts.items() if value.startswith(d.rstrip("/") + "/")), None)
                volume = volumes.get(mount["name"], {}) if mount else {}
                if mount is None or not mount.get("readOnly") or "secret" not in volume:
                    self.fail("gateway", f"{path} = {value!r} is not in a read-only Secret volume")
                elif "subPath" in mount:
                    self.fail("gateway", f"{path}: a subPath mount never sees a rotated Secret")
            elif key.endswith("_env") and isinstance(value, str):
                if "secretKeyRef" not in env.get(value, {}).get("valueFrom", {}):
                    self.fail("gateway", f"{path} = {value!r}: the variable must come from a Secret")
            elif SECRETISH.search(key) and key not in ("key_hashes", "key_prefix"):
                self.fail("gateway", f"{path}: a secret value in the ConfigMap")

        service = self.named("Service", GATEWAY)
        if service is None:
            self.fail("gateway", "Service flowgate missing")
        else:
            sports = {p["name"]: p for p in service["spec"]["ports"]}
            if sports.get("grpc", {}).get("appProtocol") != "grpc":
                self.fail("Service/flowgate", "port grpc needs appProtocol: grpc")
            if "admin" not in sports:
                self.fail("Service/flowgate", "admin (metrics) port missing")
            if ingress and "ingress" not in sports:
                self.fail("Service/flowgate", "webhooks are on: ingress port missing")
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            if not all(labels.get(k) == v for k, v in service["spec"]["selector"].items()):
                self.fail("Service/flowgate", "selector does not select the gateway pods")

        account = self.named("ServiceAccount", pod.get("serviceAccountName", "default"))
        if account is None or account.get("automountServiceAccountToken") is not False:
            self.fail("gateway", "its ServiceAccount must exist with automountServiceAccountToken: false")

        self.check_network_policy(deployment)
        self.check_overlay(deployment, config)

    def check_network_policy(self, deployment: dict) -> None:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        policies = [
            p
            for p in self.of_kind("NetworkPolicy")
            if all(labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())
            and p["spec"]["podSelector"].get("matchLabels")
        ]
        if not policies:
            self.fail("NetworkPolicy", "none selects the gateway pods")
            return
        rules = [r for p in policies for r in p["spec"].get("ingress", [])]
        for port in ("grpc", "admin"):
            allowed = [r for r in rules if any(p.get("port") == port for p in r.get("ports", []))]
            if not allowed:
                self.fail("NetworkPolicy", f"no rule for port {port}")
            for rule in allowed:
                if not rule.get("from") or any(not peer for peer in rule["from"]):
                    self.fail("NetworkPolicy", f"port {port} is open to everyone")
        for rule in rules:
            if not rule.get("ports"):
                self.fail("NetworkPolicy", "a rule without ports opens every port")

    def check_overlay(self, deployment: dict, config: dict) -> None:
        store = config.get("state", {}).get("store", "memory")
        pdbs, hpas = self.of_kind("PodDisruptionBudget"), self.of_kind("HorizontalPodAutoscaler")
        hpa = next((h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == GATEWAY), None)
        if hpa is not None and "replicas" in deployment["spec"]:
            self.fail("gateway", "spec.replicas beside an HPA: every apply resets the autoscaled count")
        replicas = hpa["spec"].get("minReplicas", 1) if hpa else deployment["spec"].get("replicas", 1)
        if self.overlay == "dev":
            if replicas != 1 or store != "memory":
                self.fail("dev", "one replica with the memory store")
            emulator = self.named("Deployment", "flowgate-emulator")
            if emulator is None or self.named("Service", "flowgate-emulator") is None:
                self.fail("dev", "the emulator Deployment and Service")
            for provider in config.get("providers", {}).values():
                if "flowgate-emulator" not in provider.get("base_url", ""):
                    self.fail("dev", "every provider must point at the emulator")
        if self.overlay.startswith("production"):
            if replicas < 3:
                self.fail("production", "3+ replicas")
            if store != "redis":
                self.fail("production", "the Redis store (memory does not share runs)")
            if "tls" not in config.get("server", {}):
                self.fail("production", "TLS on the gRPC listener")
            if not pdbs:
                self.fail("production", "PodDisruptionBudget missing")
            if hpa is None:
                self.fail("production", "HorizontalPodAutoscaler for flowgate missing")
        if store == "memory" and (replicas > 1 or hpas):
            self.fail(self.overlay, "the memory store holds runs per replica: one replica, no HPA")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for pdb in pdbs:
            selector = pdb["spec"]["selector"].get("matchLabels", {})
            if not selector or not all(labels.get(k) == v for k, v in selector.items()):
                self.fail("PodDisruptionBudget", "selector does not select the gateway pods")
        if self.overlay.endswith("+monitoring"):
            monitors = self.of_kind("PodMonitor") + self.of_kind("ServiceMonitor")
            if not any(
                e.get("port") == "admin"
                for m in monitors
                for e in m["spec"].get("podMetricsEndpoints", m["spec"].get("endpoints", []))
            ):
                self.fail("monitoring", "a PodMonitor/ServiceMonitor scraping the admin port")

    def check_secrets(self) -> None:
        allowed = emulator_keys() if self.overlay == "dev" else set()
        for secret in self.of_kind("Secret"):
            where = f"Secret/{secret['metadata']['name']}"
            values = [base64.b64decode(v).decode() for v in secret.get("data", {}).values()]
            values += list(secret.get("stringData", {}).values())
            for value in values:
                if value not in allowed:
                    self.fail(where, "a secret value in the manifests (create the Secret in the cluster)")

    def run(self) -> list[str]:
        for doc in self.docs:
            if doc.get("kind") in WORKLOADS:
                self.check_workload(doc)
        self.check_gateway()
        self.check_secrets()
        return self.violations


def check(overlay: str, docs: list[dict]) -> list[str]:
    return Checker(overlay, docs).run()


# -- self-test: each promise, broken once, must be reported -------------------


def gateway(docs):
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == GATEWAY)
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def set_config(docs, edit):
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    config_map["data"]["flowgate.toml"] = edit(config_map["data"]["flowgate.toml"])


MUTATIONS = {
    "image tag latest": lambda docs: gateway(docs)[1].update(image="registry.example.com/flowgate:latest"),
    "untagged image": lambda docs: gateway(docs)[1].update(image="registry.example.com/flowgate"),
    "no resources": lambda docs: gateway(docs)[1].pop("resources"),
    "writable root": lambda docs: gateway(docs)[1]["securityContext"].update(readOnlyRootFilesystem=False),
    "capabilities kept": lambda docs: gateway(docs)[1]["securityContext"].pop("capabilities"),
    "privilege escalation": lambda docs: gateway(docs)[1]["securityContext"].pop("allowPrivilegeEscalation"),
    "no readiness probe": lambda docs: gateway(docs)[1].pop("readinessProbe"),
    "http liveness probe": lambda docs: gateway(docs)[1].update(
        livenessProbe={"httpGet": {"port": 1, "path": "/"}}
    ),
    "grace too short": lambda docs: gateway(docs)[0]["spec"]["template"]["spec"].update(
        terminationGracePeriodSeconds=30
    ),
    "no preStop": lambda docs: gateway(docs)[1].pop("lifecycle"),
    "maxUnavailable 1": lambda docs: gateway(docs)[0]["spec"]["strategy"]["rollingUpdate"].update(
        maxUnavailable=1
    ),
    "no NetworkPolicy": lambda docs: docs.__setitem__(
        slice(None), [d for d in docs if d["kind"] != "NetworkPolicy"]
    ),
    "no PDB": lambda docs: docs.__setitem__(slice(None), [d for d in docs if d["kind"] != "PodDisruptionBudget"]),
    "no HPA": lambda docs: docs.__setitem__(
        slice(None), [d for d in docs if d["kind"] != "HorizontalPodAutoscaler"]
    ),
    "Secret with a value": lambda docs: docs.append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "data": {"k": "aHVudGVyMg=="}}
    ),
    "literal password env": lambda docs: gateway(docs)[1].setdefault("env", []).append(
        {"name": "FLOWGATE_REDIS_PASSWORD", "value": "hunter2"}
    ),
    "shutdown_grace too long": lambda docs: set_config(
        docs, lambda t: t.replace('shutdown_grace = "30s"', 'shutdown_grace = "60s"')
    ),
    "key file not mounted": lambda docs: set_config(
        docs, lambda t: t.replace("/var/run/secrets/flowgate/providers/knouds", "/etc/knouds-key")
    ),
    "Service without appProtocol": lambda docs: next(
        p
        for d in docs
        if d["kind"] == "Service" and d["metadata"]["name"] == GATEWAY
        for p in d["spec"]["ports"]
        if p["name"] == "grpc"
    ).pop("appProtocol"),
    "replicas beside the HPA": lambda docs: gateway(docs)[0]["spec"].update(replicas=3),
    "two replicas, memory store": lambda docs: gateway(docs)[0]["spec"].update(replicas=2),
    "token automount": lambda docs: gateway(docs)[0]["spec"]["template"]["spec"].update(
        automountServiceAccountToken=True
    ),
}


# Promises that only some overlays make.
ONLY = {
    "no PDB": "production",
    "no HPA": "production",
    "replicas beside the HPA": "production",
    "http liveness probe": "dev",
    "two replicas, memory store": "dev",
}


def self_test(overlay: str, docs: list[dict]) -> tuple[int, list[str]]:
    """(breakages tried, the ones not reported)."""
    tried, problems = 0, []
    for name, mutate in MUTATIONS.items():
        if not overlay.startswith(ONLY.get(name, "")):
            continue
        broken = copy.deepcopy(docs)
        try:
            mutate(broken)
        except (KeyError, StopIteration, IndexError):
            continue  # not applicable to this overlay
        tried += 1
        if not check(overlay, broken):
            problems.append(f"{overlay}: self-test: breaking '{name}' was not reported")
    return tried, problems


def main(argv: list[str]) -> int:
    test = "--self-test" in argv
    violations = []
    for arg in (a for a in argv if a != "--self-test"):
        overlay, path = arg.split("=", 1)
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        found = check(overlay, docs)
        violations += found
        note = ""
        if test and not found:
            tried, unreported = self_test(overlay, docs)
            violations += unreported
            note = f"; self-test: {tried - len(unreported)} of {tried} breakages reported"
        print(f"{overlay}: {len(found)} violation(s){note}")
    for violation in violations:
        print(f"  {violation}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
