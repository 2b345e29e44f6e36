"""i386 without PAE: little-endian, 4-byte words, 4K pages, 2-level tables; QEMU's PC machine.

Why non-PAE: it is the definition the model already had (the folded PMD,
FLATMEM, positions cut to a 32-bit ``unsigned long``), the smallest 32-bit
kernel, and the one whose page tables differ most from x86_64's.  A PAE
kernel (3 levels, 64-bit PTEs, 2 MiB THP; Debian's 686-pae flavour) would be
another ``--arch`` name with its own data file.

x86 selects HAVE_ARCH_TRANSPARENT_HUGEPAGE without PAE too (4 MiB THP in the
PGD with the PMD folded), but the model has no THP here, so the kernel is
built without TRANSPARENT_HUGEPAGE (images/arches/i386.config) and the
catalog's THP scenarios are skipped, saying why.
"""

from sim.arch.schema import AgentBuild, Arch, ArchSpec, HostNeed, KernelBuild, QemuMachine

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
        # PMD folds into the PGD without PAE; the kernel is built without THP.
        thp_level=None,
        section_size_bits=None,  # FLATMEM, the default without NUMA
        source="arch/x86/include/asm/pgtable-2level_types.h, page_32_types.h",
        # arch/x86/Kconfig: only config X86_64 selects HAVE_ARCH_SOFT_DIRTY
        # arch/x86/Kconfig: select HAVE_MOVE_PMD (mremap moves whole PTE tables)
        have_move_pmd=True,
        soft_dirty=False,
        # 4M PSE pages in the PGD (HPAGE_SHIFT = PMD_SHIFT = 22 without PAE).
        hugetlb_levels=("pgd",),
        # Also ARCH_PFN_OFFSET (FLATMEM; x86 keeps the asm-generic 0): PFN 0 has
        # a struct page.  trim_bios_range() (arch/x86/kernel/setup.c) makes the
        # BIOS's first page E820 reserved, so memblock and /proc/iomem's System
        # RAM start at PFN 1, and memmap_init() gives PFN 0 a reserved page
        # (init_unavailable_range(): PG_reserved, refcount 1), as the SPARSEMEM
        # x86_64 kernel does in its present section 0.
        ram_base=0,
        host_machines=("i686", "i386"),
    ),
    kernel=KernelBuild(
        # ARCH=i386 is arch/x86 with 64BIT off; the host gcc builds it (-m32).
        make_arch="i386",
        cross_compile="",
        make_target="bzImage",
        image_path="arch/x86/boot/bzImage",
        base_fragments=(
            "kernel/configs/tiny-base.config",
            "kernel/configs/tiny.config",
            "arch/x86/configs/tiny.config",
        ),
        # The PC machine's options come from x86_64.config; i386.config turns 64BIT off.
        fragments=("common.config", "x86_64.config", "i386.config"),
    ),
    # A static 32-bit glibc comes with Debian's i686 cross toolchain.
    agent=AgentBuild(cc="i686-linux-gnu-gcc", elf_machine=3),  # EM_386
    qemu=QemuMachine(
        binary="qemu-system-i386",
        machine="pc",
        machine_options=(),
        # qemu32: PSE (4M hugetlb pages) and no long mode.
        cpu="qemu32",
        console="ttyS0",
        # no_timer_check: check_timer() (arch/x86/kernel/apic/io_apic.c) waits a
        # few jiffies for the IO-APIC timer and panics when TCG on a loaded host
        # is too slow to deliver them ("IO-APIC + timer doesn't work!").
        kernel_cmdline=("panic=-1", "oops=panic", "no_timer_check"),
        extra_args=("-device", "pvpanic"),
        virtio_serial_device="virtio-serial-pci",
        # Without HIGHMEM the kernel maps at most 896 MiB of RAM (lowmem).
        memory_mib=512,
    ),
    host=(
        HostNeed("i686-linux-gnu-gcc", "gcc-i686-linux-gnu"),
        HostNeed("/usr/i686-linux-gnu/lib/libc.a", "libc6-dev-i386-cross"),
        HostNeed("qemu-system-i386", "qemu-system-x86"),
    ),
)
