"""Fuzz throughput per worker: the unit is a 20-step scenario with 3 checks.

    python benchmarks/bench_fuzz.py [--arch A ...] [--examples N] [--seed S] [--no-coverage]

For each arch (default x86_64) boots one warm fuzz VM (as ``harness fuzz``
does: :class:`harness.fuzz.engine.WarmVM`, khugepaged warm-up included),
draws N unit scenarios from the fuzz generator (20 steps, checks at steps
6, 13 and 19, every other step any op valid there) and runs each as
``harness fuzz`` does, timing the slices by wall clock:

* **model**: :func:`harness.model_executor.run_model`;
* **guest ops**: the guest executor's non-check steps, process spawn and
  the final kill of the run's processes;
* **reads**: the guest's checks (settle, every proc-file read through the
  agent, the RAM tags);
* **compare**: :func:`harness.compare.compare`;
* **reset**: :meth:`WarmVM.reset` between examples.

Prints examples/s and checks/s per worker (one worker = one VM, one
process), the slices' shares, and the agent requests per check.  Target:
>= 10 unit examples/s per worker warm on x86_64.  Not a test: nothing is
asserted about time; divergences are counted.

Coverage overhead: each unit is run twice, once plain and once with the
model's code traced as ``harness fuzz`` traces it
(:class:`harness.fuzz.reach.ModelCoverage`, coverage.py around the whole
example), alternating which goes first so that a shared machine's load
falls on both alike; both passes are reported and the difference in wall
time per example and in the model slice is the overhead.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, seed, settings

from harness.arches import PROFILE_NAMES, get_profile
from harness.compare import compare
from harness.fuzz.engine import WarmVM
from harness.fuzz.generate import scenario_from_data, scenarios
from harness.fuzz.reach import CoverageReport, ModelCoverage
from harness.guest_executor import GuestRun
from harness.image import find_image
from harness.model_executor import run_model
from harness.observations import StepOutcome
from harness.scenario import AnyStep, Check
from harness.vm import VMConfig
from sim.mm.facts import PINNED

UNIT_STEPS = 20
UNIT_CHECKS = (6, 13, 19)


@dataclass
class Slices:
    model: float = 0.0
    guest_ops: float = 0.0
    reads: float = 0.0
    compare: float = 0.0
    reset: float = 0.0
    examples: int = 0
    checks: int = 0
    requests: int = 0
    divergent: int = 0
    wall: float = 0.0
    #: CPU seconds (not inflated by the machine's other jobs): QEMU's, this process's.
    qemu_cpu: float = 0.0
    host_cpu: float = 0.0
    by_op: dict[str, float] = field(default_factory=dict)


class TimedGuestRun(GuestRun):
    """The guest executor with its check steps timed apart from the other steps."""

    slices: Slices

    def step(self, step: AnyStep) -> StepOutcome:
        started = time.perf_counter()
        try:
            return super().step(step)
        finally:
            took = time.perf_counter() - started
            if isinstance(step, Check):
                self.slices.reads += took
            self.slices.by_op[step.op] = self.slices.by_op.get(step.op, 0.0) + took


def unit_scenarios(arch_name: str, count: int, seed_value: int) -> list[dict[str, Any]]:
    """``count`` unit scenarios from the fuzz generator, reproducibly."""
    arch = get_profile(arch_name).arch
    drawn: list[dict[str, Any]] = []

    @seed(seed_value)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(scenarios(arch, UNIT_STEPS, name="unit", check_positions=UNIT_CHECKS))
    def collect(data: dict[str, Any]) -> None:
        drawn.append(data)

    collect()
    return drawn


def _one(data: dict[str, Any], profile: Any, warm: WarmVM, slices: Slices) -> None:
    """One unit example, its slices added to ``slices`` (wall time included)."""
    vm = warm.get()
    scenario = scenario_from_data(data, profile.arch)
    qemu0, host0 = vm.cpu_seconds(), time.process_time()
    t0 = time.perf_counter()
    model = run_model(scenario, profile.arch, facts=vm.facts or PINNED)
    t1 = time.perf_counter()
    run = TimedGuestRun(scenario, vm)
    run.slices = slices
    reads_before = slices.reads
    real = run.run()
    t2 = time.perf_counter()
    found = compare(model, real, scenario, profile.arch)
    t3 = time.perf_counter()
    warm.reset()
    t4 = time.perf_counter()
    slices.qemu_cpu += vm.cpu_seconds() - qemu0
    slices.host_cpu += time.process_time() - host0
    slices.model += t1 - t0
    # Guest ops: the whole guest run (spawn and kill included) but its checks.
    slices.guest_ops += (t2 - t1) - (slices.reads - reads_before)
    slices.compare += t3 - t2
    slices.reset += t4 - t3
    slices.examples += 1
    slices.checks += len(scenario.checks)
    slices.requests += run.reads
    slices.divergent += bool(found)
    slices.wall += t4 - t0


def bench(arch_name: str, count: int, seed_value: int,
          coverage: bool = True) -> tuple[Slices, Slices | None, CoverageReport | None]:
    """(plain slices, traced slices or None, what the traced pass reached or None)."""
    profile = get_profile(arch_name)
    config = VMConfig(profile, find_image(profile, None, None), echo=lambda _: None)
    units = unit_scenarios(arch_name, count, seed_value)
    warm = WarmVM(config, "bench")
    plain = Slices()
    traced = Slices() if coverage else None
    model_coverage = ModelCoverage() if coverage else None
    try:
        vm = warm.get()
        for data in units[:3]:  # warm the caches (page cache, agent, model imports)
            GuestRun(scenario_from_data(data, profile.arch), vm).run()
            warm.reset()
        for i, data in enumerate(units):
            if traced is None or model_coverage is None:
                _one(data, profile, warm, plain)
                continue
            first_traced = bool(i % 2)
            for with_trace in (first_traced, not first_traced):
                if with_trace:
                    with model_coverage.recording():
                        _one(data, profile, warm, traced)
                else:
                    _one(data, profile, warm, plain)
    finally:
        warm.close()
    reached = None
    if model_coverage is not None:
        reached = CoverageReport(reached=model_coverage.reached(), rules=model_coverage.rules)
        for data in units:
            reached.count([step["op"] for step in data["steps"]])
    return plain, traced, reached


def report(arch_name: str, s: Slices, label: str = "") -> None:
    total = s.model + s.guest_ops + s.reads + s.compare + s.reset
    print(f"{arch_name}{label}: {s.examples} unit examples ({UNIT_STEPS} steps, {len(UNIT_CHECKS)} "
          f"checks) in {s.wall:.2f} s: {s.examples / s.wall:.1f} examples/s, "
          f"{s.checks / s.wall:.1f} checks/s per worker; {s.divergent} divergent")
    for name, value in [("model", s.model), ("guest ops", s.guest_ops), ("reads", s.reads),
                        ("compare", s.compare), ("reset", s.reset)]:
        print(f"  {name:10} {1000 * value / s.examples:7.2f} ms/example  "
              f"{100 * value / total:5.1f} %")
    cpu = (s.qemu_cpu + s.host_cpu) / s.examples
    print(f"  CPU per example: QEMU {1000 * s.qemu_cpu / s.examples:.2f} ms + this process "
          f"{1000 * s.host_cpu / s.examples:.2f} ms = {1000 * cpu:.2f} ms (the two mostly take "
          f"turns: on idle cores about {1 / cpu:.1f} examples/s)")
    print(f"  READ_FILES requests per check: {s.requests / max(s.checks, 1):.1f}")
    ops = sorted(s.by_op.items(), key=lambda kv: -kv[1])
    print("  guest time by op (ms/example): "
          + ", ".join(f"{op} {1000 * t / s.examples:.2f}" for op, t in ops))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=PROFILE_NAMES)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-coverage", action="store_true",
                        help="run each unit once, untraced (no coverage overhead measured)")
    args = parser.parse_args()
    for arch_name in args.arch or ["x86_64"]:
        plain, traced, reached = bench(arch_name, args.examples, args.seed,
                                       coverage=not args.no_coverage)
        report(arch_name, plain, " (model not traced)" if traced else "")
        if traced is None or reached is None:
            continue
        report(arch_name, traced, " (model traced for coverage)")
        per_plain, per_traced = plain.wall / plain.examples, traced.wall / traced.examples
        print(f"  coverage overhead: {1000 * (per_traced - per_plain):+.2f} ms/example "
              f"({100 * (per_traced / per_plain - 1):+.1f} % wall), model slice "
              f"{1000 * plain.model / plain.examples:.2f} -> "
              f"{1000 * traced.model / traced.examples:.2f} ms/example")
        for line in reached.text_lines():
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
