"""MADV_COLLAPSE: khugepaged's collapse run synchronously (mm/khugepaged.c).

Anonymous VMAs only (a file or shmem VMA takes hpage_collapse_scan_file(),
which the model does not follow).  Functions take the
:class:`~sim.mm.mm_struct.MmStruct` they work on; failures raise
:class:`~sim.mm.syscall.MmError` with madvise_collapse_errno()'s errno.
"""

from __future__ import annotations

import errno
from enum import Enum, auto
from typing import TYPE_CHECKING

from sim.mm.memmap import OutOfMemory
from sim.mm.pageflags import PG
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_PRESENT, PTE_SPECIAL, PTE_WRITE, mkyoung_dirty_write
from sim.mm.rmap import folio_add_lru_vma, munlock_vma_folio
from sim.mm.swapfile import is_swap_pte
from sim.mm.syscall import MmError, NotModelled
from sim.mm.vma import VM_NOHUGEPAGE, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = ["madvise_collapse", "thp_vma_allowable_collapse"]


class Scan(Enum):
    """enum scan_result values the model can reach."""

    SUCCEED = auto()
    PMD_NULL = auto()
    PMD_MAPPED = auto()
    PAGE_RO = auto()
    PAGE_ANON = auto()
    PAGE_LRU = auto()
    PAGE_COUNT = auto()
    ALLOC_HUGE_PAGE_FAIL = auto()


#: madvise_collapse_errno().
_ERRNO = {
    Scan.ALLOC_HUGE_PAGE_FAIL: errno.ENOMEM,
    Scan.PAGE_COUNT: errno.EAGAIN,
    Scan.PAGE_LRU: errno.EAGAIN,
}
#: Results after which madvise_collapse() goes on to the next PMD range (others stop it).
_GO_ON = {Scan.PMD_NULL, Scan.PAGE_RO, Scan.PAGE_COUNT, Scan.PAGE_LRU}


