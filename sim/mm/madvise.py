"""madvise() (mm/madvise.c): every advice 6.12 knows, on a guest without a swap device.

Addresses are bytes, lengths pages.  Functions take the
:class:`~sim.mm.mm_struct.MmStruct` they work on; failures raise
:class:`~sim.mm.syscall.MmError` with the kernel's errno, and a case the
model does not follow raises :class:`~sim.mm.syscall.NotModelled`.

Advice is the kernel's raw MADV_* number (include/uapi/asm-generic/mman-common.h,
the same on x86 and powerpc), or its lower-case name without ``MADV_``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

from sim.mm.gup import get_user_page
from sim.mm.huge_memory import vma_adjust_trans_huge, zap_huge_pmd
from sim.mm.hugetlb import check_modelled_op
from sim.mm.khugepaged import madvise_collapse
from sim.mm.ksm import break_ksm_range
from sim.mm.memory import folio_pte_batch, zap_page_range, zap_present_ptes
from sim.mm.pageflags import PG, PG_SWAPCACHE
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_DIRTY, PTE_PRESENT, PTE_SPECIAL, PTE_YOUNG
from sim.mm.rmap import try_to_unmap_pte
from sim.mm.shmem_thp import split_file_pmd, split_partial_folios
from sim.mm.split import split_folio
from sim.mm.swapfile import is_swap_pte, pageout_anon_folio, zap_swap_pte
from sim.mm.syscall import MmError, NotModelled, user_range_end
from sim.mm.userfaultfd import not_modelled_in
from sim.mm.vma import (
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_HUGEPAGE,
    VM_LOCKED,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_MERGEABLE,
    VM_NOHUGEPAGE,
    VM_RAND_READ,
    VM_READ,
    VM_SEQ_READ,
    VM_SHARED,
    VM_WIPEONFORK,
    VM_WRITE,
    Vma,
)

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct
    from sim.mm.shmem import ShmemFile

__all__ = [
    "ADVICE",
    "MADV",
    "FilePageoutCheck",
    "advice_number",
    "do_madvise",
    "root_can_do_file_pageout",
]

#: can_do_file_pageout() (mm/madvise.c) of the calling task for a VMA's file:
#: True when it owns the file, has CAP_FOWNER, or may write it
#: (:meth:`sim.mm.machine.Credentials.can_do_file_pageout`).
FilePageoutCheck = Callable[["ShmemFile"], bool]


def root_can_do_file_pageout(file: ShmemFile) -> bool:
    """can_do_file_pageout() of a root task: CAP_FOWNER, so always True."""
    return True


class MADV(IntEnum):
    """The MADV_* numbers (include/uapi/asm-generic/mman-common.h; powerpc and x86 use it)."""

    NORMAL = 0
    RANDOM = 1
    SEQUENTIAL = 2
    WILLNEED = 3
    DONTNEED = 4
    FREE = 8
    REMOVE = 9
    DONTFORK = 10
    DOFORK = 11
    MERGEABLE = 12
    UNMERGEABLE = 13
    HUGEPAGE = 14
    NOHUGEPAGE = 15
    DONTDUMP = 16
    DODUMP = 17
    WIPEONFORK = 18
    KEEPONFORK = 19
    COLD = 20
    PAGEOUT = 21
    POPULATE_READ = 22
    POPULATE_WRITE = 23
    DONTNEED_LOCKED = 24
    COLLAPSE = 25
    HWPOISON = 100
    SOFT_OFFLINE = 101
    #: 6.13+ (guard regions); 6.12's madvise_behavior_valid() refuses it.
    GUARD_INSTALL = 102
    GUARD_REMOVE = 103


#: The advice the model follows, by the name the harness uses.
ADVICE = tuple(m.name.lower() for m in MADV if m <= MADV.COLLAPSE)

#: madvise_behavior_valid() of 6.12 with CONFIG_KSM=y and without
#: CONFIG_MEMORY_FAILURE (the images' configs); THP advice needs
#: CONFIG_TRANSPARENT_HUGEPAGE.
_VALID = frozenset(MADV) - {MADV.HWPOISON, MADV.SOFT_OFFLINE, MADV.GUARD_INSTALL,
                            MADV.GUARD_REMOVE}
_THP_ONLY = frozenset({MADV.HUGEPAGE, MADV.NOHUGEPAGE, MADV.COLLAPSE})


def advice_number(advice: str | int) -> int:
    """The raw MADV_* number of a harness name (``"free"``) or a number as it is.

    Raises ValueError for an unknown name.
    """
    if isinstance(advice, int):
        return advice
    try:
        return int(MADV[advice.upper()])
    except KeyError:
        raise ValueError(f"madvise: unknown advice {advice!r}") from None


def do_madvise(
    mm: MmStruct, addr: int, nr_pages: int, advice: str | int,
    *, can_do_file_pageout: FilePageoutCheck = root_can_do_file_pageout,
) -> None:
    """do_madvise(): validate the advice, then madvise_populate() or madvise_walk_vmas().

    ``can_do_file_pageout`` answers can_do_file_pageout() for the calling
    task (MADV_PAGEOUT only; default: a root task).

    EINVAL for an advice madvise_behavior_valid() refuses (any number 6.12
    does not know, e.g. 102 = MADV_GUARD_INSTALL).  madvise_walk_vmas()
    applies the advice to every mapped piece in order, stops at the first
    piece that fails (its errno), and fails with ENOMEM at the end if the
    range had a hole.  POPULATE_* stop at the first hole instead (ENOMEM).
    """
    behavior = advice_number(advice)
    if behavior not in _VALID or (behavior in _THP_ONLY and not mm.ctx.thp):
        raise MmError(errno.EINVAL, f"madvise: advice {behavior} is not valid on this kernel")
    end = user_range_end(mm.arch, addr, nr_pages, "madvise")
    if behavior in (MADV.PAGEOUT, MADV.COLLAPSE, MADV.FREE, MADV.REMOVE):
        not_modelled_in(mm, addr, end, f"madvise advice {behavior}")
    populate = behavior in (MADV.POPULATE_READ, MADV.POPULATE_WRITE)
    if populate and not mm.ctx.facts.populate_walks_vmas:
        madvise_populate(mm, addr, end, write=behavior == MADV.POPULATE_WRITE)
        return
    visit = _VISIT[MADV(behavior)]
    if behavior not in (MADV.DONTNEED, MADV.DONTNEED_LOCKED, MADV.FREE):
        check_modelled_op(mm, addr, end, f"madvise advice {behavior}")
    gap = False
    start = addr
    while start < end:
        vma = mm.vmas.find_vma(start)
        if vma is None:
            raise MmError(errno.ENOMEM, f"madvise: [{addr:#x}, {end:#x}) has unmapped pages")
        if start < vma.start:
            gap = True
            start = vma.start
            if start >= end:
                break
        hi = min(end, vma.end)
        if behavior == MADV.PAGEOUT:
            _cold_or_pageout(mm, vma, start, hi, MADV.PAGEOUT,
                             can_do_file_pageout=can_do_file_pageout)
        else:
            visit(mm, vma, start, hi, MADV(behavior))
        start = hi
    if gap:
        raise MmError(errno.ENOMEM, f"madvise: [{addr:#x}, {end:#x}) has unmapped pages")


# ---------------------------------------------------------------------------
# Advice that only changes vm_flags (madvise_vma_behavior() -> madvise_update_vma())
# ---------------------------------------------------------------------------


def _update_flags(mm: MmStruct, vma: Vma, lo: int, hi: int, newflags: int) -> None:
    """madvise_update_vma(): nothing if the flags stay; else vma_modify_flags() splits/merges.

    A huge PMD the new VMA boundaries cut through is split first, as
    __split_vma() and the merges do (vma_adjust_trans_huge()), like mlock_fixup().
    """
    if newflags != vma.flags:
        vma_adjust_trans_huge(mm, vma, lo, hi)
        vma = mm.vmas.modify(vma, lo, hi, newflags)
        vma.flags = newflags


def _flags_advice(mm: MmStruct, vma: Vma, lo: int, hi: int, behavior: MADV) -> None:
    """madvise_vma_behavior()'s vm_flags cases, ksm_madvise() and hugepage_madvise().

    WIPEONFORK: EINVAL on a file or shared VMA.  MERGEABLE (ksm_madvise()):
    VM_MERGEABLE unless vma_ksm_compatible() says no (shared VMAs: silently
    unchanged); the first one registers the mm with ksmd (__ksm_enter(),
    sim/mm/ksm.py), which merges only in a ``ksm`` step.  UNMERGEABLE on a
    VM_MERGEABLE VMA with an anon_vma breaks every KSM page of the range first
    (unmerge_ksm_pages() -> break_ksm(), :func:`sim.mm.ksm.break_ksm_range`),
    then clears it.  NOHUGEPAGE: VM_NOHUGEPAGE, VM_HUGEPAGE cleared.
    """
    flags = vma.flags
    if behavior == MADV.NORMAL:
        flags &= ~(VM_RAND_READ | VM_SEQ_READ)
    elif behavior == MADV.SEQUENTIAL:
        flags = (flags & ~VM_RAND_READ) | VM_SEQ_READ
    elif behavior == MADV.RANDOM:
        flags = (flags & ~VM_SEQ_READ) | VM_RAND_READ
    elif behavior == MADV.DONTFORK:
        flags |= VM_DONTCOPY
    elif behavior == MADV.DOFORK:
        flags &= ~VM_DONTCOPY
    elif behavior == MADV.WIPEONFORK:
        if vma.file is not None or vma.flags & VM_SHARED:
            raise MmError(errno.EINVAL, "madvise: MADV_WIPEONFORK needs a private anonymous VMA")
        flags |= VM_WIPEONFORK
    elif behavior == MADV.KEEPONFORK:
        flags &= ~VM_WIPEONFORK
    elif behavior == MADV.DONTDUMP:
        flags |= VM_DONTDUMP
    elif behavior == MADV.DODUMP:
        flags &= ~VM_DONTDUMP
    elif behavior == MADV.MERGEABLE:
        if not flags & VM_MERGEABLE and not flags & (VM_SHARED | VM_MAYSHARE):
            mm.ctx.ksm.enter(mm)  # vma_ksm_compatible(): __ksm_enter() unless registered
            flags |= VM_MERGEABLE
    elif behavior == MADV.UNMERGEABLE:
        if flags & VM_MERGEABLE and vma.anon_vma is not None:
            break_ksm_range(mm, vma, lo, hi)
        flags &= ~VM_MERGEABLE
    elif behavior == MADV.HUGEPAGE:
        flags = (flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
    elif behavior == MADV.NOHUGEPAGE:
        flags = (flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE
    _update_flags(mm, vma, lo, hi, flags)


# ---------------------------------------------------------------------------
# DONTNEED, FREE (madvise_dontneed_free())
# ---------------------------------------------------------------------------


def _dontneed_free_valid_vma(
    vma: Vma, behavior: MADV, lo: int = 0, hi: int = 0, huge_size: int = 0
) -> int:
    """madvise_dontneed_free_valid_vma(): EINVAL on a VM_LOCKED VMA (MADV_DONTNEED_LOCKED
    aside); the pieces before this one were already done.  The end of the range, ``hi``.

    A hugetlb VMA (of ``huge_size`` bytes pages) allows DONTNEED and
    DONTNEED_LOCKED only (FREE: EINVAL), whether locked or not, from a
    huge-page aligned start (else EINVAL); the end is rounded down to a huge
    page ("avoid unexpected data loss"), so a range inside one huge page is a
    no-op.
    """
    if vma.hugetlb:
        if behavior not in (MADV.DONTNEED, MADV.DONTNEED_LOCKED) or lo % huge_size:
            raise MmError(errno.EINVAL, f"madvise: advice {int(behavior)} on hugetlb at {lo:#x}")
        return hi - hi % huge_size
    if vma.flags & VM_LOCKED and behavior != MADV.DONTNEED_LOCKED:
        raise MmError(errno.EINVAL, f"madvise: advice {int(behavior)} on a VM_LOCKED VMA")
    return hi


def _dontneed(mm: MmStruct, vma: Vma, lo: int, hi: int, behavior: MADV) -> None:
    """madvise_dontneed_single_vma(): zap_page_range_single() (which starts with
    lru_add_drain(): the mlock batch too), page tables kept.  A hugetlb VMA: huge
    pages from an aligned start, the end rounded down (unmap_hugepage_range())."""
    huge_size = mm.page_size << mm.ctx.hstate.order if mm.ctx.hstate is not None else 0
    hi = _dontneed_free_valid_vma(vma, behavior, lo, hi, huge_size)
    if lo == hi:
        return
    mm.mem.lru_add_drain()
    zap_page_range(mm, vma, lo, hi, drop_markers=False)


def _free(mm: MmStruct, vma: Vma, lo: int, hi: int, behavior: MADV) -> None:
    """madvise_free_single_vma(): EINVAL unless anonymous; then madvise_free_pte_range().

    A huge PMD: madvise_free_huge_pmd() skips the huge zero folio and a folio
    mapped shared (folio_likely_mapped_shared()); wholly inside the range the
    folio is cleaned, the PMD made old and clean, the folio lazyfree; partly
    inside, the folio is split (split_folio()) and its PTEs handled below.
    Each present PTE of a normal folio: a large folio the range does not
    cover whole (madvise_folio_pte_batch()) is split unless mapped shared
    (then skipped); a PG_dirty folio is cleaned only if every page is mapped
    once (else skipped); the PTEs lose young and dirty
    (clear_young_dirty_ptes(), soft-dirty stays); folio_mark_lazyfree() ->
    lru_lazyfree(): an anon, swap-backed LRU folio loses PG_active,
    PG_referenced and PG_swapbacked.  A write later sets the PTE's dirty bit
    (the MMU), which makes the page count as dirty again.
    """
    _dontneed_free_valid_vma(vma, behavior, lo, hi, mm.page_size)
    if vma.file is not None:
        raise MmError(errno.EINVAL, "madvise: MADV_FREE needs an anonymous VMA")
    mem = mm.mem
    mem.lru_add_drain()  # madvise_free_single_vma(): lru_add_drain()
    for base, entry, elo, ehi in mm.pt.pmd_ranges(lo, hi):
        if isinstance(entry, HugePmd):
            if mem.is_huge_zero_folio(entry.pfn) or _likely_mapped_shared(mm, entry.pfn):
                continue
            if elo == base and ehi == base + mm.pmd_size:
                mem.clear(entry.pfn, PG.dirty)
                entry.bits &= ~(PTE_YOUNG | PTE_DIRTY)
                _mark_lazyfree(mm, entry.pfn)
                continue
            split_folio(mm, entry.pfn)
            entry = mm.pt.pte_table(base)
        for i in mm.pt.pte_range(base, elo, ehi):
            if is_swap_pte(int(entry.bits[i])):
                zap_swap_pte(mm, entry, i)  # free_swap_and_cache_nr(), the entry cleared
        swap = mm.ctx.swap
        for i, head, nr in _pte_folios(mm, entry, base, elo, ehi):
            in_swap_cache = swap is not None and head in swap.folio_swap
            if in_swap_cache or mem.test(head, PG.dirty):
                if mem.folio_mapcount(head) != mem.folio_nr_pages(head):
                    continue
                # folio_free_swap() (which dirties it) or the PTE is skipped entirely.
                if in_swap_cache and swap is not None and not swap.folio_free_swap(mem, head):
                    continue
                mem.clear(head, PG.dirty)
            entry.bits[i : i + nr] &= np.uint32(~(PTE_YOUNG | PTE_DIRTY) & 0xFFFFFFFF)
            _mark_lazyfree(mm, head)


def _pte_folios(
    mm: MmStruct, table: PteTable, base: int, lo: int, hi: int
) -> Iterator[tuple[int, int, int]]:
    """The normal folios of the present PTEs of [lo, hi) as (first PTE index, head, PTEs).

    A large folio is one batch when the range maps it whole and in order
    (madvise_folio_pte_batch(), folio_pte_batch()); otherwise it is split
    (split_folio()) and its pages come one by one, unless it is mapped
    shared (folio_likely_mapped_shared()): then its PTEs in the range are
    skipped.
    """
    mem = mm.mem
    i, end = mm.pt.pte_index(lo), mm.pt.pte_index(lo) + ((hi - lo) >> mm.arch.page_shift)
    while i < end:
        bits = int(table.bits[i])
        if not bits & PTE_PRESENT or bits & PTE_SPECIAL:
            i += 1
            continue
        pfn = int(table.pfn[i])
        head = mem.page_folio(pfn)
        if not mem.folio_test_large(head):
            yield i, head, 1
            i += 1
            continue
        if not mem.folio_test_anon(head):
            raise NotModelled("MADV_COLD/PAGEOUT of a PTE-mapped large shmem folio")
        nr = folio_pte_batch(mm, table, i, end)
        if nr == mem.folio_nr_pages(head):
            yield i, head, nr
            i += nr
        elif _likely_mapped_shared(mm, head):
            i += nr
        else:
            split_folio(mm, head)  # and this PTE again, now of a small folio


def _likely_mapped_shared(mm: MmStruct, head: int) -> bool:
    """folio_likely_mapped_shared(): the first page's mapcount (+ entire mapcount) above 1."""
    return mm.mem.folio_precise_page_mapcount(head) > 1


