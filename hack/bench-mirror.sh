#!/usr/bin/env bash
# Side-by-side benchmark of `tvk-oci` mirroring against Debian's skopeo, between local
# docker-registry instances on 127.0.0.1, on one of two image sets:
#
#   hack/bench-mirror.sh                   # SET=synthetic: 8 two-platform images, ~10 MiB each
#   IMAGES=16 LAYER_MIB=16 hack/bench-mirror.sh
#   SET=project hack/bench-mirror.sh       # this project: catalog, both bundles, every image
#   KUBECTL_TVK=path/to/kubectl-tvk hack/bench-mirror.sh   # synthetic set, that binary's mirror
#
# SET=project builds this project's images with `cargo xtask images` (static binaries: the
# first run compiles them; TVK_IMAGE_TARGET_DIR says where, default target/image-build), pushes
# them, the bundles and the catalog to a local registry A, then mirrors the catalog image to
# registry B with the shipped `kubectl-tvk mirror` (the binary that goes into its image).
# BUILD=0 skips the build and uses the binaries already there.
#
# Prints wall times for: ours (one run over the catalog naming every image), skopeo copy --all
# per image sequentially and with 4 in parallel, `skopeo sync --all` of the same list, our
# no-change re-run (target < 1 s), and ours registry -> dir.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
set_name=${SET:-synthetic}
images=${IMAGES:-8}
layer_mib=${LAYER_MIB:-8}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

case $set_name in
  synthetic) tools="docker-registry skopeo python3" ;;
  project) tools="docker-registry skopeo python3 buildah file jq" ;;
  *) echo "SET=$set_name: use SET=synthetic (default) or SET=project" >&2; exit 2 ;;
esac
for tool in $tools; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install $tools)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/tvk-bench-mirror.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # buildah (vfs) leaves root-owned read-only files behind in its work directories.
  chmod -R u+w "$work" 2>/dev/null || true
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
start_registry airgap; airgap_dst=$registry
start_registry skopeo-sync; skopeo_sync_dst=$registry

# Sets: refs (every image to mirror, host/repo@digest), ours (the mirror command), source_args
# (what ours mirrors: a catalog naming exactly refs) and label.
if [ "$set_name" = synthetic ]; then
if [ -n "${KUBECTL_TVK:-}" ]; then
  ours=("$KUBECTL_TVK" mirror)
else
  echo "=== building the mirror example (release)"
  cargo build --release -q -p tvk-oci --example mirror
  ours=("$CARGO_TARGET_DIR/release/examples/mirror")
fi
source_args=(--catalog "$work/fbc")

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
label="$images two-platform images"
else
image_target=${TVK_IMAGE_TARGET_DIR:-$root/target/image-build}
export TVK_IMAGE_TARGET_DIR=$image_target
if [ "${BUILD:-1}" = 0 ]; then
  echo "=== BUILD=0: the static binaries already in $image_target"
else
  echo "=== static image binaries (cargo xtask images --build-only, $image_target)"
  cargo xtask images --build-only
fi
echo "=== this project's images, bundles and catalog into $src (cargo xtask images)"
cargo xtask images --no-build --registry "$src/tvk-rs" --lock "$work/images.lock.json" --out "$work/repo" >"$work/xtask.log" 2>&1 \
  || { cat "$work/xtask.log" >&2; exit 1; }
