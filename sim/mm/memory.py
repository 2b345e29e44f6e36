"""User accesses and the fault paths of mm/memory.c, and zapping pages.

:func:`user_access` is the CPU and the arch fault handler; the rest follows
handle_mm_fault() down to do_anonymous_page(), do_wp_page() and do_fault(),
and zap_pte_range() for unmapping.  Huge PMDs are in
:mod:`sim.mm.huge_memory`; the entry-bit rules both share in :mod:`sim.mm.pte`.
Functions take the :class:`~sim.mm.mm_struct.MmStruct` they work on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.mm.huge_memory import (
    do_huge_pmd_anonymous_page,
    do_huge_pmd_wp_page,
    split_partial_huge_pmds,
    thp_vma_allowable,
    zap_huge_pmd,
)
from sim.mm.hugetlb import hugetlb_fault, unmap_hugepage_range
from sim.mm.mthp import alloc_anon_folio, map_anon_folio_ptes
from sim.mm.pageflags import PG, PG_ANON_EXCLUSIVE
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import (
    PTE_DIRTY,
    PTE_MARKER_UFFD_WP,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_UFFD_WP,
    PTE_WRITE,
    PTE_YOUNG,
    hardware_access,
    mk_pte,
    mkyoung_dirty_write,
    pte_mkdirty,
    set_accessed,
    wp_can_reuse_anon,
)
from sim.mm.rmap import anon_vma_prepare, folio_add_lru_vma, mlock_vma_folio, munlock_vma_folio
from sim.mm.shmem import ShmemFile, ShmemSigbus
from sim.mm.shmem_thp import do_set_pmd, shmem_fault_order, vma_is_anon_shmem
from sim.mm.swapfile import do_swap_page, free_swap_cache, is_swap_pte, zap_swap_pte
from sim.mm.syscall import NotModelled, Signal
from sim.mm.userfaultfd import (
    fault_take_marker,
    pte_mkuffd_wp,
    wp_fault_clear,
    wp_huge_pmd_split,
    zap_uffd_wp,
)
from sim.mm.vma import (
    VM_EXEC,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_READ,
    VM_SHARED,
    VM_UFFD_WP,
    VM_WRITE,
    Vma,
)

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = [
    "do_anonymous_page",
    "do_fault",
    "do_wp_page",
    "handle_mm_fault",
    "user_access",
    "zap_page_range",
    "zap_present_ptes",
]


# ---------------------------------------------------------------------------
# The CPU, and the fault when it cannot
# ---------------------------------------------------------------------------


def user_access(
    mm: MmStruct, addr: int, write: bool, tag: int | None, fill: int | None = None
) -> Signal | None:
    """One load or store at ``addr`` (storing ``tag``, the frame's first u64, or with
    ``fill`` a memset() of the whole page to that byte); the signal, if any.

    The arch fault handler (do_user_addr_fault(), arch/x86/mm/fault.c; the
    powerpc one alike) sends SIGSEGV without a VMA or when the VMA forbids the
    access (access_error()); otherwise handle_mm_fault() runs and the access
    is retried.  A present, permitting entry needs no fault: the MMU sets
    accessed (and dirty on a store).
    """
    vma = mm.vmas.vma_at(addr)
    if vma is None:
        return "SIGSEGV"
    if write and not vma.flags & VM_WRITE:
        return "SIGSEGV"
    if not write and not vma.flags & (VM_READ | VM_WRITE | VM_EXEC):
        return "SIGSEGV"
    for _ in range(4):
        pfn = _mmu_access(mm, addr, write)
        if pfn is not None:
            if write and fill is not None:
                mm.mem.write_fill(pfn, fill)
            elif write:
                mm.mem.write_tag(pfn, tag)
            return None
        signal = handle_mm_fault(mm, vma, addr, write)
        if signal is not None:
            return signal
    raise AssertionError(f"{addr:#x}: fault did not resolve the access")


def _mmu_access(mm: MmStruct, addr: int, write: bool) -> int | None:
    """The MMU's walk: the frame accessed, or None when it faults."""
    entry = mm.pt.get_pmd(addr)
    if entry is None:
        return None
    if isinstance(entry, HugePmd):
        bits = hardware_access(entry.bits, write)
        if bits is None:
            return None
        entry.bits = bits
        return entry.pfn + ((addr % mm.pmd_size) >> mm.arch.page_shift)
    i = mm.pt.pte_index(addr)
    bits = hardware_access(int(entry.bits[i]), write)
    if bits is None:
        return None
    entry.bits[i] = bits
    return int(entry.pfn[i])


