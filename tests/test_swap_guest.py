"""Swap in the guest: the boot-time swapon, and planted model errors the swap catalog catches.

The swap scenarios themselves run in tests/test_scenarios.py (in a VM booted
with swap, ``"swap": true``).  Here: the VM's swap device is what the model
assumes (one device, 64 MiB, header page excluded, page-cluster 0), and each
planted error of the swap model (sim/mm/swapfile.py) makes its scenario
diverge from the same guest observations that agree with the true model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

import sim.mm.fork as fork_module
import sim.mm.swapfile as swapfile
from harness.compare import compare
from harness.guest_executor import run_guest
from harness.model_executor import run_model
from harness.scenario import load_scenario
from harness.swapdisk import SWAP_DEVICE, SWAP_DISK_BYTES
from harness.vm import PAGE_CLUSTER, VM

SCENARIO_DIR = Path(__file__).parent / "scenarios"


class SharedVM(Protocol):
    """tests/conftest.py's shared_vm: the worker's VM, with swap or without."""

    def get(self, *, swap: bool = False) -> VM: ...


def test_swap_is_on_as_the_model_assumes(shared_vm: SharedVM) -> None:
    vm = shared_vm.get(swap=True)
    swaps = vm.agent.read_file("/proc/swaps", 4096).data.decode().splitlines()
    assert len(swaps) == 2, swaps  # the header line and one device
    name, kind, size_kb, used_kb, _priority = swaps[1].split()
    # Size: every page but the header (last_page pages), in KiB.
    page = vm.profile.arch.page_size
    assert (name, kind, int(size_kb)) == (SWAP_DEVICE, "partition",
                                          (SWAP_DISK_BYTES - page) >> 10)
    assert vm.agent.read_file(PAGE_CLUSTER, 64).data == b"0\n"
    assert int(used_kb) >= 0


def _lose_exclusive(bits: int) -> bool:
    return False


def _never_free_on_write(*args: Any) -> bool:
    return False


def _fork_keeps_exclusive(mm: Any, src: Any, dst: Any, i: int) -> None:
    swap = mm.ctx.swap
    offset = int(src.pfn[i])
    swap.swap_duplicate(offset)
    dst.set(i, offset, int(src.bits[i]))


#: Planted errors: (what, model function replaced, the replacement, the scenario that
#: must catch it).
PLANTED: list[tuple[str, str, Callable[..., Any], str]] = [
    ("exclusive bit lost on swap-in", "pte_swp_exclusive", _lose_exclusive,
     "swap_read_fault"),
    ("write fault keeps the swap cache", "_should_try_to_free_swap", _never_free_on_write,
     "swap_write_fault"),
    ("fork keeps the exclusive bit of swap entries", "copy_swap_pte", _fork_keeps_exclusive,
     "swap_fork"),
]


@pytest.mark.parametrize(("what", "name", "planted", "scenario_name"), PLANTED,
                         ids=[p[0].replace(" ", "_") for p in PLANTED])
def test_planted_swap_error_is_caught(
    what: str, name: str, planted: Callable[..., Any], scenario_name: str,
    shared_vm: SharedVM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    vm = shared_vm.get(swap=True)
    arch = vm.profile.arch
    scenario = load_scenario(SCENARIO_DIR / f"{scenario_name}.json", arch)
    real = run_guest(scenario, vm)
    facts = vm.facts
    assert facts is not None
    assert compare(run_model(scenario, arch, facts=facts), real, scenario, arch) == []
    monkeypatch.setattr(swapfile, name, planted)
    if hasattr(fork_module, name):  # imported by name there
        monkeypatch.setattr(fork_module, name, planted)
    divergences = compare(run_model(scenario, arch, facts=facts), real, scenario, arch)
    assert divergences, f"{scenario_name} does not catch: {what}"
