"""Reports as KTAP version 1, the format kernel CI systems parse.

The format is the kernel's Documentation/dev-tools/ktap.rst: a version line,
a plan ``1..N``, then N tests, each a result line ``ok|not ok <n> <name>
[# <directive> <data>]``; a test with subtests first prints their whole KTAP
block indented by two more spaces.  Diagnostic lines (``# ...``) about a test
go directly before its result line.

``harness run`` (:func:`render_run`) prints one test per architecture, with
one subtest per scenario, and under each scenario that ran one subtest per
check step (``step_5_check``) plus ``outcomes`` (every step's ok / SIGSEGV /
errno).  What each check compared and each divergence (grouped as the text
report groups them, :func:`harness.report.divergence_lines`) are diagnostic
lines before the check's result.  A skipped scenario is ``ok n name # SKIP
reason``; a scenario that could not run is ``not ok n name # ERROR cause``.

``harness fuzz`` (:func:`render_fuzz`) prints one test per architecture,
with a ``campaign`` subtest (what ran, as diagnostics) and one failing
subtest per finding (its shrunk scenario's report as diagnostics).

Besides ``# Subtest: NAME`` (a diagnostic line to the spec, and how KUnit
names a parent test, so kunit_parser.py shows the names) nothing here is
outside the spec.  Names keep to ``[A-Za-z0-9_.-]``, diagnostics to one line.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.compared import Compared, describe_compared
from harness.differences import Divergence
from harness.report import DEFAULT_PLACES, ScenarioResult, divergence_lines, total_compared

__all__ = [
    "INDENT",
    "Details",
    "KtapTest",
    "Verbatim",
    "ktap_name",
    "render",
    "render_fuzz",
    "render_run",
]

#: One level of nesting (ktap.rst: "One level of indentation is two spaces").
INDENT = "  "

#: Extra diagnostic lines for (result, check step), printed as they are: the --show tables.
Details = Callable[[ScenarioResult, int], Sequence[str]]


class Verbatim(str):
    """A diagnostic line printed as it is (a table row), never wrapped."""

    __slots__ = ()


@dataclass
class KtapTest:
    """One KTAP test: a result, diagnostics before it, subtests (printed first).

    ``directive``: ``SKIP`` or ``ERROR`` (or empty) and ``reason`` its data.
    """

    name: str
    ok: bool
    diagnostics: list[str] = field(default_factory=list)
    subtests: list[KtapTest] = field(default_factory=list)
    directive: str = ""
    reason: str = ""


def ktap_name(text: str) -> str:
    """A test name as KTAP allows it (no ``#``, no newline) and tools like it: ``[\\w.-]+``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
    return name or "unnamed"


def _one_line(text: str) -> str:
    """Text for a directive's data: one line, no control characters, spaces collapsed."""
    return " ".join(_printable(text).split())


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text).rstrip()


def _diagnostics(text: str, pad: str) -> list[str]:
    """``# text`` (its indentation kept), wrapped at 100 columns into ``#   ...`` lines,
    unless it is :class:`Verbatim`."""
    verbatim = isinstance(text, Verbatim)
    text = _printable(text)
    if verbatim:
        return [f"{pad}# {text}" if text else f"{pad}#"]
    if not text.strip():
        return [f"{pad}#"]
    indent = " " * (len(text) - len(text.lstrip()))
    return textwrap.wrap(text.strip(), width=100, initial_indent=f"{pad}# {indent}",
                         subsequent_indent=f"{pad}# {indent}  ", break_on_hyphens=False,
                         break_long_words=False)


def _block(tests: Sequence[KtapTest], depth: int) -> list[str]:
    """Version line, plan and ``tests`` at nesting ``depth``, indented."""
    pad = INDENT * depth
    lines = [f"{pad}KTAP version 1", f"{pad}1..{len(tests)}"]
    for number, test in enumerate(tests, 1):
        if test.subtests:
            sub = INDENT * (depth + 1)
            lines += [f"{sub}KTAP version 1", f"{sub}# Subtest: {test.name}"]
            lines += _block(test.subtests, depth + 1)[1:]  # its version line is printed above
        for text in test.diagnostics:
            lines += _diagnostics(text, pad)
        result = f"{pad}{'ok' if test.ok else 'not ok'} {number} {test.name}"
        if test.directive:
            reason = _one_line(test.reason)
            result += f" # {test.directive}" + (f" {reason}" if reason else "")
        lines.append(result)
    return lines


def render(tests: Sequence[KtapTest], header: Sequence[str] = ()) -> str:
    """A KTAP document of ``tests``; ``header`` diagnostics after the version line."""
    lines = _block(tests, 0)
    lines[1:1] = [line for h in header for line in _diagnostics(h, "")]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# harness run
# ---------------------------------------------------------------------------


