"""ppc64 big-endian, Book3S radix MMU with 4K pages."""

from sim.arch import Arch

ARCH = Arch(
    name="ppc64-4k",
    little_endian=False,
    word_size=8,
    page_shift=12,
    # RADIX_PGD_INDEX_SIZE 13, RADIX_PUD_INDEX_SIZE 9, RADIX_PMD_INDEX_SIZE 9,
    # RADIX_PTE_INDEX_SIZE 9 (arch/powerpc/include/asm/book3s/64/radix-4k.h).
    levels=(13, 9, 9, 9),
    level_names=("pgd", "pud", "pmd", "pte"),
    # TASK_SIZE_USER64 = TASK_SIZE_64TB with 4K pages
    # (arch/powerpc/include/asm/task_size_64.h).
    task_size=1 << 46,
    thp_level="pmd",
    section_size_bits=24,  # arch/powerpc/include/asm/sparsemem.h
    source="arch/powerpc/include/asm/book3s/64/radix-4k.h, asm/task_size_64.h",
    # arch/powerpc/Kconfig: select HAVE_ARCH_SOFT_DIRTY if PPC_BOOK3S_64
    soft_dirty=True,
)
