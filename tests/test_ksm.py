"""KSM in a real guest: planted model errors are caught, and ksm steps repeat exactly.

The catalog's ksm_* scenarios agree through tests/test_scenarios.py.  Here each
of a few deliberate errors planted in the model (sim/mm/ksm.py and the KPF
flags of KSM folios) must make its scenario diverge from the same guest run
that the unplanted model agrees with: the scenarios and the comparison see
what the model's KSM rules decide.  And a ksm scenario run many times in one
VM (ksmd's state, its stable tree and mm list, outlives each run) must agree
every time: nothing in a ksm step depends on timing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.compare import compare
from harness.guest_executor import run_guest
from harness.model_executor import run_model
from harness.scenario import Scenario, load_scenario
from harness.vm import VM
from sim.flags import KPF
from sim.mm import Machine
from sim.mm.facts import PINNED
from sim.mm.ksm import Ksm
from sim.mm.memmap import PhysMem

SCENARIO_DIR = Path(__file__).parent / "scenarios"


def _no_kpf_ksm(monkeypatch: pytest.MonkeyPatch) -> None:
    """KPF_KSM missing on KSM folios (stable_page_flags() without folio_test_ksm())."""
    original = PhysMem.stable_page_flags

    def flags(self: PhysMem, pfns: np.ndarray) -> np.ndarray:
        return original(self, pfns) & np.uint64(~(1 << KPF.KSM) & ((1 << 64) - 1))

    monkeypatch.setattr(PhysMem, "stable_page_flags", flags)


def _scans(delta: int) -> Callable[[pytest.MonkeyPatch], None]:
    """A ksm step of 2 + ``delta`` full scans in the model."""

    def plant(monkeypatch: pytest.MonkeyPatch) -> None:
        original = Machine.ksm_scan

        def ksm_scan(self: Machine, scans: int = 2, use_zero_pages: bool | None = None) -> int:
            return original(self, scans + delta, use_zero_pages)

        monkeypatch.setattr(Machine, "ksm_scan", ksm_scan)

    return plant


def _no_smart_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """ksm_smart_scan off: no page is ever skipped."""
    def should_skip(self: Ksm, mem: PhysMem, page: int, item: object) -> bool:
        return False

    monkeypatch.setattr(Ksm, "_should_skip", should_skip)


def _zero_pages_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """use_zero_pages ignored: zero-filled pages merge into a KSM page of their own."""
    original = Machine.ksm_scan

    def ksm_scan(self: Machine, scans: int = 2, use_zero_pages: bool | None = None) -> int:
        return original(self, scans, None)

    monkeypatch.setattr(Machine, "ksm_scan", ksm_scan)


#: Planted error -> (how to plant it, the scenario that must then diverge).
PLANTED: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str]] = {
    "kpf_ksm_missing": (_no_kpf_ksm, "ksm_merge_two_pages"),
    "one_scan": (_scans(-1), "ksm_merge_two_pages"),
    "three_scans": (_scans(+1), "ksm_fork_two_scans"),
    "no_smart_scan": (_no_smart_scan, "ksm_smart_scan"),
    "zero_pages_ignored": (_zero_pages_ignored, "ksm_zero_pages"),
}


@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_planted_ksm_error_is_caught(planted: str, vm: VM) -> None:
    plant, name = PLANTED[planted]
    scenario = load_scenario(SCENARIO_DIR / f"{name}.json")
    arch = vm.profile.arch
    facts = vm.facts or PINNED
    real = run_guest(scenario, vm)
    assert compare(run_model(scenario, arch, facts=facts), real, scenario, arch) == []
    with pytest.MonkeyPatch.context() as monkeypatch:
        plant(monkeypatch)
        wrong = run_model(scenario, arch, facts=facts)
    assert compare(wrong, real, scenario, arch), f"{name} does not catch {planted}"


def _ksm_scenarios() -> Iterator[Path]:
    return iter(sorted(SCENARIO_DIR.glob("ksm_*.json")))


@pytest.mark.parametrize("path", list(_ksm_scenarios()), ids=lambda p: p.stem)
def test_ksm_scenario_repeats(path: Path, agrees_repeatedly: Callable[[Scenario], None]) -> None:
    """Repeated runs in one VM (tests/conftest.py REPEATS), each agreeing with the model."""
    agrees_repeatedly(load_scenario(path))
