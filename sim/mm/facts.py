"""Facts about the kernel being modelled: its version quirks and its configuration.

A fact that differs between kernel versions, or between configurations of the
same kernel, is a named field here, never an ``if`` on a version string.  The
defaults describe the kernel the harness boots: Debian linux-source 6.12.117
with the series in linux-patch/ applied (which fixes the KSM flag test and adds
/proc/kpagemap), configured as images/arches configures it.  ``UNPATCHED_6_12``
describes the same source without the series.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "FACTS_6_1",
    "FACTS_BY_SERIES",
    "PINNED",
    "SCENARIO_OF_FACT",
    "SCENARIO_OF_SHARED_FACT",
    "UNPATCHED_6_12",
    "KernelFacts",
    "KpfFlagsWord",
    "PmdExclusive",
    "UnknownKernelError",
    "facts_for_release",
    "kernel_series",
]


class UnknownKernelError(ValueError):
    """A kernel release the model has no facts for (``str()`` is one line naming the known ones)."""


class PmdExclusive(enum.Enum):
    """How pagemap_pmd_range() (fs/proc/task_mmu.c) sets PM_MMAP_EXCLUSIVE for a PMD-mapped THP.

    ``PER_PAGE``: from each subpage's own mapcount (folio_precise_page_mapcount()),
    since 6.11 (upstream commit 2c1f057e5be6).  ``HEAD_PAGE``: every subpage
    gets the answer of page_mapcount() of the head page (pmd_page()), as
    kernels before 6.11 do.
    """

    PER_PAGE = "per-page"
    HEAD_PAGE = "head-page"


class KpfFlagsWord(enum.Enum):
    """Which flags word stable_page_flags() (fs/proc/page.c) copies the KPF bits from.

    ``FOLIO``: ``folio->flags`` for every page of a folio, so a tail page of a
    THP reads its folio's LRU, DIRTY, UPTODATE, SWAPBACKED, ... and the head
    page's PG_anon_exclusive (KPF bit 34), since 6.10 (upstream commit
    dee3d0bef2b0, "proc: rewrite stable_page_flags()").  ``PAGE``: each page's
    own ``page->flags``, as kernels before 6.10 do: a tail page has none of the
    folio's flags, only what is kept per page (PG_anon_exclusive,
    PG_hwpoison); the folio-wide tests (PageAnon(), PageLRU() of the head for
    KPF_THP, PageSwapCache() with CONFIG_THP_SWAP) still look at the head.
    """

    FOLIO = "folio"
    PAGE = "page"


@dataclass(frozen=True)
class KernelFacts:
    """What the model needs to know about the kernel it imitates.

    One instance per kernel series (``series``) in :data:`FACTS_BY_SERIES`;
    :func:`facts_for_release` picks it for a booted kernel's ``uname -r``.
    """

    #: The kernel series (major.minor) the facts hold for.
    series: str = "6.12"
    #: The release the facts were read from and verified on in guests.
    release: str = "6.12.117"
    #: stable_page_flags() (fs/proc/page.c) sets KPF_KSM when
    #: ``mapping & PAGE_MAPPING_KSM``; PAGE_MAPPING_KSM is PAGE_MAPPING_ANON |
    #: PAGE_MAPPING_MOVABLE, so the test is true for every anonymous folio.
    #: A kernel that tests ``folio_test_ksm()`` instead sets it on KSM pages only:
    #: linux-patch/0001 makes it do so, hence the default False.  Confirmed in
    #: guests: with that patch reverted every anonymous page reads KSM.
    ksm_flag_on_every_anon_page: bool = False
    #: CONFIG_MEM_SOFT_DIRTY (with the architecture's HAVE_ARCH_SOFT_DIRTY);
    #: without it VM_SOFTDIRTY is 0 and pte_soft_dirty() is always false
    #: (include/linux/mm.h, include/linux/pgtable.h).
    mem_soft_dirty: bool = True
    #: CONFIG_TRANSPARENT_HUGEPAGE with /sys/kernel/mm/transparent_hugepage/
    #: enabled = madvise: a PMD-sized folio only in VM_HUGEPAGE VMAs
    #: (thp_vma_allowable_orders()); shmem_enabled = never (shmem_huge default
    #: SHMEM_HUGE_NEVER, mm/shmem.c) so shmem folios are always order 0.
    transparent_hugepage: bool = True
    #: /sys/kernel/mm/transparent_hugepage/use_zero_page (default 1): a read
    #: fault in a THP-eligible range maps the huge zero folio
    #: (do_huge_pmd_anonymous_page(), mm/huge_memory.c).
    thp_use_zero_page: bool = True
    #: fault_around_bytes (mm/memory.c, default 65536): read faults on file
    #: mappings map up to this many bytes of cached pages around the fault.
    fault_around_bytes: int = 65536
    #: /proc/kpagemap exists (the project's patch series).
    has_kpagemap: bool = True
    #: PM_MMAP_EXCLUSIVE of PMD-mapped THP subpages (see :class:`PmdExclusive`).
    pmd_exclusive: PmdExclusive = PmdExclusive.PER_PAGE
    #: Where kpageflags' copied bits come from (see :class:`KpfFlagsWord`).
    kpf_flags_word: KpfFlagsWord = KpfFlagsWord.FOLIO
    #: A write fault on a non-exclusive page of a large anonymous folio may
    #: reuse it in place when the folio's refcount is 1 (do_wp_page(),
    #: mm/memory.c), as kernels before 6.9 do.  Since "mm: prohibit the last
    #: subpage from reusing the entire large folio" (MM updates for 6.9-rc1)
    #: wp_can_reuse_anon_folio() never reuses a large folio: it copies.
    cow_reuses_large_anon_folio: bool = False
    #: __show_smap() (fs/proc/task_mmu.c) prints a ``KSM:`` line (mss->ksm):
    #: 6.12's does, 6.1's has neither the line nor mss->ksm.
    smaps_ksm: bool = True
    #: /proc/PID/pagemap has the PAGEMAP_SCAN ioctl (6.7+, do_pagemap_cmd() in
    #: fs/proc/task_mmu.c).  6.1's proc_pagemap_operations has no
    #: unlocked_ioctl, so vfs_ioctl() fails every request with ENOTTY.
    pagemap_scan: bool = True
    #: Width of show_smap()'s ``THPeligible:`` value: 6.12 prints ``%8u``
    #: (8), 6.1 ``%d`` (0, no padding).  Read from both trees' task_mmu.c.
    smaps_thp_eligible_width: int = 8
    #: PTE-mapped large folios and mlock: 6.12's mlock_pte_range() mlocks one
    #: that a folio_pte_batch() maps whole inside the range (allow_mlock_munlock())
    #: and munlocks it per batch, and every PTE unmap from a VM_LOCKED VMA
    #: munlocks its folio (munlock_vma_folio()).  6.1's mlock_pte_range() skips
    #: PageTransCompound() pages and its munlock_vma_page() ignores PTE unmaps of
    #: them (mm/mlock.c, mm/internal.h of both trees).
    mlock_pte_mapped_large_folios: bool = True
    #: Slots of the per-CPU mlock batch, and of the lru_add batch, before each
    #: drains itself: PAGEVEC_SIZE, 31 in 6.12 (folio_batch), 15 in 6.1 (pagevec).
    mlock_batch_size: int = 31
    #: show_smap_vma_flags()'s word for VM_LOCKONFAULT: 6.12 has "lf"; 6.1's
    #: table has no entry for the bit, so it prints the default "??".
    smaps_lockonfault_mnemonic: str = "lf"
    #: MADV_PAGEOUT clears the young bit of the PTEs/PMDs it reclaims from
    #: (madvise_cold_or_pageout_pte_range()), as COLD does: 6.1.  Since "mm:
    #: madvise: pageout: ignore references rather than clearing young" (6.9)
    #: only COLD does.
    pageout_clears_young: bool = False
    #: MADV_POPULATE_* runs per VMA under madvise_walk_vmas() (6.1's
    #: madvise_populate() is a visitor: a hole is skipped, ENOMEM at the end).
    #: Since "mm/madvise: make MADV_POPULATE_(READ|WRITE) handle
    #: VM_FAULT_RETRY properly" (6.9) do_madvise() calls madvise_populate()
    #: on the whole range: it stops at the first hole with ENOMEM.
    populate_walks_vmas: bool = False
    #: MADV_PAGEOUT of a private file VMA whose file the caller may not page
    #: out (can_do_file_pageout(), mm/madvise.c: not its owner, no CAP_FOWNER,
    #: no write permission) pages out the VMA's anonymous (COW) folios and
    #: leaves its page-cache folios alone (madvise_cold_or_pageout_pte_range()'s
    #: pageout_anon_only_filter): 6.12.  6.1's madvise_pageout() returns at
    #: once for such a VMA (can_do_pageout()), anonymous folios included.
    #: Both return at once for a shared file VMA.
    pageout_private_file_anon_only: bool = True
    #: split_folio() of an anonymous THP maps its all-zero pages to the shared
    #: zero page and frees them (remap_page(RMP_USE_SHARED_ZEROPAGE),
    #: try_to_map_unused_to_zeropage(): "mm: remap unused subpages to shared
    #: zeropage when splitting isolated thp", 6.12); 6.1 remaps every page.
    split_remaps_zero_pages: bool = True
    #: zap_pte_range() still passes a young file PTE on as mark_page_accessed()
    #: in a VM_RAND_READ (MADV_RANDOM) VMA: 6.1 tests only VM_SEQ_READ.  Since
    #: "mm: support POSIX_FADV_NOREUSE" (6.4) vma_has_recency() says no for both.
    rand_read_has_recency: bool = False
    #: Whether a VMA merge on mprotect keeps VM_SOFTDIRTY of the VMAs it absorbs.
    #: mprotect_fixup() (mm/mprotect.c) computes ``newflags`` from the VMA it
    #: changes, calls vma_modify_flags() (vma_merge_existing_range(), mm/vma.c;
    #: vma_merge() on 6.1) and then sets the result's flags to ``newflags``
    #: (vm_flags_reset(); ``vma->vm_flags = newflags`` on 6.1).  is_mergeable_vma()
    #: ignores VM_SOFTDIRTY, so a clean VMA made mergeable with a fresh
    #: (VM_SOFTDIRTY) neighbour absorbs it and the neighbour's range stops
    #: reading soft-dirty where it has no soft-dirty PTE: False on 6.12 and 6.1.
    #: Upstream fixed it in 6.19 (6707915e030a, backported to 6.18.y).
    vma_merge_propagates_softdirty: bool = False
    #: How a new mapping between two VMAs that could each take it, but whose
    #: anon_vmas are not compatible with each other, merges.  6.12's
    #: vma_merge_new_range() (mm/vma.c) tries prev first (can_vma_merge_left())
    #: and then refuses next (can_vma_merge_right(): are_anon_vmas_compatible()):
    #: prev is extended.  6.1's mmap_region() (mm/mmap.c) checks next first and
    #: then prev against next's anon_vma (can_vma_merge_after(prev, ...,
    #: vma->anon_vma)): next is extended.  Seen in guests (merge_refused).
    mmap_merge_checks_next_first: bool = False

    def fault_around_pages(self, page_shift: int) -> int:
        """fault_around_pages: ``fault_around_bytes >> PAGE_SHIFT``, at least 1."""
        return max(1, self.fault_around_bytes >> page_shift)


#: The pinned kernel as the project builds it (with linux-patch/ applied).
PINNED = KernelFacts()

#: Debian's 6.12.117 source as shipped: the KSM quirk, no /proc/kpagemap.
UNPATCHED_6_12 = KernelFacts(ksm_flag_on_every_anon_page=True, has_kpagemap=False)

#: Debian's linux-source-6.1 (linux-patch/6.1/BASE) as the project builds it.
#: Its stable_page_flags() tests PageKsm() (no KSM quirk, so no fix in its
#: series) and reads each page's own flags; its pagemap takes
#: PM_MMAP_EXCLUSIVE of a PMD-mapped THP from the head page.
FACTS_6_1 = KernelFacts(
    series="6.1",
    release="6.1.192",
    pmd_exclusive=PmdExclusive.HEAD_PAGE,
    kpf_flags_word=KpfFlagsWord.PAGE,
    cow_reuses_large_anon_folio=True,
    smaps_ksm=False,
    smaps_thp_eligible_width=0,
    pagemap_scan=False,
    mlock_pte_mapped_large_folios=False,
    mlock_batch_size=15,
    smaps_lockonfault_mnemonic="??",
    pageout_clears_young=True,
    pageout_private_file_anon_only=False,
    populate_walks_vmas=True,
    split_remaps_zero_pages=False,
    rand_read_has_recency=True,
    mmap_merge_checks_next_first=True,
)

#: The facts of every kernel series the model knows, as the harness builds it.
FACTS_BY_SERIES: Mapping[str, KernelFacts] = MappingProxyType(
    {facts.series: facts for facts in (FACTS_6_1, PINNED)}
)

#: For each fact in which the known series differ: the catalog scenario
#: (tests/scenarios/NAME.json) whose observations change with it, so that a
#: model with the other series' value fails on the booted kernel.
SCENARIO_OF_FACT: Mapping[str, str] = MappingProxyType({
    "pmd_exclusive": "thp_fork",
    "kpf_flags_word": "thp",
    "cow_reuses_large_anon_folio": "thp_cow_reuse",
    "smaps_ksm": "anon_private",
    "smaps_thp_eligible_width": "anon_private",
    "pagemap_scan": "scan_categories",
    "mlock_pte_mapped_large_folios": "mlock_thp_pte",
    "mlock_batch_size": "mlock_batch",
    "smaps_lockonfault_mnemonic": "mlock_onfault",
    "pageout_clears_young": "madv_cold_pageout",
    "pageout_private_file_anon_only": "madv_pageout_file_not_owner",
    "populate_walks_vmas": "madv_populate",
    "split_remaps_zero_pages": "madv_thp_split",
    "rand_read_has_recency": "madv_random",
    "mmap_merge_checks_next_first": "merge_refused",
})

#: Facts whose value every known series shares, each with the catalog scenario
#: that shows it, so that a model with the other value fails on the booted kernel.
SCENARIO_OF_SHARED_FACT: Mapping[str, str] = MappingProxyType({
    "vma_merge_propagates_softdirty": "merge_mprotect_softdirty_loss",
})

_SERIES = re.compile(r"^(\d+)\.(\d+)(?:[.\-+~].*)?$")


def kernel_series(release: str) -> str:
    """``"6.12"`` of a ``uname -r`` such as ``6.12.117``, ``6.12.0-rc1+`` or ``6.1.192-amd64``.

    Raises :class:`UnknownKernelError` when ``release`` does not start with
    major.minor.
    """
    match = _SERIES.match(release.strip())
    if match is None:
        raise UnknownKernelError(f"{release!r} is not a kernel release (expected e.g. 6.12.117)")
    return f"{int(match[1])}.{int(match[2])}"


def facts_for_release(release: str) -> KernelFacts:
    """The model facts for a kernel whose ``uname -r`` is ``release``.

    Chosen by series (major.minor): a 6.12.y other than the one the facts were
    verified on gets the 6.12 facts; a series the model does not know gets the
    nearest older one it knows (a user's 6.15 tree is judged by 6.12's facts).
    Callers say so when ``facts.series`` is not the release's series or
    ``facts.release`` not the release.  Raises :class:`UnknownKernelError`
    (one line, listing the known series) when no known series is at or below
    the release's.
    """
    series = kernel_series(release)
    if series in FACTS_BY_SERIES:
        return FACTS_BY_SERIES[series]
    wanted = _numbers(series)
    older = [f for f in FACTS_BY_SERIES.values() if _numbers(f.series) <= wanted]
    if not older:
        known = ", ".join(f"{f.series} (verified on {f.release})" for f in FACTS_BY_SERIES.values())
        raise UnknownKernelError(
            f"the model has no facts for kernel {release} (series {series}) or any older "
            f"series; known: {known}"
        )
    return max(older, key=lambda f: _numbers(f.series))


def _numbers(series: str) -> tuple[int, int]:
    major, minor = series.split(".")
    return int(major), int(minor)