def _mark_lazyfree(mm: MmStruct, head: int) -> None:
    """folio_mark_lazyfree() + lru_lazyfree() once the batch is drained."""
    mem = mm.mem
    if not mem.folio_test_anon(head) or not mem.test(head, PG.swapbacked):
        return
    if not mem.test(head, PG.lru) or mem.test(head, PG_SWAPCACHE) or mem.test(head, PG.unevictable):
        return
    mem.clear(head, PG.active)
    mem.clear(head, PG.referenced)
    mem.clear(head, PG.swapbacked)


# ---------------------------------------------------------------------------
# COLD, PAGEOUT (madvise_cold_or_pageout_pte_range()), no swap device
# ---------------------------------------------------------------------------


def _cold_or_pageout(
    mm: MmStruct, vma: Vma, lo: int, hi: int, behavior: MADV,
    *, can_do_file_pageout: FilePageoutCheck = root_can_do_file_pageout,
) -> None:
    """madvise_cold() / madvise_pageout() -> madvise_cold_or_pageout_pte_range().

    A huge PMD (not the huge zero folio, not mapped shared): partly in the
    range it is split (split_folio()) and handled as PTEs; whole, COLD makes
    the PMD old.  Large folios under PTEs as for MADV_FREE.  Each LRU folio
    with every page mapped once: COLD clears the PTEs' young bits; both
    clear PG_referenced; COLD then folio_deactivate() (lru_deactivate(): an
    active folio loses PG_active).  PAGEOUT isolates it and reclaim_pages()
    -> shrink_folio_list() runs with no swap device: an anonymous
    swap-backed folio fails add_to_swap() (a large one is split first,
    split_folio_to_list()) and is activated (activate_locked: PG_active);
    a lazyfree one is discarded unless redirtied (:func:`_pageout_lazyfree`);
    a shmem folio is unmapped (try_to_unmap(), a dirty PTE dirties it), then
    a dirty one goes to shmem_writepage(), which finds no swap and redirties
    it (AOP_WRITEPAGE_ACTIVATE: PG_active, still in the page cache), and a
    clean one leaves the page cache (__remove_mapping()) and is freed.  Not
    modelled: a large lazyfree folio.  EINVAL on a VM_LOCKED VMA
    (can_madv_lru_vma()); lru_add_drain() first (the mlock batch too).

    PAGEOUT of a file VMA (not vma_is_anonymous(), shared anonymous memory
    included) whose file the caller may not page out (``can_do_file_pageout``
    false: neither owner nor CAP_FOWNER nor write permission): madvise_pageout()
    returns at once for a VM_MAYSHARE VMA (no drain either); for a private one
    the walk runs with pageout_anon_only_filter and leaves every page-cache
    folio alone (mapped, PG_referenced kept), paging out only the anonymous
    (COW) folios.  6.1's madvise_pageout() returns at once for both
    (``facts.pageout_private_file_anon_only`` false; can_do_pageout()).
    """
    if vma.flags & VM_LOCKED:
        raise MmError(errno.EINVAL, f"madvise: advice {int(behavior)} on a VM_LOCKED VMA")
    pageout = behavior == MADV.PAGEOUT
    anon_only = pageout and vma.file is not None and not can_do_file_pageout(vma.file)
    if anon_only and (vma.flags & VM_MAYSHARE or not mm.ctx.facts.pageout_private_file_anon_only):
        return
    mem = mm.mem
    mem.lru_add_drain()
    for base, entry, elo, ehi in mm.pt.pmd_ranges(lo, hi):
        if isinstance(entry, HugePmd):
            if mem.is_huge_zero_folio(entry.pfn) or _likely_mapped_shared(mm, entry.pfn):
                continue
            head = entry.pfn
            if anon_only and not mem.folio_test_anon(head):
                continue
            if not mem.folio_test_anon(head):
                raise NotModelled("MADV_COLD/PAGEOUT of a PMD-mapped shmem folio")
            if elo == base and ehi == base + mm.pmd_size:
                if not pageout:
                    entry.bits &= ~PTE_YOUNG
                    _deactivate(mm, head)
                    continue
                if mm.ctx.facts.pageout_clears_young:
                    entry.bits &= ~PTE_YOUNG
                mem.clear(head, PG.referenced)
                _pageout_anon_large(mm, head)
                continue
            split_folio(mm, head)
            entry = mm.pt.pte_table(base)
        for i, head, nr in _pte_folios(mm, entry, base, elo, ehi):
            if not mem.test(head, PG.lru) or mem.folio_mapcount(head) != mem.folio_nr_pages(head):
                continue
            if anon_only and not mem.folio_test_anon(head):
                continue  # pageout_anon_only_filter
            if not pageout or mm.ctx.facts.pageout_clears_young:
                entry.bits[i : i + nr] &= np.uint32(~PTE_YOUNG & 0xFFFFFFFF)
            if not pageout:
                _deactivate(mm, head)
                continue
            mem.clear(head, PG.referenced)
            if mem.folio_test_large(head):
                _pageout_anon_large(mm, head)
                continue
            if mem.folio_test_anon(head) and not mem.test(head, PG.swapbacked):
                _pageout_lazyfree(mm, entry, i, head)
            elif mem.folio_test_anon(head):
                swap = mm.ctx.swap
                if swap is None or not pageout_anon_folio(mm, swap, entry, i, head):
                    mem.set(head, PG.active)  # add_to_swap() failed: activate_locked
            else:
                assert vma.file is not None
                if mm.ctx.swap is not None and mm.ctx.swap.writeok:
                    raise NotModelled("MADV_PAGEOUT of shmem with swap on (shmem_writepage() "
                                      "moves the folio to the swap cache)")
                try_to_unmap_pte(mm.mem, entry, i, head)
                if mem.test(head, PG.dirty):
                    mem.set(head, PG.active)
                else:
                    vma.file.remove_clean_folio(head)


