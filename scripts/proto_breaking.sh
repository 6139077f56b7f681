#!/usr/bin/env bash
# The contract gate: `buf breaking` (buf.yaml: FILE rules) compares proto/ at
# HEAD with proto/ at the previous commit on this branch (HEAD's first
# parent: for a merge into main, the main it was merged into), read from git,
# offline.
#
# A break fails the gate unless a commit in <previous>..HEAD carries a
# `Breaking-Change:` trailer saying why the break is intended, e.g.
#
#   Breaking-Change: RunStatus.CANCELLED renumbered; no client shipped yet.
#
# Skips, saying so, when there is nothing to compare with: not a git
# checkout, no previous commit (first commit, or a shallow clone: fetch with
# full history), or no proto/ in the previous commit.
#
# buf: $BUF, else .tools/node_modules/.bin/buf (scripts/test.sh installs it),
# else `buf` on PATH. Without buf the gate is skipped, or fails when
# FLOWGATE_REQUIRE_BUF=1.
#
# FLOWGATE_BREAKING_AGAINST=<git revision> compares with that revision
# instead (the range for the trailer becomes <revision>..HEAD).
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "buf breaking: skipped: $*"
  exit 0
}

buf=${BUF:-}
if [ -z "$buf" ]; then
  if [ -x .tools/node_modules/.bin/buf ]; then
    buf=.tools/node_modules/.bin/buf
  elif command -v buf >/dev/null; then
    buf=buf
  fi
fi
if [ -z "$buf" ]; then
  if [ "${FLOWGATE_REQUIRE_BUF:-}" = 1 ]; then
    echo "buf breaking: FLOWGATE_REQUIRE_BUF=1 but buf is not installed" >&2
    exit 1
  fi
  skip "buf is not installed (scripts/test.sh installs it under .tools/)"
fi

git rev-parse --is-inside-work-tree >/dev/null 2>&1 || skip "not a git checkout"
against_rev=${FLOWGATE_BREAKING_AGAINST:-HEAD^1}
if ! against=$(git rev-parse --verify --quiet "${against_rev}^{commit}"); then
  if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    skip "shallow clone: $against_rev is not in the history (git fetch --unshallow)"
  fi
  skip "no commit $against_rev to compare with (the first commit?)"
fi
git cat-file -e "$against:proto" 2>/dev/null || skip "no proto/ in $against_rev"

short=$(git rev-parse --short "$against")
repo=$(git rev-parse --show-toplevel)
echo "buf breaking: proto/ at HEAD against $against_rev ($short)"
if report=$("$buf" breaking proto --against "${repo}#format=git,ref=${against},subdir=proto" 2>&1); then
  echo "ok: no breaking change"
  exit 0
fi

echo "$report"
# An error from buf itself (not a list of breaks) fails the gate as it is.
if ! grep -qE '^proto/[^:]+:[0-9]+:[0-9]+:' <<<"$report"; then
  echo "buf breaking: buf failed (above)" >&2
  exit 1
fi
reasons=$(git log --format='%(trailers:key=Breaking-Change,valueonly,separator=%x20)' "$against..HEAD" |
  sed '/^[[:space:]]*$/d')
if [ -n "$reasons" ]; then
  echo "allowed: breaking change declared in $short..HEAD:"
  sed 's/^/  Breaking-Change: /' <<<"$reasons"
  exit 0
fi
cat >&2 <<EOF
buf breaking: proto/ breaks the contract of $short (above). Make the change
compatible, or, if the break is intended, say why in a commit trailer:

  Breaking-Change: <what breaks and why it is acceptable>
EOF
exit 1
