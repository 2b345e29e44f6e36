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
    # mm->task_size = TASK_SIZE (setup_new_exec() in fs/exec.c), which for a
    # 64-bit task is TASK_SIZE_USER64 = TASK_SIZE_4PB with 64K pages
    # (arch/powerpc/include/asm/task_size_64.h); mmap() without a hint stays
    # below DEFAULT_MAP_WINDOW_USER64 (128TB), but pagemap ends at task_size.
    task_size=1 << 52,
    thp_level="pmd",
    section_size_bits=24,  # arch/powerpc/include/asm/sparsemem.h
    source="arch/powerpc/include/asm/book3s/64/radix-64k.h, asm/task_size_64.h",
    # arch/powerpc/Kconfig: select HAVE_ARCH_SOFT_DIRTY if PPC_BOOK3S_64
    soft_dirty=True,
)
