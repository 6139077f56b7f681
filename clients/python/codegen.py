"""Generates the gRPC stubs of flowgate's API from ``proto/`` with grpcio-tools.

The generated modules (``src/flowgate/v1/gateway_pb2.py``, ``.pyi`` and
``gateway_pb2_grpc.py``) are never committed: a build (``pip install``) and
the test runner regenerate them from the protos every time, so they cannot
drift from the contract.

Usage: ``python codegen.py`` (needs grpcio-tools). ``PROTO_ROOT`` overrides
where the protos are found (default: the repository's ``proto/``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE / "src"
PROTO_FILES = ("flowgate/v1/gateway.proto",)


def proto_root() -> Path:
    """Where ``flowgate/v1/*.proto`` live: ``$PROTO_ROOT`` or ``<repo>/proto``."""
    override = os.environ.get("PROTO_ROOT")
    return Path(override) if override else HERE.parent.parent / "proto"


def generate(out: Path = PACKAGE_ROOT) -> list[Path]:
    """Writes the stubs under ``out`` and returns the files written."""
    from importlib import resources

    from grpc_tools import protoc

    root = proto_root()
    for name in PROTO_FILES:
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name} not found: build from a flowgate checkout or set PROTO_ROOT"
            )
    well_known = resources.files("grpc_tools") / "_proto"
    package_dir = out / "flowgate" / "v1"
    package_dir.mkdir(parents=True, exist_ok=True)
    # Stale files from an older contract must not survive a regeneration.
    for stale in package_dir.glob("*_pb2*.py*"):
        stale.unlink()
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed (see its output above)")
    init = package_dir / "__init__.py"
    init.write_text('"""Generated from proto/flowgate/v1 by codegen.py; do not edit."""\n')
    return sorted(package_dir.iterdir())


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(HERE))
    sys.exit(0)
