"""Mapping and unmapping ranges: mmap(), munmap() and exit_mmap() (mm/mmap.c, mm/vma.c).

Addresses are bytes, lengths pages.  Functions take the
:class:`~sim.mm.mm_struct.MmStruct` they work on and raise
:class:`~sim.mm.syscall.MmError` where the syscall fails.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from sim.mm.gup import mm_populate
from sim.mm.hugetlb import HugetlbFile, hugetlb_reserve_pages, hugetlb_vm_op_close
from sim.mm.memory import zap_page_range
from sim.mm.mlock import mlock_future_ok
from sim.mm.shmem import ShmemFile
from sim.mm.syscall import MmError, NotModelled, user_range_end
from sim.mm.vma import (
    VM_ACCOUNT,
    VM_DONTEXPAND,
    VM_HUGETLB,
    VM_LOCKED,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WRITE,
    Vma,
)

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = ["do_mmap", "do_munmap", "exit_mmap", "remove_vma"]


def do_mmap(
    mm: MmStruct,
    addr: int,
    nr_pages: int,
    prot: int,
    shared: bool,
    file: ShmemFile | None,
    pgoff: int,
    *,
    fixed: bool = False,
    locked: bool = False,
    populate: bool = False,
    cap_ipc_lock: bool = True,
) -> Vma:
    """mmap(addr, MAP_FIXED_NOREPLACE or MAP_FIXED, MAP_PRIVATE or MAP_SHARED): do_mmap(),
    __mmap_region() (mm/mmap.c), then mm_populate() for MAP_POPULATE or MAP_LOCKED.

    ``prot`` is VM_READ/VM_WRITE bits, ``pgoff`` the file offset in pages.
    Private writable mappings are accounted (VM_ACCOUNT,
    accountable_mapping()); anonymous private mappings take pgoff = addr >>
    PAGE_SHIFT.  The new range merges into a compatible neighbour
    (vma_merge_new_range()) and the resulting VMA is VM_SOFTDIRTY as a whole.
    Without ``fixed`` (MAP_FIXED_NOREPLACE) EEXIST if the range overlaps a
    mapping; with it (MAP_FIXED) whatever is mapped there is unmapped first
    (vms_gather_munmap_vmas() + vms_clean_up_area() before the merge, as
    munmap() does it).  ``locked`` (MAP_LOCKED) sets VM_LOCKED, EAGAIN when
    that would take mm->locked_vm past RLIMIT_MEMLOCK without
    ``cap_ipc_lock`` (mlock_future_ok()), adds the pages to locked_vm
    (__mmap_region()) and populates, as ``populate`` (MAP_POPULATE) does:
    do_mmap() returns ``populate = len``; faults into the VM_LOCKED VMA
    mlock their folios (:mod:`sim.mm.rmap`).

    A hugetlbfs ``file`` (MAP_HUGETLB, :class:`~sim.mm.hugetlb.HugetlbFile`):
    hugetlbfs_file_mmap() adds VM_HUGETLB | VM_DONTEXPAND and reserves the
    huge pages (hugetlb_reserve_pages()); accountable_mapping() is false for
    hugetlb files (no VM_ACCOUNT).  MAP_POPULATE / MAP_LOCKED of one is not
    modelled.
    """
    hugetlb = isinstance(file, HugetlbFile)
    if hugetlb and (populate or locked):
        raise NotModelled("MAP_POPULATE / MAP_LOCKED of a hugetlb mapping")
    end = user_range_end(mm.arch, addr, nr_pages, "mmap")
    if locked and not mlock_future_ok(mm, VM_LOCKED, nr_pages, cap_ipc_lock):
        raise MmError(errno.EAGAIN, "mmap: MAP_LOCKED past RLIMIT_MEMLOCK")
    if fixed:
        do_munmap(mm, addr, nr_pages)
    elif mm.vmas.any_overlap(addr, end):
        raise MmError(errno.EEXIST, f"mmap: [{addr:#x}, {end:#x}) overlaps a mapping")
    flags = prot | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if locked:
        flags |= VM_LOCKED
    if shared:
        flags |= VM_SHARED | VM_MAYSHARE
    elif flags & VM_WRITE and not hugetlb:
        flags |= VM_ACCOUNT
    if hugetlb:
        flags |= VM_HUGETLB | VM_DONTEXPAND
    if file is None and not shared:
        pgoff = addr >> mm.arch.page_shift
    merged = mm.vmas.merge_new(addr, end, flags, pgoff, file,
                               next_first=mm.ctx.facts.mmap_merge_checks_next_first)
    if merged is not None:
        vma = merged
    else:
        vma = Vma(start=addr, end=end, flags=flags, pgoff=pgoff, file=file)
        if file is not None:
            file.vma_refs += 1
        mm.vmas.insert(vma)
    if mm.ctx.soft_dirty:
        vma.flags |= VM_SOFTDIRTY
    if isinstance(file, HugetlbFile):
        hugetlb_reserve_pages(mm, file, vma)
    if locked:
        mm.locked_vm += nr_pages
    if populate or locked:
        mm_populate(mm, addr, end, ignore_errors=True)
    return vma


def do_munmap(mm: MmStruct, addr: int, nr_pages: int) -> None:
    """do_vmi_munmap(): split at the edges, zap, free page tables, remove the VMAs.

    munmap(): file pages pass dirty and young to their folios
    (zap_pte_range()); page tables no remaining VMA reaches are freed
    (free_pgtables() floor/ceiling).  EINVAL past TASK_SIZE.
    """
    end = user_range_end(mm.arch, addr, nr_pages, "munmap", errno.EINVAL)
    victims = _vmas_split_to(mm, addr, end)
    # vms_gather_munmap_vmas() counts the locked pages; unmap_region() starts
    # with lru_add_drain().
    mm.locked_vm -= sum(v.nr_pages() for v in victims if v.flags & VM_LOCKED)
    mm.mem.lru_add_drain()
    for vma in victims:
        zap_page_range(mm, vma, vma.start, vma.end)
    for vma in victims:
        mm.vmas.remove(vma)
        hugetlb_vm_op_close(mm, vma)  # vma->vm_ops->close() in remove_vma()
        remove_vma(vma)
    mm.pt.free_pgtables(addr, end, mm.vmas.any_overlap)


def _vmas_split_to(mm: MmStruct, start: int, end: int) -> list[Vma]:
    """vms_gather_munmap_vmas(): the VMAs of [start, end), split (__split_vma()) so
    that they lie exactly inside it."""
    result = []
    for vma in mm.vmas.overlapping(start, end):
        if vma.start < start:
            vma = mm.vmas.split(vma, start)
        if vma.end > end:
            mm.vmas.split(vma, end)
        result.append(vma)
    return result


def remove_vma(vma: Vma) -> None:
    """remove_vma(): drop the VMA's file reference; the last one ends an unlinked object
    (shared anonymous memory, a closed memfd: fput() -> shmem_evict_inode())."""
    file = vma.file
    if file is None:
        return
    file.vma_refs -= 1
    if file.unlinked and file.vma_refs == 0:
        file.truncate()


def exit_mmap(mm: MmStruct) -> None:
    """exit_mmap(): unmap every VMA, free all page tables, drop file and huge-zero references.

    __mmput() calls ksm_exit() first: the mm leaves ksmd's list (sim/mm/ksm.py).
    """
    mm.ctx.ksm.exit(mm)
    mm.mem.lru_add_drain()  # lru_add_drain()
    for vma in mm.vmas:
        zap_page_range(mm, vma, vma.start, vma.end)
    for vma in mm.vmas:
        mm.vmas.remove(vma)
        hugetlb_vm_op_close(mm, vma)  # vma->vm_ops->close() in remove_vma()
        remove_vma(vma)
    mm.pt.clear_all()
    if mm.mmf_huge_zero_page:  # mm_put_huge_zero_folio()
        mm.mmf_huge_zero_page = False
        mm.ctx.huge_zero_refcount -= 1
    mm.alive = False