lock=$work/images.lock.json
ours=("$image_target/x86_64-unknown-linux-gnu/image/kubectl-tvk" mirror)
source_args=(--catalog "docker://$src/tvk-rs/tvk-catalog@$(jq -r '.catalog["tvk-catalog"]' "$lock")")
# The catalog, both bundles and every related image (kubectl-tvk is not deployed: not in it).
mapfile -t refs < <(jq -r --arg ns "$src/tvk-rs" '
  [.catalog, .bundles, (.images | del(.["kubectl-tvk"]))] | map(to_entries[]) | .[]
  | "\($ns)/\(.key)@\(.value)"' "$lock")
label="this project: catalog, 2 bundles, $((${#refs[@]} - 3)) images"
fi

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

echo "=== ours: ${ours[*]##*/} registry -> registry (parallel 4)"
t0=$(now)
"${ours[@]}" "${source_args[@]}" --src-tls-verify=false --dest-tls-verify=false --parallel 4 \
  --output-dir "$work/ours-out" "docker://$ours_dst/mirror" >"$work/ours.log" 2>&1 || { cat "$work/ours.log" >&2; exit 1; }
t1=$(now)
t_ours=$(elapsed "$t0" "$t1")
# The same set as the skopeo runs below, every image in the destination.
diff <(printf '%s\n' "${refs[@]}" | sort) <(cut -d= -f1 "$work/ours-out/mapping.txt" | sort) \
  || { echo "ours mirrored a different image set than the skopeo runs copy" >&2; exit 1; }
for r in "${refs[@]}"; do
  skopeo inspect --raw --tls-verify=false "docker://$ours_dst/mirror/${r#*/}" >/dev/null \
    || { echo "$r is missing from $ours_dst after our mirror" >&2; exit 1; }
done

echo "=== skopeo copy --all, one image after another"
t0=$(now)
for r in "${refs[@]}"; do
  repo=${r#*/}; repo=${repo%@*}
  skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false "docker://$r" "docker://$skopeo_dst/mirror/$repo"
done
t1=$(now)
t_skopeo_seq=$(elapsed "$t0" "$t1")

echo "=== skopeo copy --all, 4 images at once (xargs -P4)"
t0=$(now)
# shellcheck disable=SC2016 # $r and $repo expand in the inner shell
printf '%s\n' "${refs[@]}" | xargs -P4 -I{} sh -c 'r={}; repo=${r#*/}; repo=${repo%@*}; skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false "docker://$r" "docker://'"$skopeo_par_dst"'/mirror/$repo"'
t1=$(now)
t_skopeo_par=$(elapsed "$t0" "$t1")

echo "=== skopeo sync --all of the same list (YAML source, by digest)"
{
  printf '%s:\n  tls-verify: false\n  images:\n' "$src"
  for r in "${refs[@]}"; do repo=${r#*/}; printf '    %s: ["%s"]\n' "${repo%@*}" "${r#*@}"; done
} >"$work/sync.yaml"
t0=$(now)
skopeo sync --all --src yaml --dest docker --dest-tls-verify=false "$work/sync.yaml" "$skopeo_sync_dst/mirror" >"$work/sync.log" 2>&1 \
  || { cat "$work/sync.log" >&2; exit 1; }
t1=$(now)
t_skopeo_sync=$(elapsed "$t0" "$t1")
for r in "${refs[@]}"; do
  # Without --scoped, sync keeps only the last path component of each repository.
  skopeo inspect --raw --tls-verify=false "docker://$skopeo_sync_dst/mirror/${r##*/}" >/dev/null \
    || { echo "$r is missing from $skopeo_sync_dst after skopeo sync" >&2; exit 1; }
done

echo "=== ours: no-change re-run"
t0=$(now)
"${ours[@]}" "${source_args[@]}" --src-tls-verify=false --dest-tls-verify=false --parallel 4 "docker://$ours_dst/mirror" >"$work/rerun.log" 2>&1 \
  || { cat "$work/rerun.log" >&2; exit 1; }
t1=$(now)
t_rerun=$(elapsed "$t0" "$t1")
grep -q "blobs: 0 copied, " "$work/rerun.log" || { echo "the re-run copied blobs:" >&2; cat "$work/rerun.log" >&2; exit 1; }

echo "=== ours: registry -> dir (air-gap disk)"
t0=$(now)
"${ours[@]}" "${source_args[@]}" --src-tls-verify=false --parallel 4 "dir:$work/disk" >"$work/todir.log" 2>&1 \
  || { cat "$work/todir.log" >&2; exit 1; }
t1=$(now)
t_todir=$(elapsed "$t0" "$t1")

echo "=== ours: dir -> registry (inside the air gap)"
t0=$(now)
"${ours[@]}" --from "dir:$work/disk" --dest-tls-verify=false --parallel 4 "docker://$airgap_dst/mirror" >"$work/fromdir.log" 2>&1 \
  || { cat "$work/fromdir.log" >&2; exit 1; }
t1=$(now)
t_fromdir=$(elapsed "$t0" "$t1")

total_mib=$(du -sm "$work/disk/blobs" | cut -f1)
printf '\n%-48s %8s\n' "mirror of $label (${total_mib} MiB of blobs)" "seconds"
printf '%-48s %8s\n' "tvk-oci registry -> registry" "$t_ours"
printf '%-48s %8s\n' "skopeo copy --all, sequential" "$t_skopeo_seq"
printf '%-48s %8s\n' "skopeo copy --all, xargs -P4" "$t_skopeo_par"
printf '%-48s %8s\n' "skopeo sync --all (YAML list by digest)" "$t_skopeo_sync"
printf '%-48s %8s\n' "tvk-oci no-change re-run (target < 1 s)" "$t_rerun"
printf '%-48s %8s\n' "tvk-oci registry -> dir" "$t_todir"
printf '%-48s %8s\n' "tvk-oci dir -> registry" "$t_fromdir"
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
