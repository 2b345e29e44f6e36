"""userfaultfd write-protect (uffd-wp) with UFFD_FEATURE_WP_ASYNC: registration, the
uffd-wp bit, PTE markers, and what faults, zaps and fork do to them.

Kernel: fs/userfaultfd.c (userfaultfd_api(), userfaultfd_register(),
userfaultfd_writeprotect(), dup_userfaultfd()), mm/userfaultfd.c
(userfaultfd_register_range(), mwriteprotect_range(), uffd_wp_range()),
mm/mprotect.c (change_pte_range() with MM_CP_UFFD_WP / MM_CP_UFFD_WP_RESOLVE,
pgtable_populate_needed()), mm/memory.c (do_wp_page(), handle_pte_marker(),
vmf_orig_pte_uffd_wp(), zap_install_uffd_wp_if_needed(), __copy_present_ptes()),
include/linux/userfaultfd_k.h (vma_can_userfault(), userfaultfd_wp_use_markers()).

One userfaultfd per process (:class:`UffdCtx` on the mm), as the agent opens it:
the wanted features the kernel has.  No thread reads it, so the model refuses
(:class:`~sim.mm.syscall.NotModelled`) any path that would deliver a fault to
userspace: a write to a write-protected page without WP_ASYNC.  Anonymous huge
PMDs take uffd-wp whole (change_huge_pmd()) and a write splits them
(wp_huge_pmd()); file huge PMDs (none in the model) and EVENT_FORK are not
modelled.

Entry bits (:mod:`sim.mm.pte`): :data:`PTE_UFFD_WP` on a present entry
(pte_uffd_wp(); pte_mkuffd_wp() also write-protects it on x86 and arm64) and
:data:`PTE_MARKER_UFFD_WP`, a non-present entry holding the PTE marker
PTE_MARKER_UFFD_WP (make_pte_marker()), frame column 0.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sim.mm.huge_memory import split_partial_huge_pmds, vma_adjust_trans_huge
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import (
    PTE_MARKER_UFFD_WP,
    PTE_PRESENT,
    PTE_SPECIAL,
    PTE_UFFD_WP,
    PTE_WRITE,
    can_change_writable,
    change_protection_bits,
)
from sim.mm.swapfile import is_swap_pte
from sim.mm.syscall import MmError, NotModelled
from sim.mm.vma import VM_MAYWRITE, VM_UFFD_WP, VM_WRITE, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = [
    "SWP_PTE_MARKER",
    "UFFD_FEATURE_EVENT_FORK",
    "UFFD_FEATURE_WP_ASYNC",
    "UFFD_FEATURE_WP_UNPOPULATED",
    "WANTED_FEATURES",
    "UffdCtx",
    "fault_take_marker",
    "mwriteprotect_range",
    "pte_mkuffd_wp",
    "userfaultfd_api",
    "userfaultfd_register",
    "userfaultfd_wp",
    "userfaultfd_wp_async",
    "userfaultfd_wp_use_markers",
    "wp_fault_clear",
    "wp_huge_pmd_split",
    "zap_uffd_wp",
]

#: include/uapi/linux/userfaultfd.h
UFFD_FEATURE_EVENT_FORK: Final = 1 << 1
UFFD_FEATURE_WP_UNPOPULATED: Final = 1 << 13
UFFD_FEATURE_WP_ASYNC: Final = 1 << 15
#: What the agent asks for (harness/agent/uffd.c): async "written" tracking.
WANTED_FEATURES: Final = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED
#: The swap type of a PTE marker in pagemap's frame field: SWP_PTE_MARKER =
#: MAX_SWAPFILES + SWP_HWPOISON_NUM + SWP_MIGRATION_NUM + SWP_DEVICE_NUM
#: (include/linux/swap.h) with CONFIG_MIGRATION (3) and neither MEMORY_FAILURE
#: nor DEVICE_PRIVATE: MAX_SWAPFILES = 32 - 3 - 1 = 28, so 31.  Its offset is the
#: marker, PTE_MARKER_UFFD_WP = BIT(0) (include/linux/swapops.h).
SWP_PTE_MARKER: Final = 31
PTE_MARKER_UFFD_WP_BIT: Final = 1


@dataclass
class UffdCtx:
    """struct userfaultfd_ctx of one process: the features UFFDIO_API enabled."""

    features: int

    @property
    def wp_async(self) -> bool:
        """userfaultfd_wp_async_ctx()."""
        return bool(self.features & UFFD_FEATURE_WP_ASYNC)


def userfaultfd_api(mm: MmStruct, wanted: int = WANTED_FEATURES) -> UffdCtx:
    """The process's userfaultfd, opened now if it has none (userfaultfd_api()).

    The agent asks for ``wanted`` & the features the kernel reports: WP_ASYNC
    and WP_UNPOPULATED exist only with CONFIG_PTE_MARKER_UFFD_WP, which needs
    HAVE_ARCH_USERFAULTFD_WP (``Arch.uffd_wp``); WP_ASYNC implies WP_UNPOPULATED.
    """
    if mm.uffd is None:
        available = UFFD_FEATURE_EVENT_FORK
        if mm.arch.uffd_wp:
            available |= UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_ASYNC
        features = wanted & available
        if features & UFFD_FEATURE_WP_ASYNC:
            features |= UFFD_FEATURE_WP_UNPOPULATED
        mm.uffd = UffdCtx(features)
    return mm.uffd


def userfaultfd_wp(vma: Vma) -> bool:
    """userfaultfd_wp(): the VMA is registered in wp mode (VM_UFFD_WP)."""
    return bool(vma.flags & VM_UFFD_WP)


def userfaultfd_wp_async(mm: MmStruct, vma: Vma) -> bool:
    """userfaultfd_wp_async(): the VMA's context has WP_ASYNC (the mm's, if registered)."""
    return userfaultfd_wp(vma) and mm.uffd is not None and mm.uffd.wp_async


def userfaultfd_wp_use_markers(mm: MmStruct, vma: Vma) -> bool:
    """userfaultfd_wp_use_markers(): wp mode and a file VMA, or WP_UNPOPULATED."""
    if not userfaultfd_wp(vma):
        return False
    if not vma.anonymous:
        return True
    return mm.uffd is not None and bool(mm.uffd.features & UFFD_FEATURE_WP_UNPOPULATED)


def pte_mkuffd_wp(bits: int) -> int:
    """pte_mkuffd_wp() / pmd_mkuffd_wp(): the uffd-wp bit, write-protected
    (arch/x86/include/asm/pgtable.h: pte_wrprotect(pte_set_flags(pte, _PAGE_UFFD_WP)))."""
    return (bits | PTE_UFFD_WP) & ~PTE_WRITE


# ---------------------------------------------------------------------------
# ioctls
# ---------------------------------------------------------------------------


def userfaultfd_register(mm: MmStruct, start: int, end: int) -> None:
    """UFFDIO_REGISTER with UFFDIO_REGISTER_MODE_WP over [start, end) (bytes).

    userfaultfd_register(): EINVAL without HAVE_ARCH_USERFAULTFD_WP (ppc64),
    EINVAL without a VMA in the range, EINVAL for a start or end inside a
    huge page of a hugetlb VMA, per VMA vma_can_userfault() (any VMA with
    WP_ASYNC; else anonymous or shmem: all of the model's) and EPERM without
    VM_MAYWRITE.  A hugetlb VMA that passes those checks: NotModelled (its
    uffd-wp paths, hugetlb_change_protection() and the hugetlb fault, are not).
    Then userfaultfd_register_range(): each VMA not yet in wp mode gets VM_UFFD_WP through
    vma_modify_flags_uffd() (split/merge as mprotect does; a huge PMD cut by the new boundary is
    split first). Page tables are not touched; vma_set_page_prot() makes a shared writable VMA
    write-notify (:meth:`Vma.wants_writenotify`).
    """
    ctx = userfaultfd_api(mm)
    if not mm.arch.uffd_wp:
        raise MmError(errno.EINVAL, "UFFDIO_REGISTER: mode WP without HAVE_ARCH_USERFAULTFD_WP")
    vmas = mm.vmas.overlapping(start, end)
    if not vmas:
        raise MmError(errno.EINVAL, "UFFDIO_REGISTER: no VMA in the range")
    huge = mm.arch.hugetlb_page_pages * mm.page_size  # vma_kernel_pagesize() of a hugetlb VMA
    if vmas[0].hugetlb and start % huge:
        raise MmError(errno.EINVAL, "UFFDIO_REGISTER: start inside a huge page of a hugetlb VMA")
    for vma in vmas:
        if not ctx.wp_async and not vma.anonymous and vma.file is None:
            raise MmError(errno.EINVAL, "UFFDIO_REGISTER: vma_can_userfault() says no")
        if not vma.flags & VM_MAYWRITE:
            raise MmError(errno.EPERM, "UFFDIO_REGISTER: a VMA without VM_MAYWRITE")
        if vma.hugetlb and vma.start < end <= vma.end and end % huge:
            raise MmError(errno.EINVAL, "UFFDIO_REGISTER: end inside a huge page of a hugetlb VMA")
    if any(vma.hugetlb for vma in vmas):
        raise NotModelled("UFFDIO_REGISTER of a hugetlb VMA (hugetlb uffd-wp)")
    for vma in vmas:
        if vma.flags & VM_UFFD_WP:
            continue
        lo, hi = max(start, vma.start), min(end, vma.end)
        vma_adjust_trans_huge(mm, vma, lo, hi)
        newflags = vma.flags | VM_UFFD_WP
        vma = mm.vmas.modify(vma, lo, hi, newflags)
        vma.flags = newflags


def mwriteprotect_range(mm: MmStruct, start: int, end: int, enable: bool) -> None:
    """UFFDIO_WRITEPROTECT over [start, end) (bytes): mwriteprotect_range().

    ENOENT when the process has no userfaultfd (the agent's answer) or the
    range meets no VMA; VMAs are done in order until one is not in wp mode
    (ENOENT, the earlier ones stay changed); holes between VMAs are skipped.
    """
    if mm.uffd is None:
        raise MmError(errno.ENOENT, "UFFDIO_WRITEPROTECT: no userfaultfd in this process")
    vmas = mm.vmas.overlapping(start, end)
    if not vmas:
        raise MmError(errno.ENOENT, "UFFDIO_WRITEPROTECT: no VMA in the range")
    for vma in vmas:
        if not userfaultfd_wp(vma):
            raise MmError(errno.ENOENT, "UFFDIO_WRITEPROTECT: a VMA not registered for wp")
        uffd_wp_range(mm, vma, max(start, vma.start), min(end, vma.end), enable)


def uffd_wp_range(mm: MmStruct, vma: Vma, start: int, end: int, enable: bool) -> None:
    """uffd_wp_range() -> change_protection() with MM_CP_UFFD_WP (``enable``) or
    MM_CP_UFFD_WP_RESOLVE (+ MM_CP_TRY_CHANGE_WRITABLE when
    vma_wants_manual_pte_write_upgrade(): VM_WRITE, or write-notify if shared).

    change_pte_range(): a present PTE gets pte_modify() to vm_page_prot, then
    pte_mkuffd_wp() or pte_clear_uffd_wp(), then (resolve) writable again where
    can_change_pte_writable() allows; a marker is dropped on resolve; a none
    PTE gets a marker on enable when userfaultfd_wp_use_markers(), whose page
    tables change_pmd_prepare() allocates first (pgtable_populate_needed()).
    Also the helper PAGEMAP_SCAN's hole path calls (pagemap_scan_pte_hole()).
    """
    mem = mm.mem
    soft_dirty = mm.ctx.soft_dirty
    prot_write = vma.page_prot_writable(soft_dirty)
    tracking = vma.soft_dirty_enabled(soft_dirty)
    if vma.shared:
        manual_upgrade = vma.wants_writenotify(soft_dirty)
    else:
        manual_upgrade = bool(vma.flags & VM_WRITE)
    try_writable = not enable and manual_upgrade
    populate = enable and userfaultfd_wp_use_markers(mm, vma)
    if populate:
        addr = start
        while addr < end:
            if mm.pt.get_pmd(addr) is None:
                mm.pt.pte_alloc(addr)
            addr = (addr // mm.pmd_size + 1) * mm.pmd_size
    def change(bits: int, page: int | None) -> int:
        bits = change_protection_bits(
            bits, vma, page, mem, prot_write, False, tracking, mm.arch.modify_sets_young
        )
        if enable:
            return pte_mkuffd_wp(bits)
        bits &= ~PTE_UFFD_WP
        if try_writable and not bits & PTE_WRITE and can_change_writable(
            vma, bits, page, mem, tracking
        ):
            bits |= PTE_WRITE
        return bits

    for base, entry, lo, hi in split_partial_huge_pmds(mm, vma, start, end):
        if isinstance(entry, HugePmd):
            # change_huge_pmd(): an anonymous huge PMD the range covers whole keeps
            # its leaf (pgtable_split_needed() splits file ones only).
            if not vma.anonymous:
                raise NotModelled("uffd-wp of a file huge PMD (split by pgtable_split_needed())")
            huge_zero = mem.is_huge_zero_folio(entry.pfn)
            entry.bits = change(entry.bits, None if huge_zero else entry.pfn)
            continue
        for i in mm.pt.pte_range(base, lo, hi):
            bits = int(entry.bits[i])
            if bits & PTE_PRESENT:
                entry.bits[i] = change(bits, None if bits & PTE_SPECIAL else int(entry.pfn[i]))
            elif bits & PTE_MARKER_UFFD_WP:
                if not enable:
                    entry.clear(i)
            elif is_swap_pte(bits):
                raise NotModelled("uffd-wp of a swap entry (pte_swp_mkuffd_wp())")
            elif not bits and populate:
                entry.set(i, 0, PTE_MARKER_UFFD_WP)


# ---------------------------------------------------------------------------
# Hooks of the fault, zap and fork paths
# ---------------------------------------------------------------------------


def wp_huge_pmd_split(mm: MmStruct, vma: Vma, addr: int, pmd: HugePmd) -> bool:
    """wp_huge_pmd(): a write to a huge PMD with uffd-wp in a wp VMA; True if it was split.

    With WP_ASYNC the PMD is split (``goto split``: __split_huge_pmd(), every PTE
    inherits uffd-wp) and the fault falls back to the PTE level, where
    do_wp_page() clears the bit of the one page written; without it
    handle_userfault() (not modelled).
    """
    if not (vma.anonymous and userfaultfd_wp(vma) and pmd.bits & PTE_UFFD_WP):
        return False
    if not userfaultfd_wp_async(mm, vma):
        raise NotModelled("a write to a uffd-wp huge PMD without UFFD_FEATURE_WP_ASYNC blocks")
    mm.split_huge_pmd(vma, addr - addr % mm.pmd_size)
    return True


def fault_take_marker(vma: Vma, table: PteTable, i: int) -> bool:
    """handle_pte_marker() for a missing-page fault at ``table[i]``: whether the
    PTE held a uffd-wp marker in a wp VMA (vmf_orig_pte_uffd_wp(): the new PTE
    do_anonymous_page() or finish_fault() installs gets pte_mkuffd_wp()).

    The marker is taken out of the table first (the fault replaces it); in a
    VMA no longer in wp mode pte_marker_clear() just drops it.
    """
    bits = int(table.bits[i])
    if not bits & PTE_MARKER_UFFD_WP:
        return False
    table.clear(i)
    return userfaultfd_wp(vma)


def wp_fault_clear(mm: MmStruct, vma: Vma, table: PteTable, i: int) -> None:
    """do_wp_page()'s uffd-wp branch: a write to a present PTE with the uffd-wp bit in
    a wp VMA.  With WP_ASYNC the bit is cleared (pte_clear_uffd_wp()) and the write
    fault goes on (reuse or copy); without it the fault would go to the userfaultfd
    reader (handle_userfault()), which the harness never has."""
    if not (userfaultfd_wp(vma) and int(table.bits[i]) & PTE_UFFD_WP):
        return
    if not userfaultfd_wp_async(mm, vma):
        raise NotModelled("a write to a uffd-wp page without UFFD_FEATURE_WP_ASYNC blocks")
    table.bits[i] = int(table.bits[i]) & ~PTE_UFFD_WP


def zap_uffd_wp(vma: Vma, table: PteTable, i: int, old_bits: int, drop_markers: bool) -> None:
    """After zap_pte_range() cleared ``table[i]`` (``old_bits`` before): the marker rules.

    Anonymous VMAs drop everything (zap_install_uffd_wp_if_needed() returns at
    once; a marker is cleared).  A file/shmem VMA keeps a marker, and a present
    uffd-wp PTE leaves one (pte_install_uffd_wp_if_needed()), unless the zap
    drops markers (ZAP_FLAG_DROP_MARKER: unmap_vmas() at munmap and exit;
    MADV_DONTNEED's zap_page_range_single() passes no details).
    """
    if vma.anonymous or drop_markers or not userfaultfd_wp(vma):
        if old_bits & PTE_MARKER_UFFD_WP:
            table.clear(i)
        return
    if old_bits & PTE_MARKER_UFFD_WP or (old_bits & PTE_PRESENT and old_bits & PTE_UFFD_WP):
        table.set(i, 0, PTE_MARKER_UFFD_WP)


def dup_vma_flags(mm: MmStruct, flags: int) -> int:
    """dup_userfaultfd(): without UFFD_FEATURE_EVENT_FORK the child's VMA is reset
    (userfaultfd_reset_ctx(): no VM_UFFD_* flags); with it the fork would wait for
    a reader of the fork event, which the harness never has."""
    if flags & VM_UFFD_WP and mm.uffd is not None and mm.uffd.features & UFFD_FEATURE_EVENT_FORK:
        raise NotModelled("fork with UFFD_FEATURE_EVENT_FORK")
    return flags & ~VM_UFFD_WP


def child_pte_bits(child_vma_flags: int, bits: int) -> int:
    """__copy_present_ptes(): the child's PTE loses uffd-wp unless its VMA is in wp mode."""
    return bits if child_vma_flags & VM_UFFD_WP else bits & ~PTE_UFFD_WP


def not_modelled_in(mm: MmStruct, start: int, end: int, what: str) -> None:
    """NotModelled if a VMA of [start, end) is in wp mode (paths whose uffd-wp rules the
    model does not follow: mremap's userfaultfd handling, MADV_COLLAPSE's
    SCAN_PTE_UFFD_WP, PAGEOUT's try_to_unmap_one() markers)."""
    if any(userfaultfd_wp(v) for v in mm.vmas.overlapping(start, end)):
        raise NotModelled(f"{what} of a VMA registered for uffd-wp")
