"""arm64 with 64K pages and 48-bit VA: the ``arm64`` machine with another kernel.

Only the page size differs (ARM64_64K_PAGES instead of ARM64_4K_PAGES), and
with it the table geometry, the THP size (a PMD maps 512 MiB) and the
SPARSEMEM section size; the machine, CPU, console, toolchain and host packages
are those of the 4K-page definition.

RAM: a 512 MiB THP needs a free, 512 MiB-aligned block of the buddy allocator
(MAX_PAGE_ORDER 13 with 64K pages: ARCH_FORCE_MAX_ORDER in arch/arm64/Kconfig).
The kernel image holds the first block from 0x40000000 and memblock's top-down
boot allocations the last two, so 2 GiB left one free order-13 block
(/proc/buddyinfo) and the catalog's THP scenarios fell back to base pages; 4
GiB left 5, but a run of madv_thp_split (3 THPs at once, the catalog's most)
left freed pages on the per-CPU lists and in page tables across the blocks, and
a second run found too few.  So the per-CPU lists are kept small (the kernel
command line below) and the guest gets 6 GiB: 9 of its 12 blocks are free after
boot and at least 6 stayed free through two passes of the catalog.  Only
touched memory costs the host (the RAM file is sparse), but each THP fault
zeroes 512 MiB of it: about 2.6 GiB after two passes.  The model machine gets
the same 6 GiB (harness.model_executor.model_ram_bytes()): 11 free blocks, so
the model never refuses a THP the guest gives.  harness/tests/test_model_ram.py
checks that no catalog scenario holds more THPs at once than the guest has free.
Since then the selftest_khugepaged_* scenarios hold 5 at once (the collapsed
THPs beside the old large folios): within the 9, but not yet run on this arch
through two whole passes.
"""

from dataclasses import replace

from sim.arch.arm64 import SPEC as ARM64_4K
from sim.arch.schema import KernelBuild, QemuMachine

_KERNEL_4K: KernelBuild | None = ARM64_4K.kernel
_QEMU_4K: QemuMachine | None = ARM64_4K.qemu
assert _KERNEL_4K is not None and _QEMU_4K is not None

SPEC = replace(
    ARM64_4K,
    model=replace(
        ARM64_4K.model,
        name="arm64-64k",
        page_shift=16,
        # ARM64_VA_BITS_48 with 64K pages: three levels, 6 + 13 + 13 bits
        # (CONFIG_PGTABLE_LEVELS=3, the PUD folded; asm/pgtable-hwdef.h).
        levels=(6, 13, 13),
        level_names=("pgd", "pmd", "pte"),
        section_size_bits=29,  # arch/arm64/include/asm/sparsemem.h (64K pages)
        source="arch/arm64/include/asm/pgtable-hwdef.h, processor.h, sparsemem.h",
        # A PMD block is 512 MiB; the PUD is folded (contiguous-PTE 2M is no level).
        hugetlb_levels=("pmd",),
        # The native definition of an arm64 host is the 4K-page one.
        host_machines=(),
    ),
    kernel=replace(_KERNEL_4K, fragments=("common.config", "arm64.config", "arm64-64k.config")),
    qemu=replace(
        _QEMU_4K,
        memory_mib=6144,
        # The per-CPU free lists hold at most 16 pages (batch * 4) instead of
        # up to 1/8 of the zone (zone_highsize()): a split THP's freed pages
        # sitting there kept 512 MiB blocks from merging, and the next THP
        # scenario fell back to base pages.
        kernel_cmdline=(*_QEMU_4K.kernel_cmdline, "sysctl.vm.percpu_pagelist_high_fraction=65536"),
    ),
)
