"""KTAP reports, read back by two parsers: a strict reader of ktap.rst's grammar, and the
kernel's own tools/testing/kunit/kunit_parser.py (from the kernel source tree the
image cache unpacked; run where it lies, never copied).

The reports are of the recorded guest runs (harness/tests/data/recorded/), of
planted divergences in them, of skipped and failed scenarios, and of a fuzz
campaign's summary.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from harness.compare import compare_counted
from harness.fuzz.cli import finding_reports, summarize
from harness.ktap import INDENT, ktap_name, render_fuzz, render_run
from harness.observations import ReadResult
from harness.report import ScenarioResult
from harness.tests.test_replay import Replay, replay, with_check
from images.cache import Cache
from sim.flags import PM
from sim.formats import build_u64s, parse_u64s

# ---------------------------------------------------------------------------
# A strict reader of Documentation/dev-tools/ktap.rst
# ---------------------------------------------------------------------------

RESULT = re.compile(r"(ok|not ok) ([1-9][0-9]*)(?: ([^#]*?))?(?: # (.*))?")
DIRECTIVES = ("SKIP", "TODO", "XFAIL", "TIMEOUT", "ERROR")


@dataclass
class Node:
    """A parsed test: its result, directive, diagnostic lines and subtests."""

    name: str
    ok: bool
    directive: str = ""
    data: str = ""
    diagnostics: list[str] = field(default_factory=list)
    subtests: list[Node] = field(default_factory=list)


class Strict:
    """Reads KTAP version 1 and fails on anything ktap.rst does not allow.

    Every line is a version line, a plan, a result or a diagnostic at exactly
    its nesting depth's indentation (no unknown lines: we print none); test
    numbers run 1..N as the plan says; a subtest block is a version line one
    level deeper, its plan and its tests, followed by its parent's result.
    """

    def __init__(self, text: str) -> None:
        assert text.endswith("\n") and "\r" not in text
        self.lines = text.splitlines()
        self.at = 0

    def line(self, depth: int) -> str | None:
        """The next line's content at ``depth`` (None at the end or at another depth)."""
        if self.at >= len(self.lines):
            return None
        line = self.lines[self.at]
        pad = INDENT * depth
        if not line.startswith(pad) or line[len(pad):].startswith(" "):
            return None
        return line[len(pad):]

    def take(self, depth: int) -> str:
        content = self.line(depth)
        assert content is not None, f"line {self.at + 1} is not at depth {depth}: " \
            f"{self.lines[self.at] if self.at < len(self.lines) else '<end>'!r}"
        self.at += 1
        return content

    def document(self) -> list[Node]:
        tests = self.block(0)
        assert self.at == len(self.lines), f"trailing line {self.at + 1}: {self.lines[self.at]!r}"
        return tests

    def block(self, depth: int) -> list[Node]:
        assert self.take(depth) == "KTAP version 1"
        header = self.diagnostics(depth)
        plan = re.fullmatch(r"1\.\.([0-9]+)", self.take(depth))
        assert plan, f"line {self.at}: no plan"
        del header
        return [self.test(depth, number) for number in range(1, int(plan[1]) + 1)]

    def diagnostics(self, depth: int) -> list[str]:
        found = []
        while (content := self.line(depth)) is not None and content.startswith("#"):
            assert content == "#" or content.startswith("# "), content
            found.append(content[2:])
            self.at += 1
        return found

    def test(self, depth: int, number: int) -> Node:
        subtests: list[Node] = []
        if self.line(depth + 1) == "KTAP version 1":
            subtests = self.block(depth + 1)
        diagnostics = self.diagnostics(depth)
        content = self.take(depth)
        match = RESULT.fullmatch(content)
        assert match, f"line {self.at}: not a result line: {content!r}"
        assert int(match[2]) == number, f"line {self.at}: test {match[2]}, expected {number}"
        name, rest = (match[3] or "").strip(), match[4] or ""
        directive, _, data = rest.partition(" ")
        if directive not in DIRECTIVES:
            directive, data = "", rest
        node = Node(name, match[1] == "ok", directive, data, diagnostics, subtests)
        if subtests and any(not t.ok and t.directive != "SKIP" for t in subtests):
            assert not node.ok, f"{name} passes with a failing subtest"
        return node


def strict(text: str) -> list[Node]:
    return Strict(text).document()


def walk(nodes: list[Node], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Node]]:
    for node in nodes:
        yield (*path, node.name), node
        yield from walk(node.subtests, (*path, node.name))


