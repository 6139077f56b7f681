#!/usr/bin/env bash
# Checks deploy/ and the Dockerfile (issue 13); scripts/test.sh runs it after
# the Rust tests, whose target/debug/flowgate it uses.
#
#   1. kubectl kustomize renders base, every overlay, and production with the
#      monitoring component
#   2. yamllint (strict) on deploy/
#   3. kubernetes-validate --strict against the oldest Kubernetes the
#      manifests are for and the newest it knows ($K8S_VERSIONS); the
#      PodMonitor (a CRD) against its own schema (crds.py)
#   4. policy.py: the promises of the issue, with a self-test that breaks
#      each promise once and requires it to be reported
#   5. flowgate check-config on the ConfigMap of base and every overlay, the
#      key files and Secret variables stubbed (check_config.py)
#   6. the image: podman (--storage-driver vfs) builds the Dockerfile's
#      runtime-prebuilt target on a base made from this machine's libraries
#      (no registry here); its config is checked, its filesystem exported,
#      and for dev and production the gateway is started in it by chroot as
#      the image's user, root read-only, the overlay's volumes mounted as the
#      kubelet would (pod.py), until gRPC health reports SERVING (over mTLS
#      in production); then SIGTERM must stop it cleanly. Needs root or
#      passwordless sudo (chroot, mount); without, it says why it is skipped.
#
# FLOWGATE_DEPLOY_SKIP_IMAGE=1 skips step 6 (e.g. while editing manifests).
set -euo pipefail
cd "$(dirname "$0")/../.."

# The oldest Kubernetes the manifests are for (>= 1.30: the preStop sleep
# action) and the newest kubernetes-validate knows.
K8S_VERSIONS=(1.32.0 1.37.0)
KUBECTL_VERSION=v1.32.4   # installed when kubectl is missing
PY=.venv/bin/python
BIN=${FLOWGATE_BIN:-target/debug/flowgate}

step() { printf '\n--> deploy: %s\n' "$*"; }
failed=()
as_root=()
if [ "$(id -u)" -ne 0 ]; then as_root=(sudo -n); fi

work=$(mktemp -d)
# The image step leaves root-owned files (the exported filesystem).
cleanup() { rm -rf "$work" 2>/dev/null || "${as_root[@]}" rm -rf "$work"; }
trap cleanup EXIT

step "tools"
if [ ! -x "$PY" ]; then python3 -m venv .venv; fi
"$PY" -m pip install --quiet --disable-pip-version-check -r scripts/deploy/requirements.txt
if ! command -v kubectl >/dev/null; then
  arch=$(dpkg --print-architecture)
  mkdir -p .tools/bin
  curl -fsSLo .tools/bin/kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${arch}/kubectl"
  echo "$(curl -fsSL "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${arch}/kubectl.sha256")  .tools/bin/kubectl" | sha256sum --check --quiet
  chmod +x .tools/bin/kubectl
  export PATH="$PWD/.tools/bin:$PATH"
fi
kubectl version --client | head -2
if [ ! -x "$BIN" ]; then
  cargo build --locked --bin flowgate
fi

step "kubectl kustomize: base, dev, production, production + monitoring"
rendered=()
render() { # name dir
  if kubectl kustomize "$2" >"$work/$1.yaml"; then
    rendered+=("$1=$work/$1.yaml")
    echo "$1: $(grep -c '^kind:' "$work/$1.yaml") objects"
  else
    failed+=("kustomize $1")
  fi
}
render base deploy/base
render dev deploy/overlays/dev
render production deploy/overlays/production
mkdir -p "$work/production+monitoring"
cat >"$work/production+monitoring/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$work/production+monitoring" deploy/overlays/production)
components:
  - $(realpath --relative-to="$work/production+monitoring" deploy/components/monitoring)
EOF
render production+monitoring "$work/production+monitoring"
overlays=()
for item in "${rendered[@]}"; do
  [ "${item%%=*}" = base ] || overlays+=("$item")
done

if [ "${#rendered[@]}" -eq 0 ]; then
  printf '\ndeploy checks failed: nothing rendered (%s)\n' "${failed[*]}"
  exit 1
fi

step "yamllint --strict deploy/"
.venv/bin/yamllint --strict -c deploy/.yamllint deploy/ || failed+=("yamllint")

