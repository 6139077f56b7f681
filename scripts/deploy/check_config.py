#!/usr/bin/env python3
"""`flowgate check-config` on the config each rendered overlay ships.

    check_config.py FLOWGATE_BINARY WORKDIR OVERLAY=RENDERED.yaml ...

The gateway's ConfigMap flowgate.toml is extracted from the rendered
overlay. What the cluster would supply is stubbed the way the Deployment
supplies it: every `*_file` the config names gets a stub file (TLS files a
throwaway certificate made with openssl) and every environment variable the
container takes from a Secret a stub value. Paths are moved under WORKDIR so
no root is needed; nothing else in the config changes.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from policy import CONFIG_PATH, GATEWAY, walk_config

# A value per variable that is well formed for what reads it (check-config
# does not connect to Redis: nothing listens on port 1).
ENV_STUBS = {
    "FLOWGATE__STATE__URL": "redis://127.0.0.1:1",
}
SIGNING_SECRET = "whsec_" + base64.b64encode(b"stub signing secret, 32 bytes..").decode()


def tls_material(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for DNS name `flowgate` and a client
    certificate (URI SAN spiffe://cluster.local/ns/check/sa/check) it signed."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt"))
    client_key, client_csr, client = (directory / n for n in ("client.key", "client.csr", "client.crt"))
    if not client.exists():
        quiet = {"check": True, "capture_output": True}
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=stub-ca"], **quiet)
        subprocess.run(
            ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=flowgate"], **quiet)
        extensions = directory / "ext.cnf"
        extensions.write_text("subjectAltName=DNS:flowgate\n")
        subprocess.run(
            ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "1", "-extfile", extensions], **quiet)
        subprocess.run(
            ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", client_key, "-out", client_csr, "-subj", "/CN=check"], **quiet)
        client_extensions = directory / "client.cnf"
        client_extensions.write_text(
            "subjectAltName=URI:spiffe://cluster.local/ns/check/sa/check\nextendedKeyUsage=clientAuth\n"
        )
        subprocess.run(
            ["openssl", "x509", "-req", "-in", client_csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", client, "-days", "1", "-extfile", client_extensions], **quiet)
    return {"cert_file": cert, "key_file": key, "client_ca_file": ca, "client_cert": client, "client_key": client_key}


def stub_file(key: str, path: str, root: Path, tls: dict[str, Path]) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if key in tls:
        target.write_bytes(tls[key].read_bytes())
    elif key == "signing_secret_file":
        target.write_text(SIGNING_SECRET + "\n")
    else:
        target.write_text(f"stub-{target.name}-0123456789abcdef\n")
    return target


def check(binary: str, workdir: Path, overlay: str, rendered: Path) -> bool:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == GATEWAY)
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == GATEWAY)
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    config_map = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    )
    text = config_map["data"][Path(CONFIG_PATH).name]

    root = workdir / overlay / "root"
    tls = tls_material(workdir / "tls")
    for _, key, value in walk_config(tomllib.loads(text)):
        if key.endswith("_file") and isinstance(value, str):
            stub = stub_file(key, value, root, tls)
            text = text.replace(f'"{value}"', f'"{stub}"')
    config = workdir / overlay / "flowgate.toml"
    config.write_text(text)

    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWGATE")}
    for variable in container.get("env", []):
        if "secretKeyRef" in variable.get("valueFrom", {}):
            env[variable["name"]] = ENV_STUBS.get(variable["name"], "stub-secret-value-0123456789abcdef")
        elif "value" in variable:
            env[variable["name"]] = variable["value"]
    result = subprocess.run([binary, "check-config", str(config)], env=env, capture_output=True, text=True)
    print(f"{overlay}: {(result.stdout + result.stderr).strip()}")
    return result.returncode == 0


def main(argv: list[str]) -> int:
    binary, workdir = argv[0], Path(argv[1])
    ok = True
    for arg in argv[2:]:
        overlay, path = arg.split("=", 1)
        ok &= check(binary, workdir, overlay, Path(path))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
