"""userfaultfd write-protect in the guest: planted model errors the uffd-wp catalog catches.

The uffd scenarios themselves run in tests/test_scenarios.py.  Here each planted
error of the uffd-wp model (sim/mm/userfaultfd.py and the fork and zap paths that
call it) makes its scenario diverge from the same guest observations that agree
with the true model.  powerpc has no uffd-wp (UFFDIO_REGISTER_MODE_WP is EINVAL,
which the model predicts), so there the plants change nothing a guest shows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sim.mm.fork as fork_module
import sim.mm.memory as memory_module
import sim.mm.userfaultfd as userfaultfd
from harness.compare import compare
from harness.guest_executor import run_guest
from harness.model_executor import run_model
from harness.scenario import load_scenario
from harness.vm import VM
from sim.mm.pte import PTE_MARKER_UFFD_WP, PTE_UFFD_WP

SCENARIO_DIR = Path(__file__).parent / "scenarios"


def _no_markers(mm: Any, vma: Any) -> bool:
    return False


def _child_keeps_wp(child_vma_flags: int, bits: int) -> int:
    return bits


def _zap_keeps_everything(vma: Any, table: Any, i: int, old_bits: int,
                          drop_markers: bool) -> None:
    if old_bits & (PTE_MARKER_UFFD_WP | PTE_UFFD_WP):
        table.set(i, 0, PTE_MARKER_UFFD_WP)


#: Planted errors: (what, module, function replaced, the replacement, the scenario that
#: must catch it).
PLANTED: list[tuple[str, Any, str, Callable[..., Any], str]] = [
    ("no markers on unpopulated pages (WP_UNPOPULATED ignored)", userfaultfd,
     "userfaultfd_wp_use_markers", _no_markers, "uffd_wp_unpopulated"),
    ("the child keeps uffd-wp without EVENT_FORK", fork_module, "child_pte_bits",
     _child_keeps_wp, "uffd_wp_fork"),
    ("MADV_DONTNEED of an anonymous VMA leaves markers", memory_module, "zap_uffd_wp",
     _zap_keeps_everything, "uffd_wp_dontneed"),
]


@pytest.mark.parametrize(("what", "module", "name", "planted", "scenario_name"), PLANTED,
                         ids=[p[2] for p in PLANTED])
def test_planted_uffd_wp_error_is_caught(
    what: str, module: Any, name: str, planted: Callable[..., Any], scenario_name: str,
    vm: VM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    arch = vm.profile.arch
    if not arch.uffd_wp:
        pytest.skip(f"{arch.name} has no uffd-wp (registering wp is EINVAL): a plant cannot show")
    scenario = load_scenario(SCENARIO_DIR / f"{scenario_name}.json", arch)
    real = run_guest(scenario, vm)
    facts = vm.facts
    assert facts is not None
    assert compare(run_model(scenario, arch, facts=facts), real, scenario, arch) == []
    assert hasattr(module, name), f"{module.__name__} has no {name}"
    monkeypatch.setattr(module, name, planted)
    divergences = compare(run_model(scenario, arch, facts=facts), real, scenario, arch)
    assert divergences, f"{scenario_name} does not catch: {what}"