step "kubernetes-validate --strict (Kubernetes ${K8S_VERSIONS[*]})"
files=("${rendered[@]#*=}")
for version in "${K8S_VERSIONS[@]}"; do
  if .venv/bin/kubernetes-validate --strict --quiet --no-warn -k "$version" "${files[@]}"; then
    echo "ok: ${#files[@]} renders against $version"
  else
    failed+=("kubernetes-validate $version")
  fi
done
"$PY" scripts/deploy/crds.py "${files[@]}" || failed+=("CRD schemas")

step "policy (scripts/deploy/policy.py, with its self-test)"
"$PY" scripts/deploy/policy.py --self-test "${overlays[@]}" || failed+=("policy")

step "flowgate check-config on the ConfigMap of base and every overlay"
mkdir -p "$work/check-config"
"$PY" scripts/deploy/check_config.py "$BIN" "$work/check-config" "${rendered[@]}" || failed+=("check-config")

# Starts the gateway from the exported image as the pod of overlay $1 would
# run: in a mount namespace of its own (the mounts end with the process), the
# root read-only, the overlay's ConfigMap and Secrets (pod.py: rendered, or
# stubbed with the values given as NAME=VALUE) read-only at their mount
# paths, /tmp a tmpfs, listeners on loopback ports; chroot as the image's
# user runs the image's entrypoint and command. Waits for gRPC health
# SERVING (over mTLS where the overlay has TLS), then SIGTERM must stop it.
serve_from_image() {
  local overlay=$1 pod="$work/pod-$1"
  shift
  "$PY" scripts/deploy/pod.py "$work/$overlay.yaml" "$pod" "$@"
  # As the kubelet mounts them: ConfigMap files world-readable, Secret files
  # root:fsGroup (65532) with the volume's defaultMode.
  chmod -R a+rX "$pod"
  local dir path kind mode mounts=()
  while IFS=$'\t' read -r dir path kind mode; do
    if [ "$kind" = secret ]; then
      "${as_root[@]}" chown -R 0:65532 "$dir"
      "${as_root[@]}" find "$dir" -type f -exec chmod "$mode" {} +
    fi
    mounts+=("$dir" "$path")
  done <"$pod/mounts.tsv"
  local env=() probe=()
  mapfile -t env <"$pod/env"
  mapfile -t probe < <("$PY" -c '
import json, sys
probe = json.load(open(sys.argv[1]))
print(probe["address"])
for path in (probe["tls"] or {}).values(): print(path)' "$pod/probe.json")

  "${as_root[@]}" unshare --mount --propagation private sh -euc '
    root=$1; shift
    mount --bind "$root" "$root"
    while [ "$1" != -- ]; do
      mkdir -p "$root$2"
      mount --bind -o ro "$1" "$root$2"
      shift 2
    done
    shift
    mkdir -p "$root/proc" "$root/tmp"
    mount -t tmpfs -o size=64m,mode=1777 tmpfs "$root/tmp"
    mount --rbind /proc "$root/proc"
    mount -o remount,bind,ro "$root"
    if touch "$root/.writable" 2>/dev/null; then echo "the root filesystem is writable"; exit 1; fi
    exec "$@"' sh "$rootfs" "${mounts[@]}" -- \
    env -i PATH=/usr/local/bin:/usr/bin:/bin "${env[@]}" \
    "$(PATH="$PATH:/usr/sbin:/sbin" command -v chroot)" --userspec=65532:65532 "$rootfs" \
    flowgate serve --config /etc/flowgate/flowgate.toml >"$work/gateway-$overlay.log" 2>&1 &
  gateway_pid=$!
  local status=0 exit_code=0
  printf '%s: ' "$overlay"
  "$PY" scripts/deploy/health_wait.py "$gateway_pid" "${probe[0]}" 65532 30 "${probe[@]:1}" || status=1
  wait "$gateway_pid" || exit_code=$?
  gateway_pid=
  if [ "$status" -ne 0 ] || [ "$exit_code" -ne 0 ]; then
    echo "$overlay: gateway exit status $exit_code; its log:"
    tail -n 20 "$work/gateway-$overlay.log"
    return 1
  fi
}

image_check() {
  local started=$SECONDS podman=(podman --storage-driver vfs --root "$work/storage" --runroot "$work/run")
  if ! command -v podman >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends podman >/dev/null
  fi
  podman=("${as_root[@]}" "${podman[@]}")
  "${podman[@]}" --version

  # A stand-in for distroless/cc built from this machine: the binary's shared
  # libraries, CA certificates and the nonroot user (65532), FROM scratch.
  local base="$work/base"
  mkdir -p "$base/rootfs/etc/ssl/certs" "$base/rootfs/tmp"
  chmod 1777 "$base/rootfs/tmp"
  ldd "$BIN" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$base/rootfs$(dirname "$lib")"
    cp -L "$lib" "$base/rootfs$lib"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$base/rootfs/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$base/rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$base/rootfs/etc/group"
  printf 'FROM scratch\nCOPY rootfs/ /\n' >"$base/Containerfile"
  "${podman[@]}" build --quiet --pull=never -t localhost/flowgate-check-base:local -f "$base/Containerfile" "$base" >/dev/null

  # The Dockerfile's runtime layout with the binary the test run built.
  mkdir -p "$work/context"
  cp "$BIN" "$work/context/flowgate"
  "${podman[@]}" build --quiet --pull=never --target runtime-prebuilt \
    --build-arg RUNTIME_IMAGE=localhost/flowgate-check-base:local \
    -t localhost/flowgate:check -f Dockerfile "$work/context" >/dev/null
  echo "built localhost/flowgate:check in $((SECONDS - started))s"

  "${podman[@]}" image inspect localhost/flowgate:check >"$work/inspect.json"
  "$PY" - "$work/inspect.json" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))[0]["Config"]
