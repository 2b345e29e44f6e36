"""``python -m harness run``: scenarios in a guest and in the model, compared.

    python -m harness run --arch x86_64 tests/scenarios/*.json [--format text|json|ktap]
        [--show] [--keep-logs DIR] [--record DIR]

Every scenario file is loaded and validated before anything boots (a bad
file: one line, exit status 2).  Then one VM boots and serves every
scenario in turn; each runs in the guest (:mod:`harness.guest_executor`) and
in the model (:mod:`harness.model_executor`), and the two observations are
compared (:func:`harness.compare.compare_counted`).  The report goes to
stdout, progress to stderr: text (each scenario's verdict, what it compared,
its divergences grouped), JSON (``--format json`` or ``--json``: every
value) or KTAP (``--format ktap``, :mod:`harness.ktap`: a test per
scenario, a subtest per check).  ``--show`` adds each check's decoded
observations as tables (:mod:`harness.show`; in KTAP as diagnostic lines).

A scenario that cannot run is that scenario's ``error`` verdict with a
one-line cause, and the run goes on: an executor's own error (the model's,
the guest agent's, a VM that failed: its console tail is kept as the
VMError gives it) or any other exception of ours (a bug: its type, message
and the innermost place it was raised).  After a guest-side failure the VM's
state is unknown, so the next scenario gets a new VM.

Exit status: 0 when every scenario agrees (or is skipped on this
architecture), 1 when some diverge, 2 when something could not run.
With ``--keep-logs DIR`` the logs of a failed VM are kept under DIR, and so
are both sides' observations of every scenario that did not agree
(``NAME.ARCH.model.json`` / ``.real.json``, for ``python -m harness.report``).
With ``--record DIR`` the guest's observations of every scenario that agrees
are written under DIR as ``NAME.real.json``, with a copy of the scenario file
as ``NAME.scenario.json``: the replay tests' recordings
(harness/tests/data/recorded/ARCH/, see harness/tests/test_replay.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from harness.arches import ArchProfile, get_profile
from harness.compare import compare_counted
from harness.errors import AgentOpError, VMError
from harness.guest_executor import GuestExecutorError, run_guest
from harness.image import BootImage, ImageUnavailable, find_image
from harness.model_executor import ModelError, run_model
from harness.observations import Observations
from harness.report import ScenarioResult, render_json, render_text
from harness.scenario import Scenario, ScenarioError, load_scenario
from harness.vm import VM, VMConfig, VMState
from sim.arch import ARCH_NAMES, ArchError
from sim.mm.facts import PINNED, kernel_series

__all__ = [
    "FORMATS",
    "RunOutcome",
    "add_arguments",
    "internal_error",
    "main",
    "render",
    "report_format",
    "run_scenario",
    "run_scenarios",
]

EXIT_AGREE = 0
EXIT_DIVERGE = 1
EXIT_ERROR = 2
#: Forms of the report (--format).
FORMATS = ("text", "json", "ktap")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``run`` (also for a parent CLI's subparser)."""
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO.json", type=Path)
    parser.add_argument("--arch", default="x86_64", choices=ARCH_NAMES)
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="the report's form (default text)")
    parser.add_argument("--json", action="store_true", help="the same as --format json")
    parser.add_argument(
        "--show", action="store_true",
        help="print each check's decoded observations, model and guest side by side "
        "(text and ktap)",
    )
    parser.add_argument(
        "--keep-logs", type=Path, metavar="DIR",
        help="keep a failed VM's logs and the observations of failing scenarios under DIR",
    )
    parser.add_argument(
        "--record", type=Path, metavar="DIR",
        help="write the guest's observations of every agreeing scenario under DIR "
        "(NAME.real.json and NAME.scenario.json, for the replay tests)",
    )
    parser.add_argument("--kernel", type=Path, help="kernel image (default: images build)")
    parser.add_argument("--initramfs", type=Path, help="initramfs with the agent as /init")
    parser.add_argument(
        "--tree", type=Path, metavar="PATH",
        help="build and boot this kernel source tree (python -m images build --tree)",
    )
    parser.add_argument(
        "--kernel-version", metavar="X.Y",
        help="kernel series to build and boot (a linux-patch/ directory; default 6.12)",
    )


@dataclass(frozen=True)
class RunOutcome:
    """One scenario's result and, when both sides ran, their observations."""

    result: ScenarioResult
    model: Observations | None = None
    real: Observations | None = None
    seconds: float = 0.0
    #: The guest side failed part-way (named processes, agent, VM in a state
    #: nobody checked): the next scenario must not run in this VM.
    replace_vm: bool = False