def handle_mm_fault(mm: MmStruct, vma: Vma, addr: int, write: bool) -> Signal | None:
    """handle_mm_fault(): hugetlb_fault() in a hugetlb VMA; else __handle_mm_fault(): a
    huge PMD first where allowed, else handle_pte_fault()."""
    if vma.hugetlb:
        return hugetlb_fault(mm, vma, addr, write)
    entry = mm.pt.get_pmd(addr)
    if entry is None and thp_vma_allowable(mm, vma, addr):
        if do_huge_pmd_anonymous_page(mm, vma, addr, write):
            return None
    elif isinstance(entry, HugePmd):
        if write and not entry.bits & PTE_WRITE:
            if wp_huge_pmd_split(mm, vma, addr, entry):
                return handle_pte_fault(mm, vma, addr, write)
            if do_huge_pmd_wp_page(mm, vma, addr, entry):
                return None
        else:
            entry.bits = set_accessed(entry.bits, write, mm.ctx.soft_dirty)
            return None
    return handle_pte_fault(mm, vma, addr, write)


def handle_pte_fault(mm: MmStruct, vma: Vma, addr: int, write: bool) -> Signal | None:
    """handle_pte_fault(): missing PTE -> do_pte_missing(); read-only -> do_wp_page().

    A uffd-wp PTE marker is a missing page too (handle_pte_marker()); the PTE the
    fault installs then carries uffd-wp (vmf_orig_pte_uffd_wp(), sim/mm/userfaultfd.py).
    """
    table = mm.pt.get_pmd(addr)
    i = mm.pt.pte_index(addr)
    if isinstance(table, PteTable) and is_swap_pte(int(table.bits[i])):
        if do_swap_page(mm, vma, table, i, write):
            do_wp_page(mm, vma, table, i)
        return None
    if not isinstance(table, PteTable) or not table.present(i):
        uffd_wp = isinstance(table, PteTable) and fault_take_marker(vma, table, i)
        if vma.anonymous:
            do_anonymous_page(mm, vma, addr, write)
            signal = None
        else:
            signal = do_fault(mm, vma, addr, write)
        if uffd_wp and signal is None:
            entry = mm.pt.get_pmd(addr)
            assert isinstance(entry, PteTable)
            entry.bits[i] = pte_mkuffd_wp(int(entry.bits[i]))
        return signal
    bits = int(table.bits[i])
    if write and not bits & PTE_WRITE:
        do_wp_page(mm, vma, table, i)
        return None
    table.bits[i] = set_accessed(bits, write, mm.ctx.soft_dirty)
    return None


# ---------------------------------------------------------------------------
# Anonymous memory
# ---------------------------------------------------------------------------


def do_anonymous_page(mm: MmStruct, vma: Vma, addr: int, write: bool) -> None:
    """do_anonymous_page(): the zero page for a read, a new exclusive folio for a write.

    No anon_vma is made for a read (vmf_anon_prepare() comes after the
    zero-page branch).  The folio's order is alloc_anon_folio()'s
    (:mod:`sim.mm.mthp`: 0 unless a multi-size THP order is enabled); a
    large one is mapped by one PTE per page over its aligned range.
    """
    mem = mm.mem
    table = mm.pt.pte_alloc(addr)
    i = mm.pt.pte_index(addr)
    if not write:
        # pte_mkspecial(pfn_pte(my_zero_pfn(addr), vma->vm_page_prot))
        table.set(i, mem.zero_pfn, (mk_pte(vma, mm.ctx.soft_dirty) & ~PTE_WRITE) | PTE_SPECIAL)
        return
    anon_vma_prepare(mm.vmas, vma)
    pfn, order = alloc_anon_folio(mm, vma, addr, table)
    mem.set(pfn, PG.uptodate)
    bits = PTE_PRESENT | PTE_YOUNG
    if vma.flags & VM_WRITE:
        bits |= pte_mkdirty(mm.ctx.soft_dirty) | PTE_WRITE  # pte_mkwrite(pte_mkdirty(entry))
    if order:
        map_anon_folio_ptes(mm, vma, table, addr, pfn, order, bits)
        return
    mem.folio_add_new_anon_rmap(pfn, exclusive=True)
    folio_add_lru_vma(mem, pfn, vma)
    table.set(i, pfn, bits)


