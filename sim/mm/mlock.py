"""mlock(), mlock2(MLOCK_ONFAULT) and munlock() (mm/mlock.c); populating is :mod:`sim.mm.gup`.

Addresses are bytes, lengths pages.  Functions take the
:class:`~sim.mm.mm_struct.MmStruct` they work on; failures raise
:class:`~sim.mm.syscall.MmError` with the syscall's errno.

What a VM_LOCKED VMA does to the pages faulted into it is on the fault and
rmap paths (:mod:`sim.mm.rmap`: folio_add_lru_vma(), mlock_vma_folio(),
munlock_vma_folio()); the LRU side (PG_mlocked, PG_unevictable, mlock_count
and the per-CPU mlock batch) is :class:`~sim.mm.memmap.PhysMem`'s.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from sim.mm.gup import mm_populate
from sim.mm.huge_memory import vma_adjust_trans_huge
from sim.mm.pagetable import HugePmd, PmdEntry, PteTable
from sim.mm.pte import PTE_PRESENT, PTE_SPECIAL
from sim.mm.syscall import MmError
from sim.mm.vma import (
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    Vma,
)

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = [
    "MLOCK_LIMIT",
    "apply_vma_lock_flags",
    "do_mlock",
    "do_munlock",
    "mlock_future_ok",
]

#: RLIMIT_MEMLOCK of init and of everything it forks (INIT_RLIMITS,
#: include/uapi/linux/resource.h MLOCK_LIMIT, 8 MiB since 5.16; 6.1 alike).  The
#: guest agent never changes it; it binds processes without CAP_IPC_LOCK.
MLOCK_LIMIT = 8 << 20


def do_mlock(mm: MmStruct, addr: int, nr_pages: int, onfault: bool, cap_ipc_lock: bool,
             lock_limit_bytes: int = MLOCK_LIMIT) -> None:
    """do_mlock(): mlock() (``onfault`` False) or mlock2(MLOCK_ONFAULT).

    Without CAP_IPC_LOCK the pages newly locked plus mm->locked_vm may not
    pass RLIMIT_MEMLOCK (ENOMEM; count_mm_mlocked_page_nr() takes off what
    the range already has locked).  apply_vma_lock_flags() sets the flags
    (ENOMEM at a hole, after the VMAs before it changed); then
    __mm_populate() faults the range in unless VM_LOCKONFAULT, and its
    errors come back as mlock's: EFAULT (a PROT_NONE VMA) as ENOMEM.
    """
    flags = VM_LOCKED | (VM_LOCKONFAULT if onfault else 0)
    end = addr + nr_pages * mm.page_size
    lock_limit = lock_limit_bytes >> mm.arch.page_shift
    locked = nr_pages + mm.locked_vm
    if locked > lock_limit and not cap_ipc_lock:
        locked -= count_mm_mlocked_page_nr(mm, addr, end)
    if locked > lock_limit and not cap_ipc_lock:
        raise MmError(errno.ENOMEM, f"mlock: {locked} pages would pass RLIMIT_MEMLOCK "
                      f"({lock_limit} pages) without CAP_IPC_LOCK")
    apply_vma_lock_flags(mm, addr, end, flags)
    try:
        mm_populate(mm, addr, end)
    except MmError as e:
        # __mlock_posix_error_return()
        if e.errno == errno.EFAULT:
            raise MmError(errno.ENOMEM, f"mlock: {e.reason}") from None
        raise


def mlock_future_ok(mm: MmStruct, flags: int, nr_pages: int, cap_ipc_lock: bool,
                    lock_limit_bytes: int = MLOCK_LIMIT) -> bool:
    """mlock_future_ok() (mm/mmap.c): may ``nr_pages`` more pages with ``flags`` be
    locked?  True unless VM_LOCKED without CAP_IPC_LOCK would take locked_vm past
    RLIMIT_MEMLOCK.  do_mmap() with MAP_LOCKED fails with EAGAIN when it says no."""
    if not flags & VM_LOCKED or cap_ipc_lock:
        return True
    return mm.locked_vm + nr_pages <= lock_limit_bytes >> mm.arch.page_shift


def do_munlock(mm: MmStruct, addr: int, nr_pages: int) -> None:
    """munlock(): apply_vma_lock_flags(start, len, 0)."""
    apply_vma_lock_flags(mm, addr, addr + nr_pages * mm.page_size, 0)


def count_mm_mlocked_page_nr(mm: MmStruct, start: int, end: int) -> int:
    """count_mm_mlocked_page_nr(): pages of [start, end) already in VM_LOCKED VMAs."""
    count = 0
    for vma in mm.vmas.overlapping(start, end):
        if vma.flags & VM_LOCKED:
            count += min(end, vma.end) - max(start, vma.start)
    return count >> mm.arch.page_shift


def apply_vma_lock_flags(mm: MmStruct, start: int, end: int, flags: int) -> None:
    """apply_vma_lock_flags(): mlock_fixup() on each VMA of [start, end) with
    ``(vm_flags & ~VM_LOCKED_MASK) | flags``; ENOMEM when the range starts
    outside a VMA or reaches a hole (the VMAs before it keep their change)."""
    if mm.vmas.vma_at(start) is None:
        raise MmError(errno.ENOMEM, f"mlock: {start:#x} is not mapped")
    position = start
    while position < end:
        vma = mm.vmas.vma_at(position)
        if vma is None:
            raise MmError(errno.ENOMEM, f"mlock: {position:#x} is not mapped")
        hi = min(end, vma.end)
        mlock_fixup(mm, vma, position, hi, (vma.flags & ~VM_LOCKED_MASK) | flags)
        position = hi


def mlock_fixup(mm: MmStruct, vma: Vma, start: int, end: int, newflags: int) -> None:
    """mlock_fixup(): vma_modify_flags() (merge or split), mm->locked_vm, then
    mlock_vma_pages_range() unless the VMA was and stays VM_LOCKED (only
    VM_LOCKONFAULT changes then: "mlocking twice would be wrong")."""
    oldflags = vma.flags
    if newflags == oldflags:
        return
    vma_adjust_trans_huge(mm, vma, start, end)
    vma = mm.vmas.modify(vma, start, end, newflags)
    nr_pages = (end - start) >> mm.arch.page_shift
    if not newflags & VM_LOCKED:
        mm.locked_vm -= nr_pages
    elif not oldflags & VM_LOCKED:
        mm.locked_vm += nr_pages
    vma.flags = newflags
    if newflags & VM_LOCKED and oldflags & VM_LOCKED:
        return
    mlock_vma_pages_range(mm, vma, start, end)


def mlock_vma_pages_range(mm: MmStruct, vma: Vma, start: int, end: int) -> None:
    """mlock_vma_pages_range(): lru_add_drain(), mlock_pte_range() over [start, end)
    with the VMA's new flags, lru_add_drain()."""
    mm.mem.lru_add_drain()
    for base, entry, lo, hi in mm.pt.pmd_ranges(start, end):
        mlock_pte_range(mm, vma, base, entry, lo, hi)
    mm.mem.lru_add_drain()


