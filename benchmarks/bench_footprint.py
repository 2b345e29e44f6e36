"""footprint on a frozen process group: speed against smaps_rollup, numbers against peers.

    python benchmarks/bench_footprint.py [--mib 1024] [--runs 5] [--peers-python PY]

Starts the static group of sim/tests/data/footprint_group.c with MIB of
private anonymous memory written in the parent (inherited by the three
members and the outsider; member 0 writes half of it, so that half is copied),
freezes all five processes (SIGSTOP) and, in one run:

1. times ``scan()`` of the members (pagemap + kpageflags + kpagecount) and
   the reading of the members' smaps_rollup, best of RUNS, wall and CPU
   time: pagemap entries per second, ns per entry, and the ratio;
2. reads the same frozen members with smem (Debian package), ps_mem and
   psutil's ``memory_full_info()`` (PyPI; run with PEERS_PYTHON, an
   interpreter where both are installed, e.g. a throwaway venv: they are
   not project dependencies) and prints, per process, RSS / PSS / USS of
   each next to ours and smaps_rollup's, in kB, with each tool's time.

Needs root (PFNs) and gcc.  Prints markdown tables; asserts nothing on time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.footprint.live import LiveProc, freeze
from sim.footprint.scan import PSS_SHIFT, Footprint, scan
from sim.tests import footprint_group

KB = 1024

_PEERS = r"""
import json, sys, time
pids = [int(p) for p in sys.argv[1:]]
out = {}
import psutil
t = time.perf_counter()
out["psutil"] = {}
for pid in pids:
    m = psutil.Process(pid).memory_full_info()
    out["psutil"][pid] = {"rss": m.rss, "pss": m.pss, "uss": m.uss, "swap": m.swap}
out["psutil_seconds"] = time.perf_counter() - t
import ps_mem
t = time.perf_counter()
by_pid = ps_mem.get_memory_usage(pids, False, True)
out["ps_mem_seconds"] = time.perf_counter() - t
out["ps_mem"] = {}
for cmd, ram_kb in by_pid[0]:
    pid = int(cmd.rsplit("[", 1)[1].rstrip("]"))
    out["ps_mem"][pid] = {"ram_kb": ram_kb, "shared_kb": by_pid[1][cmd]}
