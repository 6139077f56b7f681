"""Cross-checks flowgate's Standard Webhooks signatures against the official
Python library (PyPI `standardwebhooks`).

Usage: standard_crosscheck.py CASES_JSON OUT_JSON

CASES_JSON holds {"cases": [{secret, id, timestamp, body, signature}]}, signed
by flowgate with `timestamp` close to now. Each is verified with the official
library (which must accept it, and reject a tampered body), then signed by it;
its signatures are written to OUT_JSON for the Rust side to verify.
Exits 77 when the library is not importable.
"""

import json
import sys
from datetime import datetime, timezone

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError as err:  # pragma: no cover - environment dependent
    print(f"standardwebhooks is not importable: {err}")
    sys.exit(77)


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    python_signatures = []
    for n, case in enumerate(cases):
        wh = Webhook(case["secret"])
        headers = {
            "webhook-id": case["id"],
            "webhook-timestamp": str(case["timestamp"]),
            "webhook-signature": case["signature"],
        }
        body = case["body"].encode("utf-8")
        wh.verify(body, headers, json_parse=False)
        try:
            wh.verify(body + b" ", headers, json_parse=False)
        except WebhookVerificationError:
            pass
        else:
            print(f"case {n}: a tampered body verified")
            return 1
        at = datetime.fromtimestamp(case["timestamp"], tz=timezone.utc)
        signature = wh.sign(case["id"], at, case["body"])
        if signature != case["signature"]:
            print(f"case {n}: signatures differ")
            return 1
        # The official library also signs a variant flowgate has not seen.
        python_signatures.append(wh.sign(case["id"] + "-py", at, case["body"]))
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump({"signatures": python_signatures}, f)
    print(f"all checks passed ({len(cases)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