def run_scenario(scenario: Scenario, vm: VM) -> RunOutcome:
    """``scenario`` in ``vm`` and in the model, compared; errors become an error result.

    Never raises for a scenario (only KeyboardInterrupt and the like pass):
    every exception is the scenario's ``error`` result, one line, and
    ``replace_vm`` says whether the guest side failed part-way.
    """
    arch = vm.profile.arch
    started = time.monotonic()

    def error(message: str, model: Observations | None = None,
              real: Observations | None = None, *, replace_vm: bool = False) -> RunOutcome:
        one_line = " ".join(message.split())
        result = ScenarioResult(scenario.name, arch.name, "error", message=one_line)
        return RunOutcome(result, model, real, time.monotonic() - started, replace_vm)

    reason = scenario.unsupported_reason(arch)
    if reason is not None:
        return RunOutcome(ScenarioResult(scenario.name, arch.name, "skipped", message=reason))
    try:
        model = run_model(scenario, arch, facts=vm.facts or PINNED)
    except ModelError as e:
        return error(f"model: {e}")
    except Exception as e:  # a bug of ours ends this scenario, not the run
        return error(f"model: {internal_error(e)}")
    try:
        real = run_guest(scenario, vm)
    except VMError as e:
        return error(f"guest: {e.message}", model, replace_vm=True)
    except (GuestExecutorError, AgentOpError) as e:
        # The agent answered and the run's processes were reaped: the VM is fine.
        return error(f"guest: {e}", model)
    except Exception as e:  # as above; the guest's state is unknown
        return error(f"guest: {internal_error(e)}", model, replace_vm=True)
    try:
        comparison = compare_counted(model, real, scenario, arch)
    except Exception as e:  # as above
        return error(f"compare: {internal_error(e)}", model, real)
    result = ScenarioResult.from_comparison(scenario.name, arch.name, comparison)
    return RunOutcome(result, model, real, time.monotonic() - started)


def internal_error(e: BaseException) -> str:
    """An unexpected exception as one line: type, message, where it was raised.

    ``internal error: KeyError: 'g' (harness/guest_executor.py:312 in check)``.
    The place is the deepest frame in one of our packages (``harness/``,
    ``sim/``, path shortened to start there), else the deepest frame.
    """
    text = " ".join(str(e).split())
    what = f"{type(e).__name__}: {text}" if text else type(e).__name__
    frames = traceback.extract_tb(e.__traceback__)
    for frame in reversed(frames):
        parts = Path(frame.filename).parts
        ours = [i for i, part in enumerate(parts) if part in _OUR_PACKAGES]
        if ours:
            where = "/".join(parts[ours[-1] :])
            return f"internal error: {what} ({where}:{frame.lineno} in {frame.name})"
    if frames:
        last = frames[-1]
        return f"internal error: {what} ({last.filename}:{last.lineno} in {last.name})"
    return f"internal error: {what}"


#: Top-level packages of this project, for :func:`internal_error`'s places.
_OUR_PACKAGES = ("harness", "sim", "images")


def run_scenarios(
    scenarios: Sequence[Scenario],
    config: VMConfig,
    progress: Callable[[str], None] = lambda _: None,
) -> list[RunOutcome]:
    """Every scenario in one VM (a new one after a scenario left it dead or in doubt,
    and whenever a scenario's swap differs from the VM's: it boots with swap for
    scenarios that ask for it, ``Scenario.swap``, and without for the rest).

    Raises VMError only when a VM cannot boot.
    """
    outcomes: list[RunOutcome] = []
    vm: VM | None = None
    boots = 0
    try:
        for scenario in scenarios:
            if vm is None or vm.state is not VMState.RUNNING or vm.config.swap != scenario.swap:
                if vm is not None:
                    vm.shutdown()
                vm = VM(dataclasses.replace(config, swap=scenario.swap), name=f"run.{boots}")
                boots += 1
                vm.launch()
                progress(f"booted {config.profile.name} in {vm.boot_seconds or 0:.1f} s"
                         f"{_kernel_note(vm)}")
            outcome = run_scenario(scenario, vm)
            progress(f"{outcome.result.status:8} {scenario.name} ({outcome.seconds:.1f} s)")
            if outcome.result.status == "error":
                progress(f"  {outcome.result.message}")
            outcomes.append(outcome)
            if outcome.replace_vm:
                progress(f"replacing the VM after {scenario.name}")
                vm.shutdown()
    finally:
        if vm is not None:
            vm.shutdown()
    return outcomes


