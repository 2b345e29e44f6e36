"""The shape of one architecture's data file: a model part and optional build/boot parts.

An :class:`ArchSpec` is everything the project knows about one architecture
(``--arch`` name), as plain values:

* ``model`` (:class:`Arch`, always present): what the reference model and the
  binary formats read -- byte order, word size, page shift, page-table
  geometry, task size, THP/hugetlb leaf levels, soft-dirty support, sections,
  and where RAM starts in the physical address space.
* ``kernel`` (:class:`KernelBuild`, optional): how ``images`` configures and
  makes the test kernel.  These values, and only these, go into the kernel
  cache key (``images.key.kernel_key``).
* ``agent`` (:class:`AgentBuild`, present exactly when ``kernel`` is): how
  ``images`` compiles the static guest agent and checks its ELF header.
* ``qemu`` (:class:`QemuMachine`, optional): how ``harness`` boots the kernel
  under QEMU TCG (like KUnit's ``QemuArchParams`` in tools/testing/kunit/).
* ``host`` (:class:`HostNeed` records): the tools and files this
  architecture's build and boot need on the host, with their Debian packages
  (``python -m images setup`` installs them).

The records are plain data: nothing here imports ``images`` or ``harness``;
those packages interpret their parts.  An architecture that exists only in the
model (i386) simply has no ``kernel``, ``agent`` or ``qemu``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

__all__ = [
    "AGENT_CFLAGS",
    "AgentBuild",
    "Arch",
    "ArchSpec",
    "HostNeed",
    "KernelBuild",
    "QemuMachine",
]


@dataclass(frozen=True)
class Arch:
    """The facts about one architecture that the formats and the model need.

    ``levels`` lists the index bits of each page-table level from the top
    (PGD) down to the PTE level; their sum plus ``page_shift`` is the width of
    the virtual address the tables can map.  ``level_names`` names those
    levels with the kernel's names (the last is always ``"pte"``, the one
    above it is where THP leaves live when ``thp_level`` names it).

    Raises ValueError when the geometry is inconsistent (level lists of
    different lengths, a last level that is not ``pte``, a word size other
    than 4 or 8, a leaf level that is not a table level, a RAM base that is
    not page aligned).
    """

    name: str
    little_endian: bool
    word_size: int  # sizeof(unsigned long) in the kernel, bytes
    page_shift: int
    levels: tuple[int, ...]
    level_names: tuple[str, ...]
    #: mm->task_size for a native process: pagemap reads end here (exclusive).
    task_size: int
    #: Level whose entries can be huge leaves for THP (None: no THP).
    thp_level: str | None
    #: SECTION_SIZE_BITS with SPARSEMEM (kpage* files end at max_pfn rounded
    #: up to a section: get_max_dump_pfn() in fs/proc/page.c); None = FLATMEM.
    section_size_bits: int | None
    #: Kernel source the geometry was taken from (for a reader who checks).
    source: str
    #: HAVE_ARCH_SOFT_DIRTY: the PTE has a soft-dirty bit that pte_mkdirty()
    #: sets (x86_64; powerpc book3s 64).  Without it VM_SOFTDIRTY is 0.
    soft_dirty: bool = False
    #: pte_modify() / pmd_modify() (mprotect's change_pte_range() and
    #: change_huge_pmd()) OR in the whole new protection, whose every user
    #: value includes the accessed bit: the entry comes out young.  powerpc
    #: book3s 64 (_PAGE_BASE = _PAGE_PRESENT | _PAGE_ACCESSED in
    #: asm/book3s/64/pgtable.h; pmd_set_protbits()); x86 keeps the old
    #: accessed bit (_PAGE_CHG_MASK).  Seen in smaps' Referenced.
    modify_sets_young: bool = False
    #: CONFIG_HAVE_MOVE_PMD and arch_supports_page_table_move(): mremap's
    #: move_page_tables() moves a whole PTE table (move_normal_pmd() in
    #: mm/mremap.c) when a PMD-sized, PMD-aligned extent moves to a none PMD, so
    #: its PTEs keep their bits (soft-dirty too); without it every PTE moves one
    #: by one (move_ptes()) and gains soft-dirty (move_soft_dirty_pte()).  x86
    #: (arch/x86/Kconfig) and powerpc book3s 64 with the radix MMU have it.
    have_move_pmd: bool = False
    #: HAVE_ARCH_USERFAULTFD_WP (and so CONFIG_PTE_MARKER_UFFD_WP with USERFAULTFD):
    #: UFFDIO_REGISTER_MODE_WP and the WP_ASYNC / WP_UNPOPULATED features
    #: (fs/userfaultfd.c).  x86_64 and arm64 select it in 6.12; powerpc does not
    #: (registering wp is EINVAL there).
    uffd_wp: bool = False
    #: Levels whose entries can be hugetlb leaves on the machine this arch
    #: boots on (sizes: :attr:`hugetlb_sizes`); the first is the default
    #: hugetlb size (default_hstate, /proc/meminfo Hugepagesize), the only one
    #: the model maps (:attr:`hugetlb_page_pages`).
    hugetlb_levels: tuple[str, ...] = ()
    #: Huge pages of the default size the guest reserves at boot
    #: (``hugepages=N`` on the kernel command line, hugetlb_nrpages_setup() in
    #: mm/hugetlb.c), the pool MAP_HUGETLB mappings take their pages from; the
    #: harness checks the guest has them before a run.  0: no pool, hugetlb
    #: scenarios do not apply.
    hugetlb_pages: int = 0
    #: Guest-physical address of the first byte of RAM (bytes; page aligned):
    #: the lowest PFN with memory is ``ram_base >> page_shift``.  0 on the PC
    #: and pseries machines; 0x40000000 on QEMU's arm "virt" machine.  With
    #: FLATMEM it is also ARCH_PFN_OFFSET, the first PFN with a struct page
    #: (include/asm-generic/memory_model.h), whether or not the kernel counts
    #: that page as RAM.
    ram_base: int = 0
    #: untagged_addr() clears the top byte of a user pointer whose bit 55 is
    #: clear: arm64's Top Byte Ignore, ``addr & sign_extend64(addr, 55)``
    #: (arch/arm64/include/asm/memory.h), so 1 << 63 reads as 0.  Elsewhere
    #: untagged_addr() is the identity (include/linux/uaccess.h; x86 without LAM).
    untag_top_byte: bool = False
    #: ``platform.machine()`` values of a host for which this is the native
    #: definition (with its byte order): :func:`sim.arch.host_arch`.
    host_machines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.level_names):
            raise ValueError(f"{self.name}: levels and level_names differ in length")
        if self.level_names[-1] != "pte":
            raise ValueError(f"{self.name}: the last level must be 'pte'")
        if self.word_size not in (4, 8):
            raise ValueError(f"{self.name}: word size {self.word_size} is not 4 or 8")
        for leaf in (*(() if self.thp_level is None else (self.thp_level,)), *self.hugetlb_levels):
            if leaf not in self.level_names[:-1]:
                raise ValueError(f"{self.name}: huge leaf level {leaf!r} is not a table level")
        if self.ram_base < 0 or self.ram_base % (1 << self.page_shift):
            raise ValueError(f"{self.name}: RAM base {self.ram_base:#x} is not page aligned")

    @property
    def page_size(self) -> int:
        """Bytes in one base page (PAGE_SIZE)."""
        return 1 << self.page_shift

    @property
    def byteorder(self) -> str:
        """``"little"`` or ``"big"``, as ``int.to_bytes`` wants it."""
        return "little" if self.little_endian else "big"

    @property
    def struct_prefix(self) -> str:
        """``"<"`` or ``">"`` for :mod:`struct` (never native ``"="``)."""
        return "<" if self.little_endian else ">"

    @property
    def va_bits(self) -> int:
        """Bits of virtual address the page tables translate."""
        return self.page_shift + sum(self.levels)

    @cached_property
    def level_shifts(self) -> tuple[int, ...]:
        """Address shift of each level (PGDIR_SHIFT ... PAGE_SHIFT)."""
        shifts = []
        shift = self.page_shift
        for bits in reversed(self.levels):
            shifts.append(shift)
            shift += bits
        return tuple(reversed(shifts))

    def level_shift(self, level_name: str) -> int:
        """Address shift of the level named ``level_name`` (ValueError if none)."""
        return self.level_shifts[self.level_names.index(level_name)]

    @property
    def thp_pages(self) -> int:
        """Base pages in one THP leaf (HPAGE_PMD_NR), 0 without THP."""
        if self.thp_level is None:
            return 0
        return 1 << (self.level_shift(self.thp_level) - self.page_shift)

    @property
    def hugetlb_page_pages(self) -> int:
        """Base pages in one huge page of the default hugetlb size
        (pages_per_huge_page(&default_hstate)); 0 without a hugetlb pool."""
        if not self.hugetlb_levels or not self.hugetlb_pages:
            return 0
        return 1 << (self.level_shift(self.hugetlb_levels[0]) - self.page_shift)

    @property
    def hugetlb_sizes(self) -> tuple[int, ...]:
        """Bytes of each hugetlb page size (the leaf sizes of :attr:`hugetlb_levels`)."""
        return tuple(1 << self.level_shift(level) for level in self.hugetlb_levels)

    @property
    def pages_per_section(self) -> int | None:
        """Base pages in one SPARSEMEM section (PAGES_PER_SECTION); None with FLATMEM."""
        if self.section_size_bits is None:
            return None
        return 1 << (self.section_size_bits - self.page_shift)

    @property
    def kpagemap_entry_size(self) -> int:
        """KPMSIZE: a (flags, count) pair of unsigned long."""
        return 2 * self.word_size

    def untagged_addr(self, addr: int) -> int:
        """untagged_addr() of a 64-bit ``addr``: itself, or without arm64's tag byte."""
        if not self.untag_top_byte or addr >> 55 & 1:
            return addr
        return addr & ((1 << 56) - 1)

    @property
    def ram_base_pfn(self) -> int:
        """The first PFN of RAM (``ram_base >> PAGE_SHIFT``)."""
        return self.ram_base >> self.page_shift