def _pageout_lazyfree(mm: MmStruct, table: PteTable, i: int, head: int) -> None:
    """shrink_folio_list() of a lazyfree (clean, !swapbacked) anon folio: try_to_unmap_one()
    moves a dirty PTE's bit to the folio; a dirty folio is mapped back, made swap-backed
    again and activated; a clean one is discarded (PTE none, folio freed)."""
    mem = mm.mem
    if int(table.bits[i]) & PTE_DIRTY:
        mem.folio_mark_dirty(head)
    if mem.test(head, PG.dirty):
        mem.set(head, PG.swapbacked)
        mem.set(head, PG.active)
        return
    pfn = int(table.pfn[i])
    table.clear(i)
    mem.folio_remove_rmap_ptes(head, pfn, 1)
    mem.folio_put(head)


def _pageout_anon_large(mm: MmStruct, head: int) -> None:
    """shrink_folio_list() of a large anon folio with no swap: add_to_swap() fails,
    split_folio_to_list() splits it, and every page fails again and is activated."""
    mem = mm.mem
    if not mem.test(head, PG.swapbacked):
        raise NotModelled("MADV_PAGEOUT of a lazyfree folio (freed by reclaim)")
    if mm.ctx.swap is not None and mm.ctx.swap.writeok:
        raise NotModelled("MADV_PAGEOUT of a large folio with swap on (THP_SWAP or a split "
                          "in shrink_folio_list())")
    nr = mem.folio_nr_pages(head)
    split_folio(mm, head)
    for pfn in range(head, head + nr):
        if not mem.freed[pfn]:
            mem.set(pfn, PG.active)


