#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs (a Python
# venv with the official fetch-hive-sdk, buf from npm), then runs the lint
# wall, buf lint, buf breaking and every Rust test. .ci/run runs exactly this.
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

step "redis-server and redis-cli (Debian redis-server, redis-tools)"
# The Redis-backed stores are tested against real redis-server processes
# that the tests start themselves on 127.0.0.1 (flowgate_redis::testing).
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then as_root=(sudo -E); fi
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
  # The package may start a system instance on 6379; the tests never use it.
fi
redis-server --version

step "buf ${BUF_VERSION} (npm @bufbuild/buf)"
if [ ! -x "$TOOLS/node_modules/.bin/buf" ] || [ "$("$TOOLS/node_modules/.bin/buf" --version)" != "$BUF_VERSION" ]; then
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "@bufbuild/buf@${BUF_VERSION}" >/dev/null
fi

# --- TypeScript client (clients/typescript) -------------------------------
# Its dependencies from package-lock.json (Connect-ES, protoc-gen-es, buf,
# tsx, typescript); tests/typescript_client.rs generates the code from
# proto/, type-checks it and runs its node tests against a real gateway.
step "TypeScript client dependencies (npm ci in clients/typescript)"
if [ ! -f clients/typescript/node_modules/.package-lock.json ] ||
  [ clients/typescript/package-lock.json -nt clients/typescript/node_modules/.package-lock.json ]; then
  (cd clients/typescript && npm ci --silent --no-audit --no-fund >/dev/null)
fi
node --version
# ---------------------------------------------------------------------------

# Structural gates are cheap: run them all, report every failure, and fail
# the run at the end (after the tests) if any of them failed.
gates_failed=()

step "no source file over 600 lines (tests/ folders, tests.rs, *_tests.rs excluded)"
long=$(find . \( -path ./target -o -path ./.git -o -path ./.venv -o -path "./$TOOLS" \) -prune -o \
  -name '*.rs' ! -path '*/tests/*' ! -name tests.rs ! -name '*_tests.rs' -print0 |
  xargs -0 wc -l | awk '$2 != "total" && $1 > 600 { printf "  %s: %d lines\n", $2, $1 }')
if [ -n "$long" ]; then
  echo "source files over 600 lines; split them by responsibility (a folder module):"
  echo "$long"
  gates_failed+=("file length")
else
  echo "ok"
fi

step "no import circles: a dialect never imports another dialect or its dispatcher"
# `imports FILES... -- MODULE`: the non-comment lines of FILES that name
# MODULE as a path (`module::…`, `crate::module`, `super::super::module`).
imports() {
  local module=${*: -1} found status=0
  found=$(grep -rnE "(^|[^a-z_])${module}::|(crate|super)::${module}\b" "${@:1:$#-2}") || status=$?
  if [ "$status" -gt 1 ]; then
    # A listed path that moved is a gate failure, not a pass.
    echo "grep could not read: ${*:1:$#-2}"
    return
  fi
  grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' <<<"$found" || true
}
circles=""
for dialect in fetchhive aitutor knouds; do
  for other in fetchhive aitutor knouds; do
    [ "$dialect" = "$other" ] && continue
    circles+=$(imports "crates/flowgate-providers/src/$dialect" -- "$other")
  done
done
circles+=$(imports crates/flowgate-emulator/src/{aitutor.rs,fetchhive,knouds} -- server)
circles+=$(imports crates/flowgate-webhook/src/{fetchhive,knouds,standard}.rs -- scheme)
if [ -n "$circles" ]; then
  echo "dialect modules import another dialect, or the emulator's/webhook's dispatcher;"
  echo "move what they share down (dialect.rs, shared.rs, signature.rs):"
  echo "$circles"
  gates_failed+=("import circles")
else
  echo "ok"
fi

step "unused dependencies (scripts/unused_deps.py)"
python3 scripts/unused_deps.py || gates_failed+=("unused dependencies")

step "cargo fmt --check"
cargo fmt --all -- --check

step "buf lint"
"$TOOLS/node_modules/.bin/buf" lint

step "buf breaking: proto/ against the previous commit (scripts/proto_breaking.sh)"
BUF="$TOOLS/node_modules/.bin/buf" FLOWGATE_REQUIRE_BUF=1 scripts/proto_breaking.sh ||
  gates_failed+=("buf breaking")

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "production build: --no-default-features (no emulator)"
# The production image builds without the `emulator` feature: the binary
# must compile (a check, not a build) and the emulator crate must be absent.
cargo clippy --locked --no-default-features --bin flowgate -- -D warnings
production_tree=$(cargo tree --locked --no-default-features -e normal -p flowgate)
if grep -q flowgate-emulator <<<"$production_tree"; then
  echo "flowgate-emulator is in the --no-default-features dependency tree"
  gates_failed+=("emulator feature")
else
  echo "ok: flowgate-emulator is not in the production dependency tree"
fi

step "the engine crates do not depend on the gRPC stack"
for crate in flowgate-core flowgate-providers flowgate-state flowgate-redis flowgate-webhook flowgate-telemetry; do
  engine_tree=$(cargo tree --locked -e normal -p "$crate")
  if grep -Eq '(^|[^a-z-])(tonic|prost)( |-)' <<<"$engine_tree"; then
    echo "$crate depends on tonic or prost"
    gates_failed+=("engine free of tonic ($crate)")
  else
    echo "ok: $crate"
  fi
done

step "cargo test (workspace, with the official Python SDK, buf curl and the TypeScript client)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
FLOWGATE_PYTHON="$PWD/.venv/bin/python" FLOWGATE_REQUIRE_PYTHON=1 FLOWGATE_REQUIRE_NODE=1 \
  FLOWGATE_BUF="$PWD/$TOOLS/node_modules/.bin/buf" FLOWGATE_REQUIRE_BUF=1 \
  cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

step "examples/emulator.toml passes check-config as it is (its emulator-only secrets are in the repository)"
# The config the README's "Run it yourself" serves against `flowgate
# emulator`; tests/examples.rs also serves it and makes a call.
if cargo run --quiet --locked -- check-config examples/emulator.toml; then
  :
else
  gates_failed+=("examples/emulator.toml")
fi

step "deploy/ and the image (scripts/deploy/check.sh)"
scripts/deploy/check.sh || gates_failed+=("deploy")

# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\nflowgate: %d passed, %d failed\n", p, f }' "$log"
if [ "${#gates_failed[@]}" -gt 0 ]; then
  printf 'failed gates: %s\n' "${gates_failed[*]}"
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