def madvise_collapse(mm: MmStruct, vma: Vma, start: int, end: int) -> None:
    """madvise_collapse(): collapse every PMD-aligned range inside [start, end) of ``vma``.

    EINVAL unless thp_vma_allowable_order() (tva_flags 0: sysfs ``enabled``
    is not enforced, VM_NOHUGEPAGE is).  Each range: hpage_collapse_scan_pmd()
    then collapse_huge_page(); a range already PMD-mapped counts as done.
    Not khugepaged, so max_ptes_none / max_ptes_shared do not apply: any
    number of none or zero-page PTEs and shared pages collapse.  Success
    unless some range failed; then madvise_collapse_errno() of the last
    failure (EAGAIN for refcount/LRU, ENOMEM for allocation, else EINVAL).

    A range inside one PMD range that does not start at its start (hstart,
    rounded up, beyond hend, rounded down) is EINVAL: the kernel compares
    ``thps`` with ``(hend - hstart) >> HPAGE_PMD_SHIFT`` in unsigned long,
    which wraps to a huge count no THP total matches, and madvise_collapse_errno()
    of the initial SCAN_FAIL is EINVAL.  A range that starts at a PMD boundary
    and ends inside it has hstart == hend: nothing to do, success.  (Found by
    harness fuzz: ``madv_collapse_inside_one_pmd.json``.)
    """
    if not thp_vma_allowable_collapse(mm, vma):
        raise MmError(errno.EINVAL, "madvise: MADV_COLLAPSE not allowed on this VMA")
    size = mm.pmd_size
    hstart = -(-start // size) * size
    hend = end // size * size
    thps = 0
    last = None
    addr = hstart
    while addr < hend:
        result = hpage_collapse_scan_pmd(mm, vma, addr)
        if result in (Scan.SUCCEED, Scan.PMD_MAPPED):
            thps += 1
        else:
            last = result
            if result not in _GO_ON:
                break
        addr += size
    if hend < hstart:
        raise MmError(errno.EINVAL, "madvise: MADV_COLLAPSE of a range inside one PMD range "
                      "(unsigned hend - hstart wraps)")
    if thps != (hend - hstart) // size:
        assert last is not None
        err = _ERRNO.get(last, errno.EINVAL)
        raise MmError(err, f"madvise: MADV_COLLAPSE failed ({last.name})")


def thp_vma_allowable_collapse(mm: MmStruct, vma: Vma) -> bool:
    """thp_vma_allowable_order(vma, vm_flags, 0, PMD_ORDER) as madvise_collapse() asks it.

    __thp_vma_allowable_orders() without TVA_IN_PF/TVA_SMAPS/TVA_ENFORCE_SYSFS:
    no VM_NOHUGEPAGE; thp_vma_suitable_order() at vm_end - PMD size (an aligned
    PMD range inside the VMA; a file VMA's pgoff aligned too); a shmem file
    then passes (shmem_allowable_huge_orders() with shmem_huge_force:
    hpage_collapse_scan_file() follows, which the model does not:
    NotModelled); an anonymous VMA needs an anon_vma.
    """
    if not mm.ctx.thp or vma.flags & VM_NOHUGEPAGE:
        return False
    size = mm.pmd_size
    haddr = (vma.end - size) // size * size
    if vma.end < size or haddr < vma.start:
        return False
    if vma.file is not None:
        if ((vma.start >> mm.arch.page_shift) - vma.pgoff) % mm.hpage_pmd_nr:
            return False
        raise NotModelled("MADV_COLLAPSE of a file or shmem VMA (hpage_collapse_scan_file())")
    return vma.anon_vma is not None


def hpage_collapse_scan_pmd(mm: MmStruct, vma: Vma, haddr: int) -> Scan:
    """hpage_collapse_scan_pmd() for MADV_COLLAPSE, then collapse_huge_page() on success.

    find_pmd_or_thp_or_none(): no table -> PMD_NULL, a huge leaf -> PMD_MAPPED.
    Each PTE: none or the zero page pass; a normal page must be anonymous
    (PAGE_ANON), on the LRU (PAGE_LRU) and have refcount == mapcount
    (is_refcount_suitable(): PAGE_COUNT).  No writable PTE: PAGE_RO.
    A PTE-mapped large folio is checked as a whole, like a small one
    (folio_test_lru(), is_refcount_suitable() on the folio).
    """
    mem = mm.mem
    entry = mm.pt.get_pmd(haddr)
    if entry is None:
        return Scan.PMD_NULL
    if isinstance(entry, HugePmd):
        return Scan.PMD_MAPPED
    writable = False
    for i in range(mm.pt.ptrs_per_pte):
        bits = int(entry.bits[i])
        if is_swap_pte(bits):
            raise NotModelled("MADV_COLLAPSE over swap entries (__collapse_huge_page_swapin())")
        if not bits & PTE_PRESENT or bits & PTE_SPECIAL:
            continue
        if bits & PTE_WRITE:
            writable = True
        head = mem.page_folio(int(entry.pfn[i]))
        if not mem.folio_test_anon(head):
            return Scan.PAGE_ANON
        if not mem.test(head, PG.lru):
            return Scan.PAGE_LRU
        if mem.folio_ref_count(head) != mem.folio_mapcount(head):
            return Scan.PAGE_COUNT
    if not writable:
        return Scan.PAGE_RO
    return collapse_huge_page(mm, vma, haddr, entry)


def collapse_huge_page(mm: MmStruct, vma: Vma, haddr: int, table: PteTable) -> Scan:
    """collapse_huge_page(): a new PMD-sized folio holding the range's contents.

    hugepage_vma_revalidate() wants an anon_vma (PAGE_ANON).  Every page is
    copied (none and zero PTEs give zeroed subpages,
    __collapse_huge_page_copy()); each old page loses its PTE mapping and
    that reference (__collapse_huge_page_copy_succeeded(): folio_remove_rmap_pte()
    and free_page_and_swap_cache() per PTE, also for a page of a large folio,
    whose isolation reference folio_putback_lru() drops again, back on the
    LRU; it is freed with its last mapping); the new folio is
    exclusive, on the LRU (folio_add_lru_vma(): mlocked in a VM_LOCKED VMA, and
    each old page munlocked as its PTE goes), mapped by mk_huge_pmd() +
    maybe_pmd_mkwrite(pmd_mkdirty()): young, dirty, soft-dirty.  The PTE
    table is deposited (gone from the walk).
    """
    mem = mm.mem
    if vma.anon_vma is None:
        return Scan.PAGE_ANON
    try:
        new = mem.alloc_folio(mm.pt.pmd_shift - mm.arch.page_shift)
    except OutOfMemory:
        return Scan.ALLOC_HUGE_PAGE_FAIL
    mem.set(new, PG.large_rmappable)
    for i in range(mm.pt.ptrs_per_pte):
        bits = int(table.bits[i])
        if not bits & PTE_PRESENT or bits & PTE_SPECIAL:
            continue
        pfn = int(table.pfn[i])
        head = mem.page_folio(pfn)
        mem.copy_content(new + i, pfn)
        table.clear(i)
        mem.folio_remove_rmap_ptes(head, pfn, 1)
        munlock_vma_folio(mem, head, vma)  # the end of __folio_remove_rmap()
        mem.folio_put(head)
    mem.set(new, PG.uptodate)
    mem.folio_add_new_anon_rmap(new, exclusive=True)
    # folio_add_lru_vma(): in a VM_LOCKED VMA the new THP is mlock_new_folio()ed
    # (found by harness fuzz on ppc64-4k: madv_collapse_locked.json).
    folio_add_lru_vma(mem, new, vma)
    mm.pt.set_pmd(haddr, HugePmd(new, mkyoung_dirty_write(PTE_PRESENT, vma, mm.ctx.soft_dirty)))
    return Scan.SUCCEED
