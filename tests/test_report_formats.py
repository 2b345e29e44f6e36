"""``harness run --show --format ktap`` on a real guest: the KTAP reads strictly and (where
the kernel tree is cached) through the kernel's kunit_parser.py; every check of the
scenario is a passing subtest that says what it compared and shows its decoded pages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_fuzz import planted_soft_dirty_error  # noqa: F401 (a fixture)

from harness.arches import ArchProfile
from harness.image import BootImage
from harness.run import main as run_main
from harness.tests.test_ktap import kunit_parse, strict

pytestmark = pytest.mark.vm

SCENARIO = Path(__file__).parent / "scenarios" / "fork_cow.json"
#: A COW copy made after clear_refs: its soft-dirty bit is its PTE's alone.
COW_AFTER_CLEAR_REFS = {
    "name": "cow_after_clear_refs",
    "description": "The child writes both pages after clear_refs: two COW copies, soft-dirty.",
    "steps": [
        {"op": "mmap", "region": "a", "pages": 2, "kind": "anon", "share": "private",
         "prot": "rw"},
        {"op": "write", "region": "a", "pages": [0, 2]},
        {"op": "fork", "child": "c"},
        {"op": "clear_refs", "proc": "c", "value": 4},
        {"op": "write", "proc": "c", "region": "a", "pages": [0, 2]},
        {"op": "check"},
    ],
}


def test_run_show_ktap(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, profile: ArchProfile,
    boot_image: BootImage,
) -> None:
    status = run_main([
        "--arch", profile.name, "--format", "ktap", "--show",
        "--kernel", str(boot_image.kernel), "--initramfs", str(boot_image.initramfs),
        str(SCENARIO),
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert "Traceback" not in out + err
    tests = strict(out)
    suite = tests[0]
    assert (suite.name, suite.ok) == (f"pagemap_harness.{profile.name}", True)
    (scenario,) = suite.subtests
    assert (scenario.name, scenario.ok) == ("fork_cow", True)
    checks = [t for t in scenario.subtests if t.name.startswith("step_")]
    steps = [i for i, step in enumerate(json.loads(SCENARIO.read_text())["steps"])
             if step["op"] == "check"]
    assert [t.name for t in checks] == [f"step_{i}_check" for i in steps]
    for check in checks:
        assert check.ok
        compared = check.diagnostics[0]
        assert compared.startswith("compared 1 check: ") and " frames (" in compared
        table = [d for d in check.diagnostics if d.startswith("page ")]
        assert table and "guest PFN" in table[0] and table[0].endswith(" ref"), table
        assert any(" P-" in d and "ANON" in d for d in check.diagnostics), check.diagnostics
    assert scenario.subtests[-1].name == "outcomes"
    parsed = kunit_parse(out, tmp_path)
    assert parsed["errors"] == 0 and parsed["status"] == "SUCCESS"


@pytest.mark.usefixtures("planted_soft_dirty_error")
@pytest.mark.parametrize("form", ["text", "ktap"])
def test_run_show_marks_a_planted_divergence(
    form: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, profile: ArchProfile,
    boot_image: BootImage,
) -> None:
    """The model forgets soft-dirty on COW copies: the rows of the copied pages are marked,
    with the guest's bits and the model's under them, in text and in KTAP."""
    if not profile.arch.soft_dirty:
        pytest.skip(f"{profile.name} has no soft-dirty bit: the planted error cannot show")
    scenario = tmp_path / "cow_after_clear_refs.json"
    scenario.write_text(json.dumps(COW_AFTER_CLEAR_REFS))
    status = run_main([
        "--arch", profile.name, "--format", form, "--show",
        "--kernel", str(boot_image.kernel), "--initramfs", str(boot_image.initramfs),
        str(scenario),
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 1, out + err
    lines = out.splitlines()
    if form == "ktap":
        tests = strict(out)
        assert not tests[0].ok
        failing = [t for t in tests[0].subtests[0].subtests if not t.ok]
        assert failing and all(t.name.startswith("step_") for t in failing)
        lines = [d for t in failing for d in t.diagnostics]
        assert any(d.startswith("pagemap.soft_dirty: model 0, real 1") for d in lines), lines
        assert kunit_parse(out, tmp_path)["errors"] == 0
    else:
        assert f"FAIL cow_after_clear_refs on {profile.name}: " in out
    marked = [i for i, line in enumerate(lines) if line.startswith("!")]
    assert marked, out
    for i in marked:
        guest = re.search(r" (P[-SFXDWG]{6}) ", lines[i])
        model = re.search(r"\[(P[-SFXDWG]{6})\]", lines[i + 1])
        assert guest and model, lines[i : i + 2]
        assert guest[1][4] == "D" and model[1][4] == "-"