def _deactivate(mm: MmStruct, head: int) -> None:
    """folio_clear_referenced() + folio_deactivate() -> lru_deactivate() after the drain."""
    mem = mm.mem
    mem.clear(head, PG.referenced)
    if mem.test(head, PG.unevictable) or not mem.test(head, PG.active):
        return
    mem.clear(head, PG.active)


# ---------------------------------------------------------------------------
# WILLNEED, REMOVE, COLLAPSE
# ---------------------------------------------------------------------------


def _willneed(mm: MmStruct, vma: Vma, lo: int, hi: int, behavior: MADV) -> None:
    """madvise_willneed() with CONFIG_SWAP: anonymous VMAs walk for swap entries
    (swapin_walk_ops), shmem ones shmem_swapin_range(); with no swap device
    there is none, so nothing changes but lru_add_drain() (the mlock batch too)."""
    mm.mem.lru_add_drain()


def _remove(mm: MmStruct, vma: Vma, lo: int, hi: int, behavior: MADV) -> None:
    """madvise_remove(): EINVAL without a file (private anonymous memory), EACCES unless
    the VMA is shared and may write (vma_is_shared_maywrite()); then
    vfs_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) -> shmem_fallocate()
    -> unmap_mapping_range() in every process + shmem_truncate_range().  EINVAL on a
    VM_LOCKED VMA first (found by harness fuzz)."""
    if vma.flags & VM_LOCKED:
        raise MmError(errno.EINVAL, "madvise: MADV_REMOVE on a VM_LOCKED VMA")
    if vma.file is None:
        raise MmError(errno.EINVAL, "madvise: MADV_REMOVE needs a file VMA")
    if not (vma.flags & VM_SHARED and vma.flags & VM_MAYWRITE):  # vma_is_shared_maywrite()
        raise MmError(errno.EACCES, "madvise: MADV_REMOVE needs a shared VMA that may write")
    shmem_punch_hole(mm, vma.file, vma.linear_page_index(lo), vma.linear_page_index(hi))