def do_wp_page(mm: MmStruct, vma: Vma, table: PteTable, i: int) -> None:
    """do_wp_page(): a write to the present read-only PTE ``table[i]``.

    Shared mapping: reuse (wp_page_shared()) and fault_dirty_shared_page().
    Private: reuse an anonymous page :func:`~sim.mm.pte.wp_can_reuse_anon`
    accepts, setting PG_anon_exclusive; otherwise copy (wp_page_copy()).
    """
    mem = mm.mem
    wp_fault_clear(mm, vma, table, i)  # uffd-wp with WP_ASYNC: the bit goes, the fault goes on
    bits = int(table.bits[i])
    page = None if bits & PTE_SPECIAL else int(table.pfn[i])  # vm_normal_page()
    if vma.flags & (VM_SHARED | VM_MAYSHARE):
        assert page is not None
        wp_page_reuse(mm, vma, table, i)
        mem.folio_mark_dirty(mem.page_folio(page))
        return
    if page is not None and mem.folio_test_anon(mem.page_folio(page)):
        if wp_can_reuse_anon(mem, page, pmd_mapped=False):
            mem.set(page, PG_ANON_EXCLUSIVE)
            wp_page_reuse(mm, vma, table, i)
            return
    wp_page_copy(mm, vma, table, i)


def wp_page_reuse(mm: MmStruct, vma: Vma, table: PteTable, i: int) -> None:
    """wp_page_reuse(): pte_mkyoung(), maybe_mkwrite(pte_mkdirty())."""
    table.bits[i] = mkyoung_dirty_write(int(table.bits[i]), vma, mm.ctx.soft_dirty)


def wp_page_copy(mm: MmStruct, vma: Vma, table: PteTable, i: int) -> None:
    """wp_page_copy(): a new exclusive anonymous copy (zeroed when COWing the zero page)."""
    mem = mm.mem
    anon_vma_prepare(mm.vmas, vma)
    old = None if table.bits[i] & PTE_SPECIAL else int(table.pfn[i])
    new = mem.alloc_folio(0)
    if old is not None:
        mem.copy_content(new, old)
    _new_anon_page(mm, vma, table, i, new)
    if old is not None:
        head = mem.page_folio(old)
        mem.folio_remove_rmap_ptes(head, old, 1)
        munlock_vma_folio(mem, head, vma)
        mem.folio_put(head)  # the reference the old PTE held


def _new_anon_page(mm: MmStruct, vma: Vma, table: PteTable, i: int, pfn: int) -> None:
    """Map the new private copy ``pfn`` writable and dirty at ``table[i]``
    (wp_page_copy(), and finish_fault() -> set_pte_range() after do_cow_fault())."""
    mem = mm.mem
    mem.set(pfn, PG.uptodate)
    mem.folio_add_new_anon_rmap(pfn, exclusive=True)
    folio_add_lru_vma(mem, pfn, vma)
    table.set(i, pfn, mkyoung_dirty_write(PTE_PRESENT, vma, mm.ctx.soft_dirty))


# ---------------------------------------------------------------------------
# File (shmem) mappings
# ---------------------------------------------------------------------------


def _file(vma: Vma) -> ShmemFile:
    assert vma.file is not None
    return vma.file


def do_fault(mm: MmStruct, vma: Vma, addr: int, write: bool) -> Signal | None:
    """do_fault(): read, copy-on-write or shared fault on a file (shmem) mapping; SIGBUS
    past the end of the file."""
    try:
        if not write:
            do_read_fault(mm, vma, addr)
        elif not vma.shared:
            do_cow_fault(mm, vma, addr)
        else:
            do_shared_fault(mm, vma, addr)
    except ShmemSigbus:
        return "SIGBUS"
    return None


