#!/usr/bin/env bash
# Side-by-side benchmark of tvk-datamover against qemu-img on generated volumes.
# Builds the release binary and runs ../shared/bench/run_baseline.sh with our image-level
# commands plugged in as OURS_*. The harness's own variables pass straight through:
#   SIZE (4G) FILL (0.10) CHANGE (0.01) SEED (1) DATA_DIR RUNS (10) — and VARIANTS, PHYS, KEEP.
# Example: SIZE=512M RUNS=3 VARIANTS=0 PHYS=0 hack/bench-vs-qemu.sh
# INTERLEAVED=N (default 0) then runs N more rounds of the full-backup and restore rows
# alternating qemu-img and ours (qemu, ours, qemu, ours, ...) on the same volumes, printing
# median and minimum wall time and CPU time (user + sys) of each: on a shared box the
# harness times every qemu-img row before ours, so a change of load between them moves its
# ratios.
# INTERLEAVED_FIFO=1 runs every command of those rounds (both sides alike) under
# `chrt -f 10` (SCHED_FIFO; needs root or CAP_SYS_NICE): on a shared box other processes'
# builds then cannot take the cores from the command being timed — the closest a busy box
# gets to an idle one. Without it, at load 4-7 on 2 cores our threads got about one core
# (wall ~ CPU time) and the wake-up placement kept them on one core, so multi-threaded
# gains did not show at all.
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

INTERLEAVED=${INTERLEAVED:-0}
if (( INTERLEAVED > 0 )); then
  data=${DATA_DIR:-${TMPDIR:-/tmp}/tvk-bench}
  vol=$data/vol-$SIZE-f$FILL-s$SEED.raw
  vol2=$data/vol-$SIZE-f$FILL-s$SEED-c$CHANGE.raw
  [[ -f $vol && -f $vol2 ]] || { echo "interleaved rounds need the harness's volumes in $data" >&2; exit 1; }
  w=$data/interleaved
  rm -rf "$w"; mkdir -p "$w/state"
  cat "$vol" "$vol2" >/dev/null
  # Chains to restore: qemu-img's true diff, and ours.
  qemu-img convert -O qcow2 "$vol" "$w/q_full.qcow2"
  qemu-img create -q -f qcow2 -b "$vol2" -F raw "$w/q_inc.qcow2"
  qemu-img rebase -b "$w/q_full.qcow2" -F qcow2 "$w/q_inc.qcow2"
  "$bin" --progress none image full "$vol" "$w/o_full.qcow2" --index "$w/state/index" --no-sync >/dev/null
  "$bin" --progress none image incremental "$vol2" "$w/o_full.qcow2" "$w/o_inc.qcow2" "$w/state" --no-sync >/dev/null
  prio=()
  if [[ ${INTERLEAVED_FIFO:-0} == 1 ]]; then
    chrt -f 10 true 2>/dev/null || { echo "INTERLEAVED_FIFO=1 needs chrt and the right to use SCHED_FIFO (root or CAP_SYS_NICE)" >&2; exit 1; }
    prio=(chrt -f 10)
  fi
  # timed LABEL CMD...: appends "label wall cpu" (seconds) to $w/times.
  timed() {
    local label=$1; shift
    "${prio[@]}" /usr/bin/time -f "$label %e %U %S" -a -o "$w/raw" "$@" >/dev/null
  }
  : >"$w/raw"
  echo "interleaved rounds ($INTERLEAVED${prio:+, under ${prio[*]}}), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  for ((i = 0; i < INTERLEAVED; i++)); do
    rm -f "$w/x.qcow2"; timed qemu_full qemu-img convert -O qcow2 "$vol" "$w/x.qcow2"
    rm -f "$w/x.qcow2"; timed ours_full "$bin" --progress none image full "$vol" "$w/x.qcow2" --index "$w/x.index" --no-sync
    rm -f "$w/x.raw"; timed qemu_restore qemu-img convert -O raw "$w/q_inc.qcow2" "$w/x.raw"
    rm -f "$w/x.raw"; timed ours_restore "$bin" --progress none image restore "$w/o_inc.qcow2" "$w/x.raw" --index "$w/state/index" --no-sync
  done
  cmp "$vol2" "$w/x.raw" || { echo "interleaved: our restored volume differs from the source" >&2; rc=1; }
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 - "$w/raw" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 4:
        continue
    label, wall, user, sys_ = parts
    rows.setdefault(label, []).append((float(wall), float(user) + float(sys_)))
def med(label, k):
    return statistics.median(v[k] for v in rows[label])
def low(label, k):
    return min(v[k] for v in rows[label])
# Medians, and minima (on a shared box the least disturbed run of each is the fairer pair).
print("| row | qemu wall | ours wall | ratio | qemu CPU | ours CPU | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for row in ("full", "restore"):
    q, o = "qemu_" + row, "ours_" + row
    if q in rows and o in rows:
        for name, f in (("median", med), ("min", low)):
            qw, ow, qc, oc = f(q, 0), f(o, 0), f(q, 1), f(o, 1)
            print(f"| {row} {name} (n={len(rows[o])}) | {qw:.3f} | {ow:.3f} | {ow / qw:.2f} | {qc:.3f} | {oc:.3f} | {oc / qc:.2f} |")
PY
  rm -rf "$w"
fi
exit "$rc"
