"""x86_64 with 4-level paging (no LA57) on QEMU's PC machine: bzImage, console ttyS0."""

from sim.arch.schema import AgentBuild, Arch, ArchSpec, HostNeed, KernelBuild, QemuMachine

SPEC = ArchSpec(
    model=Arch(
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
        # arch/x86/Kconfig: select HAVE_MOVE_PMD (mremap moves whole PTE tables)
        have_move_pmd=True,
        soft_dirty=True,
        # arch/x86/Kconfig: select HAVE_ARCH_USERFAULTFD_WP if X86_64 && USERFAULTFD
        uffd_wp=True,
        # 2M pages (X86_FEATURE_PSE); 1G ones need X86_FEATURE_GBPAGES, which
        # the qemu64 CPU lacks (arch_hugetlb_valid_size() in arch/x86/mm/hugetlbpage.c).
        hugetlb_levels=("pmd",),
        # 32 x 2 MiB reserved at boot (hugepages=32; 64 MiB of the 1 GiB guest).
        hugetlb_pages=32,
        # 1 GiB of RAM is one block from 0, below the PCI hole (3 GiB).
        ram_base=0,
        host_machines=("x86_64", "AMD64"),
    ),
    kernel=KernelBuild(
        make_arch="x86_64",
        cross_compile="",
        make_target="bzImage",
        image_path="arch/x86/boot/bzImage",
        base_fragments=(
            "kernel/configs/tiny-base.config",
            "kernel/configs/tiny.config",
            "arch/x86/configs/tiny.config",
        ),
        fragments=("common.config", "x86_64.config"),
    ),
    agent=AgentBuild(cc="gcc", elf_machine=62),  # EM_X86_64
    qemu=QemuMachine(
        binary="qemu-system-x86_64",
        machine="pc",
        machine_options=(),
        # qemu64, not max: max offers LA57 and the kernel would use 5-level tables.
        cpu="qemu64",
        console="ttyS0",
        # panic=-1 reboots at once and -no-reboot turns that into QEMU exiting;
        # oops=panic makes any oops a panic the harness sees.  no_timer_check, as
        # on i386: check_timer() (arch/x86/kernel/apic/io_apic.c) panics "IO-APIC
        # + timer doesn't work!" when TCG on a loaded host delivers its ticks too
        # late (2 of 22 x86_64 boots on a 2-core host shared by five sessions).
        kernel_cmdline=("panic=-1", "oops=panic", "no_timer_check"),
        # pvpanic raises the GUEST_PANICKED QMP event when the kernel has the driver.
        extra_args=("-device", "pvpanic"),
        virtio_serial_device="virtio-serial-pci",
    ),
    host=(
        HostNeed("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev"),  # the static agent
        HostNeed("qemu-system-x86_64", "qemu-system-x86"),
    ),
)
