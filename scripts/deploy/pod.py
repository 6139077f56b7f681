#!/usr/bin/env python3
"""What the kubelet would give the gateway container of a rendered overlay.

    pod.py RENDERED.yaml OUTDIR [NAME=VALUE ...]

Writes, for scripts/deploy/check.sh to start the gateway from the image:
  OUTDIR/volumes/<volume>/   each mounted volume's files: ConfigMap data;
                             Secret data from the render (the dev overlay's
                             generated Secret) or stubs where the Secret is
                             created in the cluster (a throwaway CA and
                             certificates for TLS keys)
  OUTDIR/mounts.tsv          <dir> TAB <mountPath> TAB configMap|secret TAB <mode>
  OUTDIR/env                 NAME=VALUE lines: the container's env (Secret
                             references: NAME=VALUE from the arguments, else
                             a stub) and loopback ports for every listener
  OUTDIR/probe.json          {"address", "tls": {ca, cert, key} or null}
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import tomllib
from pathlib import Path

import yaml

from check_config import SIGNING_SECRET, tls_material
from policy import CONFIG_PATH, GATEWAY, walk_config

LISTENERS = {
    ("server", "listen"): "FLOWGATE__SERVER__LISTEN",
    ("server", "admin_listen"): "FLOWGATE__SERVER__ADMIN_LISTEN",
    ("webhooks", "listen"): "FLOWGATE__WEBHOOKS__LISTEN",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stub_secret(key: str, tls: dict[str, Path]) -> bytes:
    by_key = {"tls.crt": "cert_file", "tls.key": "key_file", "ca.crt": "client_ca_file"}
    if key in by_key:
        return tls[by_key[key]].read_bytes()
    if key == "signing-secret":
        return (SIGNING_SECRET + "\n").encode()
    return f"stub-{key}-0123456789abcdef\n".encode()


def main(argv: list[str]) -> int:
    rendered, out = Path(argv[0]), Path(argv[1])
    given = dict(arg.split("=", 1) for arg in argv[2:])
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = by_name[("Deployment", GATEWAY)]
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == GATEWAY)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tls = tls_material(out / "tls")
    config_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(Path(CONFIG_PATH).parent))
    config_map = by_name[("ConfigMap", volumes[config_mount["name"]]["configMap"]["name"])]
    config = tomllib.loads(config_map["data"][Path(CONFIG_PATH).name])
    files_named = [v for _, k, v in walk_config(config) if k.endswith("_file") and isinstance(v, str)]

    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        directory = out / "volumes" / mount["name"]
        directory.mkdir(parents=True)
        if "configMap" in volume:
            data = by_name[("ConfigMap", volume["configMap"]["name"])]["data"]
            files = {key: value.encode() for key, value in data.items()}
            kind, mode = "configMap", 0o644
        elif "secret" in volume:
            secret = by_name.get(("Secret", volume["secret"]["secretName"]))
            if secret is not None:
                files = {key: base64.b64decode(value) for key, value in secret.get("data", {}).items()}
            else:
                # Created in the cluster: the keys the config reads from this mount.
                prefix = mount["mountPath"].rstrip("/") + "/"
                keys = [path[len(prefix) :] for path in files_named if path.startswith(prefix)]
                files = {key: stub_secret(key, tls) for key in keys}
            kind, mode = "secret", volume["secret"].get("defaultMode", 0o644)
        else:
            continue  # emptyDir: check.sh mounts a tmpfs at /tmp
        for key, value in files.items():
            (directory / key).write_bytes(value)
        mounts.append(f"{directory}\t{mount['mountPath']}\t{kind}\t{mode:o}")
    (out / "mounts.tsv").write_text("".join(line + "\n" for line in mounts))

    env, address = [], None
    for variable in container.get("env", []):
        if "value" in variable:
            env.append(f"{variable['name']}={variable['value']}")
        elif "secretKeyRef" in variable.get("valueFrom", {}):
            env.append(f"{variable['name']}={given.get(variable['name'], 'stub-secret-value-0123456789abcdef')}")
    for (section, key), name in LISTENERS.items():
        if key in config.get(section, {}):
            port_address = f"127.0.0.1:{free_port()}"
            env.append(f"{name}={port_address}")
            if name == "FLOWGATE__SERVER__LISTEN":
                address = port_address
    (out / "env").write_text("".join(line + "\n" for line in env))
    probe_tls = None
    if "tls" in config.get("server", {}):
        probe_tls = {"ca": str(tls["client_ca_file"]), "cert": str(tls["client_cert"]), "key": str(tls["client_key"])}
    (out / "probe.json").write_text(json.dumps({"address": address, "tls": probe_tls}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
