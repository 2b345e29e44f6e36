"""How fast the model answers proc-file reads over a large populated address space.

    python benchmarks/bench_model.py [--pages N] [--arch A ...] [--chunk BYTES]

For each arch (default x86_64 and ppc64-4k), a machine with enough RAM maps N
anonymous pages (default 1M) and populates them two ways:

* ``4K``: every page write-faulted (do_anonymous_page()): N PTEs;
* ``THP``: a VM_HUGEPAGE mapping written once per huge page (PMD leaves).

Then it times, best of a few runs, by wall clock and by process CPU time:

* one pagemap read of the whole range as root (PFNs shown), and the same
  range read in ``--chunk``-byte reads (default 64 KiB, as a tool would);
* a kpageflags read of every PFN.

Prints entries per second.  Setup (populating) is timed and reported too.
Not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.arch import ARCH_NAMES, Arch, get_arch
from sim.mm import Machine, Process
from sim.procfs import open_proc, read


def timed(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of ``runs`` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def populate(arch: Arch, pages: int, huge: bool) -> tuple[Machine, Process, int, float]:
    page = arch.page_size
    ram = pages * page + (pages * page) // 8 + (64 << 20)
    machine = Machine(arch, ram_bytes=ram)
    process = machine.spawn("bench")
    span = 1 << arch.level_shifts[-2]
    base = (arch.task_size // 4) // span * span
    started = time.perf_counter()
    process.mmap(base, pages)
    if huge:
        process.madvise(base, pages, "hugepage")
        step = arch.thp_pages
        for first in range(0, pages, step):
            process.touch(base + first * page, 1, write=True)
    else:
        process.touch(base, pages, write=True)
    return machine, process, base, time.perf_counter() - started


def report(label: str, entries: int, wall: float, cpu: float) -> None:
    print(f"  {label:<34} {entries / wall / 1e6:7.2f} M entries/s wall"
          f"  {entries / max(cpu, 1e-9) / 1e6:7.2f} M entries/s cpu  ({wall * 1e3:8.1f} ms)")


def bench_reads(machine: Machine, process: Process, base: int, pages: int, chunk: int,
                runs: int) -> None:
    arch = machine.arch
    path = f"/proc/{process.pid}/pagemap"
    offset = (base >> arch.page_shift) * 8
    size = pages * 8

    def whole() -> None:
        assert len(read(machine, path, offset, size)) == size

    def chunked() -> None:
        f = open_proc(machine, path)
        f.lseek(offset)
        left = size
        while left:
            left -= len(f.read(min(chunk, left)))

    frames = machine.max_dump_pfn

    def kpageflags() -> None:
        assert len(read(machine, "/proc/kpageflags", 0, frames * 8)) == frames * 8

    report("pagemap, one read", pages, *timed(whole, runs))
    report(f"pagemap, {chunk}-byte reads", pages, *timed(chunked, runs))
    report("kpageflags, every PFN", frames, *timed(kpageflags, runs))


def bench_arch(arch: Arch, pages: int, chunk: int, runs: int) -> None:
    for huge in (False, True):
        if huge and arch.thp_level is None:
            continue
        machine, process, base, setup = populate(arch, pages, huge)
        kind = "THP" if huge else "4K"
        print(f"{arch.name} {kind}: {pages} pages populated in {setup:.1f} s")
        bench_reads(machine, process, base, pages, chunk, runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1 << 20)
    parser.add_argument("--arch", action="append", choices=ARCH_NAMES)
    parser.add_argument("--chunk", type=int, default=64 << 10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.pages <= 0 or args.chunk <= 0 or args.chunk % 8:
        parser.error("--pages must be positive and --chunk a positive multiple of 8")
    for name in args.arch or ["x86_64", "ppc64-4k"]:
        bench_arch(get_arch(name), args.pages, args.chunk, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