def _check_steps(result: ScenarioResult) -> list[int]:
    """Check steps of a result: counted as checks, or named by a divergence."""
    steps = {step for step, c in result.by_step if c.checks}
    steps |= {d.step for d in result.divergences if d.op == "check" and d.field != "outcome"}
    return sorted(steps)


def _scenario_test(result: ScenarioResult, details: Details | None, places: int) -> KtapTest:
    name = ktap_name(result.scenario)
    if result.status == "skipped":
        return KtapTest(name, True, directive="SKIP", reason=result.message)
    if result.status == "error":
        return KtapTest(name, False, directive="ERROR", reason=result.message)
    counts = dict(result.by_step)
    checks = _check_steps(result)
    by_test: dict[int | None, list[Divergence]] = {}
    for d in result.divergences:
        key = d.step if d.step in checks and d.field != "outcome" else None
        by_test.setdefault(key, []).append(d)
    subtests = []
    for step in checks:
        found = by_test.get(step, [])
        diagnostics = []
        if step in counts:
            diagnostics.append(f"compared {describe_compared(counts[step])}")
        if details is not None:
            diagnostics += [Verbatim(line) for line in details(result, step)]
        diagnostics += divergence_lines(found, places)
        subtests.append(KtapTest(f"step_{step}_check", not found, diagnostics))
    outcomes = by_test.get(None, [])
    steps = sum(c.steps for c in counts.values())
    if steps or outcomes:
        diagnostics = [f"compared {steps} step outcome{'s' * (steps != 1)}"] if steps else []
        subtests.append(KtapTest("outcomes", not outcomes,
                                 diagnostics + divergence_lines(outcomes, places)))
    diagnostics = []
    if (compared := result.compared) is not None:
        diagnostics.append(f"{name}: compared {describe_compared(compared)}")
    if result.divergences:
        n = len(result.divergences)
        diagnostics.append(f"{name}: {n} divergence{'s' * (n != 1)}")
    return KtapTest(name, result.status == "agree", diagnostics, subtests)


def render_run(results: Sequence[ScenarioResult], *, details: Details | None = None,
               places: int = DEFAULT_PLACES, header: Sequence[str] = ()) -> str:
    """``harness run``'s report as KTAP: a test per architecture, a subtest per scenario.

    ``details(result, step)`` adds diagnostic lines to each check (``--show``).
    """
    by_arch: dict[str, list[ScenarioResult]] = {}
    for result in results:
        by_arch.setdefault(result.arch, []).append(result)
    suites = []
    for arch, group in by_arch.items():
        scenarios = [_scenario_test(r, details, places) for r in group]
        diagnostics = []
        if (compared := total_compared(group)) is not None:
            diagnostics.append(f"in total: compared {describe_compared(compared)}")
        ok = all(r.status in ("agree", "skipped") for r in group)
        suites.append(KtapTest(ktap_name(f"pagemap_harness.{arch}"), ok, diagnostics, scenarios))
    return render(suites, header)


# ---------------------------------------------------------------------------
# harness fuzz
# ---------------------------------------------------------------------------


def render_fuzz(arch: str, total: Mapping[str, Any],
                reports: Mapping[int, Sequence[str]] | None = None) -> str:
    """``harness fuzz``'s summary (:func:`harness.fuzz.cli.summarize`) as KTAP.

    One test for the campaign on ``arch``; its subtests: ``campaign`` (what
    ran) and one failing test per finding, ``reports[i]`` (the i-th
    finding's text report, if given) as its diagnostics.
    """
    campaign = [
        f"{total['examples']} examples ({total['rejected']} refused by the loader), "
        f"{total['checks']} checks, {total['workers']} worker(s), "
        f"{total['wall_seconds']:.1f} s",
        f"{total['examples_per_s_per_worker']} examples/s and "
        f"{total['checks_per_s_per_worker']} checks/s per worker",
        f"{total['agree']} agree, {total['diverge']} diverge, {total['errors']} errors, "
        f"{total['vm_boots']} VM boots",
        "ops: " + ", ".join(f"{op} {n}" for op, n in total["ops"].items()),
    ]
    if "compared" in total:
        campaign.append(f"compared {describe_compared(Compared.of(total['compared']))}")
    subtests = [KtapTest("campaign", True, campaign)]
    for i, finding in enumerate(total["findings"]):
        kind, what = finding["signature"][:2]
        diagnostics = [
            f"{kind} {what}: {finding['steps']} steps (shrunk from {finding['first_steps']}), "
            f"seen {finding['seen']}x, worker {finding['worker']}",
            *((reports or {}).get(i, ())),
        ]
        subtests.append(KtapTest(ktap_name(f"finding_{i}_{kind}_{what}")[:80], False,
                                 diagnostics))
    suite = KtapTest(ktap_name(f"harness_fuzz.{arch}"), not total["findings"], [], subtests)
    return render([suite])