def shmem_punch_hole(mm: MmStruct, file: ShmemFile, first: int, end: int) -> None:
    """shmem_fallocate(FALLOC_FL_PUNCH_HOLE) of pages [first, end) of ``file``.

    unmap_mapping_range(even_cows = 0) in every live mm: PTEs of the page
    cache pages go (a private VMA's anonymous copies stay:
    zap_present_folio_ptes() with should_zap_folio() false); a huge PMD of a
    page-cache folio wholly inside goes (zap_huge_pmd()), one partly inside is
    split, which for a file VMA only zaps it (zap_pmd_range() ->
    __split_huge_pmd()).  Then shmem_truncate_range(): a huge folio partly
    inside is split (:func:`~sim.mm.shmem_thp.split_partial_folios`) and the
    folios inside leave the page cache (the cache's references go; i_size stays).
    """
    for other in mm.ctx.mms:
        for vma in other.vmas:
            if vma.file is not file:
                continue
            lo = max(vma.start, vma.start + ((first - vma.pgoff) << mm.arch.page_shift))
            hi = min(vma.end, vma.start + ((end - vma.pgoff) << mm.arch.page_shift))
            if lo >= hi:
                continue
            for base, entry, elo, ehi in other.pt.pmd_ranges(lo, hi):
                if isinstance(entry, HugePmd):
                    if other.mem.folio_test_anon(entry.pfn):
                        continue  # anonymous THP of a private file VMA: not page cache
                    if elo == base and ehi == base + other.pmd_size:
                        zap_huge_pmd(other, base, entry, vma)
                    else:
                        split_file_pmd(other, base, entry)
                    continue
                ptes = other.pt.pte_range(base, elo, ehi)
                i = ptes.start
                while i < ptes.stop:
                    bits = int(entry.bits[i])
                    if not bits & PTE_PRESENT or bits & PTE_SPECIAL or other.mem.folio_test_anon(
                        other.mem.page_folio(int(entry.pfn[i]))
                    ):
                        i += 1
                        continue
                    i += zap_present_ptes(
                        other, entry, i, ptes.stop, vma,
                        recency=vma.has_recency(mm.ctx.facts.rand_read_has_recency),
                    )
    split_partial_folios(mm, file, first, end)
    file.truncate_range(first, end)


