"""The model machine's RAM follows the guest's, and the catalog's THPs fit both.

arm64-64k's THP is 512 MiB: a guest can give one only from a free, aligned
order-13 block of the buddy allocator (MAX_PAGE_ORDER with 64K pages).  Its
6 GiB guest has 12 such blocks; the kernel image holds the first and memblock's
top-down boot allocations two more (9 free in /proc/buddyinfo after boot).  A
scenario holding more THPs at once than that would make the guest fall back to
base pages where the model does not: every catalog scenario must stay below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.arches import guest_ram_bytes
from harness.model_executor import MODEL_RAM_BYTES, ModelRun, model_ram_bytes
from harness.scenario import load_scenario
from sim.arch import ARCH_NAMES, Arch, get_arch
from sim.mm.memmap import FrameState

CATALOG = Path(__file__).resolve().parents[2] / "tests" / "scenarios"
PATHS = sorted(CATALOG.glob("*.json"))

#: THP-sized blocks of a guest's RAM that boot allocations hold (the first: the
#: kernel; two at the top: memblock), measured on the 4 and 6 GiB arm64-64k guests.
BOOT_HELD_BLOCKS = 3


def test_model_ram_is_the_guests_when_larger() -> None:
    assert model_ram_bytes(get_arch("arm64-64k")) == guest_ram_bytes(get_arch("arm64-64k"))
    assert guest_ram_bytes(get_arch("arm64-64k")) == 6 << 30
    assert model_ram_bytes(get_arch("x86_64")) == MODEL_RAM_BYTES == 1 << 30
    # i386 boots with 512 MiB (lowmem without HIGHMEM); the model keeps its least 1 GiB.
    assert guest_ram_bytes(get_arch("i386")) == 512 << 20
    assert model_ram_bytes(get_arch("i386")) == MODEL_RAM_BYTES


def _peak_thps(run: ModelRun, arch: Arch) -> int:
    """The most PMD-sized folios the model's machine held at once over the scenario."""
    mem = run.machine.mem
    order = arch.thp_pages.bit_length() - 1
    heads = np.arange(mem.state.size)
    peak = 0
    for step in run.scenario.steps:
        run.step(step)
        live = (mem.state == FrameState.INUSE) & (mem.head == heads) & (mem.order == order)
        peak = max(peak, int(np.count_nonzero(live)))
    return peak


@pytest.mark.parametrize("name", [n for n in ARCH_NAMES if get_arch(n).thp_pages])
def test_catalog_thps_fit_the_guests_free_blocks(name: str) -> None:
    arch = get_arch(name)
    thp_bytes = arch.thp_pages * arch.page_size
    ram = guest_ram_bytes(arch)
    assert ram is not None
    free_blocks = ram // thp_bytes - BOOT_HELD_BLOCKS
    peaks = {}
    for path in PATHS:
        scenario = load_scenario(path)
        if scenario.unsupported_reason(arch) is None:
            peaks[scenario.name] = _peak_thps(ModelRun(scenario, arch), arch)
    needy = {
        s: f"needs {(n + BOOT_HELD_BLOCKS) * thp_bytes >> 20} MiB of RAM"
        for s, n in peaks.items() if n > free_blocks
    }
    assert not needy, (
        f"on {name} these scenarios hold more THPs at once than the guest's "
        f"{free_blocks} free {thp_bytes >> 20} MiB blocks ({ram >> 20} MiB): {needy}"
    )
    if name == "arm64-64k":  # the figures its data file quotes
        assert free_blocks == 9 and max(peaks.values()) == 5
