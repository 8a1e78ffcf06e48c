#!/usr/bin/env python3
"""Generate or mutate a sparse test volume (a raw file) deterministically.

    gen-volume.py create PATH SIZE_MIB [--fill 0.10] [--seed 1]
    gen-volume.py mutate PATH [--change 0.02] [--seed 2]

`create` makes a sparse file: runs of random data (FILL of the volume), some written-zero runs,
and holes. `mutate` changes CHANGE of the volume's 64 KiB clusters: overwrites some, writes new
data into holes, zeroes some and punches holes in others (with `fallocate --punch-hole`), the
shapes an incremental backup must get right. Used by hack/demo.sh.
"""
import argparse
import os
import random
import subprocess

CLUSTER = 64 * 1024


def create(path, size_mib, fill, seed):
    rng = random.Random(seed)
    size = size_mib * 1024 * 1024
    clusters = size // CLUSTER
    with open(path, "wb") as f:
        f.truncate(size)
        target = int(clusters * fill)
        written = 0
        while written < target:
            run = min(rng.randint(1, 64), target - written)
            start = rng.randrange(0, clusters - run)
            f.seek(start * CLUSTER)
            f.write(rng.randbytes(run * CLUSTER))
            written += run
        for _ in range(max(1, clusters // 200)):  # written zeros: data that is all zero
            start = rng.randrange(0, clusters)
            f.seek(start * CLUSTER)
            f.write(bytes(CLUSTER))


def mutate(path, change, seed):
    rng = random.Random(seed)
    size = os.path.getsize(path)
    clusters = size // CLUSTER
    n = max(4, int(clusters * change))
    picks = rng.sample(range(clusters), n)
    quarter = n // 4
    with open(path, "r+b") as f:
        for i, c in enumerate(picks):
            f.seek(c * CLUSTER)
            if i < 2 * quarter:  # overwritten or newly written
                f.write(rng.randbytes(CLUSTER))
            elif i < 3 * quarter:  # zeroed
                f.write(bytes(CLUSTER))
            else:  # one 4 KiB block changed inside a cluster
                f.seek(c * CLUSTER + rng.randrange(0, 16) * 4096)
                f.write(rng.randbytes(4096))
    for c in rng.sample(range(clusters), max(1, n // 8)):  # discarded
        subprocess.run(["fallocate", "--punch-hole", "--offset", str(c * CLUSTER), "--length", str(CLUSTER), path], check=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("path")
    c.add_argument("size_mib", type=int)
    c.add_argument("--fill", type=float, default=0.10)
    c.add_argument("--seed", type=int, default=1)
    m = sub.add_parser("mutate")
    m.add_argument("path")
    m.add_argument("--change", type=float, default=0.02)
    m.add_argument("--seed", type=int, default=2)
    a = p.parse_args()
    if a.cmd == "create":
        create(a.path, a.size_mib, a.fill, a.seed)
    else:
        mutate(a.path, a.change, a.seed)


if __name__ == "__main__":
    main()
