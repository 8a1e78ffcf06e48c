#!/usr/bin/env bash
# Side-by-side benchmark of tvk-datamover against qemu-img on generated volumes.
# Builds the release binary and runs ../shared/bench/run_baseline.sh with our image-level
# commands plugged in as OURS_*. The harness's own variables pass straight through:
#   SIZE (4G) FILL (0.10) CHANGE (0.01) SEED (1) DATA_DIR RUNS (10) — and VARIANTS, PHYS, KEEP.
# Example: SIZE=512M RUNS=3 VARIANTS=0 PHYS=0 hack/bench-vs-qemu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
harness=${BENCH_HARNESS:-$root/../shared/bench/run_baseline.sh}
[[ -f $harness ]] || { echo "benchmark harness not found at $harness (set BENCH_HARNESS)" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "need hyperfine (apt-get install hyperfine)" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "need qemu-img (apt-get install qemu-utils)" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -q -p tvk-datamover
bin=$CARGO_TARGET_DIR/release/tvk-datamover

export OURS_NAME=${OURS_NAME:-tvk-datamover}
# No final fsync in the image-level rows: `qemu-img convert` (qcow2 and raw output) and
# `qemu-img rebase` issue no flush after writing data (checked with strace: its only
# fdatasync calls come while creating the empty image), so both sides leave data in the page
# cache and the rows compare like with like. The Job commands (`backup`, `restore`,
# `coalesce`) always fsync before they commit or report success.
export OURS_FULL="$bin --progress none image full {src} {out} --index {state}/index --no-sync"
export OURS_INC="$bin --progress none image incremental {src} {prev} {out} {state} --no-sync"
export OURS_RESTORE="$bin --progress none image restore {src} {out} --index {state}/index --no-sync"
export OURS_SQUASH="$bin --progress none image squash {src} {prev} {out} --no-sync"
export SIZE=${SIZE:-4G} FILL=${FILL:-0.10} CHANGE=${CHANGE:-0.01} SEED=${SEED:-1} RUNS=${RUNS:-10}
[[ -n ${DATA_DIR:-} ]] && export DATA_DIR
# The box is shared and timings follow its load: record the load average beside the table
# (compare implementations only within one run; rerun when the load is high).
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
rc=0
bash "$harness" || rc=$?
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$rc"