def _fault_page(mm: MmStruct, vma: Vma, addr: int) -> int:
    """__do_fault() -> shmem_fault(): the page at ``addr``'s file index with a reference;
    a hole gets a new folio of :func:`~sim.mm.shmem_thp.shmem_fault_order`'s order."""
    file = _file(vma)
    index = vma.linear_page_index(addr)
    file.check_index(index)
    order = 0 if index in file.cache else shmem_fault_order(mm, vma, addr, index)
    return file.get_folio_for_fault(index, order)


def do_read_fault(mm: MmStruct, vma: Vma, addr: int) -> None:
    """do_read_fault(): fault-around first (not in a uffd-wp VMA: uffd_disable_fault_around()),
    ->fault() for the page if still missing, then finish_fault()."""
    if mm.ctx.facts.fault_around_pages(mm.arch.page_shift) > 1 and not vma.flags & VM_UFFD_WP:
        if do_fault_around(mm, vma, addr):
            return
    finish_fault(mm, vma, addr, _fault_page(mm, vma, addr), write=False)


def finish_fault(mm: MmStruct, vma: Vma, addr: int, page: int, write: bool) -> None:
    """finish_fault() for the page-cache page ``page`` (the caller's reference goes to
    the mapping).

    With the PMD none, a page of a large folio goes to do_set_pmd() first
    (:func:`~sim.mm.shmem_thp.do_set_pmd`).  Otherwise PTEs: one, or for an
    anonymous-shmem VMA (vma_is_anon_shmem(), not uffd-armed) the whole folio
    when it lies inside the VMA and the PTE table and all its PTEs are none
    (else the per-page fallback, ``needs_fallback``).
    """
    mem = mm.mem
    head = mem.page_folio(page)
    if mm.pt.get_pmd(addr) is None and mem.folio_test_large(head):
        if do_set_pmd(mm, vma, addr, page, write):
            return
    table = mm.pt.pte_alloc(addr)
    i = mm.pt.pte_index(addr)
    nr = mem.folio_nr_pages(head)
    if nr > 1 and vma_is_anon_shmem(vma) and not vma.flags & VM_UFFD_WP:
        idx = page - head
        vma_off = vma.linear_page_index(addr) - vma.pgoff
        if (vma_off >= idx and vma_off + nr - idx <= vma.nr_pages() and i >= idx
                and i + nr - idx <= mm.pt.ptrs_per_pte and table.none_range(i - idx, nr)):
            mem.folio_get(head, nr - 1)
            for n in range(nr):
                set_pte_range(mm, vma, table, i - idx + n, head + n, write)
            return
    set_pte_range(mm, vma, table, i, page, write)


