"""How compare() scales with the number of observations.

    python benchmarks/bench_compare.py [--sizes 1024 8192 65536] [--arch A]
        [--diverge-every K] [--old-rev REV] [--old-max N] [--repeat R]

Synthetic observations (harness.tests.synth.bulk_observations): four checks
that each read the same N/4 pages, in regions of 64 pages, every page with
its own anonymous frame, the real side numbering the frames in reverse; an
*observation* is one page at one check (its pagemap entry, RAM tag and frame
reads).  With ``--diverge-every K`` every K-th page differs in one pagemap bit
and one kpageflags bit, so the slow path (decoding, typed differences) runs
too.

For each size it prints the best of ``--repeat`` runs of compare(), the time
per observation, and the ratio of the largest size's time per observation to
the smallest's: linear time gives a ratio near 1.  A control pass that only
reads every frame's and region's bytes once is timed the same way: its ratio
is what the memory hierarchy alone costs (the objects of 65,536 observations
do not fit the CPU caches), so compare()'s ratio is judged against it.

``--old-rev`` (default 9e5be35, the last commit before compare looked
observations up by dict) also times that revision's harness/compare.py,
taken from git history into a temporary module at run time (nothing is
copied into the tree), on sizes up to ``--old-max`` (its frame lookup is
quadratic: 65,536 observations take minutes).  ``--old-rev ''`` skips it.

Not a test: nothing is asserted about time.  It checks that both versions
find the same number of divergences.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.compare import compare  # noqa: E402
from harness.scenario import Scenario, parse_scenario  # noqa: E402
from harness.tests import synth  # noqa: E402
from sim.arch import ARCH_NAMES, Arch, get_arch  # noqa: E402

CHECKS = 4
REGION_PAGES = 64


def old_compare(rev: str) -> tuple[Callable[..., list[Any]] | None, str]:
    """compare() of ``rev``'s harness/compare.py, or None and why not."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:harness/compare.py"],
            check=True, capture_output=True, text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        return None, f"git show {rev}:harness/compare.py failed: {e}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "compare_before.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("compare_before", path)
        assert spec is not None and spec.loader is not None
        module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[spec.name]
            return None, f"{rev}'s compare does not import here: {e}"
    function: Callable[..., list[Any]] = module.compare
    return function, rev


def best_of(repeat: int, run: Callable[[], list[Any]]) -> tuple[float, int]:
    """Best wall time of ``repeat`` runs (seconds) and the divergences found."""
    best, found = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        found = len(run())
        best = min(best, time.perf_counter() - started)
    return best, found


def touch_everything(model: Any, real: Any, scenario: Scenario, arch: Arch) -> list[Any]:
    """A control: one linear pass reading every frame's and region's bytes, nothing else.

    Its time per observation grows with the size too, as the objects outgrow
    the CPU caches; compare()'s growth is to be judged against it.
    """
    total = 0
    for obs in (model, real):
        for check in obs.checks:
            for frame in check.frames:
                total += len(frame.kpagemap.data) + len(frame.kpageflags.data)
                total += len(frame.kpagecount.data)
            for region in check.regions:
                total += len(region.pagemap.data) + len(region.ram_tags)
    return [] if total else [total]


def measure(
    name: str,
    function: Callable[..., list[Any]],
    sizes: list[int],
    arch: Arch,
    scenario: Scenario,
    diverge_every: int,
    repeat: int,
) -> dict[int, tuple[float, int]]:
    results: dict[int, tuple[float, int]] = {}
    for n in sizes:
        model, real = synth.bulk_observations(
            arch, n, checks=CHECKS, region_pages=REGION_PAGES, diverge_every=diverge_every)
        seconds, found = best_of(repeat, functools.partial(function, model, real, scenario, arch))
        results[n] = (seconds, found)
        print(f"  {name:7} {n:6d} observations: {seconds * 1e3:9.1f} ms  "
              f"{seconds / n * 1e6:7.2f} us/observation  ({found} divergences)", flush=True)
    if len(results) > 1:
        small, large = min(results), max(results)
        ratio = (results[large][0] / large) / (results[small][0] / small)
        print(f"  {name:7} per-observation time, {large} vs {small}: x{ratio:.2f} "
              "(linear: ~1)")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192, 65536])
    parser.add_argument("--arch", default="x86_64", choices=ARCH_NAMES)
    parser.add_argument("--diverge-every", type=int, default=0, metavar="K")
    parser.add_argument("--old-rev", default="9e5be35", metavar="REV")
    parser.add_argument("--old-max", type=int, default=8192, metavar="N")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if any(n <= 0 or n % (CHECKS * REGION_PAGES) for n in args.sizes):
        parser.error(f"sizes must be positive multiples of {CHECKS * REGION_PAGES}")
    arch = get_arch(args.arch)
    scenario = parse_scenario(synth.bulk_scenario(CHECKS))
    print(f"compare() on {arch.name}: {CHECKS} checks, regions of {REGION_PAGES} pages, "
          f"diverge every {args.diverge_every or 'no'} page, best of {args.repeat}")
    measure("control", touch_everything, args.sizes, arch, scenario, 0, args.repeat)
    now = measure("now", compare, args.sizes, arch, scenario, args.diverge_every, args.repeat)
    if args.old_rev:
        function, why = old_compare(args.old_rev)
        if function is None:
            print(f"  before: skipped: {why}")
            return 0
        sizes = [n for n in args.sizes if n <= args.old_max]
        before = measure(f"{args.old_rev[:7]}", function, sizes, arch, scenario,
                         args.diverge_every, 1)
        for n, (seconds, found) in before.items():
            if found != now[n][1]:
                print(f"  MISMATCH at {n}: {found} divergences before, {now[n][1]} now")
            print(f"  speed-up at {n:6d}: x{seconds / now[n][0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
