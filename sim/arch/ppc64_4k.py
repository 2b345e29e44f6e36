"""ppc64 big-endian, Book3S radix MMU, 4K pages: the ``ppc64`` machine with another kernel.

Only the page size differs (PPC_4K_PAGES instead of PPC_64K_PAGES): the
machine, firmware, console, toolchain and host packages are those of the
64K-page definition.
"""

from dataclasses import replace

from sim.arch.ppc64 import SPEC as PPC64_64K
from sim.arch.schema import KernelBuild

_KERNEL_64K: KernelBuild | None = PPC64_64K.kernel
assert _KERNEL_64K is not None

SPEC = replace(
    PPC64_64K,
    model=replace(
        PPC64_64K.model,
        name="ppc64-4k",
        page_shift=12,
        # RADIX_PGD_INDEX_SIZE 13, RADIX_PUD_INDEX_SIZE 9, RADIX_PMD_INDEX_SIZE 9,
        # RADIX_PTE_INDEX_SIZE 9 (arch/powerpc/include/asm/book3s/64/radix-4k.h).
        levels=(13, 9, 9, 9),
        # TASK_SIZE_USER64 = TASK_SIZE_64TB with 4K pages
        # (arch/powerpc/include/asm/task_size_64.h).
        task_size=1 << 46,
        source="arch/powerpc/include/asm/book3s/64/radix-4k.h, asm/task_size_64.h",
        # The native definition of a ppc64 host is the 64K-page one.
        host_machines=(),
    ),
    kernel=replace(_KERNEL_64K, fragments=("common.config", "pseries-be.config", "page-4k.config")),
)