@dataclass(frozen=True)
class KernelBuild:
    """How to configure and make the test kernel (every field goes into the kernel key)."""

    #: ``make ARCH=...`` (the kernel's arch/ directory name).
    make_arch: str
    #: ``make CROSS_COMPILE=...`` ("" builds with the host compiler).
    cross_compile: str
    #: The make target that produces the bootable image.
    make_target: str
    #: The bootable image, relative to the out-of-tree build directory.
    image_path: str
    #: Kernel fragments shipped in the source tree, applied first (in order).
    base_fragments: tuple[str, ...]
    #: Fragment files in images/arches/ (``images.arches.FRAGMENT_DIR``),
    #: applied after the base ones; every option in them must survive into .config.
    fragments: tuple[str, ...]

    @property
    def compiler(self) -> str:
        """The C compiler make runs for the kernel (``$(CROSS_COMPILE)gcc``)."""
        return f"{self.cross_compile}gcc"


#: Flags every agent build uses: a static, warning-free C11 binary.
AGENT_CFLAGS: tuple[str, ...] = ("-static", "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11")


@dataclass(frozen=True)
class AgentBuild:
    """How to compile the static guest agent, and what its ELF header must say."""

    #: The C compiler (host or cross) that targets the guest's userspace.
    cc: str
    #: ELF e_machine of the guest (include/uapi/linux/elf-em.h).
    elf_machine: int
    cflags: tuple[str, ...] = AGENT_CFLAGS


