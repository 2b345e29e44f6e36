"""How fast the scenario catalog runs in a guest and in the model, compared.

    python benchmarks/bench_checks.py [--arch A ...] [--runs N] [--as-of REV | SCENARIO.json ...]

For each arch (default x86_64), boots one VM and reports:

* boot to agent-ready (``VM.boot_seconds``: QEMU start to the agent's HELLO);
* the catalog (default tests/scenarios/*.json) run once cold, then ``--runs``
  times warm (best run kept), split into guest execution, model execution
  and comparison, by wall clock;
* compared checks per second (check steps of the scenarios that apply to the
  arch, divided by the warm wall time of guest + model + compare), pages and
  frames compared per second, and the agent's READ_FILE requests per check.

Not a test: nothing is asserted about time; divergences are counted, not judged.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.arches import PROFILE_NAMES, get_profile
from harness.compare import compare
from harness.guest_executor import GuestExecutorError, GuestRun, prepare_guest
from harness.image import find_image
from harness.model_executor import run_model
from harness.run import run_scenario
from harness.scenario import Scenario, load_scenario
from harness.vm import VM, VMConfig

CATALOG = Path(__file__).resolve().parents[1] / "tests" / "scenarios"


@dataclass
class Pass:
    guest: float = 0.0
    model: float = 0.0
    compare: float = 0.0
    checks: int = 0
    pages: int = 0
    frames: int = 0
    reads: int = 0
    divergences: int = 0
    #: CPU seconds, which other jobs on the machine do not inflate: QEMU's
    #: (all its threads: the vCPU, I/O) and this process's (the guest side's
    #: Python, the model, compare).
    qemu_cpu: float = 0.0
    host_cpu: float = 0.0

    @property
    def total(self) -> float:
        return self.guest + self.model + self.compare


def one_pass(scenarios: list[Scenario], vm: VM) -> Pass:
    arch = vm.profile.arch
    result = Pass()
    qemu_before, host_before = vm.cpu_seconds(), time.process_time()
    for scenario in list(scenarios):
        started = time.perf_counter()
        run = GuestRun(scenario, vm)
        try:
            real = run.run()
        except GuestExecutorError as e:
            print(f"  (left out {scenario.name}: {e})")
            scenarios.remove(scenario)
            continue
        result.guest += time.perf_counter() - started
        started = time.perf_counter()
        model = run_model(scenario, arch)
        result.model += time.perf_counter() - started
        started = time.perf_counter()
        result.divergences += len(compare(model, real, scenario, arch))
        result.compare += time.perf_counter() - started
        result.checks += len(real.checks)
        result.reads += run.reads
        for check in real.checks:
            result.pages += sum(r.pages for r in check.regions)
            result.frames += len(check.frames)
    result.qemu_cpu = vm.cpu_seconds() - qemu_before
    result.host_cpu = time.process_time() - host_before
    return result


def run_pass(scenarios: list[Scenario], vm: VM) -> tuple[float, int]:
    """The catalog as ``harness run`` runs it (:func:`harness.run.run_scenario`: model,
    guest, compare, result): (wall seconds, divergences and errors)."""
    started = time.perf_counter()
    divergences = 0
    for scenario in scenarios:
        outcome = run_scenario(scenario, vm)
        divergences += len(outcome.result.divergences) + (outcome.result.status == "error")
    return time.perf_counter() - started, divergences


def bench_arch(name: str, scenarios: list[Scenario], runs: int) -> None:
    profile = get_profile(name)
    arch = profile.arch
    applicable = [s for s in scenarios if s.unsupported_reason(arch) is None]
    config = VMConfig(profile, find_image(profile), echo=lambda line: None)
    print(f"{name}: {len(applicable)} of {len(scenarios)} scenarios apply")
    with VM(config, name="bench") as vm:
        print(f"  boot to agent ready            {vm.boot_seconds or 0:8.2f} s")
        started = time.perf_counter()
        prepare_guest(vm)
        print(f"  guest set-up (sysfs)           {time.perf_counter() - started:8.3f} s")
        runnable = list(applicable)
        cold = one_pass(runnable, vm)  # leaves out what the guest cannot run (yet)
        split = min((one_pass(runnable, vm) for _ in range(runs)), key=lambda p: p.total)
        wall, divergences = min(run_pass(runnable, vm) for _ in range(runs))
    print(f"  catalog cold, one after other  {cold.total:8.3f} s")
    print(f"  one after other (best of {runs})    {split.total:8.3f} s  "
          f"(guest {split.guest:.3f}, model {split.model:.3f}, compare {split.compare:.3f})")
    print(f"  CPU of that pass               {split.qemu_cpu + split.host_cpu:8.3f} s  "
          f"(QEMU {split.qemu_cpu:.3f}, this process {split.host_cpu:.3f}: the machine's "
          "load does not inflate these)")
    print(f"  catalog warm, as harness run   {wall:8.3f} s  (best of {runs}; "
          f"{divergences} divergences)")
    print(f"  compared checks per second     {split.checks / wall:8.1f}   "
          f"({split.checks} checks)")
    print(f"  pages / frames compared per s  {split.pages / wall:8.0f} / "
          f"{split.frames / wall:.0f}")
    print(f"  READ_FILES requests per check  {split.reads / max(split.checks, 1):8.1f}   "
          f"(guest {split.guest / max(split.checks, 1) * 1e3:.2f} ms per check, all ops "
          "included)")


def catalog_as_of(rev: str) -> list[Path]:
    """The catalog files (today's versions) that ``git ls-tree REV`` lists; SystemExit
    with git's one-line complaint when REV is unknown, or a file is gone since."""
    repo = CATALOG.parents[1]
    try:
        listed = subprocess.run(
            ["git", "-C", str(repo), "ls-tree", "--name-only", rev, "tests/scenarios/"],
            check=True, capture_output=True, text=True,
        ).stdout.split()
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"--as-of {rev}: {e.stderr.strip() or 'git ls-tree failed'}") from None
    paths = [repo / name for name in listed if name.endswith(".json")]
    gone = [p.name for p in paths if not p.exists()]
    if gone:
        raise SystemExit(f"--as-of {rev}: no longer in the catalog: {', '.join(gone)}")
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", type=Path)
    parser.add_argument("--arch", action="append", choices=PROFILE_NAMES)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--as-of", metavar="REV",
        help="the catalog files that existed at git revision REV (as they are now), e.g. "
        "4f3be88: the 23 scenarios before issue 9 widened the language",
    )
    args = parser.parse_args()
    if args.as_of and args.scenarios:
        parser.error("give scenario files or --as-of, not both")
    paths = args.scenarios or (
        catalog_as_of(args.as_of) if args.as_of else sorted(CATALOG.glob("*.json"))
    )
    scenarios = [load_scenario(p) for p in paths]
    for arch_name in args.arch or ["x86_64"]:
        bench_arch(arch_name, scenarios, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
