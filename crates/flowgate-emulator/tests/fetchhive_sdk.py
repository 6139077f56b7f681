"""Drives the emulator's Fetch Hive dialect with the official `fetch-hive-sdk`.

Usage: python fetchhive_sdk.py BASE_URL   (or FLOWGATE_FETCHHIVE_BASE_URL)

Exit codes: 0 all checks passed, 1 a check failed, 77 the SDK is not installed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Never route the loopback emulator through a proxy from the environment.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

try:
    import httpx
    from fetch_hive_sdk import FetchHive
except ImportError as exc:  # pragma: no cover - depends on the environment
    print(f"SKIP: fetch_hive_sdk is not importable: {exc}", file=sys.stderr)
    sys.exit(77)

KEY = "fhk_emulator_demo"
CALLBACK_TIMEOUT_S = 20


class CallbackHandler(BaseHTTPRequestHandler):
    received: "queue.Queue[tuple[dict[str, str], bytes]]" = queue.Queue()

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.received.put((headers, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def main() -> int:
    base_url = sys.argv[1] if len(sys.argv) > 1 else os.environ["FLOWGATE_FETCHHIVE_BASE_URL"]
    client = FetchHive(api_key=KEY, base_url=base_url, timeout=30)

    # Sync run.
    run = client.invoke_workflow(deployment="summarize", variant="default", inputs={"topic": "Enterprise AI"})
    check(run["run_status"] == "completed", f"sync run_status: {run}")
    check(run["output"].startswith("Summary (default) of Enterprise AI"), f"sync output: {run}")
    check(run["request_id"].startswith("req_"), f"request_id: {run}")
    looked_up = client.get_request(run["request_id"])
    check(looked_up["run_status"] == "completed", f"get_request: {looked_up}")

    # Metadata and user pass through validation.
    run = client.invoke_workflow(
        deployment="summarize", variant="concise", inputs={"topic": "x"},
        user="sdk-test", metadata={"customer_id": "cus_1", "seats": 3, "trial": False, "note": None},
    )
    check(run["output"].startswith("Summary (concise) of x"), f"concise: {run}")

    # Async run with a signed callback to a local receiver.
    server = ThreadingHTTPServer(("127.0.0.1", 0), CallbackHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        callback_url = f"http://127.0.0.1:{server.server_address[1]}/callback"
        accepted = client.invoke_workflow(
            deployment="summarize", variant="default", inputs={"topic": "async"},
            async_mode=True, callback_url=callback_url,
        )
        check(accepted["run_status"] in ("running", "queued"), f"async accepted: {accepted}")
        secret = accepted["webhook_secret"]
        headers, body = CallbackHandler.received.get(timeout=CALLBACK_TIMEOUT_S)
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        signature = headers.get("x-fetch-hive-signature", "")
        check(hmac.compare_digest(expected, signature), f"signature {signature!r} != {expected!r}")
        payload = json.loads(body)
        check(payload["request_id"] == accepted["request_id"], f"callback request_id: {payload}")
        check(payload["run_status"] == "completed", f"callback run_status: {payload}")
        check(payload["output"].startswith("Summary (default) of async"), f"callback output: {payload}")
    finally:
        server.shutdown()

    # Errors surface as httpx.HTTPStatusError.
    try:
        client.invoke_workflow(deployment="does-not-exist", variant="default")
    except httpx.HTTPStatusError as exc:
        check(exc.response.status_code == 404, f"unknown deployment status {exc.response.status_code}")
        check(exc.response.json()["error_code"] == "not_found", exc.response.text)
    else:
        raise AssertionError("unknown deployment did not raise")

    # The SDK omits an empty variant; the REST API requires it.
    try:
        client.invoke_workflow(deployment="summarize", inputs={"topic": "x"})
    except httpx.HTTPStatusError as exc:
        check(exc.response.status_code == 422, f"missing variant status {exc.response.status_code}")
    else:
        raise AssertionError("missing variant did not raise")

    print("fetchhive_sdk.py: all checks passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as failure:
        print(f"FAIL: {failure}", file=sys.stderr)
        sys.exit(1)
