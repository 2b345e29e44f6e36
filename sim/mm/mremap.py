"""mremap() (mm/mremap.c): resize in place, or move a range and its page tables.

Addresses are bytes, lengths pages.  Functions take the
:class:`~sim.mm.mm_struct.MmStruct` they work on and raise
:class:`~sim.mm.syscall.MmError` where the syscall fails.

What a move leaves behind, as 6.12 does it:

* frames stay (the same PFNs, mapcounts and refcounts: entries move, pages
  do not); the new VMA is a copy of the old one (copy_vma(): vm_area_dup(),
  so VM_SOFTDIRTY is whatever the old VMA had; 6.12 sets it on no mremap
  path) or a neighbour it merged into (which keeps its own flags);
* each PTE moved one by one gains soft-dirty (move_ptes() ->
  move_soft_dirty_pte()), as does a huge PMD moved whole (move_huge_pmd() ->
  move_soft_dirty_pmd()); a whole PTE table moved by move_normal_pmd()
  (CONFIG_HAVE_MOVE_PMD: x86, powerpc radix) keeps its PTEs' bits as they were;
* the old range is unmapped (do_vmi_munmap()), or with MREMAP_DONTUNMAP
  stays as an empty VMA that, if the move took it whole, loses its anon_vma
  (unlink_anon_vmas()) and, if anonymous, gets pgoff = vm_start >> PAGE_SHIFT.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from sim.mm.gup import mm_populate
from sim.mm.huge_memory import split_huge_pmd
from sim.mm.mlock import mlock_future_ok
from sim.mm.mmap import do_munmap
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_PRESENT, PTE_SOFT_DIRTY, PTE_SWAP, PTE_SWP_SOFT_DIRTY
from sim.mm.syscall import MmError
from sim.mm.userfaultfd import not_modelled_in
from sim.mm.vma import VM_LOCKED, VM_LOCKED_MASK, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = [
    "MREMAP_DONTUNMAP",
    "MREMAP_FIXED",
    "MREMAP_MAYMOVE",
    "copy_vma",
    "do_mremap",
    "move_page_tables",
    "move_vma",
]

#: include/uapi/linux/mman.h (the same on every architecture).
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4
_KNOWN_FLAGS = MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP


def do_mremap(
    mm: MmStruct, addr: int, old_pages: int, new_pages: int, flags: int, new_addr: int = 0,
    *, cap_ipc_lock: bool = True,
) -> int:
    """SYSCALL_DEFINE5(mremap): the address the range now starts at.

    Without MREMAP_MAYMOVE the range shrinks in place (do_vmi_munmap() of the
    tail) or grows in place when it ends at its VMA's end and nothing is
    mapped after it (vma_expandable(), vma_merge_extend()); else ENOMEM.
    MREMAP_FIXED (with MREMAP_MAYMOVE) moves it to ``new_addr``
    (:func:`mremap_to`).  EINVAL for bad flags or lengths, EFAULT when no VMA
    holds ``addr`` or the range leaves its VMA.  MREMAP_MAYMOVE alone (the
    kernel picks the address) is not modelled: ValueError.

    A VM_LOCKED VMA: growing it past RLIMIT_MEMLOCK without ``cap_ipc_lock``
    is EAGAIN (vma_to_resize(), mlock_future_ok()); what it gains is added
    to mm->locked_vm and populated after the move or extension
    (``if (locked && new_len > old_len) mm_populate(...)``).
    """
    not_modelled_in(mm, addr, addr + old_pages * mm.page_size, "mremap")
    if flags & ~_KNOWN_FLAGS or (flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE):
        raise MmError(errno.EINVAL, f"mremap: flags {flags:#x}")
    if flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_pages != new_pages):
        raise MmError(errno.EINVAL, "mremap: MREMAP_DONTUNMAP needs MAYMOVE and old == new length")
    if addr % mm.page_size or old_pages < 0:
        raise MmError(errno.EINVAL, f"mremap: {addr:#x}, {old_pages} pages")
    if new_pages <= 0:
        raise MmError(errno.EINVAL, "mremap: a zero new length")
    if mm.vmas.vma_at(addr) is None:
        raise MmError(errno.EFAULT, f"mremap: no VMA at {addr:#x}")
    if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):
        moved, locked = mremap_to(mm, addr, old_pages, new_addr, new_pages, flags, cap_ipc_lock)
        if locked and new_pages > old_pages:
            _populate_gained(mm, moved, old_pages, new_pages)
        return moved
    if old_pages >= new_pages:
        if old_pages > new_pages:
            do_munmap(mm, addr + new_pages * mm.page_size, old_pages - new_pages)
        return addr
    vma = vma_to_resize(mm, addr, old_pages, new_pages, cap_ipc_lock)
    old_end = addr + old_pages * mm.page_size
    delta = (new_pages - old_pages) * mm.page_size
    if old_end == vma.end and vma_expandable(mm, vma, delta):
        vma = vma_merge_extend(mm, vma, delta)
        if vma.flags & VM_LOCKED:
            mm.locked_vm += new_pages - old_pages
            _populate_gained(mm, addr, old_pages, new_pages)
        return addr
    if flags & MREMAP_MAYMOVE:
        raise ValueError("mremap: MREMAP_MAYMOVE without MREMAP_FIXED is not modelled")
    raise MmError(errno.ENOMEM, f"mremap: [{addr:#x}, {old_end:#x}) cannot grow in place")


def _populate_gained(mm: MmStruct, addr: int, old_pages: int, new_pages: int) -> None:
    """do_mremap()'s tail for a VM_LOCKED range that grew: mm_populate() of the new
    part, errors ignored (__mm_populate(..., 1))."""
    size = mm.page_size
    mm_populate(mm, addr + old_pages * size, addr + new_pages * size, ignore_errors=True)


def vma_to_resize(
    mm: MmStruct, addr: int, old_pages: int, new_pages: int | None = None,
    cap_ipc_lock: bool = True,
) -> Vma:
    """vma_to_resize(): the VMA holding [addr, addr + old_pages); EFAULT if the range
    leaves it, EINVAL for a zero length of a private mapping, EAGAIN when growing
    to ``new_pages`` would take a VM_LOCKED VMA past RLIMIT_MEMLOCK."""
    vma = mm.vmas.vma_at(addr)
    if vma is None:
        raise MmError(errno.EFAULT, f"mremap: no VMA at {addr:#x}")
    if old_pages == 0 and not vma.shared:
        raise MmError(errno.EINVAL, "mremap: duplicating a private mapping")
    if old_pages == 0:
        raise ValueError("mremap: duplicating a shared mapping (old length 0) is not modelled")
    if addr + old_pages * mm.page_size > vma.end:
        raise MmError(errno.EFAULT, f"mremap: [{addr:#x}, +{old_pages} pages) leaves its VMA")
    if new_pages is not None and new_pages > old_pages and not mlock_future_ok(
        mm, vma.flags, new_pages - old_pages, cap_ipc_lock
    ):
        raise MmError(errno.EAGAIN, "mremap: growing a locked VMA past RLIMIT_MEMLOCK")
    return vma


def vma_expandable(mm: MmStruct, vma: Vma, delta: int) -> bool:
    """vma_expandable(): nothing mapped in [vm_end, vm_end + delta) and below TASK_SIZE."""
    end = vma.end + delta
    return end <= mm.task_size and not mm.vmas.any_overlap(vma.end, end)


def vma_merge_extend(mm: MmStruct, vma: Vma, delta: int) -> Vma:
    """vma_merge_extend() (mm/vma.c): ``vma`` grows by ``delta`` bytes and may merge with
    the next VMA.  The flags stay the VMA's: no VM_SOFTDIRTY for the new part."""
    start = vma.end
    _, nxt = mm.vmas.prev_next(start, start + delta)
    merged = mm.vmas.merge_new_range(
        start, start + delta, vma.flags, vma.linear_page_index(start), vma.file, vma.anon_vma,
        vma, nxt,
    )
    assert merged is vma  # a VMA always merges with its own extension
    return merged


