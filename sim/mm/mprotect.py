"""mprotect() (mm/mprotect.c): new VMA flags, then new protections on present entries.

Addresses are bytes, lengths pages.  Functions take the
:class:`~sim.mm.mm_struct.MmStruct` they work on; failures raise
:class:`~sim.mm.syscall.MmError`.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from sim.mm.gup import populate_vma_page_range
from sim.mm.huge_memory import change_huge_pmd, split_partial_huge_pmds
from sim.mm.pagetable import HugePmd
from sim.mm.pte import PTE_PRESENT, PTE_SPECIAL, change_protection_bits
from sim.mm.syscall import MmError, user_range_end
from sim.mm.vma import (
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_LOCKED,
    VM_NORESERVE,
    VM_SHARED,
    VM_WRITE,
    Vma,
)

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = ["change_protection", "do_mprotect_pkey", "mprotect_fixup"]


def do_mprotect_pkey(mm: MmStruct, addr: int, nr_pages: int, prot: int) -> None:
    """do_mprotect_pkey(): mprotect_fixup() on each VMA; ENOMEM at the first hole.

    ``prot`` is VM_READ/VM_WRITE/VM_EXEC bits.  VMAs before a hole are
    changed before the error, as in the kernel.
    """
    end = user_range_end(mm.arch, addr, nr_pages, "mprotect")
    first = mm.vmas.find_vma(addr)
    if first is None or first.start > addr:
        raise MmError(errno.ENOMEM, f"mprotect: {addr:#x} is not mapped")
    position = addr
    while position < end:
        vma = mm.vmas.vma_at(position)
        if vma is None:
            raise MmError(errno.ENOMEM, f"mprotect: {position:#x} is not mapped")
        hi = min(end, vma.end)
        newflags = (vma.flags & ~VM_ACCESS_FLAGS) | prot
        mprotect_fixup(mm, vma, position, hi, newflags)
        position = hi


def mprotect_fixup(mm: MmStruct, vma: Vma, start: int, end: int, newflags: int) -> None:
    """mprotect_fixup(): VM_ACCOUNT rules, vma_modify_flags(), change_protection().

    The merged VMA gets ``newflags`` (vm_flags_reset()), which come from
    ``vma`` alone: see :meth:`~sim.mm.vma.VmaList.modify_flags` for the
    VM_SOFTDIRTY a merge loses on 6.12.
    """
    oldflags = vma.flags
    if newflags == oldflags:
        return
    if newflags & VM_WRITE:
        if not oldflags & (VM_ACCOUNT | VM_WRITE | VM_SHARED | VM_NORESERVE):
            newflags |= VM_ACCOUNT
    elif oldflags & VM_ACCOUNT and vma.anonymous and vma.anon_vma is None:
        newflags &= ~VM_ACCOUNT
    vma = mm.vmas.modify_flags(
        vma, start, end, newflags, mm.ctx.facts.vma_merge_propagates_softdirty
    )
    if vma.shared:
        try_writable = vma.wants_writenotify(mm.ctx.soft_dirty)
    else:
        try_writable = bool(vma.flags & VM_WRITE)
    change_protection(mm, vma, start, end, try_writable)
    if oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED) == VM_LOCKED and newflags & VM_WRITE:
        # A private VM_LOCKED VMA becoming writable: populate_vma_page_range()
        # breaks COW now (its errors are ignored).
        try:
            populate_vma_page_range(mm, vma, start, end)
        except MmError:
            pass


def change_protection(mm: MmStruct, vma: Vma, start: int, end: int, try_writable: bool) -> None:
    """change_protection(): change_huge_pmd() on whole huge leaves (a partial one is split
    first), change_pte_range() on present PTEs; both follow
    :func:`~sim.mm.pte.change_protection_bits`."""
    mem = mm.mem
    prot_write = vma.page_prot_writable(mm.ctx.soft_dirty)
    tracking = vma.soft_dirty_enabled(mm.ctx.soft_dirty)
    for base, entry, lo, hi in split_partial_huge_pmds(mm, vma, start, end):
        if isinstance(entry, HugePmd):
            change_huge_pmd(mm, vma, entry, prot_write, try_writable, tracking)
            continue
        for i in mm.pt.pte_range(base, lo, hi):
            bits = int(entry.bits[i])
            if not bits & PTE_PRESENT:
                continue
            page = None if bits & PTE_SPECIAL else int(entry.pfn[i])
            entry.bits[i] = change_protection_bits(
                bits, vma, page, mem, prot_write, try_writable, tracking,
                mm.arch.modify_sets_young,
            )
