#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs (a Python
# venv with the official fetch-hive-sdk, buf from npm), then runs the lint
# wall, buf lint and every Rust test. .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=1.75.0
TOOLS=.tools

step() { printf '\n==> %s\n' "$*"; }

step "Python test environment (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

step "buf ${BUF_VERSION} (npm @bufbuild/buf)"
if [ ! -x "$TOOLS/node_modules/.bin/buf" ] || [ "$("$TOOLS/node_modules/.bin/buf" --version)" != "$BUF_VERSION" ]; then
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "@bufbuild/buf@${BUF_VERSION}" >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "buf lint"
"$TOOLS/node_modules/.bin/buf" lint

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace, with the official Python SDK check)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
FLOWGATE_PYTHON="$PWD/.venv/bin/python" FLOWGATE_REQUIRE_PYTHON=1 \
  cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\nflowgate: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