def mremap_to(
    mm: MmStruct, addr: int, old_pages: int, new_addr: int, new_pages: int, flags: int,
    cap_ipc_lock: bool = True,
) -> tuple[int, bool]:
    """mremap_to(): unmap the target (MREMAP_FIXED), cut a shrinking source, move_vma();
    the new address and move_vma()'s ``locked``.

    EINVAL for an unaligned or out-of-range target or one overlapping the
    source.  The target is unmapped before the source is checked
    (vma_to_resize()), as in the kernel.
    """
    size = mm.page_size
    old_len, new_len = old_pages * size, new_pages * size
    if new_addr % size or new_len > mm.task_size or new_addr > mm.task_size - new_len:
        raise MmError(errno.EINVAL, f"mremap: target {new_addr:#x} +{new_pages} pages")
    if addr + old_len > new_addr and new_addr + new_len > addr:
        raise MmError(errno.EINVAL, "mremap: the target overlaps the source")
    if flags & MREMAP_FIXED:
        do_munmap(mm, new_addr, new_pages)
    if old_pages > new_pages:
        do_munmap(mm, addr + new_len, old_pages - new_pages)
        old_pages = new_pages
    vma = vma_to_resize(mm, addr, old_pages, new_pages, cap_ipc_lock)
    if not flags & MREMAP_FIXED:
        raise ValueError("mremap: MREMAP_DONTUNMAP without MREMAP_FIXED is not modelled")
    return move_vma(mm, vma, addr, old_pages, new_pages, new_addr, flags)


