"""``harness run`` survives a fault of ours in one scenario (issue 16).

The real CLI (:func:`harness.run.main`, in this process so a fault can be
planted) on a real guest: the guest executor's Fork handler (replaced in its
table) raises an exception that no executor expects, part-way through one
scenario, with named processes of it alive (one unprivileged).  That scenario
must end as an ``error`` with a one-line cause naming the exception and where it was raised, with no
traceback; the VM is replaced; the scenarios after it still run and agree;
the exit status is 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.arches import ArchProfile
from harness.guest_executor import GUEST, GuestRun
from harness.image import BootImage
from harness.run import main as run_main
from harness.scenario import Fork

pytestmark = pytest.mark.vm

SCENARIO_DIR = Path(__file__).parent / "scenarios"
PLANTED = "planted_fault"


def test_fault_in_guest_executor_is_that_scenarios_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    profile: ArchProfile,
    boot_image: BootImage,
) -> None:
    real_fork = GUEST.find(Fork)
    assert real_fork is not None

    def fork(run: GuestRun, step: Fork) -> None:
        real_fork(run, step)  # the process exists in the guest ...
        if run.scenario.name == PLANTED and step.child == "g":
            raise KeyError(step.child)  # ... and then a bug of ours

    # The guest executor's own table, so the planted handler runs where the real one would.
    monkeypatch.setitem(GUEST._table, Fork, fork)
    monkeypatch.setattr(GUEST, "_resolved", {})
    planted = tmp_path / f"{PLANTED}.json"
    data = json.loads((SCENARIO_DIR / "unprivileged_fork.json").read_text())
    planted.write_text(json.dumps({**data, "name": PLANTED}))
    after = ["unprivileged_fork", "unprivileged_tree", "anon_private"]
    status = run_main([
        "--arch", profile.name, "--json",
        "--kernel", str(boot_image.kernel), "--initramfs", str(boot_image.initramfs),
        str(planted), *(str(SCENARIO_DIR / f"{name}.json") for name in after),
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    results = {r["scenario"]: r for r in json.loads(out)["results"]}
    assert list(results) == [PLANTED, *after]
    fault = results[PLANTED]
    assert fault["status"] == "error"
    assert "\n" not in fault["message"]
    # The deepest frame of ours (the planted handler is the test's): the table's dispatch.
    assert fault["message"].startswith(
        "guest: internal error: KeyError: 'g' (harness/scenario/dispatch.py:"
    ), fault
    assert fault["message"].endswith(" in __call__)"), fault
    for name in after:
        assert results[name]["status"] == "agree", results[name]
    assert status == 2
    # One VM for the planted scenario, a new one for the rest.
    assert err.count(f"booted {profile.name}") == 2, err
    assert f"replacing the VM after {PLANTED}" in err