# ---------------------------------------------------------------------------
# Reports to read
# ---------------------------------------------------------------------------


def _result(r: Replay, real: Any = None) -> ScenarioResult:
    comparison = compare_counted(r.model, real or r.real, r.scenario, r.arch)
    return ScenarioResult.from_comparison(r.scenario.name, r.arch.name, comparison)


def _soft_dirty_flipped(r: Replay) -> Any:
    """The real side with soft-dirty flipped on the last check's first present page."""
    check = r.real.checks[-1]
    for ri, region in enumerate(check.regions):
        raws = parse_u64s(r.arch, region.pagemap.data or b"")
        for page, raw in enumerate(raws):
            if raw >> PM.PRESENT & 1:
                raws[page] = raw ^ 1 << PM.SOFT_DIRTY
                bad = replace(region, pagemap=ReadResult.ok(build_u64s(r.arch, raws)))
                regions = tuple(bad if i == ri else x for i, x in enumerate(check.regions))
                return with_check(r.real, replace(check, regions=regions)), check.step, region
    pytest.fail("no present page")


def run_results() -> list[ScenarioResult]:
    """Agreeing, diverging, skipped and failed scenarios on two architectures."""
    fork_cow = replay("x86_64", "fork_cow")
    real, _, _ = _soft_dirty_flipped(fork_cow)
    return [
        _result(fork_cow),
        _result(replay("x86_64", "unprivileged_child")),
        replace(_result(fork_cow, real), scenario="fork_cow_planted"),
        ScenarioResult("thp_zero", "x86_64", "skipped", message="no THP on this # arch"),
        ScenarioResult("hang", "x86_64", "error", message="guest: agent timeout after 30 s"),
        _result(replay("ppc64", "shm_mix")),
    ]


def test_run_report_reads_strictly() -> None:
    results = run_results()
    text = render_run(results, header=["harness run on x86_64 and ppc64"])
    tests = strict(text)
    assert [(t.name, t.ok) for t in tests] == [
        ("pagemap_harness.x86_64", False), ("pagemap_harness.ppc64", True)]
    x86 = {t.name: t for t in tests[0].subtests}
    assert list(x86) == ["fork_cow", "unprivileged_child", "fork_cow_planted", "thp_zero", "hang"]
    fork_cow = x86["fork_cow"]
    assert fork_cow.ok and [t.name for t in fork_cow.subtests] == [
        "step_3_check", "step_5_check", "step_7_check", "step_9_check", "outcomes"]
    # Each check says what it compared.
    assert fork_cow.subtests[0].diagnostics[0].startswith(
        "compared 1 check: 8 pagemap entries (8 PFNs paired), 4 frames")
    assert any("compared 4 checks: 28 pagemap entries" in d for d in fork_cow.diagnostics)
    # The planted divergence fails its check (and only it), named in its diagnostics.
    planted = x86["fork_cow_planted"]
    failing = [t for t in planted.subtests if not t.ok]
    assert [t.name for t in failing] == ["step_9_check"]
    assert any(d.startswith("pagemap.soft_dirty: model ") for d in failing[0].diagnostics)
    assert any(d.strip().startswith("at main a+") for d in failing[0].diagnostics)
    assert not planted.ok
    skip, error = x86["thp_zero"], x86["hang"]
    assert (skip.ok, skip.directive, skip.data) == (True, "SKIP", "no THP on this # arch")
    assert (error.ok, error.directive, error.data) == (False, "ERROR",
                                                       "guest: agent timeout after 30 s")
    assert not skip.subtests and not error.subtests


#: Run in the kernel tree's tools/testing/kunit: parse stdin, write the tree as JSON to argv[1].
_KUNIT = """
import json, sys
import kunit_parser

def tree(test):
    rows = []
    for sub in test.subtests:
        rows.append([sub.name, sub.status.name, sub.counts.errors])
        rows += tree(sub)
    return rows

main = kunit_parser.parse_run_tests(sys.stdin.read().splitlines())
with open(sys.argv[1], "w") as out:
    json.dump({"status": main.status.name, "errors": main.counts.errors, "tree": tree(main)}, out)
"""


