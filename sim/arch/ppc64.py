"""ppc64 big-endian, Book3S radix MMU, 64K pages: pseries with QEMU's firmware (VOF).

The kernel is a vmlinux loaded with ``-kernel``; the console is hvc0.
"""

from sim.arch.schema import AgentBuild, Arch, ArchSpec, HostNeed, KernelBuild, QemuMachine

SPEC = ArchSpec(
    model=Arch(
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
        # PPC_BOOK3S_64 selects HAVE_MOVE_PMD (arch/powerpc/platforms/Kconfig.cputype) and
        # arch_supports_page_table_move() is radix_enabled() (asm/tlb.h): the radix MMU
        # these images boot moves whole PTE tables in mremap.
        have_move_pmd=True,
        # pte_modify() ORs in _PAGE_ACCESSED with the new protection (schema.py).
        modify_sets_young=True,
        # Radix: 2M (PMD) and 1G (PUD) leaves, the sizes QEMU's POWER9 lists in
        # ibm,processor-radix-AP-encodings (radix_dt_scan_page_sizes() in
        # arch/powerpc/mm/book3s64/radix_pgtable.c).  The default hugetlb size
        # is 2M: hugetlbpage_init_defaultsize() (arch/powerpc/mm/book3s64/
        # hugetlbpage.c) takes 16M, else 1M, else 2M, and radix defines only
        # 2M and 1G; the same with 4K and 64K base pages (512 or 32 base pages).
        hugetlb_levels=("pmd", "pud"),
        # 32 x 2 MiB reserved at boot (hugepages=32; 64 MiB of the 1 GiB guest).
        hugetlb_pages=32,
        ram_base=0,  # pseries RAM is one block from guest-physical 0
        # A 64K-page kernel is the distribution default on Book3S.
        host_machines=("ppc64",),
    ),
    kernel=KernelBuild(
        make_arch="powerpc",
        cross_compile="powerpc64-linux-gnu-",
        make_target="vmlinux",
        image_path="vmlinux",
        base_fragments=("kernel/configs/tiny-base.config", "kernel/configs/tiny.config"),
        fragments=("common.config", "pseries-be.config", "page-64k.config"),
    ),
    agent=AgentBuild(cc="powerpc64-linux-gnu-gcc", elf_machine=21),  # EM_PPC64
    qemu=QemuMachine(
        binary="qemu-system-ppc64",
        machine="pseries",
        # x-vof: QEMU's Virtual Open Firmware instead of SLOF (boots ~5 s faster).
        # The caps are the Spectre mitigations TCG cannot provide.
        machine_options=(
            "x-vof=on",
            "cap-cfpc=broken",
            "cap-sbbc=broken",
            "cap-ibs=broken",
            "cap-ccf-assist=off",
        ),
        # POWER9: the radix MMU, needed for THP under TCG.
        cpu="POWER9",
        console="hvc0",
        kernel_cmdline=("panic=-1", "oops=panic"),
        extra_args=(),
        virtio_serial_device="virtio-serial-pci",
    ),
    host=(
        HostNeed("powerpc64-linux-gnu-gcc", "gcc-powerpc64-linux-gnu"),
        HostNeed("/usr/powerpc64-linux-gnu/lib/libc.a", "libc6-dev-ppc64-cross"),
        HostNeed("qemu-system-ppc64", "qemu-system-ppc"),
    ),
)
