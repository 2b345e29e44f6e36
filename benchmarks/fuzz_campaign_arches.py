"""The long differential fuzz campaign: ``harness fuzz`` on each arch in turn, one table.

    python benchmarks/fuzz_campaign_arches.py [--seconds N] [--arch A ...] [--workers K]
                                              [--seed S] [--out DIR] [--max-steps N]

Runs ``python -m harness fuzz --arch A --seconds N --json --out DIR/A`` for
each arch (default x86_64, ppc64, ppc64-4k; N default 1800: the 30-minute
campaign of issue 11), one after another so the machine's cores go to one
campaign's workers at a time, then prints a Markdown table a human pastes
into a note: per arch the examples, examples/s and checks/s per worker,
agreeing / diverging / erring examples, findings, and the coverage (ops, op
pairs, MODEL.md rules, kernel functions reached of those possible); then
per arch what was never reached and each finding (its scenario file is
under ``DIR/A``).  The same is written to ``DIR/campaign.md`` and, as JSON
(each arch's ``harness fuzz --json`` summary), to ``DIR/campaign.json``.

The images must be built (``python -m images build --arch A``; the tox env
``fuzz-campaign`` does it).  Exit status: 0 no findings, 1 findings, 2 an
arch could not run (its row says why).  Ctrl-C or SIGTERM stops the running
campaign (``harness fuzz`` ends its VMs) and prints what ran.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from sim.arch import ARCH_NAMES

REPO = Path(__file__).resolve().parents[1]
#: The default campaign (issue 11's three); ``--arch`` takes any arch harness fuzz knows.
ARCHES = ("x86_64", "ppc64", "ppc64-4k")
#: Seconds ``harness fuzz`` gets beyond its budget to boot, shrink and stop.
SLACK_S = 600.0


class _Stop(Exception):
    """SIGTERM: stop the running campaign as Ctrl-C does."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def run_arch(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    """One arch's ``harness fuzz --json`` summary, or ``{"error": one line}``."""
    command = [
        sys.executable, "-m", "harness", "fuzz", "--arch", arch, "--seconds", str(args.seconds),
        "--seed", str(args.seed), "--workers", str(args.workers),
        "--max-steps", str(args.max_steps), "--out", str(args.out / arch), "--json",
    ]  # fmt: skip
    print(f"fuzz campaign: {arch} for {args.seconds:.0f} s ({args.workers} worker(s))",
          file=sys.stderr, flush=True)
    # A summary left by an earlier campaign must not stand in for this one's.
    (args.out / arch / f"{arch}.summary.json").unlink(missing_ok=True)
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = child.communicate(timeout=args.seconds + SLACK_S)
    except BaseException:
        # Ctrl-C reached the child too; SIGTERM and timeouts are passed on.
        child.send_signal(signal.SIGTERM)
        child.wait()
        raise
    if child.returncode not in (0, 1):
        return {"error": f"harness fuzz exited with status {child.returncode}"}
    return load_summary(args.out / arch, arch, out)


def load_summary(directory: Path, arch: str, out: str = "") -> dict[str, Any]:
    """``harness fuzz``'s summary of one arch: the file it wrote under ``--out``
    (``ARCH.summary.json``), else the JSON it printed, else ``{"error": one line}``.

    The file first: the ppc64 campaign of 2026-12-01 printed something besides its
    JSON (four findings shrunk) and its row was lost although the file was complete.
    """
    path = directory / f"{arch}.summary.json"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded
    except (OSError, json.JSONDecodeError):
        pass
    try:
        summary: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError:
        first = out.strip().splitlines()[0][:80] if out.strip() else "nothing"
        return {"error": f"harness fuzz printed no JSON summary (its output began: {first!r})"}
    return summary


def _fraction(part: dict[str, Any] | None, reached_key: str = "reached") -> str:
    if part is None:
        return "-"
    reached = part[reached_key]
    count = len(reached) if isinstance(reached, list) else reached
    return f"{count}/{part['possible']}"


def table_text(results: dict[str, dict[str, Any]]) -> str:
    """The per-arch table and, below it, what each arch never reached and found (Markdown)."""
    table = Table(box=box.MARKDOWN, show_edge=True)
    for column in ("arch", "seconds", "workers", "examples", "examples/s/worker",
                   "checks/s/worker", "agree", "diverge", "errors", "findings", "VM boots",
                   "ops", "op pairs", "MODEL.md rules", "kernel functions"):
        table.add_column(column, justify="left" if column == "arch" else "right")
    notes: list[str] = []
    for arch, total in results.items():
        if "error" in total:
            table.add_row(arch, *["-"] * 14)
            notes.append(f"- {arch}: could not run: {total['error']}")
            continue
        coverage = total["coverage"]
        table.add_row(
            arch, f"{total['wall_seconds']:.0f}", str(total["workers"]), str(total["examples"]),
            f"{total['examples_per_s_per_worker']:.2f}", f"{total['checks_per_s_per_worker']:.2f}",
            str(total["agree"]), str(total["diverge"]), str(total["errors"]),
            str(len(total["findings"])), str(total["vm_boots"]),
            _fraction(coverage["ops"]), _fraction(coverage["op_pairs"]),
            _fraction(coverage["rules"]), _fraction(coverage["kernel_functions"]),
        )
        for finding in total["findings"]:
            kind, where = finding["signature"]
            notes.append(f"- {arch}: FINDING {kind} {where}: {finding['steps']} steps "
                         f"(from {finding['first_steps']}), seen {finding['seen']}x")
        rules = coverage["rules"] or {}
        functions = coverage["kernel_functions"] or {}
        for label, names in [("ops never run", coverage["ops"]["never"]),
                             ("op pairs never run", coverage["op_pairs"]["never"]),
                             ("rules never reached", rules.get("never", [])),
                             ("kernel functions never reached", functions.get("never", [])),
                             ("named in MODEL.md, absent from the model",
                              functions.get("absent", []))]:
            if names:
                notes.append(f"- {arch}: {label} ({len(names)}): {', '.join(names)}")
    buffer = io.StringIO()
    Console(file=buffer, width=400, color_system=None, soft_wrap=True).print(table)
    # box.MARKDOWN draws a blank top edge; the note wants the table's lines only.
    lines = [line.rstrip() for line in buffer.getvalue().splitlines() if line.strip()]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1800.0, help="per arch (default 1800)")
    parser.add_argument("--arch", action="append", choices=ARCH_NAMES,
                        help="default: " + ", ".join(ARCHES))
    parser.add_argument("--workers", type=int, default=1, help="VMs per arch (pytest-xdist)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("fuzz-campaign"))
    args = parser.parse_args()
    if args.seconds <= 0 or args.workers < 1 or args.max_steps < 1:
        parser.error("--seconds, --workers and --max-steps must be positive")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    status = 0
    try:
        for arch in args.arch or ARCHES:
            results[arch] = run_arch(arch, args)
    except (KeyboardInterrupt, _Stop):
        print("fuzz campaign: stopped", file=sys.stderr)
        status = 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    text = (f"harness fuzz campaign, seed {args.seed}, {args.seconds:.0f} s per arch, "
            f"{time.monotonic() - started:.0f} s in all\n\n" + table_text(results))
    (args.out / "campaign.md").write_text(text)
    (args.out / "campaign.json").write_text(json.dumps(results, indent=1) + "\n")
    sys.stdout.write(text)
    if status:
        return status
    if any("error" in r for r in results.values()):
        return 2
    return 1 if any(r["findings"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
