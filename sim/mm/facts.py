"""Facts about the kernel being modelled: its version quirks and its configuration.

A fact that differs between kernel versions, or between configurations of the
same kernel, is a named field here, never an ``if`` on a version string.  The
defaults describe the kernel the harness boots: Debian linux-source 6.12.117
with the series in linux-patch/ applied (which fixes the KSM flag test and adds
/proc/kpagemap), configured as images/arches configures it.  ``UNPATCHED_6_12``
describes the same source without the series.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PINNED", "UNPATCHED_6_12", "KernelFacts"]


@dataclass(frozen=True)
class KernelFacts:
    """What the model needs to know about the kernel it imitates."""

    #: The release the facts were read from.
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

    def fault_around_pages(self, page_shift: int) -> int:
        """fault_around_pages: ``fault_around_bytes >> PAGE_SHIFT``, at least 1."""
        return max(1, self.fault_around_bytes >> page_shift)


#: The pinned kernel as the project builds it (with linux-patch/ applied).
PINNED = KernelFacts()

#: Debian's 6.12.117 source as shipped: the KSM quirk, no /proc/kpagemap.
UNPATCHED_6_12 = KernelFacts(ksm_flag_on_every_anon_page=True, has_kpagemap=False)