def _collapse(mm: MmStruct, vma: Vma, lo: int, hi: int, behavior: MADV) -> None:
    """madvise_collapse() (mm/khugepaged.c): see :func:`sim.mm.khugepaged.madvise_collapse`;
    it starts with lru_add_drain_all() (the mlock batch too)."""
    mm.mem.lru_add_drain()
    madvise_collapse(mm, vma, lo, hi)


def _populate_vma(mm: MmStruct, vma: Vma, lo: int, hi: int, behavior: MADV) -> None:
    """6.1's madvise_populate() as a madvise_walk_vmas() visitor (``populate_walks_vmas``)."""
    madvise_populate(mm, lo, hi, write=behavior == MADV.POPULATE_WRITE)


_Visit = Callable[["MmStruct", Vma, int, int, MADV], None]
_VISIT: dict[MADV, _Visit] = {
    **{m: _flags_advice for m in (
        MADV.NORMAL, MADV.RANDOM, MADV.SEQUENTIAL, MADV.DONTFORK, MADV.DOFORK,
        MADV.WIPEONFORK, MADV.KEEPONFORK, MADV.DONTDUMP, MADV.DODUMP, MADV.MERGEABLE,
        MADV.UNMERGEABLE, MADV.HUGEPAGE, MADV.NOHUGEPAGE)},
    MADV.DONTNEED: _dontneed,
    MADV.DONTNEED_LOCKED: _dontneed,
    MADV.FREE: _free,
    MADV.COLD: _cold_or_pageout,
    MADV.PAGEOUT: _cold_or_pageout,
    MADV.WILLNEED: _willneed,
    MADV.REMOVE: _remove,
    MADV.COLLAPSE: _collapse,
    MADV.POPULATE_READ: _populate_vma,
    MADV.POPULATE_WRITE: _populate_vma,
}


