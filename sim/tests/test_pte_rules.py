"""The entry rules PTEs and huge PMDs share (sim/mm/pte.py), checked through both paths."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sim.arch import Arch, get_arch
from sim.mm import Machine
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_DTYPE, PteFlags
from sim.procfs import pagemap_entries
from sim.smaps import smaps

THP_ARCHES = [get_arch("x86_64"), get_arch("ppc64"), get_arch("ppc64-4k")]


def test_entry_column_has_room_for_swap_entries() -> None:
    """Present-entry flags stay in bits 0-7; the column keeps bits 8-20 free for the
    non-present flags and the 5-bit swap type the module documents."""
    assert max(PteFlags) < 1 << 7  # bit 7 and up: uffd-wp, swap flags and type
    assert np.iinfo(PTE_DTYPE).bits >= 21


@pytest.mark.parametrize("arch", THP_ARCHES, ids=lambda a: a.name)
@pytest.mark.parametrize("clear_soft_dirty", [False, True])
def test_split_keeps_pagemap_and_smaps(arch: Arch, clear_soft_dirty: bool) -> None:
    """A PMD-mapped THP and the PTE table __split_huge_pmd_locked() makes of it read the
    same pagemap (PFN, exclusive, soft-dirty, anon) and smaps: the huge and the PTE
    path of pagemap_pmd_range() and smaps_pte_range() follow one rule.  After
    clear_refs 4 the PMD is clean of soft-dirty but still dirty, and the split's
    pte_mkdirty() sets soft-dirty again on every PTE."""
    m = Machine(arch, ram_bytes=max(256 << 20, 8 * arch.thp_pages * arch.page_size))
    p = m.spawn("main")
    span = 1 << arch.level_shifts[-2]
    base = (arch.task_size // 4) // span * span
    nr = arch.thp_pages
    p.mmap(base, nr)
    p.madvise(base, nr, "hugepage")
    p.touch(base, 1, write=True)
    if clear_soft_dirty:
        p.clear_refs(4)
    pmd = p.mm.pt.get_pmd(base)
    assert isinstance(pmd, HugePmd)
    before = pagemap_entries(m, p, base, nr)
    rss_before = smaps(p.mm)[0].kb()
    vma = p.mm.find_vma(base)
    assert vma is not None
    p.mm.split_huge_pmd(vma, base)
    assert isinstance(p.mm.pt.get_pmd(base), PteTable)
    after = pagemap_entries(m, p, base, nr)
    first = before[0]
    assert first.present and first.exclusive and not first.file_shared
    assert first.pfn == pmd.pfn
    assert [e.pfn for e in after] == [pmd.pfn + i for i in range(nr)]
    if clear_soft_dirty:
        assert not any(e.soft_dirty for e in before)
        assert all(e.soft_dirty for e in after)
        after = [replace(e, soft_dirty=False) for e in after]
    assert after == before
    assert smaps(p.mm)[0].kb() | {"AnonHugePages": 0} == rss_before | {"AnonHugePages": 0}
