"""arm64 with 64K pages and 48-bit VA: the ``arm64`` machine with another kernel.

Only the page size differs (ARM64_64K_PAGES instead of ARM64_4K_PAGES), and
with it the table geometry, the THP size (a PMD maps 512 MiB) and the
SPARSEMEM section size; the machine, CPU, console, toolchain and host packages
are those of the 4K-page definition.

RAM: a 512 MiB THP needs a free, 512 MiB-aligned block of the buddy allocator
(MAX_PAGE_ORDER 13 with 64K pages: ARCH_FORCE_MAX_ORDER in arch/arm64/Kconfig).
The kernel image holds the first block from 0x40000000 and memblock's top-down
boot allocations (memmap, initrd, device tree) the last ones, so 2 GiB left one
free order-13 block (/proc/buddyinfo) and the catalog's THP scenarios fell back
to base pages after the first few runs.  The guest gets 4 GiB: 5 of its 8
blocks are free after boot, and no catalog scenario holds more than 3 THPs at
once.  Only touched memory costs the host (the RAM file is sparse), but each
THP fault zeroes 512 MiB of it.  The model machine gets the same 4 GiB
(harness.model_executor.model_ram_bytes()): 7 free blocks, so the model never
refuses a THP the guest gives.
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
    qemu=replace(_QEMU_4K, memory_mib=4096),
)