@dataclass(frozen=True)
class QemuMachine:
    """How to boot one architecture's test kernel under QEMU (TCG, one vCPU)."""

    binary: str
    machine: str
    #: Machine properties besides the RAM backend (which the harness adds).
    machine_options: tuple[str, ...]
    cpu: str
    #: The kernel's console device on this machine (the first serial port).
    console: str
    #: Kernel command line; the console= entry is added from ``console``.
    kernel_cmdline: tuple[str, ...]
    #: Further QEMU arguments this machine wants.
    extra_args: tuple[str, ...]
    #: PCI device carrying the agent's virtio-serial port.
    virtio_serial_device: str
    #: Guest RAM (MiB): one block from ``Arch.ram_base``.
    memory_mib: int = 1024
    #: Boot to agent-ready under TCG takes about a second here; allow for load.
    boot_timeout_s: float = 120.0


@dataclass(frozen=True)
class HostNeed:
    """A command on $PATH (or an absolute file path) and the Debian package providing it."""

    what: str
    package: str


@dataclass(frozen=True)
class ArchSpec:
    """One architecture's data file: the model part and the optional build and boot parts.

    Raises ValueError when ``kernel`` and ``agent`` are not given together
    (an image needs both).
    """

    model: Arch
    kernel: KernelBuild | None = None
    agent: AgentBuild | None = None
    qemu: QemuMachine | None = None
    host: tuple[HostNeed, ...] = ()

    def __post_init__(self) -> None:
        if (self.kernel is None) != (self.agent is None):
            raise ValueError(f"{self.name}: give both kernel and agent builds, or neither")

    @property
    def name(self) -> str:
        """The ``--arch`` name."""
        return self.model.name
