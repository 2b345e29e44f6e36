"""``python -m harness run``: scenarios in a guest and in the model, compared.

    python -m harness run --arch x86_64 tests/scenarios/*.json [--json] [--keep-logs DIR]

Every scenario file is loaded and validated before anything boots (a bad
file: one line, exit status 2).  Then one VM boots and serves every
scenario in turn; each runs in the guest (:mod:`harness.guest_executor`) and
in the model (:mod:`harness.model_executor`), and the two observations are
compared (:func:`harness.compare.compare`).  The report (text, or JSON with
``--json``) goes to stdout, progress to stderr.

Exit status: 0 when every scenario agrees (or is skipped on this
architecture), 1 when some diverge, 2 when something could not run.
With ``--keep-logs DIR`` the logs of a failed VM are kept under DIR, and so
are both sides' observations of every scenario that did not agree
(``NAME.ARCH.model.json`` / ``.real.json``, for ``python -m harness.report``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from harness.arches import PROFILE_NAMES, ArchProfile, UnknownProfileError, get_profile
from harness.compare import compare
from harness.errors import AgentOpError, VMError
from harness.guest_executor import GuestExecutorError, run_guest
from harness.image import BootImage, ImageUnavailable, find_image
from harness.model_executor import ModelError, run_model
from harness.observations import Observations
from harness.report import ScenarioResult, render_json, render_text
from harness.scenario import Scenario, ScenarioError, load_scenario
from harness.vm import VM, VMConfig, VMState

__all__ = ["RunOutcome", "add_arguments", "main", "run_scenario", "run_scenarios"]

EXIT_AGREE = 0
EXIT_DIVERGE = 1
EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``run`` (also for a parent CLI's subparser)."""
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO.json", type=Path)
    parser.add_argument("--arch", default="x86_64", choices=PROFILE_NAMES)
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument(
        "--keep-logs", type=Path, metavar="DIR",
        help="keep a failed VM's logs and the observations of failing scenarios under DIR",
    )
    parser.add_argument("--kernel", type=Path, help="kernel image (default: images build)")
    parser.add_argument("--initramfs", type=Path, help="initramfs with the agent as /init")


@dataclass(frozen=True)
class RunOutcome:
    """One scenario's result and, when both sides ran, their observations."""

    result: ScenarioResult
    model: Observations | None = None
    real: Observations | None = None
    seconds: float = 0.0


def run_scenario(scenario: Scenario, vm: VM) -> RunOutcome:
    """``scenario`` in ``vm`` and in the model, compared; errors become an error result."""
    arch = vm.profile.arch
    started = time.monotonic()
    reason = scenario.unsupported_reason(arch)
    if reason is not None:
        return RunOutcome(ScenarioResult(scenario.name, arch.name, "skipped", message=reason))
    try:
        model = run_model(scenario, arch)
    except ModelError as e:
        return RunOutcome(_error(scenario, arch.name, f"model: {e}"))
    try:
        real = run_guest(scenario, vm)
    except VMError as e:
        return RunOutcome(_error(scenario, arch.name, f"guest: {e.message}"), model)
    except (GuestExecutorError, AgentOpError) as e:
        return RunOutcome(_error(scenario, arch.name, f"guest: {e}"), model)
    divergences = compare(model, real, scenario, arch)
    result = ScenarioResult.from_divergences(scenario.name, arch.name, divergences)
    return RunOutcome(result, model, real, time.monotonic() - started)


def _error(scenario: Scenario, arch: str, message: str) -> ScenarioResult:
    return ScenarioResult(scenario.name, arch, "error", message=" ".join(message.split()))


def run_scenarios(
    scenarios: Sequence[Scenario],
    config: VMConfig,
    progress: Callable[[str], None] = lambda _: None,
) -> list[RunOutcome]:
    """Every scenario in one VM (a new one if a scenario left it dead)."""
    outcomes: list[RunOutcome] = []
    vm: VM | None = None
    boots = 0
    try:
        for scenario in scenarios:
            if vm is None or vm.state is not VMState.RUNNING:
                if vm is not None:
                    vm.shutdown()
                vm = VM(config, name=f"run.{boots}")
                boots += 1
                vm.launch()
                progress(f"booted {config.profile.name} in {vm.boot_seconds or 0:.1f} s")
            outcome = run_scenario(scenario, vm)
            progress(f"{outcome.result.status:8} {scenario.name} ({outcome.seconds:.1f} s)")
            outcomes.append(outcome)
    finally:
        if vm is not None:
            vm.shutdown()
    return outcomes


def _keep(outcomes: Sequence[RunOutcome], directory: Path) -> None:
    for outcome in outcomes:
        if outcome.result.status in ("agree", "skipped"):
            continue
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{outcome.result.scenario}.{outcome.result.arch}"
        for obs in (outcome.model, outcome.real):
            if obs is not None:
                obs.save(directory / f"{stem}.{obs.side}.json")


def main(argv: Sequence[str] | None = None) -> int:
    """``run``'s arguments (without the word ``run``); the exit status."""
    parser = _Parser(
        prog="harness run",
        description="Run scenarios in a guest kernel and in the model; report divergences.",
    )
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    try:
        profile: ArchProfile = get_profile(args.arch)
        scenarios = [load_scenario(path, profile.arch) for path in args.scenarios]
        image: BootImage = find_image(profile, args.kernel, args.initramfs)
    except (ScenarioError, UnknownProfileError, ImageUnavailable) as e:
        return _fail(str(e))
    names = [s.name for s in scenarios]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        return _fail(f"scenario name {duplicate!r} is given twice")
    config = VMConfig(profile, image, keep_logs_dir=args.keep_logs)
    try:
        outcomes = run_scenarios(scenarios, config, _progress)
    except VMError as e:
        kept = f" (logs kept in {e.kept_logs})" if e.kept_logs else ""
        return _fail(f"{e.message}{kept}")
    except KeyboardInterrupt:
        return 128 + 2
    if args.keep_logs is not None:
        _keep(outcomes, args.keep_logs)
    results = [o.result for o in outcomes]
    sys.stdout.write(render_json(results) if args.json else render_text(results))
    statuses = {r.status for r in results}
    if "error" in statuses:
        return EXIT_ERROR
    return EXIT_DIVERGE if "diverge" in statuses else EXIT_AGREE


def _progress(line: str) -> None:
    print(f"harness run: {line}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"harness run: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