def move_vma(
    mm: MmStruct, vma: Vma, old_addr: int, old_pages: int, new_pages: int, new_addr: int,
    flags: int,
) -> tuple[int, bool]:
    """move_vma(): copy_vma(), move_page_tables(), then unmap the old range or, with
    MREMAP_DONTUNMAP, leave it as an empty VMA; the new address and ``locked``
    (the moved VMA is VM_LOCKED: its new length was added to mm->locked_vm).

    VM_ACCOUNT comes out as it went in on every piece (cleared before the
    munmap and set again on what is left of the old VMA).  With
    MREMAP_DONTUNMAP a VM_LOCKED old VMA is first split to the moved range,
    which then loses VM_LOCKED|VM_LOCKONFAULT; mm->locked_vm stays as it was
    and the moved folios keep PG_mlocked.
    """
    size = mm.page_size
    vm_flags = vma.flags
    dontunmap = bool(flags & MREMAP_DONTUNMAP)
    if dontunmap and vma.flags & VM_LOCKED:
        # "To account mlock()'d pages correctly in the MREMAP_DONTUNMAP case
        # perform any split ahead of time for an mlock()'d VMA" (in 6.12.117
        # and 6.1.192; 6.12.107 lacks it and clears VM_LOCKED on all of vma).
        if vma.start != old_addr:
            vma = mm.vmas.split(vma, old_addr)
        if vma.end != old_addr + old_pages * size:
            mm.vmas.split(vma, old_addr + old_pages * size)
    new_pgoff = vma.pgoff + ((old_addr - vma.start) >> mm.arch.page_shift)
    new_vma = copy_vma(mm, vma, new_addr, new_pages, new_pgoff, keep_source=dontunmap)
    # copy_vma() may have merged the source into the new VMA (an unfaulted
    # anonymous VMA whose pgoff was reset): the old range is then in new_vma.
    source = mm.vmas.vma_at(old_addr)
    assert source is not None
    move_page_tables(mm, source, old_addr, new_vma, new_addr, old_pages * size)
    if dontunmap:
        source.flags &= ~VM_LOCKED_MASK  # "We always clear VM_LOCKED[ONFAULT] on the old vma"
        if source.start == old_addr and source.end == old_addr + old_pages * size:
            source.anon_vma, source.chain_len = None, 0  # unlink_anon_vmas()
            if source.anonymous:
                source.pgoff = source.start >> mm.arch.page_shift
        return new_addr, False
    do_munmap(mm, old_addr, old_pages)
    if vm_flags & VM_LOCKED:
        mm.locked_vm += new_pages
        return new_addr, True
    return new_addr, False


def copy_vma(
    mm: MmStruct, vma: Vma, addr: int, nr_pages: int, pgoff: int, keep_source: bool
) -> Vma:
    """copy_vma() (mm/vma.c): the VMA for [addr, addr + nr_pages), merged into a
    neighbour (vma_merge_new_range()) or a copy of ``vma`` (vm_area_dup(),
    anon_vma_clone()).

    An anonymous VMA never faulted (no anon_vma) takes pgoff = addr >>
    PAGE_SHIFT; then with MREMAP_DONTUNMAP (``keep_source``) the source may
    not be a merge partner.
    """
    end = addr + nr_pages * mm.page_size
    faulted = True
    if vma.anonymous and vma.anon_vma is None:
        pgoff = addr >> mm.arch.page_shift
        faulted = False
    prev, nxt = mm.vmas.prev_next(addr, end)
    if not faulted and keep_source:
        prev = None if prev is vma else prev
        nxt = None if nxt is vma else nxt
    merged = mm.vmas.merge_new_range(
        addr, end, vma.flags, pgoff, vma.file, vma.anon_vma, prev, nxt
    )
    if merged is not None:
        return merged
    new_vma = Vma(
        start=addr, end=end, flags=vma.flags, pgoff=pgoff, file=vma.file,
        anon_vma=vma.anon_vma, chain_len=vma.chain_len,
    )
    if vma.file is not None:
        vma.file.vma_refs += 1  # get_file()
    mm.vmas.insert(new_vma)
    return new_vma


