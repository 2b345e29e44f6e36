"""Results of a kernel selftest from its TAP output (tools/testing/selftests/kselftest.h).

kselftest prints TAP 13 as Documentation/dev-tools/ktap.rst describes:
``TAP version 13``, a plan ``1..N``, result lines ``ok N name`` / ``not ok N
name`` with an optional directive (``# SKIP reason``, ``# XFAIL reason``,
``# TODO``), diagnostics (``# ...``, free text), ``Bail out! reason``
(ksft_exit_fail_msg) and the ``# Totals: pass:P fail:F xfail:X xpass:Y
skip:S error:E`` line ksft_finished() prints.  The program's exit status is
kselftest's verdict too: 0 pass, 1 fail, 2 xfail, 3 xpass, 4 skip
(KSFT_PASS..KSFT_SKIP).

Why not a library: ``tap.py`` is not in the registries this project may use,
and ``pytap13`` (last release 2014) knows neither KTAP's indented subtests
nor kselftest's Bail out/Totals lines; the subset needed is a page of code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["KSFT_EXIT", "Case", "Outcome", "TapRun", "parse_tap"]


class Outcome(Enum):
    """What a case (or a whole program) came to."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    XFAIL = "xfail"
    #: No result line for a case the plan announced, a bail out, a crash or a timeout.
    ERROR = "error"


#: kselftest.h's exit codes.
KSFT_EXIT = {0: Outcome.PASS, 1: Outcome.FAIL, 2: Outcome.XFAIL, 3: Outcome.FAIL, 4: Outcome.SKIP}

_RESULT = re.compile(r"^(?P<not>not )?ok(?: (?P<number>\d+))?(?: -)?\s*(?P<rest>.*)$")
_PLAN = re.compile(r"^1\.\.(?P<count>\d+)")
_DIRECTIVE = re.compile(r"\s#\s*(?P<kind>SKIP|XFAIL|TODO|TIMEOUT|ERROR)\b\s*(?P<why>.*)$", re.I)
_TOTALS = re.compile(
    r"^# Totals: pass:(?P<pass>\d+) fail:(?P<fail>\d+) xfail:(?P<xfail>\d+) "
    r"xpass:(?P<xpass>\d+) skip:(?P<skip>\d+) error:(?P<error>\d+)"
)


@dataclass(frozen=True)
class Case:
    """One result line: its number, name, outcome, the directive's reason, and the
    diagnostic lines printed since the previous result (most recent last)."""

    number: int
    name: str
    outcome: Outcome
    reason: str = ""
    diagnostics: tuple[str, ...] = ()


@dataclass
class TapRun:
    """A program's parsed output: its cases, plan, totals line and bail-out message."""

    cases: list[Case] = field(default_factory=list)
    plan: int | None = None
    totals: dict[str, int] | None = None
    bail_out: str | None = None

    def missing(self) -> int:
        """Cases the plan announced that have no result line."""
        return 0 if self.plan is None else max(0, self.plan - len(self.cases))


def _result(match: re.Match[str], number: int, diagnostics: list[str]) -> Case:
    rest = match.group("rest")
    failed = match.group("not") is not None
    directive = _DIRECTIVE.search(" " + rest)
    reason = ""
    if directive is not None:
        rest = (" " + rest)[: directive.start()].strip()
        kind = directive.group("kind").upper()
        reason = directive.group("why").strip()
        if kind == "SKIP":
            outcome = Outcome.SKIP
        elif kind == "XFAIL":
            outcome = Outcome.XFAIL
        elif kind == "TODO":
            outcome = Outcome.XFAIL if failed else Outcome.PASS
        else:
            outcome = Outcome.ERROR
    else:
        outcome = Outcome.FAIL if failed else Outcome.PASS
    name = rest.strip()
    if not name and outcome is Outcome.XFAIL:
        # ksft_test_result_xfail(msg): the message is the case (mremap_test).
        name, reason = reason, ""
    elif not name and diagnostics:
        # ksft_test_result_skip(msg) prints no name: the test announced itself last.
        name = re.sub(r"^\[\w+\]\s*", "", diagnostics[-1])
    if outcome is Outcome.FAIL and not reason:
        # The failing check is usually the last diagnostic before the result.
        reason = diagnostics[-1] if diagnostics else ""
    return Case(number, name, outcome, reason, tuple(diagnostics))


def parse_tap(text: str) -> TapRun:
    """The top-level results of ``text`` (indented subtests are kept as diagnostics).

    Numbers missing from a result line count on from the previous one, as TAP
    says; a result line seen before is dropped (see the comment).  Never
    raises: text that is not TAP simply has no cases.
    """
    run = TapRun()
    diagnostics: list[str] = []
    seen: set[str] = set()
    number = 0
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line:
            continue
        if line.startswith(("  ", "\t")):
            diagnostics.append(line.strip())
            continue
        if (plan := _PLAN.match(line)) is not None:
            if run.plan is None:
                run.plan = int(plan.group("count"))
            continue
        if (totals := _TOTALS.match(line)) is not None:
            run.totals = {key: int(value) for key, value in totals.groupdict().items()}
            continue
        if line.startswith("Bail out!"):
            run.bail_out = line[len("Bail out!"):].strip() or "(no reason given)"
            continue
        if (result := _RESULT.match(line)) is not None:
            number = int(result.group("number") or number + 1)
            if line in seen:
                # Through a pipe stdout is block-buffered: a child the test forks
                # that calls exit() prints the parent's unflushed lines again.
                continue
            seen.add(line)
            run.cases.append(_result(result, number, diagnostics))
            diagnostics = []
            continue
        if line.startswith("#"):
            line = line[1:].strip()
        if line and not line.startswith("TAP version"):
            diagnostics.append(line)
    return run
