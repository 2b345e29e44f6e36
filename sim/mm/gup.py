"""Faulting pages in on the kernel's behalf: mm_populate() (mm/gup.c).

Addresses are bytes.  MAP_POPULATE and MAP_LOCKED populate the new range
after mmap() returns (vm_mmap_pgoff() -> mm_populate()).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.mm.memory import handle_mm_fault
from sim.mm.pagetable import HugePmd
from sim.mm.pte import PTE_WRITE
from sim.mm.vma import VM_ACCESS_FLAGS, VM_SHARED, VM_WRITE, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = ["mm_populate", "populate_vma_page_range"]


def mm_populate(mm: MmStruct, start: int, end: int) -> None:
    """mm_populate() = __mm_populate(start, len, ignore_errors=1): every VMA in [start, end).

    Errors of one VMA (PROT_NONE: -EFAULT) are ignored and the next VMA is
    populated; nothing is reported to the caller.
    """
    for vma in mm.vmas.overlapping(start, end):
        populate_vma_page_range(mm, vma, max(start, vma.start), min(end, vma.end))


def populate_vma_page_range(mm: MmStruct, vma: Vma, start: int, end: int) -> None:
    """populate_vma_page_range() -> __get_user_pages() without pages (mm/gup.c).

    PROT_NONE VMAs are skipped (vma_is_accessible()).  Private writable
    mappings are faulted for write (FOLL_WRITE, breaking COW), every other
    mapping for read (FOLL_FORCE).  Each page that follow_page_mask() cannot
    take as it is (no entry, or FOLL_WRITE on a read-only one) is faulted in
    with handle_mm_fault() (faultin_page()) and followed again.  FOLL_TOUCH
    then marks each PTE-mapped page accessed (follow_page_pte():
    mark_page_accessed(), the zero page included; set_page_dirty() is not
    needed after a write fault, whose entry is dirty); a huge PMD is only
    made young (touch_pmd()), which the fault did already.
    """
    if not vma.flags & VM_ACCESS_FLAGS:
        return
    write = (vma.flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
    page_size = mm.page_size
    for addr in range(start, end, page_size):
        if not _follow_page(mm, addr, write):
            handle_mm_fault(mm, vma, addr, write)
        entry = mm.pt.get_pmd(addr)
        if entry is not None and not isinstance(entry, HugePmd):
            i = mm.pt.pte_index(addr)
            if entry.present(i):
                mm.mem.folio_mark_accessed(mm.mem.page_folio(int(entry.pfn[i])))


def _follow_page(mm: MmStruct, addr: int, write: bool) -> bool:
    """follow_page_mask(): whether a present entry serves the access without a fault."""
    entry = mm.pt.get_pmd(addr)
    if entry is None:
        return False
    if isinstance(entry, HugePmd):
        return not write or bool(entry.bits & PTE_WRITE)
    i = mm.pt.pte_index(addr)
    if not entry.present(i):
        return False
    return not write or bool(int(entry.bits[i]) & PTE_WRITE)
