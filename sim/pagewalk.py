"""A page-table walker in the shape of mm/pagewalk.c.

:func:`walk_page_range` goes over the VMAs of [start, end) and down the table
levels of the architecture, calling the callbacks of :class:`MmWalkOps` the
way walk_page_range() does:

* ``test_walk(start, end, walk)``: per VMA; > 0 skips the VMA, < 0 aborts.
* ``pte_hole(start, end, depth, walk)``: a range without a VMA (depth -1,
  ``walk.vma`` None) or without a table at some level (depth = the kernel's
  real depth of that level: 0 pgd ... 3 pmd).
* ``pmd_entry(entry, addr, next, walk)``: each present entry of the PMD level
  (the level above the PTEs), a :class:`~sim.mm.pagetable.PteTable` or a huge
  :class:`~sim.mm.pagetable.HugePmd` leaf; it must handle both, as the kernel's
  must handle pmd_trans_huge().  Callbacks may treat a whole table slice at once.
* ``pte_entry(table, index, addr, next, walk)``: each PTE of a table, when the
  walker descends (a huge leaf is split first, as walk_pmd_range() does).
* ``hugetlb_entry(entry, hmask, addr, next, walk)``: in a hugetlb VMA, each
  huge page's entry (a :class:`~sim.mm.pagetable.HugePmd`, or None where no
  page is mapped: the kernel hands over a none entry when the table exists
  and calls ``pte_hole(addr, next, -1)`` when it does not; the model passes
  None for both, which every caller treats alike).  A hugetlb VMA is walked
  only by ops with a ``hugetlb_entry`` (walk_hugetlb_range()); the others skip it.

A non-zero return stops the walk and is returned.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sim.mm.mm_struct import MmStruct
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.vma import Vma

__all__ = ["Action", "MmWalk", "MmWalkOps", "walk_page_range", "walk_page_vma"]

#: The kernel's depth numbers (pgd 0, p4d 1, pud 2, pmd 3, pte 4) by level name.
_KERNEL_DEPTH = {"pgd": 0, "p4d": 1, "pud": 2, "pmd": 3, "pte": 4}


class Action(Enum):
    SUBTREE = "subtree"  # descend (the default)
    CONTINUE = "continue"  # do not descend into this entry
    AGAIN = "again"  # call the entry's callback again


PmdCallback = Callable[[PteTable | HugePmd, int, int, "MmWalk"], int]
PteCallback = Callable[[PteTable, int, int, int, "MmWalk"], int]
HoleCallback = Callable[[int, int, int, "MmWalk"], int]
HugetlbCallback = Callable[[HugePmd | None, int, int, int, "MmWalk"], int]
TestCallback = Callable[[int, int, "MmWalk"], int]


@dataclass(frozen=True)
class MmWalkOps:
    """struct mm_walk_ops: the callbacks a walk uses (None = not interested)."""

    pmd_entry: PmdCallback | None = None
    pte_entry: PteCallback | None = None
    pte_hole: HoleCallback | None = None
    test_walk: TestCallback | None = None
    hugetlb_entry: HugetlbCallback | None = None


@dataclass
class MmWalk:
    """struct mm_walk: what callbacks see."""

    ops: MmWalkOps
    mm: MmStruct
    private: Any
    vma: Vma | None = None
    action: Action = field(default=Action.SUBTREE)


def _depth(mm: MmStruct, level: int) -> int:
    """real_depth() of a table level (folded levels collapse upwards)."""
    return _KERNEL_DEPTH.get(mm.arch.level_names[level], level)


def _walk_levels(node: dict[int, Any] | None, level: int, addr: int, end: int, walk: MmWalk) -> int:
    """walk_pgd_range() ... walk_pmd_range(): one level of the tree over [addr, end)."""
    mm = walk.mm
    pt = mm.pt
    ops = walk.ops
    shift = pt.shifts[level]
    size = 1 << shift
    while addr < end:
        nxt = min((addr | (size - 1)) + 1, end)
        entry = None if node is None else node.get(pt.level_index(addr, level))
        if entry is None:
            if ops.pte_hole is not None:
                err = ops.pte_hole(addr, nxt, _depth(mm, level), walk)
                if err:
                    return err
        elif level < pt.table_level:
            if ops.pmd_entry is not None or ops.pte_entry is not None:
                err = _walk_levels(entry, level + 1, addr, nxt, walk)
                if err:
                    return err
        else:
            err = _walk_pmd_entry(addr, nxt, walk)
            if err:
                return err
        addr = nxt
    return 0


def _walk_pmd_entry(addr: int, nxt: int, walk: MmWalk) -> int:
    """The body of walk_pmd_range()'s loop for a non-none entry."""
    mm = walk.mm
    ops = walk.ops
    while True:
        walk.action = Action.SUBTREE
        entry = mm.pt.get_pmd(addr)
        if entry is None:  # a callback zapped it
            if ops.pte_hole is None:
                return 0
            return ops.pte_hole(addr, nxt, _depth(mm, mm.pt.table_level), walk)
        if ops.pmd_entry is not None:
            err = ops.pmd_entry(entry, addr, nxt, walk)
            if err:
                return err
        if walk.action is Action.AGAIN:
            continue
        if walk.action is Action.CONTINUE or ops.pte_entry is None:
            return 0
        if isinstance(entry, HugePmd):
            if walk.vma is None:
                return 0
            mm.split_huge_pmd(walk.vma, addr - addr % mm.pmd_size)
            entry = mm.pt.get_pmd(addr)
            if entry is None:  # a file VMA's PMD is only zapped (__split_huge_pmd_locked())
                if ops.pte_hole is None:
                    return 0
                return ops.pte_hole(addr, nxt, _depth(mm, mm.pt.table_level), walk)
        assert isinstance(entry, PteTable)
        err = _walk_pte_range(entry, addr, nxt, walk)
        if err or not _again(walk):
            return err