def _get_extent(pmd_size: int, old_addr: int, old_end: int, new_addr: int) -> int:
    """get_extent(NORMAL_PMD/HPAGE_PMD): bytes to the next PMD boundary of either side."""
    extent = min(pmd_size - old_addr % pmd_size, old_end - old_addr)
    return min(extent, pmd_size - new_addr % pmd_size)


def _can_align_down(mm: MmStruct, vma: Vma, addr: int) -> bool:
    """can_align_down() (not for a stack): ``addr`` starts its VMA and nothing is mapped
    between the PMD boundary below it and the VMA."""
    masked = addr - addr % mm.pmd_size
    return vma.start == addr and not mm.vmas.any_overlap(masked, vma.start)


def move_page_tables(
    mm: MmStruct, vma: Vma, old_addr: int, new_vma: Vma, new_addr: int, length: int
) -> None:
    """move_page_tables(): move every entry of [old_addr, +length) to ``new_addr``.

    Per PMD-sized extent (get_extent()): none -> nothing; a huge leaf with a
    whole aligned extent and a none target PMD -> move_huge_pmd() (soft-dirty
    set), else split it (split_huge_pmd()) and go on with PTEs; a PTE table
    with a whole aligned extent on CONFIG_HAVE_MOVE_PMD and a none target ->
    move_normal_pmd() (the table moves, bits untouched); else pte_alloc() the
    target table and move_ptes().  First try_realign_addr(): when the copy
    reaches a PMD boundary, both addresses are equally misaligned, each starts
    its VMA and nothing is mapped below it within its PMD, both are aligned
    down so the whole tables move.
    """
    pmd_size = mm.pmd_size
    pt = mm.pt
    old_end = old_addr + length
    if length >= pmd_size - old_addr % pmd_size:
        offset = old_addr % pmd_size
        if (
            offset
            and offset == new_addr % pmd_size
            and _can_align_down(mm, vma, old_addr)
            and _can_align_down(mm, new_vma, new_addr)
        ):
            old_addr -= offset
            new_addr -= offset
    soft_dirty = PTE_SOFT_DIRTY if mm.ctx.soft_dirty else 0
    while old_addr < old_end:
        extent = _get_extent(pmd_size, old_addr, old_end, new_addr)
        entry = pt.get_pmd(old_addr)
        if entry is not None and isinstance(entry, HugePmd):
            if extent == pmd_size and pt.get_pmd(new_addr) is None:
                pt.clear_pmd(old_addr)
                pt.set_pmd(new_addr, HugePmd(entry.pfn, entry.bits | soft_dirty))
                old_addr += extent
                new_addr += extent
                continue
            split_huge_pmd(mm, vma, old_addr - old_addr % pmd_size)
            entry = pt.get_pmd(old_addr)
        elif (
            entry is not None
            and mm.arch.have_move_pmd
            and extent == pmd_size
            and pt.get_pmd(new_addr) is None
        ):
            pt.clear_pmd(old_addr)
            pt.set_pmd(new_addr, entry)
            old_addr += extent
            new_addr += extent
            continue
        if isinstance(entry, PteTable):
            _move_ptes(mm, entry, old_addr, old_addr + extent, pt.pte_alloc(new_addr), new_addr,
                       soft_dirty)
        old_addr += extent
        new_addr += extent


def _move_ptes(
    mm: MmStruct, old: PteTable, old_addr: int, old_end: int, new: PteTable, new_addr: int,
    soft_dirty: int,
) -> None:
    """move_ptes(): each non-none PTE moves as it is, present ones with soft-dirty set
    (move_soft_dirty_pte(); the model has no swap entries)."""
    shift = mm.arch.page_shift
    mask = mm.pt.ptrs_per_pte - 1
    first = (old_addr >> shift) & mask
    target = (new_addr >> shift) & mask
    for k in range((old_end - old_addr) >> shift):
        i, j = first + k, target + k
        bits = int(old.bits[i])
        if not bits:
            continue
        pfn = int(old.pfn[i])
        old.clear(i)
        if bits & PTE_PRESENT:
            bits |= soft_dirty
        elif bits & PTE_SWAP and soft_dirty:
            bits |= PTE_SWP_SOFT_DIRTY  # move_soft_dirty_pte(): pte_swp_mksoft_dirty()
        new.set(j, pfn, bits)