# ---------------------------------------------------------------------------
# POPULATE_READ / POPULATE_WRITE (madvise_populate() -> faultin_page_range())
# ---------------------------------------------------------------------------


def madvise_populate(mm: MmStruct, start: int, end: int, write: bool) -> None:
    """madvise_populate(): __get_user_pages() with FOLL_TOUCH | FOLL_MADV_POPULATE (+ FOLL_WRITE).

    Page by page in order: ENOMEM where no VMA holds the address (the pages
    before it were populated), EINVAL where check_vma_flags() refuses the
    VMA (read without VM_READ, write without VM_WRITE); each page as GUP
    follows it (:func:`sim.mm.gup.get_user_page`: fault in, then FOLL_TOUCH,
    the zero page included; a huge PMD is touched and the rest of it skipped).
    """
    addr = start
    vma: Vma | None = None
    while addr < end:
        if vma is None or addr >= vma.end:
            vma = mm.vmas.vma_at(addr)
            if vma is None:
                raise MmError(errno.ENOMEM, f"madvise: {addr:#x} is not mapped")
            if write and not vma.flags & VM_WRITE:
                raise MmError(errno.EINVAL, "madvise: MADV_POPULATE_WRITE of a read-only VMA")
            if not write and not vma.flags & VM_READ and not vma.flags & VM_MAYREAD:
                raise MmError(errno.EINVAL, "madvise: MADV_POPULATE_READ of an unreadable VMA")
            if not write and not vma.flags & VM_READ:
                raise MmError(errno.EINVAL, "madvise: MADV_POPULATE_READ of a PROT_NONE VMA")
        addr += get_user_page(mm, vma, addr, end, write)