want = {
    "User": "65532:65532",
    "Entrypoint": ["flowgate"],
    "Cmd": ["serve", "--config", "/etc/flowgate/flowgate.toml"],
}
bad = {k: config.get(k) for k, v in want.items() if config.get(k) != v}
labels = config.get("Labels") or {}
for label in ("org.opencontainers.image.title", "org.opencontainers.image.version", "org.opencontainers.image.licenses"):
    if not labels.get(label):
        bad[label] = None
if bad:
    sys.exit(f"image config differs: {bad}")
print(f"image config: user {config['User']}, entrypoint {config['Entrypoint']}, cmd {config['Cmd']}")
EOF

  # The image's filesystem, as the container's root.
  rootfs="$work/rootfs"
  mkdir -p "$rootfs"
  "${podman[@]}" create --name flowgate-check localhost/flowgate:check >/dev/null
  "${podman[@]}" export flowgate-check | "${as_root[@]}" tar -x -C "$rootfs"
  "${podman[@]}" rm flowgate-check >/dev/null

  serve_from_image dev
  # production: Redis store (a redis-server on loopback, with a password),
  # mTLS on the gRPC listener, webhooks on; the Secrets stubbed.
  if command -v redis-server >/dev/null; then
    local redis_port redis_password=stub-redis-password
    redis_port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
      --requirepass "$redis_password" >"$work/redis.log" 2>&1 &
    redis_pid=$!
    serve_from_image production FLOWGATE__STATE__URL="redis://127.0.0.1:$redis_port" \
      FLOWGATE_REDIS_PASSWORD="$redis_password"
    kill "$redis_pid"
    wait "$redis_pid" || true
    redis_pid=
  else
    echo "production: skipped (no redis-server; scripts/test.sh installs it)"
  fi
  echo "image check: $((SECONDS - started))s"
}

step "the image (podman vfs build, chroot as the image's user, gRPC health SERVING)"
if [ "${FLOWGATE_DEPLOY_SKIP_IMAGE:-}" = 1 ]; then
  echo "skipped: FLOWGATE_DEPLOY_SKIP_IMAGE=1"
elif [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  echo "skipped: chroot and mount need root, and this user has no passwordless sudo"
else
  # A subshell outside any condition, so that `set -e` holds inside.
  set +e
  (
    set -e
    trap 'for pid in "${gateway_pid:-}" "${redis_pid:-}"; do [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; done' EXIT
    image_check
  )
  image_status=$?
  set -e
  [ "$image_status" -eq 0 ] || failed+=("image")
fi

if [ "${#failed[@]}" -gt 0 ]; then
  printf '\ndeploy checks failed: %s\n' "${failed[*]}"
  exit 1
fi
printf '\ndeploy checks: ok\n'
