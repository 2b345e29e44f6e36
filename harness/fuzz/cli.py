"""``python -m harness fuzz``: random scenarios, model against kernel, shrunk findings.

    python -m harness fuzz --arch x86_64 [--seconds N | --examples N] [--seed S]
        [--out DIR] [--workers K] [--max-steps N] [--no-shrink] [--no-coverage]
        [--format text|json|ktap]

With one worker the campaign runs in this process (one VM, reused).  With
``--workers K`` it fans out through pytest-xdist: ``pytest -n K`` runs
:mod:`harness.fuzz.xdist_worker` in its own process group, worker ``i`` with
seed ``S + i`` and one VM of its own, and this process sums their stats
files.  SIGTERM or Ctrl-C ends the workers: each hard-stops its QEMU
(:mod:`harness.reaper`) before it dies.

Every finding is written under ``--out`` (default ``fuzz-findings``) as a
scenario file plus its report (:meth:`harness.fuzz.engine.Campaign.write`).
The summary (stats, what was compared, coverage of ops, op pairs and
MODEL.md's rules: :mod:`harness.fuzz.reach`, findings) is written there as
``ARCH.summary.json`` and goes to stdout as text, JSON (``--format json`` or
``--json``) or KTAP (``--format ktap``, :func:`harness.ktap.render_fuzz`: one
test for the campaign, a failing subtest per finding with its report as
diagnostics).
Exit status: 0 nothing found, 1 findings, 2 could not run (one line).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from harness.arches import get_profile
from harness.compared import Compared, describe_compared
from harness.errors import VMError
from harness.fuzz.engine import FUZZ_OP_TIMEOUT_S, Campaign, FuzzSettings, warm_vm
from harness.fuzz.reach import CoverageReport
from harness.fuzz.rules import ModelRulesError
from harness.image import ImageUnavailable, find_image
from harness.ktap import render_fuzz
from harness.run import internal_error
from harness.vm import VMConfig
from sim.arch import ARCH_NAMES, ArchError
from sim.cli.argtypes import positive_int

__all__ = ["CONFIG_ENV", "add_arguments", "finding_reports", "main", "summarize"]

EXIT_CLEAN = 0
EXIT_FOUND = 1
EXIT_ERROR = 2
#: The campaign's settings, as JSON, for the pytest-xdist workers.
CONFIG_ENV = "PAGEMAP_HARNESS_FUZZ_CONFIG"
#: Seconds the workers get to stop their VMs after SIGTERM before SIGKILL.
STOP_GRACE_S = 30.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fuzz``."""
    parser.add_argument("--arch", default="x86_64", choices=ARCH_NAMES)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=_seconds, help="run this long (default 60)")
    budget.add_argument("--examples", type=positive_int, help="run this many examples per worker")
    parser.add_argument("--seed", type=int, default=0, help="worker i uses seed S + i")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), metavar="DIR",
                        help="findings (scenario + report) and stats go here")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="VMs in parallel, through pytest-xdist")
    parser.add_argument("--max-steps", type=positive_int, default=20,
                        help="steps per scenario before its final check")
    parser.add_argument("--no-shrink", action="store_true",
                        help="report findings as found, unshrunk")
    parser.add_argument("--swap", action="store_true",
                        help="a VM with swap, and scenarios with \"swap\": true: MADV_PAGEOUT "
                        "swaps, swapon and swapoff are drawn")
    parser.add_argument("--no-coverage", action="store_true",
                        help="do not trace the model's code (no MODEL.md rule coverage)")
    parser.add_argument("--format", choices=("text", "json", "ktap"),
                        help="the summary's form (default text)")
    parser.add_argument("--json", action="store_true", help="the same as --format json")
    parser.add_argument("--kernel", type=Path, help="kernel image (default: images build)")
    parser.add_argument("--initramfs", type=Path, help="initramfs with the agent as /init")


