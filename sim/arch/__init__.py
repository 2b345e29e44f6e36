"""Architectures as data.

Each module beside this one defines exactly one :class:`Arch` and nothing else.
Nothing else in the project branches on an architecture name: code asks the
``Arch`` for the fact it needs (byte order, word size, page shift, table
geometry, user address limit).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from functools import cached_property

__all__ = ["ARCH_NAMES", "Arch", "UnknownArchError", "get_arch", "host_arch"]

#: Names accepted by every command of the project (``--arch``).
ARCH_NAMES: tuple[str, ...] = ("x86_64", "ppc64", "ppc64-4k", "i386")


class UnknownArchError(ValueError):
    """An architecture name that has no definition."""


@dataclass(frozen=True)
class Arch:
    """The facts about one architecture that the formats and the model need.

    ``levels`` lists the index bits of each page-table level from the top
    (PGD) down to the PTE level; their sum plus ``page_shift`` is the width of
    the virtual address the tables can map.  ``level_names`` names those
    levels with the kernel's names (the last is always ``"pte"``, the one
    above it is where THP leaves live when ``thp_level`` names it).
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

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.level_names):
            raise ValueError(f"{self.name}: levels and level_names differ in length")
        if self.level_names[-1] != "pte":
            raise ValueError(f"{self.name}: the last level must be 'pte'")
        if self.word_size not in (4, 8):
            raise ValueError(f"{self.name}: word size {self.word_size} is not 4 or 8")

    @property
    def page_size(self) -> int:
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
        return self.level_shifts[self.level_names.index(level_name)]

    @property
    def thp_pages(self) -> int:
        """Base pages in one THP leaf (HPAGE_PMD_NR), 0 without THP."""
        if self.thp_level is None:
            return 0
        return 1 << (self.level_shift(self.thp_level) - self.page_shift)

    @property
    def pages_per_section(self) -> int | None:
        if self.section_size_bits is None:
            return None
        return 1 << (self.section_size_bits - self.page_shift)

    @property
    def kpagemap_entry_size(self) -> int:
        """KPMSIZE: a (flags, count) pair of unsigned long."""
        return 2 * self.word_size


def get_arch(name: str) -> Arch:
    """The definition of ``name`` (one of :data:`ARCH_NAMES`)."""
    if name not in ARCH_NAMES:
        raise UnknownArchError(
            f"unknown architecture {name!r}; known: {', '.join(ARCH_NAMES)}"
        )
    module = importlib.import_module(f"sim.arch.{name.replace('-', '_')}")
    arch: Arch = module.ARCH
    return arch


def host_arch() -> Arch:
    """The architecture of the machine running this Python, if it has one."""
    import platform

    machine = platform.machine()
    table = {"x86_64": "x86_64", "AMD64": "x86_64", "i686": "i386", "i386": "i386"}
    if machine == "ppc64" and sys.byteorder == "big":
        # A 64K-page kernel is the distribution default on Book3S.
        return get_arch("ppc64")
    if machine not in table:
        raise UnknownArchError(f"host machine {machine!r} has no definition; pass --arch")
    return get_arch(table[machine])
