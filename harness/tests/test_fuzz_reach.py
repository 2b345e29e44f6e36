"""Coverage of a fuzz campaign: MODEL.md's rules, their anchors in the model, what ran.

The map from rules to model code is read from sim/MODEL.md and the model's
source (harness/fuzz/rules.py), so these tests check the reading on small
texts written here and on the real files, and the recording (coverage.py)
on the model running catalog scenarios: what a scenario does is reached,
what it does not do is not.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.fuzz.reach import CoverageReport, ModelCoverage, possible_op_pairs
from harness.fuzz.rules import (
    MODEL_MD,
    ModelRulesError,
    kernel_functions_named,
    load_model_rules,
    parse_rules,
)
from harness.model_executor import run_model
from harness.scenario import STEP_TYPES, parse_scenario
from sim.arch import get_arch

ARCH = get_arch("x86_64")

BOOK = """# Rules

`sim.mm` is the model.

## What the model assumes

- `lru_add_drain()` before each sample: not a rule (no model file in the heading).

## Faults (`sim/mm/memory.py`)

| a table | `table_function()` |
|---|---|
- `do_wp_page()` (mm/memory.c): reuse (`wp_page_reuse()`) or copy
  (`wp_page_copy()`), see `folio_try_dup_anon_rmap_pte/pmd()`.
- CPU: SIGSEGV, `can_change_pte/pmd_writable()`.
- A bullet naming nothing.

## smaps (`sim/smaps.py`)

