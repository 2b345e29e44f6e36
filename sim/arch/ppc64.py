"""ppc64 big-endian, Book3S radix MMU with 64K pages."""

from sim.arch import Arch

ARCH = Arch(
    name="ppc64",
    little_endian=False,
    word_size=8,
    page_shift=16,
    # RADIX_PGD_INDEX_SIZE 13, RADIX_PUD_INDEX_SIZE 9, RADIX_PMD_INDEX_SIZE 9,
    # RADIX_PTE_INDEX_SIZE 5 (arch/powerpc/include/asm/book3s/64/radix-64k.h).
    levels=(13, 9, 9, 5),
    level_names=("pgd", "pud", "pmd", "pte"),
    # Default map window for a 64-bit task: TASK_SIZE_128TB
    # (arch/powerpc/include/asm/task_size_64.h); verified against the guest.
    task_size=1 << 47,
    thp_level="pmd",
    source="arch/powerpc/include/asm/book3s/64/radix-64k.h, asm/task_size_64.h",
)
