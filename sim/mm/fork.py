"""fork(): copying an mm_struct (kernel/fork.c dup_mmap(), mm/memory.c copy_page_range()).

Entry bits follow :func:`~sim.mm.pte.copy_present_entry` for PTEs and huge
PMDs alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.mm.huge_memory import copy_huge_pmd
from sim.mm.hugetlb import copy_hugetlb_page_range
from sim.mm.pagetable import HugePmd
from sim.mm.pte import PTE_PRESENT, PTE_SPECIAL, copy_present_entry
from sim.mm.rmap import anon_vma_fork
from sim.mm.swapfile import copy_swap_pte, is_swap_pte
from sim.mm.userfaultfd import child_pte_bits, dup_vma_flags
from sim.mm.vma import VM_DONTCOPY, VM_LOCKED_MASK, VM_WIPEONFORK, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = ["copy_page_range", "dup_mmap"]


def dup_mmap(mm: MmStruct, child: MmStruct) -> None:
    """dup_mmap(): copy every VMA into ``child``'s empty mm; copy_page_range() only where
    vma_needs_copy().

    vma_needs_copy() copies page tables only for VMAs with an anon_vma; the
    child refaults the rest.  anon_vma_fork() gives the child VMA an anon_vma
    of its own chained to the parent's.  A parent using the huge zero folio
    passes its reference on (MMF_HUGE_ZERO_PAGE is inherited with the mm flags).
    The child's VMAs lose VM_LOCKED and VM_LOCKONFAULT (``vm_flags_clear(tmp,
    VM_LOCKED_MASK)``), and its mm starts with locked_vm 0.  A VM_DONTCOPY
    VMA (MADV_DONTFORK) is not copied at all; a VM_WIPEONFORK one
    (MADV_WIPEONFORK) is copied with its flags but without anon_vma and
    pages: the child starts from empty page tables there.
    """
    mm.ctx.ksm.fork(child, mm)  # ksm_fork(), before any VMA is copied
    for vma in mm.vmas:
        if vma.flags & VM_DONTCOPY:
            continue
        flags = dup_vma_flags(mm, vma.flags & ~VM_LOCKED_MASK)  # dup_userfaultfd()
        copy = Vma(start=vma.start, end=vma.end, flags=flags, pgoff=vma.pgoff, file=vma.file)
        if vma.file is not None:
            vma.file.vma_refs += 1  # get_file()
        if vma.flags & VM_WIPEONFORK:
            child.vmas.insert(copy)
            continue
        anon_vma_fork(copy, vma)
        child.vmas.insert(copy)
        if vma.anon_vma is not None:
            copy_page_range(mm, child, vma, copy)
    if mm.mmf_huge_zero_page:
        child.mmf_huge_zero_page = True
        mm.ctx.huge_zero_refcount += 1


def copy_page_range(mm: MmStruct, child: MmStruct, vma: Vma, dst: Vma | None = None) -> None:
    """copy_page_range() of ``vma``: copy_huge_pmd() and copy_present_ptes().

    Every mapped normal page gains a reference and a mapping; an anonymous
    one becomes shared (folio_try_dup_anon_rmap_pte(): PG_anon_exclusive
    cleared).  Zero-page PTEs are copied as they are; swap entries by
    copy_nonpresent_pte().  ``dst``: the child's VMA; its PTEs lose uffd-wp
    unless it is in wp mode (__copy_present_ptes()), and uffd-wp markers are
    not copied then (copy_pte_marker()).  A hugetlb VMA: copy_hugetlb_page_range().
    """
    if vma.hugetlb:
        copy_hugetlb_page_range(mm, child, vma)
        return
    dst_flags = vma.flags if dst is None else dst.flags
    mem = mm.mem
    for base, entry, lo, hi in mm.pt.pmd_ranges(vma.start, vma.end):
        if isinstance(entry, HugePmd):
            copy_huge_pmd(child, base, entry, vma)
            copied = child.pt.get_pmd(base)
            if isinstance(copied, HugePmd):  # copy_huge_pmd(): pmd_clear_uffd_wp() too
                copied.bits = child_pte_bits(dst_flags, copied.bits)
            continue
        target = child.pt.pte_alloc(base)
        for i in mm.pt.pte_range(base, lo, hi):
            bits = int(entry.bits[i])
            if not bits & PTE_PRESENT:
                if is_swap_pte(bits):
                    copy_swap_pte(mm, entry, target, i)
                continue
            pfn = int(entry.pfn[i])
            if not bits & PTE_SPECIAL:
                head = mem.page_folio(pfn)
                mem.folio_get(head)
                if mem.folio_test_anon(head):
                    mem.folio_try_dup_anon_rmap_pte(head, pfn)
                else:
                    mem.folio_add_file_rmap_ptes(head, pfn, 1)
            entry.bits[i], child_bits = copy_present_entry(bits, vma)
            target.set(i, pfn, child_pte_bits(dst_flags, child_bits))
