"""The generic walker against mm/pagewalk.c's contract (walk_page_range())."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import ARCH_NAMES, Arch, get_arch
from sim.mm import Machine
from sim.mm.pagetable import HugePmd, PteTable
from sim.pagewalk import Action, MmWalk, MmWalkOps, walk_page_range

X86 = get_arch("x86_64")
BASE = 1 << 40
PAGE = X86.page_size
PMD = 1 << 21


def recorder() -> tuple[list[tuple[object, ...]], MmWalkOps]:
    calls: list[tuple[object, ...]] = []

    def hole(start: int, end: int, depth: int, walk: MmWalk) -> int:
        calls.append(("hole", start, end, depth, walk.vma is not None))
        return 0

    def pmd(entry: PteTable | HugePmd, addr: int, end: int, walk: MmWalk) -> int:
        calls.append(("pmd", addr, end, type(entry).__name__))
        return 0

    return calls, MmWalkOps(pmd_entry=pmd, pte_hole=hole)


def test_empty_range_is_einval() -> None:
    """walk_page_range(): ``if (start >= end) return -EINVAL``."""
    m = Machine(X86, ram_bytes=64 << 20)
    mm = m.spawn("main").mm
    assert walk_page_range(mm, BASE, BASE, MmWalkOps(), None) == -errno.EINVAL


def test_holes_and_entries() -> None:
    """Outside VMAs: pte_hole(depth -1, walk->vma NULL).  Inside a VMA: a missing
    upper table is a hole at its level (walk_pgd_range() depth 0, walk_pud_range()
    real_depth(2) = 2 with the p4d folded, walk_pmd_range() depth 3); a present
    PMD entry goes to pmd_entry, clipped to the VMA and the PMD."""
    m = Machine(X86, ram_bytes=64 << 20)
    p = m.spawn("main")
    p.mmap(BASE + PMD - 2 * PAGE, 4)  # straddles a PMD boundary
    p.touch(BASE + PMD - 2 * PAGE, 1, write=True)
    calls, ops = recorder()
    assert walk_page_range(p.mm, BASE, BASE + 2 * PMD, ops, None) == 0
    assert calls == [
        ("hole", BASE, BASE + PMD - 2 * PAGE, -1, False),
        ("pmd", BASE + PMD - 2 * PAGE, BASE + PMD, "PteTable"),
        ("hole", BASE + PMD, BASE + PMD + 2 * PAGE, 3, True),
        ("hole", BASE + PMD + 2 * PAGE, BASE + 2 * PMD, -1, False),
    ]
    calls.clear()
    far = BASE + (1 << 39)  # another PGD entry: nothing below it
    p.mmap(far, 1)
    walk_page_range(p.mm, far, far + PAGE, ops, None)
    assert calls == [("hole", far, far + PAGE, 0, True)]
    calls.clear()
    mid = BASE + (1 << 30)  # same PGD entry, another PUD entry
    p.mmap(mid, 1)
    walk_page_range(p.mm, mid, mid + PAGE, ops, None)
    assert calls == [("hole", mid, mid + PAGE, 2, True)]


def test_two_level_tables_report_depth_zero() -> None:
    """i386 without PAE: the PMD folds into the PGD, real_depth(3) collapses to 0."""
    arch = get_arch("i386")
    m = Machine(arch, ram_bytes=64 << 20)
    p = m.spawn("main")
    p.mmap(0x3000_0000, 2)
    calls, ops = recorder()
    walk_page_range(p.mm, 0x3000_0000, 0x3000_2000, ops, None)
    assert calls == [("hole", 0x3000_0000, 0x3000_2000, 0, True)]


def test_huge_leaf_and_test_walk() -> None:
    """pmd_entry sees a THP's huge leaf as is; test_walk > 0 skips a VMA silently,
    < 0 aborts the walk with that value."""
    m = Machine(X86, ram_bytes=64 << 20)
    p = m.spawn("main")
    p.mmap(BASE, 512)
    p.madvise(BASE, 512, "hugepage")
    p.touch(BASE, 1, write=True)
    calls, ops = recorder()
    walk_page_range(p.mm, BASE, BASE + PMD, ops, None)
    assert calls == [("pmd", BASE, BASE + PMD, "HugePmd")]
    calls.clear()
    skip = MmWalkOps(pmd_entry=ops.pmd_entry, pte_hole=ops.pte_hole,
                     test_walk=lambda s, e, w: 1)
    assert walk_page_range(p.mm, BASE, BASE + PMD, skip, None) == 0
    assert calls == []
    abort = MmWalkOps(pmd_entry=ops.pmd_entry, test_walk=lambda s, e, w: -errno.EINTR)
    assert walk_page_range(p.mm, BASE, BASE + PMD, abort, None) == -errno.EINTR


def test_pte_entry_splits_a_huge_leaf() -> None:
    """walk_pmd_range(): with a pte_entry callback and a VMA, split_huge_pmd() runs
    before walk_pte_range(), which calls pte_entry once per PTE."""
    m = Machine(X86, ram_bytes=64 << 20)
    p = m.spawn("main")
    p.mmap(BASE, 512)
    p.madvise(BASE, 512, "hugepage")
    p.touch(BASE, 1, write=True)
    seen: list[int] = []

    def pte(table: PteTable, index: int, addr: int, end: int, walk: MmWalk) -> int:
        assert end == addr + PAGE and index == (addr - BASE) // PAGE
        seen.append(addr)
        return 0

    walk_page_range(p.mm, BASE, BASE + 8 * PAGE, MmWalkOps(pte_entry=pte), None)
    assert seen == [BASE + i * PAGE for i in range(8)]
    assert isinstance(p.mm.pt.get_pmd(BASE), PteTable)


def test_action_continue_and_stop() -> None:
    """ACTION_CONTINUE keeps the walker out of the table; a non-zero return stops."""
    m = Machine(X86, ram_bytes=64 << 20)
    p = m.spawn("main")
    p.mmap(BASE, 4)
    p.touch(BASE, 4, write=True)
    ptes: list[int] = []

    def pmd(entry: PteTable | HugePmd, addr: int, end: int, walk: MmWalk) -> int:
        walk.action = Action.CONTINUE
        return 0

    def pte(table: PteTable, index: int, addr: int, end: int, walk: MmWalk) -> int:
        ptes.append(addr)
        return 7 if len(ptes) == 2 else 0

    walk_page_range(p.mm, BASE, BASE + 4 * PAGE, MmWalkOps(pmd_entry=pmd, pte_entry=pte), None)
    assert ptes == []
    assert walk_page_range(p.mm, BASE, BASE + 4 * PAGE, MmWalkOps(pte_entry=pte), None) == 7
    assert ptes == [BASE, BASE + PAGE]


@settings(max_examples=40, deadline=None)
@given(
    arch_name=st.sampled_from(ARCH_NAMES),
    layout=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 40), st.booleans()),
                    max_size=5),
    span=st.tuples(st.integers(0, 200), st.integers(1, 400)),
)
def test_callbacks_tile_the_range(
    arch_name: str, layout: list[tuple[int, int, bool]], span: tuple[int, int]
) -> None:
    """Every byte of [start, end) is reported exactly once, in order, by pte_hole or
    pmd_entry, and pmd_entry ranges never leave their VMA or PMD."""
    arch: Arch = get_arch(arch_name)
    m = Machine(arch, ram_bytes=64 << 20)
    p = m.spawn("main")
    page = arch.page_size
    pmd_size = 1 << arch.level_shifts[-2]
    base = (arch.task_size // 4) // pmd_size * pmd_size
    cursor = 0
    for gap, nr_pages, touch in layout:
        start = base + (cursor + gap) * page
        p.mmap(start, nr_pages)
        if touch:
            p.touch(start, nr_pages, write=True)
        cursor += gap + nr_pages
    calls, ops = recorder()
    first, length = span
    start, end = base + first * page, base + (first + length) * page
    walk_page_range(p.mm, start, end, ops, None)
    position = start
    for call in calls:
        assert call[1] == position
        assert isinstance(call[2], int) and call[2] > position
        if call[0] == "pmd":
            vma = p.mm.vmas.vma_at(position)
            assert vma is not None and call[2] <= vma.end
            assert (call[2] - 1) // pmd_size == position // pmd_size
        position = call[2]
    assert position == end


@pytest.mark.parametrize("arch_name", ARCH_NAMES)
def test_walk_with_no_vmas_is_one_hole(arch_name: str) -> None:
    arch = get_arch(arch_name)
    m = Machine(arch, ram_bytes=64 << 20)
    calls, ops = recorder()
    walk_page_range(m.spawn("main").mm, 0, arch.task_size, ops, None)
    assert calls == [("hole", 0, arch.task_size, -1, False)]
