"""i386 without PAE: little-endian, 4-byte words, 4K pages, 2-level tables (model only)."""

from sim.arch.schema import Arch, ArchSpec

SPEC = ArchSpec(
    model=Arch(
        name="i386",
        little_endian=True,
        word_size=4,
        page_shift=12,
        # Two levels of 10 bits (arch/x86/include/asm/pgtable-2level_types.h).
        levels=(10, 10),
        level_names=("pgd", "pte"),
        # PAGE_OFFSET 0xC0000000 with the default 3G/1G split (TASK_SIZE).
        task_size=0xC000_0000,
        # PMD folds into the PGD without PAE; 4M pages exist but THP is not modelled.
        thp_level=None,
        section_size_bits=None,  # FLATMEM, the default without NUMA
        source="arch/x86/include/asm/pgtable-2level_types.h, page_32_types.h",
        # arch/x86/Kconfig: only config X86_64 selects HAVE_ARCH_SOFT_DIRTY
        # arch/x86/Kconfig: select HAVE_MOVE_PMD (mremap moves whole PTE tables)
        have_move_pmd=True,
        soft_dirty=False,
        # 4M PSE pages in the PGD (HPAGE_SHIFT = PMD_SHIFT = 22 without PAE).
        hugetlb_levels=("pgd",),
        ram_base=0,
        host_machines=("i686", "i386"),
    ),
)
