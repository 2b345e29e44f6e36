"""Boot-to-agent-ready time per architecture and agent round trips, in one run.

    python benchmarks/bench_boot.py [--arch A ...] [--boots N] [--pings N]

For each architecture (default: every one whose boot image is built or
given in the environment: nothing is built here),
boots N guests one after the other (default 3) and reports, median over the
boots, the seconds from launch() to: QEMU started, QMP ready, agent ready
(HELLO received), and the power-off time.  On the last guest it also times
agent round trips (PING, median and 90th percentile), a 1 MiB ECHO both
ways, and reading the whole of /proc/kpageflags.  Ratios between the
architectures come from the same run, on the same loaded or idle machine.
Not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.arches import PROFILE_NAMES, get_profile
from harness.image import ImageUnavailable, find_image
from harness.probes import file_size
from harness.vm import VM, VMConfig


@dataclass
class ArchFigures:
    arch: str
    steps: dict[str, list[float]] = field(default_factory=dict)
    poweroff: list[float] = field(default_factory=list)
    ping_ms: list[float] = field(default_factory=list)
    echo_mib_s: float = 0.0
    kpageflags_bytes: int = 0
    kpageflags_s: float = 0.0


def _quiet(line: str) -> None:
    pass


def measure(arch: str, boots: int, pings: int) -> ArchFigures:
    profile = get_profile(arch)
    config = VMConfig(profile, find_image(profile, build=False), echo=_quiet)
    figures = ArchFigures(arch)
    for boot in range(boots):
        vm = VM(config, name=f"bench{boot}").launch()
        try:
            for step, seconds in vm.launch_timings.items():
                figures.steps.setdefault(step, []).append(seconds)
            if boot == boots - 1:
                measure_agent(vm, figures, pings)
        finally:
            started = time.monotonic()
            how = vm.shutdown()
            figures.poweroff.append(time.monotonic() - started)
        if how != "poweroff":
            print(f"warning: {arch} boot {boot} ended by {how}", file=sys.stderr)
        print(f"{arch}: boot {boot + 1}/{boots} done", file=sys.stderr)
    return figures


def measure_agent(vm: VM, figures: ArchFigures, pings: int) -> None:
    agent = vm.agent
    for _ in range(pings):
        started = time.perf_counter()
        agent.ping()
        figures.ping_ms.append((time.perf_counter() - started) * 1000)
    payload = bytes(range(256)) * 4096
    started = time.perf_counter()
    agent.echo(payload)
    figures.echo_mib_s = 2 * len(payload) / (1 << 20) / (time.perf_counter() - started)
    started = time.perf_counter()
    figures.kpageflags_bytes = file_size(agent, "/proc/kpageflags")
    figures.kpageflags_s = time.perf_counter() - started


def report(all_figures: list[ArchFigures]) -> str:
    lines = [
        f"{'arch':<10} {'qemu':>7} {'qmp':>7} {'ready':>7} {'poweroff':>9} "
        f"{'ping ms':>8} {'p90':>6} {'echo MiB/s':>11} {'kpageflags':>18}"
    ]
    for f in all_figures:
        step = {name: statistics.median(values) for name, values in f.steps.items()}
        ping = sorted(f.ping_ms)
        p90 = ping[int(0.9 * (len(ping) - 1))] if ping else 0.0
        kpf = f"{f.kpageflags_bytes >> 10} KiB {f.kpageflags_s:.2f}s"
        lines.append(
            f"{f.arch:<10} {step.get('qemu-started', 0):>6.2f}s {step.get('qmp-ready', 0):>6.2f}s "
            f"{step.get('agent-ready', 0):>6.2f}s {statistics.median(f.poweroff):>8.2f}s "
            f"{statistics.median(ping) if ping else 0:>8.2f} {p90:>6.2f} "
            f"{f.echo_mib_s:>11.1f} {kpf:>18}"
        )
    ready = {f.arch: statistics.median(f.steps["agent-ready"]) for f in all_figures}
    if "x86_64" in ready:
        for arch, seconds in ready.items():
            if arch != "x86_64":
                lines.append(f"boot-to-ready {arch} / x86_64: {seconds / ready['x86_64']:.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=PROFILE_NAMES)
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--pings", type=int, default=200)
    args = parser.parse_args()
    arches = args.arch or list(PROFILE_NAMES)
    results = []
    for arch in arches:
        try:
            find_image(get_profile(arch), build=False)
        except ImageUnavailable as e:
            print(f"{arch}: skipped ({e})", file=sys.stderr)
            continue
        results.append(measure(arch, args.boots, args.pings))
    if not results:
        print("no architecture has a boot image", file=sys.stderr)
        return 2
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
