"""Regenerates the stubs from proto/ and runs every test of the client.

Run by tests/python_client.rs against a gateway and emulator it started
(``FLOWGATE_ADDR``, ``FLOWGATE_EMULATOR``, ``FLOWGATE_KEY_*``). Exits
non-zero when a test fails, errors or is skipped, or when the environment
is incomplete.
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENT = HERE.parent


def main() -> int:
    sys.path.insert(0, str(CLIENT))
    import codegen

    try:
        import grpc_status  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError as missing:
        print(
            f"python client: {missing}; install scripts/requirements-test.txt "
            f"into this interpreter ({sys.executable}) or run scripts/test.sh",
            file=sys.stderr,
        )
        return 1
    # Always regenerate: the stubs under test are the protos' of this commit.
    codegen.generate()
    sys.path.insert(0, str(CLIENT / "src"))
    sys.path.insert(0, str(HERE))
    suite = unittest.defaultTestLoader.discover(str(HERE), pattern="test_*.py")
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful() or result.skipped or result.testsRun == 0:
        print("python client: FAILED", file=sys.stderr)
        return 1
    print(f"python client: all {result.testsRun} tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
