"""arm64 (AArch64) little-endian, 4K pages, 48-bit VA: QEMU's ``virt`` machine under TCG.

The kernel is the uncompressed ``Image`` loaded with ``-kernel`` (the device
tree QEMU generates describes the machine: no firmware, no ACPI); the console
is the PL011 UART (ttyAMA0) and power-off is PSCI SYSTEM_OFF, which ends QEMU.
RAM starts at guest-physical 0x40000000 (hw/arm/virt.c: VIRT_MEM).
"""

from sim.arch.schema import AgentBuild, Arch, ArchSpec, HostNeed, KernelBuild, QemuMachine

#: Guest-physical base of RAM on QEMU's arm "virt" machine (hw/arm/virt.c, base_memmap[VIRT_MEM]).
VIRT_RAM_BASE = 0x4000_0000

SPEC = ArchSpec(
    model=Arch(
        name="arm64",
        little_endian=True,
        word_size=8,
        page_shift=12,
        # ARM64_VA_BITS_48 with 4K pages: four levels of 9 bits
        # (CONFIG_PGTABLE_LEVELS=4; arch/arm64/include/asm/pgtable-hwdef.h).
        levels=(9, 9, 9, 9),
        level_names=("pgd", "pud", "pmd", "pte"),
        # TASK_SIZE_64 = 1 << vabits_actual (arch/arm64/include/asm/processor.h);
        # the CPU model (cortex-a57) has no LVA/LPA2, so vabits_actual is 48.
        task_size=1 << 48,
        thp_level="pmd",
        section_size_bits=27,  # arch/arm64/include/asm/sparsemem.h (4K and 16K pages)
        source="arch/arm64/include/asm/pgtable-hwdef.h, processor.h, sparsemem.h",
        # arch/arm64/Kconfig does not select HAVE_ARCH_SOFT_DIRTY: pagemap bit 55
        # is never set, and clear_refs 4 only clears VM_SOFTDIRTY (a 0 flag).
        soft_dirty=False,
        # arch/arm64/Kconfig: select HAVE_ARCH_USERFAULTFD_WP if USERFAULTFD
        uffd_wp=True,
        # pte_modify() keeps the old PTE_AF (it is outside the mask it replaces).
        modify_sets_young=False,
        # Block mappings at PMD (2M) and PUD (1G) (arch/arm64/mm/hugetlbpage.c:
        # arch_hugetlb_valid_size(); the contiguous 64K and 32M sizes are not levels).
        hugetlb_levels=("pmd", "pud"),
        # Top Byte Ignore: untagged_addr() drops bits 56-63 of user pointers
        # (arch/arm64/include/asm/memory.h), e.g. of PAGEMAP_SCAN's start, end, vec.
        untag_top_byte=True,
        ram_base=VIRT_RAM_BASE,
        host_machines=("aarch64", "arm64"),
    ),
    kernel=KernelBuild(
        make_arch="arm64",
        cross_compile="aarch64-linux-gnu-",
        make_target="Image",
        image_path="arch/arm64/boot/Image",
        base_fragments=("kernel/configs/tiny-base.config", "kernel/configs/tiny.config"),
        fragments=("common.config", "arm64.config", "arm64-4k.config"),
    ),
    agent=AgentBuild(cc="aarch64-linux-gnu-gcc", elf_machine=183),  # EM_AARCH64
    qemu=QemuMachine(
        binary="qemu-system-aarch64",
        machine="virt",
        machine_options=(),
        # cortex-a57 (ARMv8.0): 48-bit VA and 44-bit PA, 4K and 64K granules, no
        # pointer authentication (slow under TCG) and no hardware access/dirty
        # flag updates, so the kernel manages young and dirty in software.
        cpu="cortex-a57",
        console="ttyAMA0",
        kernel_cmdline=("panic=-1", "oops=panic"),
        extra_args=("-device", "pvpanic-pci"),
        virtio_serial_device="virtio-serial-pci",
    ),
    host=(
        HostNeed("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        HostNeed("/usr/aarch64-linux-gnu/lib/libc.a", "libc6-dev-arm64-cross"),
        HostNeed("qemu-system-aarch64", "qemu-system-arm"),
    ),
)