by_program = ps_mem.get_memory_usage(pids, False, False)
out["ps_mem_total_kb"] = by_program[3]
print(json.dumps(out))
"""


def best(runs: int, work: Callable[[], Any]) -> tuple[float, float, Any]:
    """(best wall seconds, best CPU seconds, last result) of ``runs`` calls."""
    walls, cpus, result = [], [], None
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        result = work()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus), result


def smem_rows(binary: Path, pids: list[int]) -> tuple[float, dict[int, dict[str, int]]]:
    smem = shutil.which("smem")
    if smem is None:
        return 0.0, {}
    start = time.perf_counter()
    done = subprocess.run(
        [smem, "-H", "-c", "pid uss pss rss", "-P", binary.name],
        capture_output=True, text=True, check=True,
    )
    seconds = time.perf_counter() - start
    rows = {}
    for line in done.stdout.splitlines():
        pid, uss, pss, rss = (int(x) for x in line.split())
        if pid in pids:
            rows[pid] = {"uss": uss, "pss": pss, "rss": rss}
    return seconds, rows


def peers(python: str | None, pids: list[int]) -> dict[str, Any]:
    if python is None:
        return {}
    done = subprocess.run(
        [python, "-c", _PEERS, *map(str, pids)], capture_output=True, text=True, check=True
    )
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peers-python", default=None,
                        help="python with ps_mem and psutil installed (omit: skip them)")
    args = parser.parse_args()
    page = os.sysconf("SC_PAGE_SIZE")
    source = LiveProc()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        binary = footprint_group.build(directory)
        with footprint_group.running(binary, directory, args.mib * (1 << 20) // page) as group:
            with freeze(group.all):
                members = [source.process(pid) for pid in group.members]
                check = {pid: source.smaps_rollup(pid) for pid in group.members}
                ours_wall, ours_cpu, result = best(
                    args.runs, lambda: scan(source, {"members": members})
                )
                roll_wall, roll_cpu, rollups = best(
                    args.runs, lambda: {pid: source.smaps_rollup(pid) for pid in group.members}
                )
                smem_seconds, smem = smem_rows(binary, group.members)
                other = peers(args.peers_python, group.members)
    report(result, rollups, check, smem, smem_seconds, other,
           (ours_wall, ours_cpu, roll_wall, roll_cpu), args)


def report(
    result: Footprint,
    rollups: dict[int, dict[str, int]],
    check: dict[int, dict[str, int]],
    smem: dict[int, dict[str, int]],
    smem_seconds: float,
    other: dict[str, Any],
    times: tuple[float, float, float, float],
    args: argparse.Namespace,
) -> None:
    ours_wall, ours_cpu, roll_wall, roll_cpu = times
    entries = result.stats.pagemap_entries
    group = result.groups[0]
    print(f"## footprint of {len(group.members)} frozen processes, {args.mib} MiB private "
          f"anonymous each (+ file, shmem, THP), best of {args.runs}\n")
    print(f"pagemap entries read: {entries:,} ({entries * result.page_size >> 20} MiB mapped), "
          f"PFNs looked up: {result.stats.pfns:,} in {result.stats.pfn_runs:,} runs "
          f"({result.stats.pfn_entries_read:,} entries read)\n")
    moved = {
        pid: {key: (check[pid][key], value) for key, value in rollup.items()
              if check[pid].get(key) != value}
        for pid, rollup in rollups.items()
    }
    moved = {pid: fields for pid, fields in moved.items() if fields}
    print(f"smaps_rollup fields that moved between before and after our scans: {moved or 'none'}"
          " (the frozen group's pages are shared with no running process but the vdso)\n")
    print("| reader | wall s | CPU s | entries/s (wall) | ns/entry (CPU) |")
    print("|---|---|---|---|---|")
    for name, wall, cpu in (("footprint scan()", ours_wall, ours_cpu),
                            ("smaps_rollup x4", roll_wall, roll_cpu)):
        print(f"| {name} | {wall:.4f} | {cpu:.4f} | {entries / wall:,.0f} | "
              f"{cpu / entries * 1e9:.1f} |")
    print(f"\nfootprint / smaps_rollup time: {ours_wall / roll_wall:.2f}x wall, "
          f"{ours_cpu / roll_cpu:.2f}x CPU\n")
    print("## the same frozen members, kB (PSS: ours exact to 1/1024 kB)\n")
    print("| pid | smaps_rollup Rss / Pss / Private | footprint RSS / PSS / USS | "
          "smem RSS / PSS / USS | psutil rss / pss / uss | ps_mem -d RAM |")
    print("|---|---|---|---|---|---|")
    psutil_rows = other.get("psutil", {})
    ps_mem_rows = other.get("ps_mem", {})
    for pf in group.members:
        r = rollups[pf.pid]
        s = smem.get(pf.pid, {})
        p = psutil_rows.get(str(pf.pid), {})
        m = ps_mem_rows.get(str(pf.pid), {})
        pss = pf.pss_fixed / (1 << PSS_SHIFT) / KB
        print(
            f"| {pf.pid} | {r['Rss']} / {r['Pss']} / {r['Private_Clean'] + r['Private_Dirty']} "
            f"| {pf.rss // KB} / {pss:.3f} / {pf.uss // KB} "
            f"| {s.get('rss', '-')} / {s.get('pss', '-')} / {s.get('uss', '-')} "
            f"| {_kb(p.get('rss'))} / {_kb(p.get('pss'))} / {_kb(p.get('uss'))} "
            f"| {m.get('ram_kb', '-')} |"
        )
    total_pss = group.pss_fixed / (1 << PSS_SHIFT) / KB
    print(
        f"| group | Pss sum {sum(r['Pss'] for r in rollups.values())} "
        f"| union RSS {group.rss and group.rss // KB}, PSS {total_pss:.3f}, "
        f"exclusive {group.exclusive and group.exclusive // KB} "
        f"| PSS sum {sum(s['pss'] for s in smem.values()) if smem else '-'} "
        f"| PSS sum {sum(_kb_int(p['pss']) for p in psutil_rows.values()) if psutil_rows else '-'} "
        f"| total {other.get('ps_mem_total_kb', '-')} |"
    )
    print(f"\ntimes: footprint {ours_wall:.3f} s (in process), smaps_rollup {roll_wall:.3f} s, "
          f"smem {smem_seconds:.3f} s (whole command), psutil "
          f"{other.get('psutil_seconds', 0):.3f} s, ps_mem {other.get('ps_mem_seconds', 0):.3f} s "
          "(their calls, in process)")


def _kb(value: int | None) -> str:
    if value is None:
        return "-"
    return str(value // KB) if value % KB == 0 else f"{value / KB:.3f}"


def _kb_int(value: int) -> int:
    return value // KB


if __name__ == "__main__":
    main()
