"""Decode speed of /proc/pid/pagemap bodies: construct definition vs numpy fast path.

    python benchmarks/bench_decode.py [--entries N] [--construct-entries M] [--arch A ...]

Builds N random pagemap entries (present pages, swap entries, holes; 8 bytes
each) in the arch's byte order, then decodes them field by field:

* construct: ``sim.formats.parse_pagemap_entries`` (the definition), timed on
  the first M entries only, as it is slow; the time for N is extrapolated
  linearly (the decoder is a loop over independent entries);
* fast path: ``sim.bulk.bulk_decode_pagemap`` (validation included) on all N,
  best of a few runs.

Prints MB/s of each and their ratio, for each arch asked for (default: one
little-endian and one big-endian arch), by wall-clock time and by the
process's CPU time (the two differ when other work shares the CPUs).  Not a
test: no assertion on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.arch import ARCH_NAMES, Arch, get_arch
from sim.bulk import bulk_build_u64s, bulk_decode_pagemap
from sim.flags import PM
from sim.formats import parse_pagemap_entries

MB = 1e6


def random_pagemap(arch: Arch, entries: int, seed: int) -> bytes:
    """Entries a kernel could write: 60% present, 10% swapped, 30% holes."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=entries, p=[0.6, 0.1, 0.3])
    raw = np.zeros(entries, dtype=np.uint64)
    one = np.uint64(1)
    present, swapped = kind == 0, kind == 1
    raw[present] = rng.integers(0, 1 << 36, size=int(present.sum()), dtype=np.uint64)
    raw[present] |= one << np.uint64(PM.PRESENT)
    raw[swapped] = rng.integers(0, 1 << 40, size=int(swapped.sum()), dtype=np.uint64)
    raw[swapped] |= one << np.uint64(PM.SWAP)
    for bit in (PM.FILE, PM.MMAP_EXCLUSIVE, PM.SOFT_DIRTY, PM.UFFD_WP):
        raw[rng.random(entries) < 0.3] |= one << np.uint64(bit)
    return bulk_build_u64s(arch, raw)


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds, best run
    cpu: float  # seconds of this process's CPU time, best run (immune to a busy machine)


def best_time(run: Callable[[], object], repeat: int) -> Timing:
    wall = cpu = float("inf")
    for _ in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    return Timing(wall, cpu)


def bench(arch: Arch, entries: int, construct_entries: int, repeat: int) -> None:
    data = random_pagemap(arch, entries, seed=2007)
    head = data[: 8 * min(construct_entries, entries)]
    # The two must agree before their speeds mean anything.
    sample = data[: 8 * 2000]
    assert bulk_decode_pagemap(arch, sample).entries() == parse_pagemap_entries(arch, sample)

    slow = best_time(lambda: parse_pagemap_entries(arch, head), 1)
    fast = best_time(lambda: bulk_decode_pagemap(arch, data), repeat)
    order = "little-endian" if arch.little_endian else "big-endian"
    print(f"{arch.name} ({order}), {entries:,} entries = {len(data) / MB:.0f} MB")
    print(f"  {'':10} {'MB/s wall':>12} {'MB/s CPU':>12}")
    print(
        f"  {'construct':10} {len(head) / slow.wall / MB:12.3f} {len(head) / slow.cpu / MB:12.3f}"
        f"   {len(head) // 8:,} entries in {slow.wall:.1f} s; {entries:,} would take "
        f"{slow.wall * len(data) / len(head):,.0f} s"
    )
    print(
        f"  {'fast path':10} {len(data) / fast.wall / MB:12.1f} {len(data) / fast.cpu / MB:12.1f}"
        f"   {entries:,} entries in {fast.wall:.3f} s (best of {repeat})"
    )
    print(
        f"  {'ratio':10} {slow.wall / len(head) * len(data) / fast.wall:12.0f}"
        f" {slow.cpu / len(head) * len(data) / fast.cpu:12.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000_000, help="default 10M (80 MB)")
    parser.add_argument(
        "--construct-entries", type=int, default=200_000, help="construct's slice, default 200k"
    )
    parser.add_argument(
        "--arch", action="append", choices=ARCH_NAMES, help="repeatable; default x86_64, ppc64"
    )
    parser.add_argument("--repeat", type=int, default=3, help="fast-path runs, best kept")
    args = parser.parse_args()
    for name in args.arch or ["x86_64", "ppc64"]:
        bench(get_arch(name), args.entries, args.construct_entries, args.repeat)


if __name__ == "__main__":
    main()
