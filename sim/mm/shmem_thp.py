"""Huge shmem folios (shmem THP): which faults allocate them, how they are mapped and split.

With ``shmem_enabled`` always, within_size or advise, a fault on a hole of a
shmem file that was unlinked when it was mapped (a memfd, shared anonymous
memory: shmem_mmap() gives those shmem_anon_vm_ops, so vma_is_anon_shmem())
may allocate one PMD-sized folio (mm/shmem.c shmem_allowable_huge_orders(),
shmem_suitable_orders()).  A linked tmpfs file (the rootfs, mounted without
``huge=``) only gets huge folios under ``force``, which the model refuses
(harness/model_executor.py model_settings()).  The folio is mapped by one PMD
where the VMA allows it (mm/memory.c finish_fault() / mm/filemap.c
filemap_map_pmd() -> do_set_pmd()), else by PTEs.  Splitting the PMD of a
file VMA only zaps it (mm/huge_memory.c __split_huge_pmd_locked()); a hole
punched in part of the folio splits the folio itself (mm/shmem.c
shmem_undo_range() -> mm/truncate.c truncate_inode_partial_folio() ->
split_folio()).  Functions take the :class:`~sim.mm.mm_struct.MmStruct` of
the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.mm.mthp import thp_vma_suitable_order
from sim.mm.pageflags import PG
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_DIRTY, PTE_PRESENT, PTE_SPECIAL, PTE_YOUNG, mk_pte, mkyoung_dirty_write
from sim.mm.rmap import try_to_unmap_pte
from sim.mm.split import split_folio_pages
from sim.mm.syscall import NotModelled
from sim.mm.vma import VM_HUGEPAGE, VM_LOCKED, VM_NOHUGEPAGE, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct
    from sim.mm.shmem import ShmemFile

__all__ = [
    "do_set_pmd",
    "shmem_allowable_huge",
    "shmem_fault_order",
    "shmem_huge_global_enabled",
    "shmem_thp_eligible",
    "split_file_pmd",
    "split_partial_folios",
    "vma_is_anon_shmem",
]


#: MAX_XAS_ORDER (include/linux/pagemap.h: XA_CHUNK_SHIFT 6, so 2 * 6 - 1), which bounds
#: MAX_PAGECACHE_ORDER = min(MAX_XAS_ORDER, HPAGE_PMD_ORDER) with THP built in.
MAX_PAGECACHE_ORDER = 11


def vma_is_anon_shmem(vma: Vma) -> bool:
    """vma_is_anon_shmem(): vm_ops is shmem_anon_vm_ops, which shmem_mmap() gives a file
    that has no link when it is mapped (a memfd, shmem_zero_setup()'s file)."""
    return vma.file is not None and vma.file.unlinked


def shmem_huge_global_enabled(mm: MmStruct, vma: Vma, file: ShmemFile, index: int) -> bool:
    """shmem_huge_global_enabled() (mm/shmem.c) for the internal shm mount, whose ``huge``
    shmem_enabled_store() sets to shmem_enabled: always; within_size when the PMD-sized
    range holding ``index`` ends inside i_size (no write_end in a fault), else as advise;
    advise with VM_HUGEPAGE.  A linked tmpfs file is on the rootfs (huge=never): only
    force, refused before any step.  VM_NOHUGEPAGE is checked by the caller.  Never
    when HPAGE_PMD_ORDER > MAX_PAGECACHE_ORDER (:data:`MAX_PAGECACHE_ORDER`)."""
    if _pmd_order(mm) > MAX_PAGECACHE_ORDER:
        # The page cache holds no PMD-sized folio (arm64 with 64K pages: order 13).
        return False
    mode = mm.ctx.settings.shmem_enabled
    if mode in ("never", "deny"):
        return False
    if not file.unlinked:
        if mode == "force":
            raise NotModelled("shmem THP of a tmpfs file (shmem_enabled force)")
        return False
    if mode in ("always", "force"):
        return True
    if mode == "within_size":
        nr = mm.hpage_pmd_nr
        if file.nr_pages >= -(-(index + 1) // nr) * nr:
            return True
    return bool(vma.flags & VM_HUGEPAGE)


def shmem_allowable_huge(mm: MmStruct, vma: Vma, file: ShmemFile, index: int) -> bool:
    """shmem_allowable_huge_orders() != 0 for an anonymous-shmem VMA (the PMD order is
    the only one: huge_shmem_orders_inherit = BIT(HPAGE_PMD_ORDER) at boot, the
    per-size always/within_size/madvise masks empty; scenarios set no per-size shmem
    knob).  thp_disabled_by_hw() and VM_NOHUGEPAGE (vma_thp_disabled()) allow none."""
    if not mm.ctx.thp or vma.flags & VM_NOHUGEPAGE:
        return False
    return shmem_huge_global_enabled(mm, vma, file, index)


def _pmd_order(mm: MmStruct) -> int:
    """HPAGE_PMD_ORDER."""
    return mm.pt.pmd_shift - mm.arch.page_shift


def shmem_fault_order(mm: MmStruct, vma: Vma, addr: int, index: int) -> int:
    """The order shmem_get_folio_gfp() allocates for a fault on the hole ``index`` at
    ``addr``: the PMD order when shmem_allowable_huge_orders() allows it and
    shmem_suitable_orders() finds the VMA suitable (thp_vma_suitable_orders()) and no
    page cached in the aligned range (xa_find()), else 0."""
    file = vma.file
    assert file is not None
    if not shmem_allowable_huge(mm, vma, file, index):
        return 0
    if not thp_vma_suitable_order(mm, vma, addr, _pmd_order(mm)):
        return 0
    nr = mm.hpage_pmd_nr
    first = index - index % nr
    if file.cached_in(first, first + nr):
        return 0
    return _pmd_order(mm)


def do_set_pmd(mm: MmStruct, vma: Vma, addr: int, page: int, write: bool) -> bool:
    """do_set_pmd() (mm/memory.c): map the PMD-sized folio of ``page`` by one PMD at
    ``addr``'s aligned address; False is VM_FAULT_FALLBACK.

    Refused when THP is off by hardware or for the VMA (VM_NOHUGEPAGE), when the
    VMA is not suitable (thp_vma_suitable_order()) or the folio is not of PMD
    order.  The entry is mk_huge_pmd() with the VMA's protection (young like a
    new PTE), for a write maybe_pmd_mkwrite(pmd_mkdirty()); the folio gains a
    PMD mapping (folio_add_file_rmap_pmd()); the caller's reference goes to it.
    The PMD must be none (the caller's check).
    """
    mem = mm.mem
    head = mem.page_folio(page)
    if not mm.ctx.thp or vma.flags & VM_NOHUGEPAGE:
        return False
    if not thp_vma_suitable_order(mm, vma, addr, _pmd_order(mm)):
        return False
    if mem.folio_nr_pages(head) != mm.hpage_pmd_nr:
        return False
    if vma.flags & VM_LOCKED:
        raise NotModelled("mlock of a huge shmem folio (mlock_vma_folio() of a PMD mapping)")
    haddr = addr - addr % mm.pmd_size
    assert mm.pt.get_pmd(haddr) is None
    bits = mk_pte(vma, mm.ctx.soft_dirty)
    if write:
        bits = mkyoung_dirty_write(bits, vma, mm.ctx.soft_dirty)
    mem.folio_add_file_rmap_pmd(head)
    mm.pt.set_pmd(haddr, HugePmd(head, bits))
    return True


def split_file_pmd(mm: MmStruct, haddr: int, pmd: HugePmd) -> None:
    """__split_huge_pmd_locked() of a file VMA: the PMD is only cleared (no PTEs), its
    dirty bit dirties the folio, its young bit sets PG_referenced (folio_set_referenced(),
    not folio_mark_accessed()), and the mapping and its reference go; the folio stays
    large.  A later access faults (fault-around, or do_set_pmd() again)."""
    mem = mm.mem
    head = pmd.pfn
    mm.pt.clear_pmd(haddr)
    if pmd.bits & PTE_DIRTY:
        mem.folio_mark_dirty(head)
    if pmd.bits & PTE_YOUNG:
        mem.set(head, PG.referenced)
    mem.folio_remove_rmap_pmd(head)
    mem.folio_put(head)


def _unmap_file_folio(mm: MmStruct, head: int) -> None:
    """unmap_folio() of a page-cache folio: try_to_unmap(TTU_SPLIT_HUGE_PMD) in every
    live mm: a PMD is split (:func:`split_file_pmd`), each PTE of the folio cleared (a
    dirty one dirties the folio; try_to_unmap_one() passes no young bit on)."""
    mem = mm.mem
    nr = mem.folio_nr_pages(head)
    first = int(mem.index[head])
    for other in mm.ctx.mms:
        for vma in other.vmas:
            if vma.file is None or vma.file.inode != int(mem.file_id[head]):
                continue
            lo = max(vma.start, vma.start + ((first - vma.pgoff) << mm.arch.page_shift))
            hi = min(vma.end, vma.start + ((first + nr - vma.pgoff) << mm.arch.page_shift))
            if lo >= hi:
                continue
            for base, entry, elo, ehi in other.pt.pmd_ranges(lo, hi):
                if isinstance(entry, HugePmd):
                    if entry.pfn == head:
                        split_file_pmd(other, base, entry)
                    continue
                for i in other.pt.pte_range(base, elo, ehi):
                    _unmap_pte(other, entry, i, head)


def _unmap_pte(mm: MmStruct, table: PteTable, i: int, head: int) -> None:
    """try_to_unmap_one() of one PTE, if it maps a page of ``head``."""
    bits = int(table.bits[i])
    if bits & PTE_PRESENT and not bits & PTE_SPECIAL and mm.mem.page_folio(
        int(table.pfn[i])
    ) == head:
        try_to_unmap_pte(mm.mem, table, i, head)


def _split_file_folio(mm: MmStruct, head: int) -> None:
    """split_folio() of a page-cache folio (success assumed: no pins): unmap it
    everywhere (unmap_folio()), then __split_huge_page() makes each page an order-0
    folio with the head's flags (PG_lru too: lru_add_split_folio()), still in the page
    cache with its one reference there; nothing is mapped back (remap_page() is for
    anonymous folios only)."""
    _unmap_file_folio(mm, head)
    assert mm.mem.folio_mapcount(head) == 0
    split_folio_pages(mm.mem, head)


def split_partial_folios(mm: MmStruct, file: ShmemFile, first: int, end: int) -> None:
    """shmem_undo_range() of pages [first, end) (a punched hole): a large folio that lies
    partly inside is marked dirty (folio_mark_dirty()) and split
    (truncate_inode_partial_folio() -> try_folio_split_or_unmap() -> split_folio());
    its pages inside then leave the page cache as order-0 folios (the whole_folios
    loop), those outside stay, unmapped."""
    mem = mm.mem
    if first >= end:
        return
    for index in (first, end - 1):
        pfn = file.cache.get(index)
        if pfn is None:
            continue
        head = mem.page_folio(pfn)
        if not mem.folio_test_large(head):
            continue
        start = int(mem.index[head])
        if first <= start and start + mem.folio_nr_pages(head) <= end:
            continue  # wholly inside: truncate_inode_folio() takes it whole
        mem.folio_mark_dirty(head)
        _split_file_folio(mm, head)


def shmem_thp_eligible(mm: MmStruct, vma: Vma) -> bool:
    """THPeligible of a shmem VMA: __thp_vma_allowable_orders(TVA_SMAPS | TVA_ENFORCE_SYSFS)
    (mm/huge_memory.c): not with THP off by hardware or VM_NOHUGEPAGE; some order of
    THP_ORDERS_ALL_FILE_DEFAULT (1 to MAX_PAGECACHE_ORDER, the PMD order here) must fit
    below vm_end (thp_vma_suitable_order() at ``vm_end - size``); then
    shmem_allowable_huge_orders() at vm_pgoff with no write_end decides."""
    file = vma.file
    assert file is not None
    if not mm.ctx.thp or vma.flags & VM_NOHUGEPAGE:
        return False
    if not any(thp_vma_suitable_order(mm, vma, vma.end - (mm.page_size << order), order)
               for order in range(1, _pmd_order(mm) + 1)):
        return False
    return shmem_allowable_huge(mm, vma, file, vma.pgoff)
