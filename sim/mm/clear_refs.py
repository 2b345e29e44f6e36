"""echo VALUE > /proc/PID/clear_refs (fs/proc/task_mmu.c clear_refs_write()).

PTEs and huge PMDs take the same mask (:data:`~sim.mm.pte.PTE_MKOLD` or
:data:`~sim.mm.pte.PTE_CLEAR_SOFT_DIRTY`).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import numpy as np

from sim.mm.pageflags import PG
from sim.mm.pagetable import HugePmd
from sim.mm.pte import (
    PTE_CLEAR_SOFT_DIRTY,
    PTE_MKOLD,
    PTE_PRESENT,
    PTE_SPECIAL,
    PTE_SWAP,
    PTE_SWP_SOFT_DIRTY,
)
from sim.mm.syscall import MmError
from sim.mm.vma import VM_SOFTDIRTY

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = ["CLEAR_REFS_ALL", "CLEAR_REFS_ANON", "CLEAR_REFS_MAPPED", "CLEAR_REFS_MM_HIWATER_RSS",
           "CLEAR_REFS_SOFT_DIRTY", "clear_refs_write"]

#: enum clear_refs_types (fs/proc/task_mmu.c).
CLEAR_REFS_ALL = 1
CLEAR_REFS_ANON = 2
CLEAR_REFS_MAPPED = 3
CLEAR_REFS_SOFT_DIRTY = 4
CLEAR_REFS_MM_HIWATER_RSS = 5


def clear_refs_write(mm: MmStruct, value: int) -> None:
    """clear_refs_write(): 1-3 clear young bits and PG_referenced, 4 clears soft-dirty, 5 no-op.

    1 walks every VMA, 2 anonymous ones only, 3 file ones only.  4 clears
    VM_SOFTDIRTY on every VMA and write-protects and clears soft-dirty on
    every present entry (clear_soft_dirty(), clear_soft_dirty_pmd()); it does
    nothing without soft-dirty support.  EINVAL (MmError) outside 1..5.
    """
    if not CLEAR_REFS_ALL <= value <= CLEAR_REFS_MM_HIWATER_RSS:
        raise MmError(errno.EINVAL, f"clear_refs: {value} is not 1..5")
    if value == CLEAR_REFS_MM_HIWATER_RSS:
        return
    soft_dirty = value == CLEAR_REFS_SOFT_DIRTY
    if soft_dirty:
        if not mm.ctx.soft_dirty:
            return
        for vma in mm.vmas:
            vma.flags &= ~VM_SOFTDIRTY
    mask = PTE_CLEAR_SOFT_DIRTY if soft_dirty else PTE_MKOLD
    mem = mm.mem
    for vma in mm.vmas:
        if vma.hugetlb:
            continue  # clear_refs_walk_ops has no hugetlb_entry: walk_hugetlb_range() skips it
        if value == CLEAR_REFS_ANON and vma.file is not None:
            continue
        if value == CLEAR_REFS_MAPPED and vma.file is None:
            continue
        for base, entry, lo, hi in mm.pt.pmd_ranges(vma.start, vma.end):
            if isinstance(entry, HugePmd):
                entry.bits &= mask
                pages = [entry.pfn]
            else:
                span = mm.pt.pte_range(base, lo, hi)
                sl = slice(span.start, span.stop)
                bits = entry.bits[sl]
                present = (bits & PTE_PRESENT) != 0
                bits[present] &= mask
                if soft_dirty:  # clear_soft_dirty(): pte_swp_clear_soft_dirty()
                    bits[(bits & PTE_SWAP) != 0] &= np.uint32(~PTE_SWP_SOFT_DIRTY & 0xFFFFFFFF)
                normal = present & ((bits & PTE_SPECIAL) == 0)  # vm_normal_folio()
                pages = [] if soft_dirty else entry.pfn[sl][normal].tolist()
            if not soft_dirty:
                for pfn in pages:  # folio_test_clear_referenced()
                    mem.clear(mem.page_folio(pfn), PG.referenced)
