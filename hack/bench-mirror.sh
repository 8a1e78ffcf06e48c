#!/usr/bin/env bash
# Side-by-side benchmark of `tvk-oci` mirroring against `skopeo copy --all` (Debian's skopeo),
# on the same synthetic image set between local docker-registry instances on 127.0.0.1.
#
#   hack/bench-mirror.sh            # 8 two-platform images, ~10 MiB per platform
#   IMAGES=16 LAYER_MIB=16 hack/bench-mirror.sh
#
# Prints wall times for: ours (one run over an FBC catalog naming every image), skopeo copy
# --all per image sequentially and with 4 in parallel, and our no-change re-run (target < 1 s).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
images=${IMAGES:-8}
layer_mib=${LAYER_MIB:-8}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

for tool in docker-registry skopeo python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install docker-registry skopeo python3)" >&2; exit 1; }
done

echo "=== building the mirror example (release)"
cargo build --release -q -p tvk-oci --example mirror
bin=$CARGO_TARGET_DIR/release/examples/mirror

work=$(mktemp -d "${TMPDIR:-/tmp}/tvk-bench-mirror.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Starts a registry and sets $registry to its host:port. (Not used as $(…): a subshell would
# lose the pid, and cleanup could not stop the server.)
start_registry() { # name
  local name=$1 port
  port=$(free_port)
  mkdir -p "$work/$name"
  printf 'version: 0.1\nlog: {level: error}\nstorage:\n  filesystem: {rootdirectory: %s}\nhttp: {addr: 127.0.0.1:%s}\n' "$work/$name" "$port" >"$work/$name.yml"
  docker-registry serve "$work/$name.yml" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && break; sleep 0.1; done
  registry="127.0.0.1:$port"
}
start_registry src; src=$registry
start_registry ours; ours_dst=$registry
start_registry skopeo; skopeo_dst=$registry
start_registry skopeo-par; skopeo_par_dst=$registry

echo "=== generating $images two-platform images (${layer_mib} MiB + 2 MiB + 256 KiB random layers per platform)"
python3 - "$work/layout" "$images" "$layer_mib" <<'PY'
import gzip, hashlib, json, os, sys
root, count, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(root, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
entries = []
for i in range(count):
    children = []
    for arch in ("amd64", "arm64"):
        layers, diff_ids = [], []
        for size in (mib << 20, 2 << 20, 256 << 10):
            raw = os.urandom(size)
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            layers.append(dict(put(gzip.compress(raw, 1)), mediaType="application/vnd.oci.image.layer.v1.tar+gzip"))
        config = put(json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"), "layers": layers}
        m = put(json.dumps(manifest).encode())
        children.append(dict(m, mediaType=manifest["mediaType"], platform={"architecture": arch, "os": "linux"}))
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}
    idx = put(json.dumps(index).encode())
    entries.append(dict(idx, mediaType=index["mediaType"], annotations={"org.opencontainers.image.ref.name": f"img{i}"}))
json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(root, "oci-layout"), "w"))
json.dump({"schemaVersion": 2, "manifests": entries}, open(os.path.join(root, "index.json"), "w"))
PY

echo "=== seeding the source registry $src"
refs=()
for i in $(seq 0 $((images - 1))); do
  skopeo copy -q --all --dest-tls-verify=false "oci:$work/layout:img$i" "docker://$src/bench/img$i:v1"
  digest=sha256:$(skopeo inspect --raw --tls-verify=false "docker://$src/bench/img$i:v1" | sha256sum | cut -d' ' -f1)
  refs+=("$src/bench/img$i@$digest")
done

mkdir -p "$work/fbc/bench"
{
  printf 'schema: olm.package\nname: bench\ndefaultChannel: stable\n---\n'
  printf 'schema: olm.channel\nname: stable\npackage: bench\nentries:\n- name: bench.v1.0.0\n---\n'
  printf 'schema: olm.bundle\nname: bench.v1.0.0\npackage: bench\nimage: %s\nrelatedImages:\n' "${refs[0]}"
  for r in "${refs[@]}"; do printf -- '- {image: %s}\n' "$r"; done
  printf 'properties:\n- {type: olm.package, value: {packageName: bench, version: 1.0.0}}\n'
} >"$work/fbc/bench/catalog.yaml"

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

echo "=== ours: tvk-oci mirror (parallel 4)"
t0=$(now)
"$bin" --catalog "$work/fbc" --src-tls-verify=false --dest-tls-verify=false --parallel 4 "docker://$ours_dst/mirror" 2>/dev/null
t1=$(now)
ours=$(elapsed "$t0" "$t1")

echo "=== skopeo copy --all, one image after another"
t0=$(now)
for r in "${refs[@]}"; do
  repo=${r#"$src/"}; repo=${repo%@*}
  skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false "docker://$r" "docker://$skopeo_dst/mirror/$repo"
done
t1=$(now)
skopeo_seq=$(elapsed "$t0" "$t1")

echo "=== skopeo copy --all, 4 images at once (xargs -P4)"
t0=$(now)
printf '%s\n' "${refs[@]}" | xargs -P4 -I{} sh -c 'r={}; repo=${r#*/}; repo=${repo%@*}; skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false "docker://$r" "docker://'"$skopeo_par_dst"'/mirror/$repo"'
t1=$(now)
skopeo_par=$(elapsed "$t0" "$t1")

echo "=== ours: no-change re-run"
t0=$(now)
"$bin" --catalog "$work/fbc" --src-tls-verify=false --dest-tls-verify=false --parallel 4 "docker://$ours_dst/mirror" 2>/dev/null
t1=$(now)
rerun=$(elapsed "$t0" "$t1")

echo "=== ours: registry -> dir (air-gap disk)"
t0=$(now)
"$bin" --catalog "$work/fbc" --src-tls-verify=false --parallel 4 "dir:$work/disk" 2>/dev/null
t1=$(now)
todir=$(elapsed "$t0" "$t1")

total_mib=$(du -sm "$work/layout/blobs" | cut -f1)
printf '\n%-44s %8s\n' "mirror of $images images (${total_mib} MiB of blobs)" "seconds"
printf '%-44s %8s\n' "tvk-oci registry -> registry" "$ours"
printf '%-44s %8s\n' "skopeo copy --all, sequential" "$skopeo_seq"
printf '%-44s %8s\n' "skopeo copy --all, xargs -P4" "$skopeo_par"
printf '%-44s %8s\n' "tvk-oci no-change re-run (target < 1 s)" "$rerun"
printf '%-44s %8s\n' "tvk-oci registry -> dir" "$todir"