def _config_of(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds if args.seconds is not None or args.examples else 60.0
    return {
        "arch": args.arch, "seconds": seconds, "examples": args.examples, "seed": args.seed,
        "out": str(args.out.resolve()), "max_steps": args.max_steps,
        "shrink": not args.no_shrink, "coverage": not args.no_coverage, "swap": args.swap,
        "kernel": None if args.kernel is None else str(args.kernel.resolve()),
        "initramfs": None if args.initramfs is None else str(args.initramfs.resolve()),
    }


def run_worker(config: dict[str, Any], index: int) -> dict[str, Any]:
    """Worker ``index``'s campaign (seed + index); its summary (also in ``out``).

    Raises ImageUnavailable, ArchError; VMError only if no VM could boot.
    """
    profile = get_profile(config["arch"])
    kernel = None if config["kernel"] is None else Path(config["kernel"])
    initramfs = None if config["initramfs"] is None else Path(config["initramfs"])
    image = find_image(profile, kernel, initramfs)
    # A guest that crashed or hung is a finding: its console and QEMU logs
    # are kept under out/vm-logs (the report's message carries the console tail).
    vm_config = VMConfig(profile, image, op_timeout=FUZZ_OP_TIMEOUT_S, echo=lambda _: None,
                         keep_logs_dir=Path(config["out"]) / "vm-logs",
                         swap=config.get("swap", False))
    fuzz = FuzzSettings(
        seconds=config["seconds"], examples=config["examples"], seed=config["seed"] + index,
        out=Path(config["out"]), max_steps=config["max_steps"], shrink=config["shrink"],
        worker=f"w{index}", coverage=config.get("coverage", True),
        swap=config.get("swap", False),
    )
    with warm_vm(vm_config, f"fuzz{index}") as warm:
        campaign = Campaign(warm, fuzz, _progress)
        campaign.run()
    return campaign.summary()


def summarize(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The workers' summaries as one: sums, per-worker rates, every finding."""
    keys = ("examples", "rejected", "checks", "steps", "agree", "diverge", "errors", "vm_boots")
    total: dict[str, Any] = {k: sum(s["stats"][k] for s in summaries) for k in keys}
    walls = [s["stats"]["wall_seconds"] for s in summaries]
    wall = max(walls) if walls else 0.0
    total["workers"] = len(summaries)
    total["wall_seconds"] = wall
    total["rejection_rate"] = total["rejected"] / total["examples"] if total["examples"] else 0.0
    per_worker = total["examples"] / sum(walls) if sum(walls) else 0.0
    total["examples_per_s_per_worker"] = round(per_worker, 2)
    total["checks_per_s_per_worker"] = round(total["checks"] / sum(walls), 2) if sum(walls) else 0
    ops: dict[str, int] = {}
    for s in summaries:
        for op, n in s["stats"]["ops"].items():
            ops[op] = ops.get(op, 0) + n
    total["ops"] = dict(sorted(ops.items()))
    compared: Counter[str] = Counter()
    for s in summaries:
        compared.update(s["stats"].get("compared", {}))
    total["compared"] = Compared.of(compared).to_json()
    total["coverage"] = CoverageReport.merge(
        s["coverage"] for s in summaries if "coverage" in s  # older stats files lack it
    ).to_json()
    total["findings"] = [
        {**f, "worker": s["worker"]} for s in summaries for f in s["findings"]
    ]
    return total


def finding_reports(total: dict[str, Any], out: Path) -> dict[int, list[str]]:
    """The text report of each finding (by index in ``total["findings"]``) under ``out``;
    a finding whose report cannot be read says so in one line."""
    reports = {}
    for i, finding in enumerate(total["findings"]):
        path = out / f"{finding.get('stem', '?')}.report.txt"
        try:
            reports[i] = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            reports[i] = [f"report {path}: {getattr(e, 'strerror', None) or e}"]
    return reports


def _render(total: dict[str, Any], out: str) -> str:
    lines = [
        f"{total['examples']} examples ({total['rejected']} refused by the loader), "
        f"{total['checks']} checks, {total['workers']} worker(s), "
        f"{total['wall_seconds']:.1f} s: {total['examples_per_s_per_worker']} examples/s and "
        f"{total['checks_per_s_per_worker']} checks/s per worker; "
        f"{total['agree']} agree, {total['diverge']} diverge, {total['errors']} errors, "
        f"{total['vm_boots']} VM boots",
        "ops: " + ", ".join(f"{op} {n}" for op, n in total["ops"].items()),
        f"compared {describe_compared(Compared.of(total['compared']))}",
        *CoverageReport.merge([total["coverage"]]).text_lines(),
    ]
    if not total["findings"]:
        lines.append("no findings")
    for f in total["findings"]:
        lines.append(f"FINDING {f['signature'][0]} {f['signature'][1]}: {f['steps']} steps "
                     f"(from {f['first_steps']}), seen {f['seen']}x, worker {f['worker']}")
    if total["findings"]:
        lines.append(f"scenarios and reports in {out}")
    return "\n".join(lines) + "\n"


def write_summary(total: dict[str, Any], out: Path, arch: str) -> Path:
    """``total`` as ``out/ARCH.summary.json``; its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{arch}.summary.json"
    path.write_text(json.dumps(total, indent=1) + "\n")
    return path


class _Stop(Exception):
    """SIGTERM: unwind as Ctrl-C does, so every VM is shut down on the way out."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def _run_in_process(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [run_worker(config, 0)]


def _run_xdist(config: dict[str, Any], workers: int) -> list[dict[str, Any]]:
    """``pytest -n K`` over the worker module, in its own process group."""
    from harness.fuzz import xdist_worker

    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{config['arch']}.w*.stats.json"):
        old.unlink()
    env = dict(os.environ, **{CONFIG_ENV: json.dumps({**config, "workers": workers})})
    command = [
        sys.executable, "-m", "pytest", "-n", str(workers), "-p", "no:cacheprovider",
        "-q", "-s", "--rootdir", str(out), "-o", "addopts=", xdist_worker.__file__,
    ]
    # pytest's own output is progress: stderr, so stdout holds only the summary.
    popen = subprocess.Popen(command, env=env, start_new_session=True, stdout=sys.stderr)
    try:
        code = popen.wait()
    except BaseException:
        _stop_group(popen)
        raise
    if code not in (0, 1):
        raise RuntimeError(f"pytest -n {workers} exited with status {code}")
    summaries = []
    for i in range(workers):
        path = out / f"{config['arch']}.w{i}.stats.json"
        if not path.exists():
            raise RuntimeError(f"worker w{i} left no {path.name}")
        summaries.append(json.loads(path.read_text()))
    return summaries


def _stop_group(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM the workers' process group (each stops its QEMU), SIGKILL if it lingers."""
    try:
        os.killpg(popen.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        popen.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``fuzz``'s arguments (without the word ``fuzz``); the exit status."""
    parser = _Parser(prog="harness fuzz", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    if args.json and args.format not in (None, "json"):
        return _fail(f"--json and --format {args.format} ask for two forms")
    form = "json" if args.json else args.format or "text"
    config = _config_of(args)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        if args.workers == 1:
            summaries = _run_in_process(config)
        else:
            summaries = _run_xdist(config, args.workers)
    except (ImageUnavailable, ArchError, VMError, RuntimeError, ModelRulesError) as e:
        return _fail(getattr(e, "message", None) or str(e))
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except _Stop:
        return 128 + signal.SIGTERM
    except Exception as e:
        return _fail(internal_error(e))
    finally:
        signal.signal(signal.SIGTERM, previous)
    total = summarize(summaries)
    try:
        write_summary(total, Path(config["out"]), args.arch)
    except OSError as e:
        return _fail(f"cannot write the summary under {config['out']}: {e}")
    if form == "json":
        sys.stdout.write(json.dumps(total, indent=1) + "\n")
    elif form == "ktap":
        sys.stdout.write(render_fuzz(args.arch, total, finding_reports(total, args.out)))
    else:
        sys.stdout.write(_render(total, str(args.out)))
    return EXIT_FOUND if total["findings"] else EXIT_CLEAN


def _progress(line: str) -> None:
    print(f"harness fuzz: {line}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"harness fuzz: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
