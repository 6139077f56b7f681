"""The emulator's admin API (``/_emulator/…``), for injecting faults and
counting the requests flowgate sent upstream."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Optional

BASE = os.environ.get("FLOWGATE_EMULATOR", "")


def _call(method: str, path: str, body: Optional[dict] = None):  # type: ignore[no-untyped-def]
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        BASE + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


def inject(**fault: object) -> None:
    """Adds a fault (fields as in ``POST /_emulator/faults``)."""
    _call("POST", "/_emulator/faults", fault)


def clear_faults() -> None:
    _call("DELETE", "/_emulator/faults")


def count(method: str, path_contains: str) -> int:
    """How many recorded provider requests match."""
    recorded = _call("GET", "/_emulator/requests") or []
    return sum(1 for r in recorded if r["method"] == method and path_contains in r["path"])
