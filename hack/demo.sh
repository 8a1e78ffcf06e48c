#!/usr/bin/env bash
# The main job, with no cluster: builds the release binaries, then
#  1. validates every example manifest offline (kubectl-tvk validate),
#  2. renders the whole installation for an example TrilioVaultManager (tvk-manager render),
#  3. runs the datamover on a generated volume: full backup -> two incrementals -> verify ->
#     restore of every backup (bit-exact) -> qemu-img check / backing chain -> retention
#     (coalesce the oldest away) -> restore again,
# printing what a user would look at. Output goes to $OUT (default ./demo-out).
# Needs: cargo, python3, qemu-img (apt-get install qemu-utils), fallocate (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/demo-out}
size_mib=${SIZE_MIB:-256}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
for tool in cargo python3 qemu-img fallocate cmp; do
  command -v "$tool" >/dev/null || { echo "demo needs '$tool' on PATH (qemu-img: apt-get install qemu-utils)" >&2; exit 1; }
done

step "building release binaries (tvk-manager, tvk-datamover, kubectl-tvk)"
cargo build --release --quiet -p tvk-manager -p tvk-datamover -p kubectl-tvk
bin=${CARGO_TARGET_DIR:-$root/target}/release
rm -rf "$out" && mkdir -p "$out"

step "1. kubectl-tvk validate -R -f examples/"
"$bin/kubectl-tvk" validate -R -f examples/

step "2. tvk-manager render -f examples/manager/triliovaultmanager.yaml --output-dir $out/install"
"$bin/tvk-manager" render -f examples/manager/triliovaultmanager.yaml --output-dir "$out/install"
"$bin/tvk-manager" render -f examples/manager/triliovaultmanager.yaml >"$out/install.yaml"
echo "objects the manager would apply, by kind:"
grep -E '^kind:' "$out/install.yaml" | sort | uniq -c | sed 's/kind: //'

step "3. datamover: backup -> incremental -> restore on a ${size_mib} MiB generated volume"
target=$out/target          # a filesystem target: what a mounted NFS share looks like
vol=$out/volume.raw
dm() { "$bin/tvk-datamover" --progress none "$@" --target "$target" --plan demo-plan --volume pvc-data >/dev/null; }
mkdir -p "$target"
python3 hack/gen-volume.py create "$vol" "$size_mib" --fill 0.10 --seed 1
cp --sparse=always "$vol" "$out/volume.b1.raw"
t0=$EPOCHREALTIME
dm backup --backup b1 --source "$vol"
python3 hack/gen-volume.py mutate "$vol" --change 0.02 --seed 2
cp --sparse=always "$vol" "$out/volume.b2.raw"
dm backup --backup b2 --parent b1 --source "$vol"
python3 hack/gen-volume.py mutate "$vol" --change 0.02 --seed 3
cp --sparse=always "$vol" "$out/volume.b3.raw"
dm backup --backup b3 --parent b2 --source "$vol"
t1=$EPOCHREALTIME
printf 'full + 2 incrementals in %.2f s; stored per backup (image + index):\n' "$(awk "BEGIN{print $t1 - $t0}")"
for b in b1 b2 b3; do printf '  %s  %s\n' "$b" "$(du -sh "$target/demo-plan/$b" | cut -f1)"; done

echo "verify b3 with every cluster read back against its digests:"
"$bin/tvk-datamover" --progress none verify --target "$target" --plan demo-plan --volume pvc-data --backup b3 --read-data | tail -1
for b in b1 b2 b3; do
  dm restore --backup $b --dest "$out/restored.$b.raw"
  cmp "$out/volume.$b.raw" "$out/restored.$b.raw"
  echo "restore $b: bit-exact"
done

echo "qemu-img reads what we wrote:"
for img in "$target"/demo-plan/b*/pvc-data/data*.qcow2; do
  qemu-img check -q "$img" && echo "  qemu-img check ${img#"$target"/}: no errors, no leaks"
done
top=$(ls "$target"/demo-plan/b3/pvc-data/data*.qcow2 | head -1)
qemu-img info --backing-chain "$top" | grep -E '^(image|backing file):' | sed 's/^/  /'
qemu-img compare -q "$out/volume.b3.raw" "$top" && echo "  qemu-img compare volume b3 vs its backup chain: identical"

step "4. retention: coalesce b1 away, b2 and b3 still restore bit-exact"
"$bin/tvk-datamover" --progress none coalesce --target "$target" --plan demo-plan --volume pvc-data --expire b1 | tail -1
for b in b2 b3; do
  dm restore --backup $b --dest "$out/restored.$b.after.raw"
  cmp "$out/volume.$b.raw" "$out/restored.$b.after.raw"
  echo "restore $b after coalesce: bit-exact"
done
left=$(find "$target/demo-plan/b1" -type f 2>/dev/null | wc -l)
echo "objects left under demo-plan/b1: $left"

step "done — output in $out"