def _again(walk: MmWalk) -> bool:
    """A callback asked for the entry again (walk->action == ACTION_AGAIN)."""
    return walk.action is Action.AGAIN


def _walk_pte_range(table: PteTable, addr: int, end: int, walk: MmWalk) -> int:
    """walk_pte_range_inner(): pte_entry for every PTE of [addr, end)."""
    mm = walk.mm
    assert walk.ops.pte_entry is not None
    page = mm.page_size
    while addr < end:
        err = walk.ops.pte_entry(table, mm.pt.pte_index(addr), addr, addr + page, walk)
        if err:
            return err
        addr += page
    return 0


def _walk_hugetlb_range(start: int, end: int, walk: MmWalk) -> int:
    """walk_hugetlb_range(): ``hugetlb_entry`` for each huge page of [start, end) in a
    hugetlb VMA (the huge page size is the default hstate's)."""
    mm = walk.mm
    hugetlb_entry = walk.ops.hugetlb_entry
    hstate = mm.ctx.hstate
    if hugetlb_entry is None or hstate is None:
        return 0
    size = mm.page_size << hstate.order
    hmask = ~(size - 1)
    addr = start
    while addr < end:
        nxt = min((addr & hmask) + size, end)
        entry = mm.pt.get_pmd(addr & hmask)
        err = hugetlb_entry(entry if isinstance(entry, HugePmd) else None, hmask, addr, nxt, walk)
        if err:
            return err
        addr = nxt
    return 0


def _walk_vma_range(start: int, end: int, walk: MmWalk) -> int:
    """__walk_page_range(): walk_hugetlb_range() for a hugetlb VMA (only with a
    hugetlb_entry), else the table levels."""
    assert walk.vma is not None
    if walk.vma.hugetlb:
        return _walk_hugetlb_range(start, end, walk)
    return _walk_levels(walk.mm.pt.root, 0, start, end, walk)


def _walk_page_test(start: int, end: int, walk: MmWalk) -> int:
    """walk_page_test(): the caller's test_walk (the model has no VM_PFNMAP VMAs)."""
    if walk.ops.test_walk is not None:
        return walk.ops.test_walk(start, end, walk)
    return 0


def walk_page_range(
    mm: MmStruct, start: int, end: int, ops: MmWalkOps, private: Any
) -> int:
    """walk_page_range(): walk [start, end) of ``mm`` VMA by VMA; -EINVAL for an empty range."""
    if start >= end:
        return -errno.EINVAL
    walk = MmWalk(ops=ops, mm=mm, private=private)
    vma = mm.find_vma(start)
    err = 0
    while True:
        if vma is None:  # after the last VMA
            walk.vma = None
            nxt = end
            err = ops.pte_hole(start, nxt, -1, walk) if ops.pte_hole else 0
        elif start < vma.start:  # outside a VMA
            walk.vma = None
            nxt = min(end, vma.start)
            err = ops.pte_hole(start, nxt, -1, walk) if ops.pte_hole else 0
        else:  # inside a VMA
            walk.vma = vma
            nxt = min(end, vma.end)
            vma = mm.find_vma(vma.end)
            err = _walk_page_test(start, nxt, walk)
            if err > 0:
                err = 0  # skip this VMA: positive values only steer the walk
            elif err == 0:
                err = _walk_vma_range(start, nxt, walk)
        if err:
            break
        start = nxt
        if start >= end:
            break
    return err


def walk_page_vma(vma: Vma, mm: MmStruct, ops: MmWalkOps, private: Any) -> int:
    """walk_page_vma(): walk one whole VMA."""
    walk = MmWalk(ops=ops, mm=mm, private=private, vma=vma)
    return _walk_vma_range(vma.start, vma.end, walk)
