"""Huge shmem folios in a real guest: planted model errors the shmem THP catalog catches,
and the catalog's shmem_thp_* scenarios repeated in one VM.

The scenarios themselves run once in tests/test_scenarios.py.  Here each planted
error of the shmem THP model (sim/mm/shmem_thp.py and the fault and split paths
that call it) makes its scenario diverge from the same guest observations that
agree with the true model; and each shmem_thp_* scenario run REPEATS (tests/conftest.py)
times in a row in one VM agrees every time (khugepaged, the LRU batches and the
page allocator's state outlive each run, so this is where timing would show).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sim.mm.huge_memory as huge_memory
import sim.mm.memory as memory_module
from harness.compare import compare
from harness.guest_executor import run_guest
from harness.model_executor import run_model
from harness.scenario import Scenario, load_scenario
from harness.vm import VM
from sim.mm.facts import PINNED
from sim.mm.pagetable import HugePmd
from sim.mm.shmem_thp import MAX_PAGECACHE_ORDER

SCENARIO_DIR = Path(__file__).parent / "scenarios"


def _never_pmd(mm: Any, vma: Any, addr: int, page: int, write: bool) -> bool:
    """do_set_pmd() always VM_FAULT_FALLBACK: PTEs where the kernel maps a PMD."""
    return False


def _split_forgets_young(mm: Any, haddr: int, pmd: HugePmd) -> None:
    """__split_huge_pmd_locked() of a file VMA without folio_set_referenced() for a young
    PMD: the zap drops the mapping and its reference only."""
    mm.pt.clear_pmd(haddr)
    mm.mem.folio_remove_rmap_pmd(pmd.pfn)
    mm.mem.folio_put(pmd.pfn)


def _zap_page_by_page(mm: Any, table: Any, i: int, end: int, vma: Any, recency: bool) -> int:
    """zap_present_ptes() without batches: each young PTE of a large page-cache folio marks
    it accessed again (the second call activates it)."""
    memory_module.zap_present_pte(mm, table, i, vma, recency)
    return 1


#: Planted errors: (what, module, function replaced, the replacement, the scenario that
#: must catch it).
PLANTED: list[tuple[str, Any, str, Callable[..., Any], str]] = [
    ("PTEs where the kernel maps a PMD (do_set_pmd() never succeeds)", memory_module,
     "do_set_pmd", _never_pmd, "shmem_thp_shared_fork_partial_munmap"),
    ("a file VMA's split PMD leaves no PG_referenced", huge_memory, "split_file_pmd",
     _split_forgets_young, "shmem_thp_shared_fork_partial_munmap"),
    ("a zap marks a large file folio accessed once per PTE (no folio_pte_batch())",
     memory_module, "zap_present_ptes", _zap_page_by_page, "shmem_thp_pte_batch_zap"),
]


@pytest.mark.parametrize(("what", "module", "name", "planted", "scenario_name"), PLANTED,
                         ids=[p[2] for p in PLANTED])
def test_planted_shmem_thp_error_is_caught(
    what: str, module: Any, name: str, planted: Callable[..., Any], scenario_name: str,
    vm: VM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    arch = vm.profile.arch
    if arch.thp_level is None:
        pytest.skip(f"{arch.name} has no THP")
    if arch.thp_pages.bit_length() - 1 > MAX_PAGECACHE_ORDER:
        pytest.skip(f"{arch.name}: the page cache holds no PMD-sized folio (HPAGE_PMD_ORDER "
                    f"> MAX_PAGECACHE_ORDER), so no huge shmem folio for a plant to change")
    if name == "zap_present_ptes" and arch.page_shift > 12:
        pytest.skip(f"{arch.name}: no fault-around (fault_around_bytes is one page), so no batch")
    scenario = load_scenario(SCENARIO_DIR / f"{scenario_name}.json", arch)
    real = run_guest(scenario, vm)
    facts = vm.facts or PINNED
    assert compare(run_model(scenario, arch, facts=facts), real, scenario, arch) == []
    assert hasattr(module, name), f"{module.__name__} has no {name}"
    monkeypatch.setattr(module, name, planted)
    divergences = compare(run_model(scenario, arch, facts=facts), real, scenario, arch)
    assert divergences, f"{scenario_name} does not catch: {what}"


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("shmem_thp_*.json")),
                         ids=lambda p: p.stem)
def test_shmem_thp_scenario_repeats(path: Path, vm: VM,
                                    agrees_repeatedly: Callable[[Scenario], None]) -> None:
    """Repeated runs in one VM (tests/conftest.py REPEATS), each agreeing with the model."""
    agrees_repeatedly(load_scenario(path, vm.profile.arch))
