"""Splitting an anonymous large folio into order-0 folios (split_folio(), mm/huge_memory.c).

split_huge_page_to_list_to_order() with new_order 0: unmap_folio() turns
every mapping into migration entries (try_to_migrate(): a PMD is split
frozen by __split_huge_pmd_locked()), __split_huge_page() makes each page a
folio of its own, and remap_page() -> remove_migration_ptes() maps them
again, except that a page whose content is all zero is mapped to the shared
zero page instead and freed (RMP_USE_SHARED_ZEROPAGE,
try_to_map_unused_to_zeropage(), 6.12).  Functions take the
:class:`~sim.mm.mm_struct.MmStruct` of the caller; the folio's mappings are
found in every live mm of the machine (the rmap walk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.mm.pageflags import PG, PG_ANON_EXCLUSIVE, pg_mask
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import (
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    mk_pte,
)
from sim.mm.rmap import mlock_vma_folio
from sim.mm.vma import VM_LOCKED

if TYPE_CHECKING:
    from sim.mm.memmap import PhysMem
    from sim.mm.mm_struct import MmStruct
    from sim.mm.vma import Vma

__all__ = ["TAIL_FLAGS", "split_folio", "split_folio_pages"]

#: __split_huge_page_tail(): the head's flags a new folio takes (the model's subset).
TAIL_FLAGS = pg_mask(
    PG.referenced, PG.swapbacked, PG.owner_priv_1, PG.mlocked, PG.uptodate, PG.active,
    PG.workingset, PG.unevictable, PG.arch_1, PG.dirty, PG.lru,
)


@dataclass
class _Migration:
    """One migration entry left by unmap_folio(): where, which page, and its bits."""

    table: PteTable
    index: int
    vma: Vma
    pfn: int
    bits: int  # the PTE bits the entry keeps: write, young, dirty, soft-dirty
    exclusive: bool


def split_folio_pages(mem: PhysMem, head: int) -> None:
    """__split_huge_page() of the unmapped, frozen folio ``head``: each page an order-0
    folio with the head's :data:`TAIL_FLAGS` (__split_huge_page_tail()), no mappings, and
    refcount 1 (the freeze's, or the page cache's)."""
    end = head + mem.folio_nr_pages(head)
    mem.flags[head:end] = np.uint64(int(mem.flags[head]) & TAIL_FLAGS)
    mem.head[head:end] = np.arange(head, end, dtype=np.int64)
    mem.order[head:end] = 0
    mem.mapcount[head:end] = 0
    mem.entire_mapcount[head:end] = 0
    mem.large_mapcount[head:end] = 0
    mem.refcount[head:end] = 1


def split_folio(mm: MmStruct, head: int) -> None:
    """split_folio() of the anonymous large folio ``head`` (success assumed: no pins).

    After it every page is an order-0 anonymous folio with the head's flags
    (PG_lru too: lru_add_split_folio()), refcount = mapcount; a PTE comes
    back young, dirty (if the folio is dirty and the entry was), soft-dirty
    and writable as the old entry was, and PG_anon_exclusive where the old
    mapping was exclusive.  An all-zero page (content tag 0) is mapped to the
    zero page (soft-dirty kept) and freed, except in a VM_LOCKED VMA, where
    each page is mapped again and mlocked (mlock_vma_folio() of the now
    order-0 folio, then mlock_drain_local()).
    """
    mem = mm.mem
    nr = mem.folio_nr_pages(head)
    entries = _unmap_folio(mm, head, nr)
    split_folio_pages(mem, head)
    mem.anon[head : head + nr] = True
    # remap_page() -> remove_migration_ptes(RMP_USE_SHARED_ZEROPAGE) (6.12; 6.1 remaps all).
    remap_zero = mm.ctx.facts.split_remaps_zero_pages
    for e in entries:
        locked = bool(e.vma.flags & VM_LOCKED)
        # try_to_map_unused_to_zeropage(): never into a VM_LOCKED VMA or for a
        # mlocked folio.
        if (remap_zero and not locked and mem.tag_known[e.pfn] and int(mem.tag[e.pfn]) == 0
                and not mem.test(e.pfn, PG.mlocked)):
            zero = (mk_pte(e.vma, False) & ~PTE_WRITE & ~PTE_SOFT_DIRTY) | PTE_SPECIAL
            e.table.set(e.index, mem.zero_pfn, zero | (e.bits & PTE_SOFT_DIRTY))
            continue
        bits = mk_pte(e.vma, False) & ~(PTE_YOUNG | PTE_WRITE | PTE_SOFT_DIRTY)
        bits |= e.bits & (PTE_YOUNG | PTE_SOFT_DIRTY | PTE_WRITE)
        if e.bits & PTE_DIRTY and mem.test(e.pfn, PG.dirty):
            bits |= PTE_DIRTY
        mem.folio_get(e.pfn)
        mem.mapcount[e.pfn] += 1
        if e.exclusive:
            mem.set(e.pfn, PG_ANON_EXCLUSIVE)
        e.table.set(e.index, e.pfn, PTE_PRESENT | bits)
        if locked:
            # folio_add_anon_rmap_pte() of what is now an order-0 folio calls
            # mlock_vma_folio(), then remove_migration_pte() drains: a page of a
            # large folio that crossed into a VM_LOCKED VMA (mlock() left it
            # unlocked: allow_mlock_munlock()) is mlocked by the split.
            mlock_vma_folio(mem, e.pfn, e.vma)
            mem.mlock_drain_local()
    # The freeze's reference goes (free_page_and_swap_cache(); the caller's
    # own reference on the head is its business): unmapped zero pages are freed.
    for pfn in range(head, head + nr):
        mem.folio_put(pfn)


def _unmap_folio(mm: MmStruct, head: int, nr: int) -> list[_Migration]:
    """unmap_folio(): every PMD and PTE mapping of the folio, in every mm, becomes an entry.

    A dirty PMD or PTE dirties the folio (__split_huge_pmd_locked(),
    try_to_migrate_one()).  The old mappings and their references go.
    """
    mem = mm.mem
    out: list[_Migration] = []
    exclusive_head = mem.test(head, PG_ANON_EXCLUSIVE)
    for other in mm.ctx.mms:
        for vma in other.vmas:
            if vma.anon_vma is None:
                continue
            for base, entry, lo, hi in other.pt.pmd_ranges(vma.start, vma.end):
                if isinstance(entry, HugePmd):
                    if entry.pfn != head:
                        continue
                    table = PteTable(other.pt.ptrs_per_pte)
                    if entry.bits & PTE_DIRTY:
                        mem.set(head, PG.dirty)
                    for i in range(nr):
                        out.append(_Migration(table, i, vma, head + i, entry.bits,
                                              exclusive_head))
                    other.pt.set_pmd(base, table)
                    continue
                idx = np.arange(other.pt.pte_index(lo), other.pt.pte_index(lo) + (
                    (hi - lo) >> other.arch.page_shift))
                pfns = entry.pfn[idx]
                bits = entry.bits[idx]
                hit = idx[(pfns >= head) & (pfns < head + nr) & ((bits & PTE_PRESENT) != 0)
                          & ((bits & PTE_SPECIAL) == 0)]
                for i in (int(x) for x in hit):
                    pfn = int(entry.pfn[i])
                    b = int(entry.bits[i])
                    if b & PTE_DIRTY:
                        mem.set(head, PG.dirty)
                    out.append(_Migration(entry, i, vma, pfn, b,
                                          mem.test(pfn, PG_ANON_EXCLUSIVE)))
                    entry.clear(i)
    for e in out:
        mem.clear(e.pfn, PG_ANON_EXCLUSIVE)
    return out
