"""x86_64 with 4-level paging (no LA57): little-endian, 8-byte words, 4K pages."""

from sim.arch import Arch

ARCH = Arch(
    name="x86_64",
    little_endian=True,
    word_size=8,
    page_shift=12,
    levels=(9, 9, 9, 9),
    level_names=("pgd", "pud", "pmd", "pte"),
    # TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE: the guard page below the
    # canonical hole (arch/x86/include/asm/page_64_types.h).
    task_size=(1 << 47) - (1 << 12),
    thp_level="pmd",
    section_size_bits=27,  # arch/x86/include/asm/sparsemem.h
    source="arch/x86/include/asm/pgtable_64_types.h, page_64_types.h",
    # arch/x86/Kconfig: config X86_64 selects HAVE_ARCH_SOFT_DIRTY
    soft_dirty=True,
)
