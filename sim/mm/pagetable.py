"""Per-process page tables in the architecture's geometry.

The tables form a tree of ``arch.levels`` levels (pgd ... pte).  Upper levels
are dicts from index to the next table; the level just above the PTEs (the
"PMD" in the kernel's words, the PGD itself on two-level i386) maps an index to
a :class:`PteTable` or, where the architecture has THP there, a
:class:`HugePmd` leaf.  A missing key is a none entry (pmd_none() and friends).

A PTE table keeps its entries as two numpy columns (frame number and bits), so
a walker can turn a whole table into pagemap entries in one vectorised step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sim.arch import Arch
from sim.mm.pte import PTE_DTYPE, PTE_PRESENT, PteFlags

__all__ = ["HugePmd", "PageTables", "PmdEntry", "PteBitsArray", "PteTable"]

#: A column of entry bits (:class:`~sim.mm.pte.PteFlags` values).
PteBitsArray = npt.NDArray[np.uint32]


class PteTable:
    """One last-level table: ``pfn[i]`` and ``bits[i]`` (:class:`~sim.mm.pte.PteFlags`)."""

    __slots__ = ("bits", "pfn")

    def __init__(self, entries: int) -> None:
        self.pfn: npt.NDArray[np.int64] = np.zeros(entries, dtype=np.int64)
        self.bits: PteBitsArray = np.zeros(entries, dtype=PTE_DTYPE)

    def present(self, i: int) -> bool:
        return bool(self.bits[i] & PTE_PRESENT)

    def set(self, i: int, pfn: int, bits: int) -> None:
        self.pfn[i] = pfn
        self.bits[i] = bits

    def clear(self, i: int) -> None:
        self.pfn[i] = 0
        self.bits[i] = 0

    def none_range(self, i: int, nr: int) -> bool:
        """pte_range_none()."""
        return not bool(self.bits[i : i + nr].any())


@dataclass(slots=True)
class HugePmd:
    """A present PMD leaf mapping a whole PMD-sized folio (pmd_trans_huge()).

    ``bits`` are :class:`~sim.mm.pte.PteFlags`, PRESENT included, so the
    rules of :mod:`sim.mm.pte` serve PTEs and huge PMDs alike.
    """

    pfn: int
    bits: int

    def __repr__(self) -> str:
        return f"HugePmd({self.pfn:#x}, {PteFlags(self.bits)!r})"


PmdEntry = PteTable | HugePmd


class PageTables:
    """The page-table tree of one mm_struct."""

    def __init__(self, arch: Arch) -> None:
        if len(arch.levels) < 2:
            raise ValueError(f"{arch.name}: the model needs at least two table levels")
        self.arch = arch
        self.shifts = arch.level_shifts
        self.bits = arch.levels
        #: Index of the level whose entries point to PTE tables (or huge leaves).
        self.table_level = len(arch.levels) - 2
        self.pmd_shift = self.shifts[self.table_level]
        self.pmd_size = 1 << self.pmd_shift
        self.ptrs_per_pte = 1 << arch.levels[-1]
        self.root: dict[int, Any] = {}
        #: The PMD-level entries again, keyed by ``addr >> pmd_shift``: the same
        #: objects as in the tree, for O(1) lookups on the fault path.
        self.flat: dict[int, PmdEntry] = {}

    def level_index(self, addr: int, level: int) -> int:
        return (addr >> self.shifts[level]) & ((1 << self.bits[level]) - 1)

    def pte_index(self, addr: int) -> int:
        return (addr >> self.arch.page_shift) & (self.ptrs_per_pte - 1)

    def _pmd_dict(self, addr: int, create: bool) -> dict[int, PmdEntry] | None:
        node = self.root
        for level in range(self.table_level):
            index = self.level_index(addr, level)
            child = node.get(index)
            if child is None:
                if not create:
                    return None
                child = {}
                node[index] = child
            node = child
        return node

    def get_pmd(self, addr: int) -> PmdEntry | None:
        """The entry at the PMD level for ``addr`` (None: pmd_none or no upper table)."""
        return self.flat.get(addr >> self.pmd_shift)

    def set_pmd(self, addr: int, entry: PmdEntry) -> None:
        node = self._pmd_dict(addr, create=True)
        assert node is not None
        node[self.level_index(addr, self.table_level)] = entry
        self.flat[addr >> self.pmd_shift] = entry

    def clear_pmd(self, addr: int) -> None:
        node = self._pmd_dict(addr, create=False)
        if node is not None:
            node.pop(self.level_index(addr, self.table_level), None)
        self.flat.pop(addr >> self.pmd_shift, None)

    def pte_alloc(self, addr: int) -> PteTable:
        """pte_alloc(): the PTE table for ``addr``, created if the PMD is none."""
        entry = self.get_pmd(addr)
        if entry is None:
            entry = PteTable(self.ptrs_per_pte)
            self.set_pmd(addr, entry)
        if not isinstance(entry, PteTable):
            raise AssertionError(f"{addr:#x}: PMD is a huge leaf, not a table")
        return entry

    def pte_table(self, addr: int) -> PteTable:
        """The PTE table for ``addr``, which must exist (e.g. just split from a huge PMD)."""
        entry = self.get_pmd(addr)
        assert isinstance(entry, PteTable)
        return entry

    def pmd_entries(self, start: int, end: int) -> Iterator[tuple[int, PmdEntry]]:
        """Existing PMD-level entries overlapping [start, end), ascending: (base, entry)."""
        yield from self._entries(self.root, 0, 0, start, end)

    def _overlapping(
        self, node: dict[int, Any], level: int, base: int, start: int, end: int
    ) -> list[tuple[int, int, int]]:
        """(index, lo, hi) of each entry of a ``level`` table mapping from ``base`` whose
        range [lo, hi) overlaps [start, end), ascending; a list, so callers may delete."""
        shift = self.shifts[level]
        size = 1 << shift
        result = []
        for index in sorted(node):
            lo = base + (index << shift)
            if lo + size > start and lo < end:
                result.append((index, lo, lo + size))
        return result

    def _entries(
        self, node: dict[int, Any], level: int, base: int, start: int, end: int
    ) -> Iterator[tuple[int, Any]]:
        for index, lo, _ in self._overlapping(node, level, base, start, end):
            child = node[index]
            if level == self.table_level:
                yield lo, child
            else:
                yield from self._entries(child, level + 1, lo, start, end)

    def pmd_ranges(self, start: int, end: int) -> list[tuple[int, PmdEntry, int, int]]:
        """(base, entry, lo, hi) for each existing PMD-level entry, [lo, hi) = its part
        of [start, end).  A list, so that callers may replace entries as they go."""
        size = self.pmd_size
        return [
            (base, entry, max(start, base), min(end, base + size))
            for base, entry in self.pmd_entries(start, end)
        ]

    def pte_range(self, base: int, lo: int, hi: int) -> range:
        """The PTE indices of [lo, hi) in the table mapping from ``base``."""
        shift = self.arch.page_shift
        return range((lo - base) >> shift, (hi - base) >> shift)

    def free_pgtables(self, start: int, end: int, in_use: Callable[[int, int], bool]) -> None:
        """free_pgtables() after unmapping [start, end).

        A table is freed when the range it maps overlaps [start, end) and no
        remaining VMA (``in_use(lo, hi)``): free_pgd_range() keeps any table
        reaching below ``floor`` (the previous VMA's end) or above ``ceiling``
        (the next VMA's start).
        """
        self._free(self.root, 0, 0, start, end, in_use)

    def _free(
        self,
        node: dict[int, Any],
        level: int,
        base: int,
        start: int,
        end: int,
        in_use: Callable[[int, int], bool],
    ) -> None:
        for index, lo, hi in self._overlapping(node, level, base, start, end):
            if level < self.table_level:
                self._free(node[index], level + 1, lo, start, end, in_use)
            if not in_use(lo, hi):
                del node[index]
                if level == self.table_level:
                    del self.flat[lo >> self.pmd_shift]
                else:
                    for key in [k for k in self.flat if lo <= k << self.pmd_shift < hi]:
                        del self.flat[key]

    def clear_all(self) -> None:
        self.root.clear()
        self.flat.clear()