def kunit_parse(text: str, tmp_path: Path) -> dict[str, Any]:
    """``text`` through kunit_parser.py of the newest kernel tree in the image cache (skip if
    there is none): the main test's status, its parse errors, (name, status, errors) of
    every test depth first."""
    found = sorted((Cache.default().root / "source").glob(
        "*/linux/tools/testing/kunit/kunit_parser.py"))
    if not found:
        pytest.skip("no kernel source tree with tools/testing/kunit in the image cache "
                    "(python -m images build unpacks one); the strict reader ran")
    out = tmp_path / "kunit.json"
    done = subprocess.run([sys.executable, "-c", _KUNIT, str(out)], input=text, text=True,
                          cwd=found[-1].parent, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _strict_tree(nodes: list[Node]) -> list[tuple[str, str, int]]:
    """(name, status as kunit_parser names it, 0) of every test, depth first."""
    rows = []
    for node in nodes:
        status = "SKIPPED" if node.directive == "SKIP" else "SUCCESS" if node.ok else "FAILURE"
        rows.append((node.name, status, 0))
        rows += _strict_tree(node.subtests)
    return rows


@pytest.mark.parametrize("which", ["run", "fuzz"])
def test_kunit_parser_reads_our_ktap(which: str, tmp_path: Path) -> None:
    """The kernel's kunit_parser.py parses every test, with no error, as the strict reader."""
    text = render_run(run_results()) if which == "run" else render_fuzz("x86_64", fuzz_total())
    parsed = kunit_parse(text, tmp_path)
    assert parsed["errors"] == 0
    assert [tuple(row) for row in parsed["tree"]] == _strict_tree(strict(text))
    assert parsed["status"] == "FAILURE"  # both documents hold a failing test


def fuzz_total() -> dict[str, Any]:
    """A two-worker campaign's summary: one finding, as harness.fuzz.cli sums it."""
    def worker(name: str, findings: list[dict[str, Any]]) -> dict[str, Any]:
        stats = {"examples": 40, "rejected": 0, "checks": 120, "steps": 800, "agree": 39,
                 "diverge": len(findings), "errors": 0, "vm_boots": 1, "wall_seconds": 20.0,
                 "ops": {"mmap": 60, "check": 120, "fork": 10},
                 "compared": {"checks": 120, "steps": 800, "pagemap_entries": 1000}}
        return {"worker": name, "stats": stats, "findings": findings}
    finding = {"signature": ["value", "pagemap.soft_dirty"], "steps": 4, "first_steps": 17,
               "seen": 3, "scenario": {}, "stem": "x86_64.w1.0.value_pagemap.soft_dirty"}
    return summarize([worker("w0", []), worker("w1", [finding])])


def test_fuzz_report_reads_strictly() -> None:
    report = ["FAIL fuzz_w1 on x86_64: 1 divergence", "  step 3 (check)",
              "    pagemap.soft_dirty: model 1, real 0"]
    tests = strict(render_fuzz("x86_64", fuzz_total(), {0: report}))
    assert [(t.name, t.ok) for t in tests] == [("harness_fuzz.x86_64", False)]
    campaign, finding = tests[0].subtests
    assert campaign.ok and campaign.diagnostics[0].startswith("80 examples (0 refused")
    assert campaign.diagnostics[-1] == (
        "compared 240 checks: 2000 pagemap entries, 1600 step outcomes")
    assert (finding.name, finding.ok) == ("finding_0_value_pagemap.soft_dirty", False)
    assert finding.diagnostics[0] == (
        "value pagemap.soft_dirty: 4 steps (shrunk from 17), seen 3x, worker w1")
    assert finding.diagnostics[1:] == report
    clean = fuzz_total()
    clean["findings"] = []
    tests = strict(render_fuzz("x86_64", clean))
    assert tests[0].ok and [t.name for t in tests[0].subtests] == ["campaign"]


def test_names_and_diagnostics_stay_in_the_grammar() -> None:
    assert ktap_name("a b#c\nd") == "a_b_c_d"
    assert ktap_name("###") == "unnamed"
    weird = ScenarioResult("x # y", "x86_64", "error", message="line one\nline two\x1b[31m")
    tests = strict(render_run([weird]))
    node = tests[0].subtests[0]
    assert (node.name, node.directive, node.data) == ("x_y", "ERROR", "line one line two [31m")


def test_fuzz_cli_reads_each_findings_report(tmp_path: Path) -> None:
    total = fuzz_total()
    stem = total["findings"][0]["stem"]
    (tmp_path / f"{stem}.report.txt").write_text("FAIL x on x86_64: 1 divergence\n  step 3\n")
    assert finding_reports(total, tmp_path) == {0: ["FAIL x on x86_64: 1 divergence", "  step 3"]}
    (tmp_path / f"{stem}.report.txt").unlink()
    (missing,) = finding_reports(total, tmp_path)[0]
    assert missing.startswith("report ") and missing.endswith("No such file or directory")
