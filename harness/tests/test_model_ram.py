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

from harness.arches import guest_ram_bytes
from harness.model_executor import MODEL_RAM_BYTES, ModelRun, model_ram_bytes
from harness.scenario import load_scenario
from sim.arch import Arch, get_arch
from sim.mm.memmap import FrameState

CATALOG = Path(__file__).resolve().parents[2] / "tests" / "scenarios"

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


class PeakThps:
    """The most PMD-sized folios the model's machine held at once over a run.

    Pass :meth:`after_step` to ``ModelRun.run``; :meth:`check` then fails a
    scenario that held more than the guest's free THP-sized blocks
    (:func:`free_thp_blocks`).  test_model_executor.test_model_run does this for
    every catalog scenario on every THP arch, on the run it makes anyway.
    """

    def __init__(self, arch: Arch) -> None:
        self.order = arch.thp_pages.bit_length() - 1
        self.peak = 0

    def after_step(self, run: ModelRun) -> None:
        mem = run.machine.mem
        heads = np.arange(mem.state.size)
        live = (mem.state == FrameState.INUSE) & (mem.head == heads) & (mem.order == self.order)
        self.peak = max(self.peak, int(np.count_nonzero(live)))

    def check(self, scenario: str, arch: Arch) -> None:
        free = free_thp_blocks(arch)
        thp_bytes = arch.thp_pages * arch.page_size
        ram = guest_ram_bytes(arch)
        assert self.peak <= free, (
            f"on {arch.name} {scenario} holds {self.peak} THPs at once, more than the guest's "
            f"{free} free {thp_bytes >> 20} MiB blocks ({(ram or 0) >> 20} MiB): it needs "
            f"{(self.peak + BOOT_HELD_BLOCKS) * thp_bytes >> 20} MiB of RAM"
        )


def free_thp_blocks(arch: Arch) -> int:
    """THP-sized blocks of the guest's RAM left after boot (``BOOT_HELD_BLOCKS`` held)."""
    ram = guest_ram_bytes(arch)
    assert ram is not None
    return ram // (arch.thp_pages * arch.page_size) - BOOT_HELD_BLOCKS


def test_arm64_64k_guest_has_the_free_blocks_its_data_file_quotes() -> None:
    assert free_thp_blocks(get_arch("arm64-64k")) == 9


def test_the_peak_of_a_thp_scenario_is_counted() -> None:
    """The catalog's largest arm64-64k user holds 5 of its 9 blocks at once (as measured)."""
    arch = get_arch("arm64-64k")
    peaks = PeakThps(arch)
    ModelRun(load_scenario(CATALOG / "thp_refs.json"), arch).run(peaks.after_step)
    assert peaks.peak >= 1
    peaks.check("thp_refs", arch)
