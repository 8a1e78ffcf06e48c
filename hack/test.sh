#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, starts the local servers
# the tests need (moto S3, docker-registry) on 127.0.0.1, runs format, lint, generated-file
# drift checks and every test, and stops the servers again. `.ci/run` runs exactly this.
#
# Environment:
#   TVK_TEST_NO_INSTALL=1   do not apt-get / pip install anything (fail if missing instead)
#   TVK_TEST_FAST=1         skip fmt/clippy/drift, only run the tests
#   KUBECONFIG              set it to also run the opt-in real-cluster e2e tests (e2e_*)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\n=== %s\n' "$*"; }

# ---------------------------------------------------------------- dependencies
need_apt=()
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v buildah >/dev/null || need_apt+=(buildah)
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v file >/dev/null || need_apt+=(file)
command -v curl >/dev/null || need_apt+=(curl)
# kubectl drives the in-memory API server from a child process (test/apiserver); Debian's
# kubernetes-client (1.20) is enough for what the test does.
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
command -v losetup >/dev/null || need_apt+=(mount)
# tvk-chart-render's tests compare with Go's own text/template + Sprig (test/helm-oracle, built
# in GOPATH mode from Debian's Go packages: no module download).
command -v go >/dev/null || need_apt+=(golang-go)
[ -d /usr/share/gocode/src/github.com/Masterminds/sprig ] || need_apt+=(golang-github-masterminds-sprig-dev)
[ -d /usr/share/gocode/src/gopkg.in/yaml.v2 ] || need_apt+=(golang-gopkg-yaml.v2-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "${TVK_TEST_NO_INSTALL:-}" = 1 ]; then
    echo "missing Debian packages: ${need_apt[*]} (install them: apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
  log "installing Debian packages: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
  if [ "${TVK_TEST_NO_INSTALL:-}" = 1 ]; then
    echo "missing PyPI package moto[server] (install it: pip install 'moto[server]')" >&2
    exit 1
  fi
  log "installing moto[server] from PyPI"
  "$python" -m pip install -q 'moto[server]>=5.0.20'
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked -q cargo-nextest
fi

# ---------------------------------------------------------------- local servers
state=$(mktemp -d "${TMPDIR:-/tmp}/tvk-test.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT INT TERM

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url name
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not start on $1 (see $state/$2.log):" >&2
  cat "$state/$2.log" >&2 || true
  exit 1
}

log "starting moto S3 and two docker-registry instances on 127.0.0.1"
moto_port=$(free_port)
"$python" -m moto.server -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1 &
pids+=($!)
export TVK_TEST_S3_ENDPOINT="http://127.0.0.1:$moto_port"

for name in a b; do
  port=$(free_port)
  mkdir -p "$state/registry-$name"
  cat >"$state/registry-$name.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $state/registry-$name}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port}
YML
  docker-registry serve "$state/registry-$name.yml" >"$state/registry-$name.log" 2>&1 &
  pids+=($!)
  if [ "$name" = a ]; then export TVK_TEST_REGISTRY_A="127.0.0.1:$port"; else export TVK_TEST_REGISTRY_B="127.0.0.1:$port"; fi
done
wait_http "$TVK_TEST_S3_ENDPOINT/" moto
wait_http "http://$TVK_TEST_REGISTRY_A/v2/" registry-a
wait_http "http://$TVK_TEST_REGISTRY_B/v2/" registry-b
echo "moto: $TVK_TEST_S3_ENDPOINT  registries: $TVK_TEST_REGISTRY_A $TVK_TEST_REGISTRY_B"

# ---------------------------------------------------------------- checks
if [ "${TVK_TEST_FAST:-}" != 1 ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
  log "generated files are up to date (cargo xtask check-generated)"
  cargo xtask check-generated
fi

# The packaging e2e test (hack/xtask/tests/images_e2e.rs) puts six static release binaries into
# images; build them here, outside the per-test timeout (profile `image`, target/image-build).
log "static image binaries (cargo xtask images --build-only)"
time cargo xtask images --build-only

log "tests (cargo nextest)"
cargo nextest run --workspace --no-fail-fast --profile ci

if [ -n "${KUBECONFIG:-}" ]; then
  log "opt-in real-cluster e2e suite (KUBECONFIG=$KUBECONFIG)"
  TVK_E2E=1 cargo nextest run --workspace --profile ci --run-ignored only -E 'test(/^e2e_/)'
else
  log "SKIPPED: real-cluster e2e tests (e2e_* in app/api/tests/e2e.rs, manager/tests/e2e.rs) — set KUBECONFIG to run them; they are not counted as passed"
fi
if [ -n "${KUBECONFIG:-}" ] && [ -n "${TVK_E2E_S3_BUCKET:-}" ]; then
  log "opt-in real-cluster backup/restore e2e (hack/e2e-cluster.sh)"
  hack/e2e-cluster.sh
else
  log "SKIPPED: real-cluster backup -> incremental -> restore e2e (hack/e2e-cluster.sh) — set KUBECONFIG, TVK_E2E_S3_BUCKET and AWS credentials to run it; not counted as passed"
fi
