"""Run the kernel's mm selftests (and page-types) in the guest; per-case results per arch.

``python -m harness.selftests --arch x86_64 [--arch ppc64 ...] [--only NAME ...]``
boots the arch's image with the selftests initramfs (:mod:`images.selftests`)
appended, runs every program of :data:`RUNS` through the agent's EXEC_TEST
(one at a time, each with a time limit), reads its results (:func:`results`)
and prints one table per arch: program, case, outcome, reason.  A VM that
dies, panics or stops answering is replaced before the next program (the
program is reported as an error with the VM's reason).  Exit status: 0 when
it ran (failures are results, triaged in harness/SELFTESTS.md), 2 when it
could not (no image, bad arguments).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from harness.agent.protocol import ExitHow, Op
from harness.arches import get_profile
from harness.errors import AgentOpError, VMError
from harness.image import BootImage, ImageUnavailable, find_image
from harness.page_types_peer import peer_check
from harness.selftests_tap import KSFT_EXIT, Case, Outcome, parse_tap
from harness.vm import VM, VMConfig

__all__ = ["RUNS", "ProgramResult", "Run", "main", "results", "run_arch"]

#: Output kept per program (bytes); cow prints about 40 kB.
OUTPUT_MAX = 4 << 20

#: Kernel knobs a run needs, written before it and put back after it (path,
#: value, value after), as run_vmtests.sh sets them around its tests.  No
#: hugetlb knob: every guest boots with its arch's pool on the command line
#: (``hugepages=32``, sim/arch ``hugetlb_pages``: 64 MiB of 2 MiB pages, taken at
#: boot, so it fragments nothing later), which hugetlb-madvise (MIN_FREE_PAGES
#: 20), cow, pagemap_ioctl and uffd-unit-tests (their hugetlb cases) all use.
#: mremap_test maps 2 GiB regions (its PUD-aligned cases) and touches only its
#: 4 MiB validation threshold; the overcommit heuristic (0) refuses a private
#: writable mapping larger than RAM + swap of a 1 GiB guest.
_OVERCOMMIT = (("/proc/sys/vm/overcommit_memory", "1", "0"),)


@dataclass(frozen=True)
class Run:
    """One program run: argv (argv[0] a name in /selftests), its time limit (s), the
    output format (``tap``, ``uffd``, ``khugepaged``, ``exit``) and why these arguments."""

    label: str
    argv: tuple[str, ...]
    timeout_s: float
    format: str = "tap"
    note: str = ""
    #: (path, value, value after): written before the run and put back after it.
    knobs: tuple[tuple[str, str, str], ...] = ()
    #: Boot a new VM for it (with this much RAM, MiB; None: the arch's default).
    fresh_vm: bool = False
    memory_mib: int | None = None


#: The programs, in order; time limits are for TCG on a loaded 2-core host.
RUNS: tuple[Run, ...] = (
    Run("soft-dirty", ("soft-dirty",), 300),
    Run("pagemap_ioctl", ("pagemap_ioctl",), 900),
    Run("mremap_test", ("mremap_test",), 900, knobs=_OVERCOMMIT),
    Run("mlock2-tests", ("mlock2-tests",), 300),
    Run("madv_populate", ("madv_populate",), 300),
    Run("mkdirty", ("mkdirty",), 300),
    Run("ksm_functional_tests", ("ksm_functional_tests",), 600),
    Run("split_huge_page_test", ("split_huge_page_test",), 600),
    Run("hugetlb-madvise", ("hugetlb-madvise",), 300, "exit",
        "prints only on failure; its exit status is the result"),
    Run("uffd-unit-tests", ("uffd-unit-tests",), 600, "uffd"),
    Run("cow", ("cow",), 1800),
    Run("khugepaged", ("khugepaged",), 1200, "khugepaged",
        "no arguments: every collapse context on anonymous memory (run_vmtests.sh's first "
        "run); collapse_compound_extreme keeps up to 512 partly unmapped THPs (1 GiB) until "
        "the deferred-split shrinker frees them: a 1 GiB guest ran out at 476-488 of 512 in "
        "one run of two, so it gets a fresh 2 GiB guest",
        fresh_vm=True, memory_mib=2048),
    Run("page-types", ("page-types", "-p", "1", "-L", "-r"), 300, "exit",
        "the agent's own pages (pid 1), per page (-L), raw flags (-r); exit status only here"),
    Run("page-types-peer", ("page-types",), 360, "peer",
        "harness/page_types_peer.py: page-types' per-page lines of a process with every kind "
        "of page against the model's decode of the same pagemap and kpageflags"),
)


@dataclass
class ProgramResult:
    """How one program ended and its cases."""

    run: Run
    cases: list[Case]
    #: ``exit 0``, ``signal 11``, ``timeout after 600 s``, or the VM's error.
    ended: str
    seconds: float
    output: str = ""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UFFD = re.compile(r"^Testing (?P<name>.+?)\.\.\. (?P<verdict>done|skipped|failed)"
                   r"(?: \[reason: (?P<why>.*)\])?$")
_KHUGEPAGED = re.compile(r"^(?P<name>.*?)\.*\s*\x1b\[3(?P<colour>[123])m(?P<verdict>[^\x1b]*)")


def _uffd_cases(text: str) -> list[Case]:
    cases: list[Case] = []
    for line in text.splitlines():
        if (m := _UFFD.match(line.strip())) is not None:
            outcome = {"done": Outcome.PASS, "skipped": Outcome.SKIP}.get(
                m.group("verdict"), Outcome.FAIL)
            cases.append(Case(len(cases) + 1, m.group("name"), outcome, m.group("why") or ""))
    return cases


def _khugepaged_cases(text: str) -> list[Case]:
    """``Name... <green>Ok`` lines (khugepaged.c success()/fail()/skip()); the
    name is the text after the last earlier verdict on the same line."""
    cases: list[Case] = []
    for line in text.splitlines():
        if (m := _KHUGEPAGED.match(line)) is None:
            continue
        name = _ANSI.sub("", m.group("name")).strip()
        verdict = m.group("verdict").strip()
        outcome = {"1": Outcome.FAIL, "2": Outcome.PASS, "3": Outcome.SKIP}[m.group("colour")]
        reason = "" if outcome is Outcome.PASS else verdict
        cases.append(Case(len(cases) + 1, name or verdict, outcome, reason))
    return cases


def results(run: Run, output: str, exit_code: int | None, ended: str) -> list[Case]:
    """The cases of a program's ``output`` in its :attr:`Run.format`.

    ``exit_code`` None: the program did not exit (signal, timeout, lost VM);
    ``ended`` says how, and becomes an ERROR case after any parsed ones (also
    for each case a TAP plan announced and no line reported).
    """
    cases: list[Case] = []
    missing = 0
    bail = None
    if run.format == "tap":
        tap = parse_tap(output)
        cases, missing, bail = list(tap.cases), tap.missing(), tap.bail_out
    elif run.format == "uffd":
        cases = _uffd_cases(output)
    elif run.format == "khugepaged":
        cases = _khugepaged_cases(output)
    if exit_code is None:
        cases.append(Case(len(cases) + 1, "(program)", Outcome.ERROR, ended))
    elif bail is not None:
        cases.append(Case(len(cases) + 1, "(bail out)", Outcome.FAIL, bail))
    elif missing:
        cases.append(Case(len(cases) + 1, f"({missing} planned cases not run)",
                          Outcome.ERROR, ended))
    if not cases and run.format == "tap" and exit_code == 0:
        # pagemap_ioctl: ksft_exit_pass() before its plan when userfaultfd is missing.
        cases.append(Case(1, "(program)", Outcome.SKIP,
                          "exit 0 before any case: a precondition failed silently"))
    if not cases:
        outcome = KSFT_EXIT.get(exit_code if exit_code is not None else -1, Outcome.FAIL)
        last = [line for line in output.strip().splitlines() if line.strip()][-1:]
        reason = "" if outcome is Outcome.PASS else (last[0] if last else ended)
        cases.append(Case(1, "(program)", outcome, reason))
    return cases


def _write(vm: VM, path: str, value: str) -> None:
    vm.agent.call_op(Op.WRITE_FILE, path=path.encode(), data=f"{value}\n".encode(), flags=0)


def _peer(vm: VM, run: Run, arch: str) -> ProgramResult:
    started = time.monotonic()
    cases, output = peer_check(vm, arch)
    failed = sum(case.outcome is not Outcome.PASS for case in cases)
    return ProgramResult(run, cases, f"compared, {failed} differ", time.monotonic() - started,
                         output)


def _program(vm: VM, run: Run) -> ProgramResult:
    started = time.monotonic()
    argv = list(run.argv)
    values = vm.agent.call_op(
        Op.EXEC_TEST, timeout=run.timeout_s + 60, path=f"/selftests/{argv[0]}".encode(), argv=argv,
        timeout_ms=int(run.timeout_s * 1000), output_max=OUTPUT_MAX,
    )
    output = values["output"].decode(errors="replace")
    exit_code: int | None = None
    if values["timed_out"]:
        ended = f"timeout after {run.timeout_s:.0f} s (killed)"
    elif values["how"] == ExitHow.SIGNALED:
        ended = f"signal {values['value']}"
    else:
        exit_code = values["value"]
        ended = f"exit {exit_code}"
    return ProgramResult(run, results(run, output, exit_code, ended), ended,
                         time.monotonic() - started, output)


def run_arch(arch: str, image: BootImage, runs: Sequence[Run],
             logs: Path | None = None) -> list[ProgramResult]:
    """Every run of ``runs`` in a VM of ``arch`` booting ``image``; a lost VM is replaced."""
    profile = get_profile(arch)
    found: list[ProgramResult] = []
    vm: VM | None = None
    vm_memory: int | None = None
    try:
        for run in runs:
            print(f"[{arch}] {' '.join(run.argv)} (limit {run.timeout_s:.0f} s)", file=sys.stderr,
                  flush=True)
            started = time.monotonic()
            try:
                if vm is not None and (run.fresh_vm or vm_memory != run.memory_mib):
                    vm.shutdown()
                    vm = None
                if vm is None:
                    qemu = profile.qemu
                    if run.memory_mib is not None:
                        qemu = replace(qemu, memory_mib=run.memory_mib)
                    # With the swap disk the scenarios use (harness/swapdisk.py): cow's
                    # MADV_PAGEOUT cases and khugepaged's swap-in collapses need swap.
                    config = VMConfig(replace(profile, qemu=qemu), image, keep_logs_dir=logs,
                                      swap=True)
                    vm = VM(config, name=f"selftests_{arch.replace('-', '_')}").launch()
                    vm_memory = run.memory_mib
                for path, value, _ in run.knobs:
                    _write(vm, path, value)
                result = _peer(vm, run, arch) if run.format == "peer" else _program(vm, run)
                for path, _, after in run.knobs:
                    _write(vm, path, after)
            except AgentOpError as e:
                why = f"not run: {e}"
                result = ProgramResult(run, results(run, "", None, why), why,
                                       time.monotonic() - started)
            except VMError as e:
                why = f"VM lost: {type(e).__name__}: {str(e).splitlines()[0]}"
                result = ProgramResult(run, results(run, "", None, why), why,
                                       time.monotonic() - started)
                if vm is not None:
                    vm.shutdown()
                    vm = None
            found.append(result)
            if logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                (logs / f"{arch}-{run.label}.log").write_text(result.output, encoding="utf-8")
            counts = _counts(result.cases)
            print(f"[{arch}] {run.label}: {result.ended}, {result.seconds:.0f} s, {counts}",
                  file=sys.stderr, flush=True)
    finally:
        if vm is not None:
            vm.shutdown()
    return found


def _counts(cases: Sequence[Case]) -> str:
    tally: dict[str, int] = {}
    for case in cases:
        tally[case.outcome.value] = tally.get(case.outcome.value, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(tally.items()))


def _grouped(cases: Sequence[Case], all_cases: bool) -> list[tuple[str, str, str]]:
    """(case, outcome, reason) rows: cases of one outcome and reason share a row
    (``N cases, e.g. FIRST``) unless ``all_cases``; passes only with ``all_cases``."""
    groups: dict[tuple[Outcome, str], list[Case]] = {}
    for case in cases:
        if all_cases or case.outcome is not Outcome.PASS:
            groups.setdefault((case.outcome, case.reason), []).append(case)
    rows = []
    for (outcome, reason), members in groups.items():
        if all_cases or len(members) == 1:
            rows += [(case.name, outcome.value, reason) for case in members]
        else:
            rows.append((f"{len(members)} cases, e.g. {members[0].name}", outcome.value, reason))
    return rows


def table(arch: str, found: Sequence[ProgramResult], *, all_cases: bool) -> Table:
    """Per program one summary row, then its failures and skips (all cases with ``all_cases``)."""
    out = Table(title=f"kernel selftests on {arch}", box=box.SIMPLE, show_lines=False)
    for column in ("program", "case", "outcome", "reason / how it ended"):
        out.add_column(column, overflow="fold")
    for result in found:
        out.add_row(result.run.label, f"{len(result.cases)} cases",
                    _counts(result.cases), f"{result.ended}, {result.seconds:.0f} s")
        for row in _grouped(result.cases, all_cases):
            out.add_row("", *row)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness.selftests", description=__doc__)
    parser.add_argument("--arch", action="append", required=True,
                        help="x86_64, ppc64, ppc64-4k (repeatable)")
    parser.add_argument("--only", action="append", metavar="PROGRAM",
                        help=f"run only these ({', '.join(r.label for r in RUNS)})")
    parser.add_argument("--timeout-scale", type=float, default=1.0,
                        help="multiply every program's time limit")
    parser.add_argument("--all-cases", action="store_true", help="list passing cases too")
    parser.add_argument("--logs", type=Path, help="write each program's output here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; see the module docstring."""
    args = _parser().parse_args(argv)
    runs = [r for r in RUNS if not args.only or r.label in args.only]
    unknown = set(args.only or ()) - {r.label for r in RUNS}
    if unknown:
        print(f"error: unknown program(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    runs = [replace(r, timeout_s=r.timeout_s * args.timeout_scale) for r in runs]
    console = Console(width=160)
    from images.errors import ImageError
    from images.selftests import build_selftests, combined_initramfs

    for arch in args.arch:
        started = time.monotonic()
        try:
            profile = get_profile(arch)
            image = find_image(profile)
            selftests = build_selftests(arch)
        except (ImageUnavailable, ImageError, ValueError) as e:
            print(f"error: {arch}: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="pmh-selftests-") as scratch:
            initrd = combined_initramfs(image.initramfs, selftests.initramfs,
                                        Path(scratch) / "initramfs.cpio.gz")
            found = run_arch(arch, replace(image, initramfs=initrd), runs, args.logs)
        console.print(table(arch, found, all_cases=args.all_cases))
        console.print(f"{arch}: {time.monotonic() - started:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