def mlock_pte_range(mm: MmStruct, vma: Vma, base: int, entry: PmdEntry, lo: int, hi: int) -> None:
    """mlock_pte_range() for one PMD's part [lo, hi) of the range.

    A huge leaf (not the huge zero folio): mlock_folio() or munlock_folio()
    by the VMA's VM_LOCKED.  PTEs: each normal folio once per
    folio_mlock_step() batch; a large folio is mlocked only when the batch
    maps all of it inside [lo, hi) (allow_mlock_munlock(): folio_within_range()
    and step == folio_nr_pages()), munlocked always; 6.1 skips every page of
    a large folio (``facts.mlock_pte_mapped_large_folios`` False).
    """
    mem = mm.mem
    locked = bool(vma.flags & VM_LOCKED)
    if isinstance(entry, HugePmd):
        if mem.is_huge_zero_folio(entry.pfn):
            return
        if locked:
            mem.mlock_folio(entry.pfn)
        else:
            mem.munlock_folio(entry.pfn)
        return
    table = entry
    indices = list(mm.pt.pte_range(base, lo, hi))
    n = 0
    while n < len(indices):
        i = indices[n]
        bits = int(table.bits[i])
        if not bits & PTE_PRESENT or bits & PTE_SPECIAL:
            n += 1
            continue
        pfn = int(table.pfn[i])
        head = mem.page_folio(pfn)
        step = _folio_mlock_step(mm, table, indices, n, head)
        nr = mem.folio_nr_pages(head)
        if nr > 1 and not mem.facts.mlock_pte_mapped_large_folios:
            n += 1  # PageTransCompound(): skipped page by page
            continue
        allowed = (
            not locked
            or nr == 1
            or (pfn == head and step == nr)  # the whole folio, from its head, in [lo, hi)
        )
        if allowed:
            if locked:
                mem.mlock_folio(head)
            else:
                mem.munlock_folio(head)
        n += step


def _folio_mlock_step(
    mm: MmStruct, table: PteTable, indices: list[int], n: int, head: int
) -> int:
    """folio_mlock_step() -> folio_pte_batch(): consecutive present PTEs from
    ``indices[n]`` mapping consecutive pages of the same folio (dirty, soft-dirty,
    young and write ignored); 1 for a small folio."""
    mem = mm.mem
    nr = mem.folio_nr_pages(head)
    if nr == 1:
        return 1
    first_pfn = int(table.pfn[indices[n]])
    step = 1
    limit = head + nr - first_pfn
    while step < limit and n + step < len(indices):
        i = indices[n + step]
        bits = int(table.bits[i])
        if not bits & PTE_PRESENT or bits & PTE_SPECIAL or int(table.pfn[i]) != first_pfn + step:
            break
        step += 1
    return step
