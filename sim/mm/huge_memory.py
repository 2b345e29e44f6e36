"""PMD-mapped transparent huge pages (mm/huge_memory.c).

Faults that map a whole PMD-sized folio or the huge zero folio, the write
fault on a huge PMD, splitting one into a PTE table, and the huge halves of
zap, fork and mprotect.  Entry bits follow the same rules as PTEs
(:mod:`sim.mm.pte`).  Functions take the :class:`~sim.mm.mm_struct.MmStruct`
they work on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.mm.memmap import OutOfMemory
from sim.mm.pageflags import PG, PG_ANON_EXCLUSIVE
from sim.mm.pagetable import HugePmd, PmdEntry, PteTable
from sim.mm.pte import (
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_SPECIAL,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    change_protection_bits,
    copy_present_entry,
    mk_pte,
    mkyoung_dirty_write,
    pte_mkdirty,
    wp_can_reuse_anon,
)
from sim.mm.rmap import anon_vma_prepare, folio_add_lru_vma, munlock_vma_folio
from sim.mm.settings import anon_order_mask
from sim.mm.shmem_thp import split_file_pmd
from sim.mm.vma import VM_NOHUGEPAGE, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = [
    "change_huge_pmd",
    "copy_huge_pmd",
    "do_huge_pmd_anonymous_page",
    "do_huge_pmd_wp_page",
    "mm_get_huge_zero_folio",
    "split_huge_pmd",
    "split_partial_huge_pmds",
    "thp_vma_allowable",
    "vma_adjust_trans_huge",
    "zap_huge_pmd",
]


def thp_vma_allowable(mm: MmStruct, vma: Vma, addr: int) -> bool:
    """thp_vma_allowable_order(PMD_ORDER) + thp_vma_suitable_order() in a fault.

    Anonymous VMAs only (shmem THP is not modelled: sim/MODEL.md; file VMAs
    have no ->huge_fault); PMD_ORDER must be in the sysfs mask
    (:func:`sim.mm.settings.anon_order_mask`: with the boot knobs, enabled =
    madvise and hugepages-<PMD>kB inherit, only VM_HUGEPAGE VMAs), never with
    VM_NOHUGEPAGE, and the aligned PMD range must lie inside the VMA.
    """
    if not mm.ctx.thp or not vma.anonymous or vma.flags & VM_NOHUGEPAGE:
        return False
    pmd_order = mm.pt.pmd_shift - mm.arch.page_shift
    if pmd_order not in anon_order_mask(mm.ctx.settings, vma.flags, pmd_order):
        return False
    haddr = addr - addr % mm.pmd_size
    return vma.start <= haddr and haddr + mm.pmd_size <= vma.end


def mm_get_huge_zero_folio(mm: MmStruct) -> int:
    """mm_get_huge_zero_folio(): its head PFN; allocated on first use (PG_large_rmappable
    cleared), one huge_zero_refcount per mm (MMF_HUGE_ZERO_PAGE).  Raises OutOfMemory."""
    mem = mm.mem
    if mem.huge_zero_pfn is None:
        mem.huge_zero_pfn = mem.alloc_folio(mm.pt.pmd_shift - mm.arch.page_shift)
    if not mm.mmf_huge_zero_page:
        mm.mmf_huge_zero_page = True
        mm.ctx.huge_zero_refcount += 1
    return mem.huge_zero_pfn


def do_huge_pmd_anonymous_page(mm: MmStruct, vma: Vma, addr: int, write: bool) -> bool:
    """do_huge_pmd_anonymous_page(): the huge zero folio for a read, a THP for a write.

    False is VM_FAULT_FALLBACK (no memory for the folio): the fault goes on
    with PTEs.  vmf_anon_prepare() runs first, so even the read gives the VMA
    an anon_vma.  The new PMD is maybe_pmd_mkwrite(pmd_mkdirty()).
    """
    mem = mm.mem
    haddr = addr - addr % mm.pmd_size
    anon_vma_prepare(mm.vmas, vma)
    if not write and mm.ctx.facts.thp_use_zero_page:
        try:
            pfn = mm_get_huge_zero_folio(mm)
        except OutOfMemory:
            return False
        mm.pt.set_pmd(haddr, HugePmd(pfn, PTE_PRESENT | PTE_YOUNG))  # set_huge_zero_folio()
        return True
    try:
        head = mem.alloc_folio(mm.pt.pmd_shift - mm.arch.page_shift)
    except OutOfMemory:
        return False
    mem.set(head, PG.large_rmappable)  # folio_prep_large_rmappable()
    mem.set(head, PG.uptodate)
    mem.folio_add_new_anon_rmap(head, exclusive=True)
    folio_add_lru_vma(mem, head, vma)
    mm.pt.set_pmd(haddr, HugePmd(head, mkyoung_dirty_write(PTE_PRESENT, vma, mm.ctx.soft_dirty)))
    return True


def do_huge_pmd_wp_page(mm: MmStruct, vma: Vma, addr: int, pmd: HugePmd) -> bool:
    """wp_huge_pmd() -> do_huge_pmd_wp_page(): reuse an exclusive THP, else split.

    False is VM_FAULT_FALLBACK: the PMD was split and the fault goes on with
    PTEs.  The huge zero folio and non-anonymous VMAs always split.
    """
    mem = mm.mem
    haddr = addr - addr % mm.pmd_size
    if not vma.anonymous or mem.is_huge_zero_folio(pmd.pfn) or not wp_can_reuse_anon(
        mem, pmd.pfn, pmd_mapped=True
    ):
        split_huge_pmd(mm, vma, haddr)
        return False
    mem.set(pmd.pfn, PG_ANON_EXCLUSIVE)
    pmd.bits = mkyoung_dirty_write(pmd.bits, vma, mm.ctx.soft_dirty)
    return True


def split_huge_pmd(mm: MmStruct, vma: Vma, haddr: int) -> None:
    """__split_huge_pmd_locked(): replace the huge leaf at ``haddr`` by a table of PTEs.

    Huge zero: every PTE maps the small zero page.  THP: a dirty PMD dirties
    the folio (folio_set_dirty()), the folio gains nr-1 references and nr PTE
    mappings (PageAnonExclusive carried to every subpage), and loses the PMD
    mapping; each PTE inherits the PMD's bits, with pte_mkdirty() for a dirty
    one.  A file VMA's PMD is only zapped (:func:`~sim.mm.shmem_thp.split_file_pmd`).
    """
    mem = mm.mem
    pmd = mm.pt.get_pmd(haddr)
    assert isinstance(pmd, HugePmd)
    if not vma.anonymous:
        split_file_pmd(mm, haddr, pmd)
        return
    table = PteTable(mm.pt.ptrs_per_pte)
    nr = mm.hpage_pmd_nr
    if mem.is_huge_zero_folio(pmd.pfn):
        table.pfn[:] = mem.zero_pfn
        # __split_huge_zero_page_pmd(): pte_mkuffd_wp() where the PMD had uffd-wp.
        table.bits[:] = (mk_pte(vma, mm.ctx.soft_dirty) & ~PTE_WRITE) | PTE_SPECIAL | (
            pmd.bits & PTE_UFFD_WP
        )
    else:
        head = pmd.pfn
        bits = pmd.bits
        if bits & PTE_DIRTY:
            mem.folio_mark_dirty(head)
            bits |= pte_mkdirty(mm.ctx.soft_dirty)
        exclusive = mem.test(head, PG_ANON_EXCLUSIVE)
        mem.folio_get(head, nr - 1)
        mem.folio_add_anon_rmap_ptes(head, head, nr, exclusive)
        table.pfn[:] = range(head, head + nr)
        table.bits[:] = bits
        mem.folio_remove_rmap_pmd(head)
        munlock_vma_folio(mem, head, vma, pmd=True)
    mm.pt.set_pmd(haddr, table)


def split_partial_huge_pmds(
    mm: MmStruct, vma: Vma, start: int, end: int
) -> list[tuple[int, PmdEntry, int, int]]:
    """PageTables.pmd_ranges() of [start, end) (bytes) with every huge leaf that lies only
    partly inside split first, as zap_pmd_range() and change_pmd_range() do
    (__split_huge_pmd()); a huge leaf left in the list is wholly inside.  A file VMA's
    split leaves no entry (the PMD is zapped): that range leaves the list."""
    ranges = []
    for base, entry, lo, hi in mm.pt.pmd_ranges(start, end):
        if isinstance(entry, HugePmd) and (lo != base or hi != base + mm.pmd_size):
            split_huge_pmd(mm, vma, base)
            split = mm.pt.get_pmd(base)
            if split is None:
                continue
            entry = split
        ranges.append((base, entry, lo, hi))
    return ranges


def zap_huge_pmd(mm: MmStruct, haddr: int, pmd: HugePmd, vma: Vma | None = None) -> None:
    """zap_huge_pmd(): clear the PMD; a THP loses its PMD mapping and that reference
    (munlocked if ``vma`` is VM_LOCKED: folio_remove_rmap_pmd()).  A page-cache folio's
    PMD passes its dirty bit on (folio_mark_dirty()), not its young bit."""
    mem = mm.mem
    mm.pt.clear_pmd(haddr)
    if not mem.is_huge_zero_folio(pmd.pfn):
        if not mem.folio_test_anon(pmd.pfn) and pmd.bits & PTE_DIRTY:
            mem.folio_mark_dirty(pmd.pfn)
        mem.folio_remove_rmap_pmd(pmd.pfn)
        if vma is not None:
            munlock_vma_folio(mem, pmd.pfn, vma, pmd=True)
        mem.folio_put(pmd.pfn)


def copy_huge_pmd(dst_mm: MmStruct, haddr: int, pmd: HugePmd, vma: Vma) -> None:
    """copy_huge_pmd() at fork: share the folio (PG_anon_exclusive cleared) or the huge zero folio.

    Bits as for a PTE (:func:`~sim.mm.pte.copy_present_entry`).  A
    non-anonymous VMA is skipped: the child refaults it.
    """
    if not vma.anonymous:
        return
    mem = dst_mm.mem
    if not mem.is_huge_zero_folio(pmd.pfn):
        mem.folio_get(pmd.pfn)
        mem.folio_try_dup_anon_rmap_pmd(pmd.pfn)
    pmd.bits, child = copy_present_entry(pmd.bits, vma)
    dst_mm.pt.set_pmd(haddr, HugePmd(pmd.pfn, child))


def change_huge_pmd(
    mm: MmStruct, vma: Vma, pmd: HugePmd, prot_write: bool, try_writable: bool, tracking: bool
) -> None:
    """change_huge_pmd(): the rule of change_pte_range() on a whole huge leaf
    (:func:`~sim.mm.pte.change_protection_bits`); the huge zero folio is no normal page."""
    page = None if mm.mem.is_huge_zero_folio(pmd.pfn) else pmd.pfn
    pmd.bits = change_protection_bits(
        pmd.bits, vma, page, mm.mem, prot_write, try_writable, tracking,
        mm.arch.modify_sets_young,
    )


def vma_adjust_trans_huge(mm: MmStruct, vma: Vma, start: int, end: int) -> None:
    """vma_adjust_trans_huge() as __split_vma() and the merges call it: a huge leaf
    that ``vma`` is about to be cut through (at ``start`` or ``end``, bytes, not
    PMD-aligned, inside the VMA) is split first, while ``vma`` still has its old
    flags (so a VM_LOCKED VMA munlocks the folio: folio_remove_rmap_pmd())."""
    for cut in (start, end):
        if cut % mm.pmd_size == 0 or not vma.start < cut < vma.end:
            continue
        haddr = cut - cut % mm.pmd_size
        if isinstance(mm.pt.get_pmd(haddr), HugePmd):
            split_huge_pmd(mm, vma, haddr)