`smap_gather_stats()` via the walker: `no_such_kernel_function()`.
"""


def test_kernel_functions_named_expands_alternatives() -> None:
    assert kernel_functions_named("`a_b_pte/pmd()` and `x()`, not y()") == [
        "a_b_pte", "a_b_pmd", "x"]
    assert kernel_functions_named("`can_change_pte/pmd_writable()`") == [
        "can_change_pte_writable", "can_change_pmd_writable"]
    assert kernel_functions_named("`folio_remove_rmap_*()`") == ["folio_remove_rmap_*"]


def test_rules_are_bullets_and_paragraphs_of_model_file_sections() -> None:
    rules = parse_rules(BOOK)
    assert [(r.section, r.name) for r in rules] == [
        ("Faults", "do_wp_page()"), ("Faults", "CPU"),
        ("smaps", "smap_gather_stats() via the walker"),
    ]
    assert rules[0].functions == ("do_wp_page", "wp_page_reuse", "wp_page_copy",
                                  "folio_try_dup_anon_rmap_pte", "folio_try_dup_anon_rmap_pmd")
    assert rules[1].functions == ("can_change_pte_writable", "can_change_pmd_writable")


def test_a_rule_naming_what_the_model_lacks_is_absent(tmp_path: Path) -> None:
    book = tmp_path / "MODEL.md"
    book.write_text(BOOK)
    model = load_model_rules(book)
    # sim/mm/memory.py, sim/smaps.py, and the package sim.mm the first line names.
    assert {p.name for p in model.files} >= {"memory.py", "smaps.py", "fork.py"}
    assert "no_such_kernel_function" in model.absent
    assert model.anchors["do_wp_page"][0].how == "name"
    assert model.anchors["do_wp_page"][0].path == "sim/mm/memory.py"
    report = CoverageReport(rules=model).to_json()
    assert report["kernel_functions"]["absent"] == model.absent
    assert "do_wp_page" in report["kernel_functions"]["never"]


def test_unreadable_rules_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelRulesError, match="cannot read"):
        load_model_rules(tmp_path / "missing.md")


def test_the_real_rules_have_anchors() -> None:
    model = load_model_rules(MODEL_MD)
    assert len(model.rules) >= 20
    sections = {r.section for r in model.rules}
    assert {"Faults", "mm operations", "Proc files"} <= sections
    # The model functions named after kernel functions are found by name.
    for name in ("do_anonymous_page", "do_wp_page", "wp_page_copy", "dup_mmap",
                 "clear_refs_write", "pagemap_read"):
        assert any(a.how == "name" for a in model.anchors[name]), name
    # Most of what MODEL.md names has model code (by name, docstring or comment).
    assert len(model.absent) < len(model.functions) // 4, model.absent


def _run(name: str, coverage: ModelCoverage) -> None:
    path = Path(__file__).resolve().parents[2] / "tests" / "scenarios" / f"{name}.json"
    scenario = parse_scenario(json.loads(path.read_text()), str(path), ARCH)
    with coverage.recording():
        run_model(scenario, ARCH)


def test_recording_reaches_what_the_scenario_does() -> None:
    coverage = ModelCoverage()
    assert coverage.reached() == set()
    _run("zero_page", coverage)
    reached = coverage.reached()
    assert {"do_anonymous_page", "pagemap_read", "do_mmap"} <= reached
    assert "dup_mmap" not in reached and "clear_refs_write" not in reached
    _run("fork_cow", coverage)
    assert {"dup_mmap", "wp_page_copy"} <= coverage.reached()


def test_report_counts_ops_pairs_and_rules_and_merges() -> None:
    coverage = ModelCoverage()
    _run("soft_dirty", coverage)
    report = CoverageReport(rules=coverage.rules, reached=coverage.reached())
    report.count(["mmap", "write", "check", "clear_refs", "check"])
    data = report.to_json()
    assert data["ops"]["counts"] == {"check": 2, "clear_refs": 1, "mmap": 1, "write": 1}
    assert set(data["ops"]["never"]) == set(STEP_TYPES) - {"mmap", "write", "check", "clear_refs"}
    assert data["op_pairs"]["reached"] == 4
    assert data["op_pairs"]["possible"] == len(possible_op_pairs()) == len(STEP_TYPES) ** 2
    rules = {f"{r['section']}: {r['rule']}": r for r in data["rules"]["each"]}
    clear_refs = next(r for t, r in rules.items() if t.startswith("mm operations: clear_refs"))
    assert clear_refs["state"] == "reached"
    fork = next(r for t, r in rules.items() if t.startswith("mm operations: fork"))
    assert fork["state"] == "never"
    assert f"{fork['section']}: {fork['rule']}" in data["rules"]["never"]
    text = "\n".join(report.text_lines())
    assert "coverage: ops 4/" in text and "rules never reached" in text and "dup_mmap()" in text

    other = CoverageReport(ops=Counter({"fork": 2}), op_pairs=Counter({"fork>check": 1}),
                           reached={"dup_mmap"}, rules=coverage.rules)
    merged = CoverageReport.merge([data, other.to_json()], rules=coverage.rules).to_json()
    assert merged["ops"]["counts"]["fork"] == 2 and merged["ops"]["counts"]["mmap"] == 1
    assert merged["op_pairs"]["reached"] == 5
    assert "dup_mmap" in merged["kernel_functions"]["reached"]
    assert "clear_refs_write" in merged["kernel_functions"]["reached"]


def test_untraced_report_says_so() -> None:
    report = CoverageReport(ops=Counter({"mmap": 1}), traced=False)
    data = report.to_json()
    assert data["kernel_functions"] is None and data["rules"] is None
    assert "not traced" in report.text_lines()[0]
    assert CoverageReport.merge([data]).traced is False


def _worker_summary(worker: str, report: CoverageReport) -> dict[str, object]:
    stats = {"examples": 3, "rejected": 0, "checks": 3, "steps": 9, "agree": 3, "diverge": 0,
             "errors": 0, "vm_boots": 1, "wall_seconds": 2.0, "ops": dict(report.ops)}
    return {"arch": "x86_64", "worker": worker, "seed": 0, "stats": stats,
            "coverage": report.to_json(), "findings": []}


def test_campaign_summary_merges_workers_coverage(tmp_path: Path) -> None:
    from harness.fuzz.cli import _render, summarize, write_summary

    model = load_model_rules()
    first = CoverageReport(rules=model, reached={"do_mmap"})
    first.count(["mmap", "write", "check"])
    second = CoverageReport(rules=model, reached={"dup_mmap"})
    second.count(["mmap", "fork", "check"])
    total = summarize([_worker_summary("w0", first), _worker_summary("w1", second)])
    coverage = total["coverage"]
    assert coverage["ops"]["counts"] == {"check": 2, "fork": 1, "mmap": 2, "write": 1}
    assert coverage["op_pairs"]["reached"] == 4
    assert set(coverage["kernel_functions"]["reached"]) == {"do_mmap", "dup_mmap"}
    text = _render(total, str(tmp_path))
    assert f"coverage: ops 4/{len(STEP_TYPES)}" in text
    assert "kernel functions 2/" in text and "rules never reached" in text
    path = write_summary(total, tmp_path / "out", "x86_64")
    assert json.loads(path.read_text())["coverage"] == coverage


def test_only_anchored_model_files_are_traced() -> None:
    model = load_model_rules()
    traced = {p.name for p in model.anchored_files}
    assert {"memory.py", "procfs.py", "smaps.py"} <= traced
    holding = {a.path.rsplit("/", 1)[-1] for anchors in model.anchors.values() for a in anchors}
    assert traced == holding
    assert set(model.anchored_files) <= set(model.files)
    assert len(model.anchored_files) < len(model.files), "every model file holds an anchor?"