def do_fault_around(mm: MmStruct, vma: Vma, addr: int) -> bool:
    """do_fault_around() + filemap_map_pages(); True if ``addr`` got mapped.

    The window is fault_around_pages aligned, clamped to the VMA and to one
    PTE table.  The first cached, uptodate folio in it, if PMD-sized and the
    PMD none, is mapped by one PMD where do_set_pmd() allows
    (filemap_map_pmd()); otherwise each cached, uptodate page inside i_size
    whose PTE is none is mapped read-only (set_pte_range() without write),
    taking a reference and a file mapcount.
    """
    nr = mm.ctx.facts.fault_around_pages(mm.arch.page_shift)
    pte_off = mm.pt.pte_index(addr)
    vma_off = (addr - vma.start) >> mm.arch.page_shift
    from_pte = max(pte_off // nr * nr, pte_off - min(pte_off, vma_off))
    to_pte = min(from_pte + nr, mm.pt.ptrs_per_pte, pte_off + vma.nr_pages() - vma_off) - 1
    file = _file(vma)
    index0 = vma.linear_page_index(addr) - pte_off
    pages = {
        pte: pfn
        for pte in range(from_pte, to_pte + 1)
        if (pfn := file.cached_uptodate(index0 + pte)) is not None
    }
    if not pages:
        return False
    mem = mm.mem
    first = next(iter(pages.values()))
    if mm.pt.get_pmd(addr) is None and mem.folio_nr_pages(mem.page_folio(first)) == mm.hpage_pmd_nr:
        mem.folio_get(mem.page_folio(first))  # next_uptodate_folio()'s reference
        if do_set_pmd(mm, vma, addr, first, write=False):
            return True
        mem.folio_put(mem.page_folio(first))
    table = mm.pt.pte_alloc(addr)
    for pte, pfn in pages.items():
        if table.bits[pte]:
            continue
        mem.folio_get(mem.page_folio(pfn))
        set_pte_range(mm, vma, table, pte, pfn, write=False)
    return table.present(pte_off)


def set_pte_range(mm: MmStruct, vma: Vma, table: PteTable, i: int, pfn: int, write: bool) -> None:
    """set_pte_range() for a page-cache page at ``table[i]`` (the caller's reference goes
    to the PTE): mk_pte(), and for a write maybe_mkwrite(pte_mkdirty())."""
    mem = mm.mem
    head = mem.page_folio(pfn)
    bits = mk_pte(vma, mm.ctx.soft_dirty)
    if write:
        bits = mkyoung_dirty_write(bits, vma, mm.ctx.soft_dirty)
    mem.folio_add_file_rmap_ptes(head, pfn, 1)
    if mem.folio_test_large(head) and vma.flags & VM_LOCKED:
        raise NotModelled("mlock of a large shmem folio (mlock_vma_folio())")
    mlock_vma_folio(mem, head, vma)
    table.set(i, pfn, bits)


def do_cow_fault(mm: MmStruct, vma: Vma, addr: int) -> None:
    """do_cow_fault(): copy the file page into a new anonymous folio."""
    mem = mm.mem
    anon_vma_prepare(mm.vmas, vma)
    source = _fault_page(mm, vma, addr)
    new = mem.alloc_folio(0)
    mem.copy_content(new, source)
    _new_anon_page(mm, vma, mm.pt.pte_alloc(addr), mm.pt.pte_index(addr), new)
    mem.folio_put(mem.page_folio(source))


def do_shared_fault(mm: MmStruct, vma: Vma, addr: int) -> None:
    """do_shared_fault(): map the page cache page writable (finish_fault());
    fault_dirty_shared_page()."""
    pfn = _fault_page(mm, vma, addr)
    finish_fault(mm, vma, addr, pfn, write=True)
    mm.mem.folio_mark_dirty(mm.mem.page_folio(pfn))


# ---------------------------------------------------------------------------
# Unmapping pages (zap_page_range_single(), unmap_vmas())
# ---------------------------------------------------------------------------


def zap_page_range(
    mm: MmStruct, vma: Vma, start: int, end: int, drop_markers: bool = True
) -> None:
    """zap_pmd_range()/zap_pte_range() over [start, end) (bytes) of ``vma``.

    A huge leaf fully inside the range goes whole (zap_huge_pmd()); one
    partly inside is split first.  Page tables stay (free_pgtables() is the
    caller's business).  A hugetlb VMA: unmap_hugepage_range() (unmap_single_vma()).
    A swap entry: free_swap_and_cache_nr() (:func:`~sim.mm.swapfile.zap_swap_pte`).
    uffd-wp markers: ``drop_markers`` is ZAP_FLAG_DROP_MARKER (unmap_vmas():
    munmap, exit); MADV_DONTNEED passes False (:func:`~sim.mm.userfaultfd.zap_uffd_wp`).
    """
    if vma.hugetlb:
        unmap_hugepage_range(mm, vma, start, end)
        return
    for base, entry, lo, hi in split_partial_huge_pmds(mm, vma, start, end):
        if isinstance(entry, HugePmd):
            zap_huge_pmd(mm, base, entry, vma)
            continue
        recency = vma.has_recency(mm.ctx.facts.rand_read_has_recency)
        ptes = mm.pt.pte_range(base, lo, hi)
        i = ptes.start
        while i < ptes.stop:
            bits = int(entry.bits[i])
            if is_swap_pte(bits):
                # No uffd-wp bit on a swap entry: wp over one is not modelled
                # (sim/mm/userfaultfd.py), so zap_install_uffd_wp_if_needed() has nothing to keep.
                zap_swap_pte(mm, entry, i)
                i += 1
                continue
            nr = zap_present_ptes(mm, entry, i, ptes.stop, vma, recency)
            if bits & (PTE_UFFD_WP | PTE_MARKER_UFFD_WP):
                # A batch's PTEs share their uffd-wp bit (folio_pte_batch() compares it).
                for k in range(nr):
                    zap_uffd_wp(vma, entry, i + k, bits, drop_markers)
            i += nr


#: The PTE bits folio_pte_batch() ignores when zapping (FPB_IGNORE_DIRTY |
#: FPB_IGNORE_SOFT_DIRTY, and __pte_batch_clear_ignored() always makes the entry old
#: and write-protected).
_BATCH_IGNORED = PTE_DIRTY | PTE_SOFT_DIRTY | PTE_YOUNG | PTE_WRITE


def folio_pte_batch(mm: MmStruct, table: PteTable, i: int, end: int) -> int:
    """folio_pte_batch(): how many PTEs from the present ``table[i]`` (before ``end``) map
    the next pages of its folio in order with the same bits but the ignored ones."""
    mem = mm.mem
    pfn = int(table.pfn[i])
    head = mem.page_folio(pfn)
    limit = min(end, i + head + mem.folio_nr_pages(head) - pfn)
    expected = int(table.bits[i]) & ~_BATCH_IGNORED
    nr = 1
    while i + nr < limit:
        if (int(table.bits[i + nr]) & ~_BATCH_IGNORED != expected
                or int(table.pfn[i + nr]) != pfn + nr):
            break
        nr += 1
    return nr


def zap_present_ptes(
    mm: MmStruct, table: PteTable, i: int, end: int, vma: Vma, recency: bool
) -> int:
    """zap_present_ptes() at ``table[i]`` (nothing past ``end``): how many PTEs it took.

    A large page-cache folio goes by batches (folio_pte_batch()): the batch's
    dirty and young bits are gathered (get_and_clear_full_ptes()) and passed on
    once, so its PTEs mark the folio accessed once (folio_mark_accessed() twice
    would activate it).  Anything else: :func:`zap_present_pte`, one PTE.
    """
    mem = mm.mem
    bits = int(table.bits[i])
    if not bits & PTE_PRESENT or bits & PTE_SPECIAL:
        zap_present_pte(mm, table, i, vma, recency)
        return 1
    pfn = int(table.pfn[i])
    head = mem.page_folio(pfn)
    if not mem.folio_test_large(head) or mem.folio_test_anon(head):
        zap_present_pte(mm, table, i, vma, recency)
        return 1
    nr = folio_pte_batch(mm, table, i, end)
    gathered = 0
    for k in range(nr):
        gathered |= int(table.bits[i + k])
        table.clear(i + k)
    if gathered & PTE_DIRTY:
        mem.folio_mark_dirty(head)
    if gathered & PTE_YOUNG and recency:
        mem.folio_mark_accessed(head)
    mem.folio_remove_rmap_ptes(head, pfn, nr)
    munlock_vma_folio(mem, head, vma)
    mem.folio_put(head, nr)
    return nr


def zap_present_pte(
    mm: MmStruct, table: PteTable, i: int, vma: Vma | None = None, recency: bool = True
) -> None:
    """zap_present_folio_ptes() for ``table[i]`` if present.

    A page-cache page's PTE passes its dirty bit to the folio
    (folio_mark_dirty()) and its young bit as folio_mark_accessed() if the
    VMA has recency (``recency``: vma_has_recency(), false after
    MADV_RANDOM/MADV_SEQUENTIAL); the mapping and its reference go.  With
    ``vma``, a folio unmapped from a VM_LOCKED VMA is munlocked
    (munlock_vma_folio()).  A large anonymous folio left partly mapped is
    queued by deferred_split_folio() in the kernel; only the shrinker splits
    it (memory pressure), so the model leaves it large.
    """
    bits = int(table.bits[i])
    if not bits & PTE_PRESENT:
        return
    pfn = int(table.pfn[i])
    table.clear(i)
    if bits & PTE_SPECIAL:
        return
    mem = mm.mem
    head = mem.page_folio(pfn)
    if not mem.folio_test_anon(head):
        if bits & PTE_DIRTY:
            mem.folio_mark_dirty(head)
        if bits & PTE_YOUNG and recency:
            mem.folio_mark_accessed(head)
    mem.folio_remove_rmap_ptes(head, pfn, 1)
    if vma is not None:
        munlock_vma_folio(mem, head, vma)
    free_swap_cache(mm, head)
    mem.folio_put(head)
