"""``harness run --show --format ktap`` on a real guest: the KTAP reads strictly and (where
the kernel tree is cached) through the kernel's kunit_parser.py; every check of the
scenario is a passing subtest that says what it compared and shows its decoded pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.arches import ArchProfile
from harness.image import BootImage
from harness.run import main as run_main
from harness.tests.test_ktap import kunit_parse, strict

pytestmark = pytest.mark.vm

SCENARIO = Path(__file__).parent / "scenarios" / "fork_cow.json"


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
