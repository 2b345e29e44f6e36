"""Faulting pages in on the kernel's behalf: mm_populate() and populate_vma_page_range()
(mm/gup.c).

Addresses are bytes.  MAP_POPULATE and MAP_LOCKED populate the new range after
mmap() returns (vm_mmap_pgoff() -> mm_populate()), mlock() the range it locked,
mremap() what a VM_LOCKED range gained.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from sim.mm.memory import handle_mm_fault
from sim.mm.pageflags import PG
from sim.mm.pagetable import HugePmd
from sim.mm.pte import PTE_DIRTY, PTE_PRESENT, PTE_WRITE, PTE_YOUNG, pte_mkdirty
from sim.mm.syscall import MmError
from sim.mm.vma import VM_EXEC, VM_LOCKONFAULT, VM_READ, VM_SHARED, VM_WRITE, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = ["get_user_page", "mm_populate", "populate_vma_page_range"]


def mm_populate(mm: MmStruct, start: int, end: int, ignore_errors: bool = False) -> None:
    """__mm_populate(): populate_vma_page_range() on each VMA piece of [start, end).

    Holes are skipped.  The first error (EFAULT for a PROT_NONE VMA) ends it
    unless ``ignore_errors`` (MAP_POPULATE's way).
    """
    position = start
    while position < end:
        vma = mm.vmas.find_vma(position)
        if vma is None or vma.start >= end:
            return
        lo, hi = max(position, vma.start), min(end, vma.end)
        try:
            populate_vma_page_range(mm, vma, lo, hi)
        except MmError:
            if not ignore_errors:
                raise
        position = hi


def populate_vma_page_range(mm: MmStruct, vma: Vma, start: int, end: int) -> None:
    """populate_vma_page_range(): __get_user_pages() over [start, end) with FOLL_TOUCH,
    then lru_add_drain().

    Nothing for VM_LOCKONFAULT; EFAULT for a PROT_NONE VMA; FOLL_WRITE for a
    private writable VMA (breaks COW: write faults), else FOLL_FORCE reads.
    """
    if vma.flags & VM_LOCKONFAULT:
        return
    if not vma.flags & (VM_READ | VM_WRITE | VM_EXEC):
        raise MmError(errno.EFAULT, f"populate: [{start:#x}, {end:#x}) is PROT_NONE")
    write = (vma.flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
    addr = start
    while addr < end:
        addr += get_user_page(mm, vma, addr, end, write)
    mm.mem.lru_add_drain()


def get_user_page(mm: MmStruct, vma: Vma, addr: int, end: int, write: bool) -> int:
    """One turn of __get_user_pages(): follow_page_mask(), faultin_page() until it
    follows; the bytes to advance (page_increm: the rest of a huge leaf)."""
    for _ in range(4):
        advanced = _follow_page(mm, vma, addr, end, write)
        if advanced is not None:
            return advanced
        signal = handle_mm_fault(mm, vma, addr, write)
        if signal is not None:
            raise MmError(errno.EFAULT, f"populate: {signal} at {addr:#x}")
    raise AssertionError(f"{addr:#x}: populate did not resolve the fault")


def _follow_page(mm: MmStruct, vma: Vma, addr: int, end: int, write: bool) -> int | None:
    """follow_page_pte() / follow_huge_pmd() with FOLL_TOUCH: None when a fault is needed.

    Huge leaf: writable unless FOLL_WRITE needs it (can_follow_write_pmd());
    touch_pmd() makes it young (and dirty for a write); no folio_mark_accessed().
    PTE: writable unless FOLL_WRITE needs it (can_follow_write_pte()); the
    zero page is followed too; FOLL_TOUCH dirties the folio for a write
    through a clean PTE and calls folio_mark_accessed() (the zero page's
    PG_referenced included).
    """
    mem = mm.mem
    entry = mm.pt.get_pmd(addr)
    if entry is None:
        return None
    page_size = mm.page_size
    if isinstance(entry, HugePmd):
        if write and not entry.bits & PTE_WRITE:
            return None
        entry.bits |= PTE_YOUNG
        if write:
            entry.bits |= pte_mkdirty(mm.ctx.soft_dirty)
        haddr = addr - addr % mm.pmd_size
        return min(haddr + mm.pmd_size, end) - addr
    i = mm.pt.pte_index(addr)
    bits = int(entry.bits[i])
    if not bits & PTE_PRESENT:
        return None
    if write and not bits & PTE_WRITE:
        return None
    head = mem.page_folio(int(entry.pfn[i]))
    if write and not bits & PTE_DIRTY and not mem.test(head, PG.dirty):
        mem.folio_mark_dirty(head)
    mem.folio_mark_accessed(head)
    return page_size