def _kernel_note(vm: VM) -> str:
    """``: kernel R, model facts S (verified on R')`` for the progress line."""
    if vm.hello is None or vm.facts is None:
        return ""
    facts = vm.facts
    release = vm.hello.release
    if kernel_series(release) != facts.series:
        verified = ", the nearest older series the model knows: differences may be new facts"
    elif release != facts.release:
        verified = ", NOT the release they were verified on"
    else:
        verified = ""
    return (f": kernel {release}, model facts for {facts.series} "
            f"(verified on {facts.release}{verified})")


def _keep(outcomes: Sequence[RunOutcome], directory: Path) -> None:
    for outcome in outcomes:
        if outcome.result.status in ("agree", "skipped"):
            continue
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{outcome.result.scenario}.{outcome.result.arch}"
        for obs in (outcome.model, outcome.real):
            if obs is not None:
                obs.save(directory / f"{stem}.{obs.side}.json")


def _record(outcomes: Sequence[RunOutcome], paths: Sequence[Path], directory: Path) -> None:
    """The real side of every agreeing scenario, and the scenario file as it ran."""
    for outcome, path in zip(outcomes, paths, strict=True):
        if outcome.result.status != "agree" or outcome.real is None:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        outcome.real.save(directory / f"{outcome.result.scenario}.real.json")
        shutil.copyfile(path, directory / f"{outcome.result.scenario}.scenario.json")
        _progress(f"recorded {outcome.result.scenario} in {directory}")


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
        form = report_format(args.format, args.json, args.show)
    except ValueError as e:
        return _fail(str(e))
    try:
        profile: ArchProfile = get_profile(args.arch)
        scenarios = [load_scenario(path, profile.arch) for path in args.scenarios]
        image: BootImage = find_image(
            profile, args.kernel, args.initramfs, kernel_version=args.kernel_version,
            tree=args.tree,
        )
    except (ScenarioError, ArchError, ImageUnavailable) as e:
        return _fail(str(e))
    names = [s.name for s in scenarios]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        return _fail(f"scenario name {duplicate!r} is given twice")
    for option, directory in (("--record", args.record), ("--keep-logs", args.keep_logs)):
        # Found out now, not after every scenario has run.
        try:
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return _fail(f"{option} {directory}: {e.strerror or e}")
    _progress(f"kernel source: {image.source}")
    config = VMConfig(profile, image, keep_logs_dir=args.keep_logs)
    try:
        outcomes = run_scenarios(scenarios, config, _progress)
    except VMError as e:
        kept = f" (logs kept in {e.kept_logs})" if e.kept_logs else ""
        return _fail(f"{e.message}{kept}")
    except KeyboardInterrupt:
        return 128 + 2
    except Exception as e:  # outside any scenario (booting, shutting down): still one line
        return _fail(internal_error(e))
    saved = True
    if args.keep_logs is not None:
        try:
            _keep(outcomes, args.keep_logs)
        except OSError as e:
            _fail(f"--keep-logs {args.keep_logs}: {e.strerror or e}")
            saved = False
    if args.record is not None:
        try:
            _record(outcomes, args.scenarios, args.record)
        except OSError as e:
            _fail(f"--record {args.record}: {e.strerror or e}")
            saved = False
    results = [o.result for o in outcomes]
    sys.stdout.write(render(form, outcomes, args.show, header=[
        f"harness run on {profile.name}: kernel source {image.source}"]))
    statuses = {r.status for r in results}
    if "error" in statuses or not saved:
        return EXIT_ERROR
    return EXIT_DIVERGE if "diverge" in statuses else EXIT_AGREE


def report_format(form: str | None, json_flag: bool, show: bool) -> str:
    """The report's form from ``--format``, ``--json`` and ``--show``; ValueError if they clash."""
    if json_flag and form not in (None, "json"):
        raise ValueError(f"--json and --format {form} ask for two forms")
    chosen = "json" if json_flag else form or "text"
    if show and chosen == "json":
        raise ValueError("--show prints tables: use it with --format text or ktap")
    return chosen


def render(form: str, outcomes: Sequence[RunOutcome], show: bool,
           header: Sequence[str] = ()) -> str:
    """The report of ``outcomes`` in ``form`` (text, json, ktap), with ``show``'s tables.

    ``header``: KTAP diagnostic lines before the plan.
    """
    results = [o.result for o in outcomes]
    if form == "json":
        return render_json(results)
    tables = None
    if show:
        from harness.show import PAGEMAP_LEGEND, CheckTables  # rich: loaded on demand

        tables = CheckTables((o.result, o.model, o.real) for o in outcomes)
        header = [*header, PAGEMAP_LEGEND]
    if form == "ktap":
        from harness.ktap import render_run

        return render_run(results, details=None if tables is None else tables.lines,
                          header=header)
    text = render_text(results)
    return text if tables is None else tables.text() + text


def _progress(line: str) -> None:
    print(f"harness run: {line}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"harness run: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
