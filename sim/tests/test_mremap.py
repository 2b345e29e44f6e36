"""mremap() in the model against mm/mremap.c (6.12): what moves, what stays, which errno."""

from __future__ import annotations

import errno

import pytest

from sim.arch import get_arch
from sim.mm import Machine, MmError, Process
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.vma import VM_SOFTDIRTY
from sim.procfs import pagemap_entries

X86 = get_arch("x86_64")
PAGE = X86.page_size
PMD = 1 << 21
BASE = 1 << 40


def process() -> tuple[Machine, Process]:
    m = Machine(X86, ram_bytes=64 << 20)
    return m, m.spawn("main")


def entries(m: Machine, p: Process, addr: int, pages: int) -> list[tuple[bool, int | None, bool]]:
    return [(e.present, e.pfn, e.soft_dirty) for e in pagemap_entries(m, p, addr, pages)]


def test_a_move_keeps_frames_and_marks_each_moved_pte_soft_dirty() -> None:
    """move_ptes() + move_soft_dirty_pte(); copy_vma() copies the clean VM flags."""
    m, p = process()
    p.mmap(BASE, 4)
    p.touch(BASE, 3, write=True)
    p.clear_refs(4)
    before = entries(m, p, BASE, 4)
    assert p.mremap(BASE, 4, 4, new_addr=BASE + 8 * PAGE) == BASE + 8 * PAGE
    after = entries(m, p, BASE + 8 * PAGE, 4)
    assert [pfn for _, pfn, _ in after] == [pfn for _, pfn, _ in before]
    assert [sd for _, _, sd in after] == [True, True, True, False]  # the hole: clean VMA
    assert entries(m, p, BASE, 4) == [(False, None, False)] * 4  # unmapped
    (vma,) = p.vmas
    assert vma.start == BASE + 8 * PAGE and not vma.flags & VM_SOFTDIRTY


@pytest.mark.parametrize("arch_name", ["x86_64", "ppc64", "ppc64-4k"])
def test_a_whole_aligned_pte_table_moves_with_its_bits(arch_name: str) -> None:
    """move_normal_pmd() (HAVE_MOVE_PMD on x86 and radix powerpc): no soft-dirty added."""
    arch = get_arch(arch_name)
    m = Machine(arch, ram_bytes=64 << 20)
    p = m.spawn("main")
    pmd, n = arch.thp_pages * arch.page_size, arch.thp_pages
    p.mmap(BASE, n)
    p.touch(BASE, 2, write=True)
    p.clear_refs(4)
    table = p.mm.pt.get_pmd(BASE)
    p.mremap(BASE, n, n, new_addr=BASE + 2 * pmd)
    assert p.mm.pt.get_pmd(BASE + 2 * pmd) is table
    assert [sd for _, _, sd in entries(m, p, BASE + 2 * pmd, 2)] == [False, False]


def test_a_huge_pmd_moves_whole_when_aligned_and_splits_when_not() -> None:
    """move_huge_pmd() (soft-dirty set) vs split_huge_pmd() + move_ptes()."""
    m, p = process()
    p.mmap(BASE, 512)
    p.madvise(BASE, 512, "hugepage")
    p.touch(BASE, 1, write=True)
    huge = p.mm.pt.get_pmd(BASE)
    assert isinstance(huge, HugePmd)
    p.clear_refs(4)
    p.mremap(BASE, 512, 512, new_addr=BASE + 2 * PMD)
    moved = p.mm.pt.get_pmd(BASE + 2 * PMD)
    assert isinstance(moved, HugePmd) and moved.pfn == huge.pfn
    assert all(sd for _, _, sd in entries(m, p, BASE + 2 * PMD, 512))
    p.mremap(BASE + 2 * PMD, 512, 512, new_addr=BASE + 4 * PMD + PAGE)
    assert isinstance(p.mm.pt.get_pmd(BASE + 4 * PMD + PAGE), PteTable)
    pfns = [pfn for _, pfn, _ in entries(m, p, BASE + 4 * PMD + PAGE, 512)]
    assert pfns == list(range(huge.pfn, huge.pfn + 512))


def test_dontunmap_leaves_an_empty_anonymous_vma() -> None:
    """MREMAP_DONTUNMAP: unlink_anon_vmas(), pgoff = vm_start >> PAGE_SHIFT; reads map zero."""
    m, p = process()
    p.mmap(BASE, 2)
    p.touch(BASE, 2, write=True)
    pfns = [pfn for _, pfn, _ in entries(m, p, BASE, 2)]
    p.mremap(BASE, 2, 2, new_addr=BASE + 4 * PAGE, dontunmap=True)
    old, new = p.vmas
    assert old.anon_vma is None and old.pgoff == BASE // PAGE and new.anon_vma is not None
    assert [pfn for _, pfn, _ in entries(m, p, BASE + 4 * PAGE, 2)] == pfns
    p.touch(BASE, 2, write=False)
    assert [pfn for _, pfn, _ in entries(m, p, BASE, 2)] == [m.zero_pfn] * 2


def test_grow_in_place_and_its_errors() -> None:
    """vma_merge_extend(); ENOMEM without room; EFAULT across VMAs; EINVAL for flags/overlap."""
    _, p = process()
    p.mmap(BASE, 4)
    p.clear_refs(4)
    assert p.mremap(BASE, 4, 6) == BASE
    (vma,) = p.vmas
    assert vma.end == BASE + 6 * PAGE and not vma.flags & VM_SOFTDIRTY
    p.mmap(BASE + 8 * PAGE, 1)
    for args, err in [
        ((BASE, 6, 9), errno.ENOMEM),  # page 8 is mapped
        ((BASE, 2, 3), errno.ENOMEM),  # not at the VMA's end
        ((BASE + 7 * PAGE, 1, 1), errno.EFAULT),  # no VMA there
    ]:
        with pytest.raises(MmError) as info:
            p.mremap(*args)
        assert info.value.errno == err, args
    p.mprotect(BASE + 2 * PAGE, 1, "r")
    with pytest.raises(MmError) as info:
        p.mremap(BASE, 4, 4, new_addr=BASE + 16 * PAGE)  # leaves its VMA
    assert info.value.errno == errno.EFAULT
    for new_addr, new_pages, dontunmap in ((BASE + PAGE, 2, False),  # overlaps the source
                                           (BASE + 16 * PAGE, 3, True)):  # resizes
        with pytest.raises(MmError) as info:
            p.mremap(BASE, 2, new_pages, new_addr=new_addr, dontunmap=dontunmap)
        assert info.value.errno == errno.EINVAL, new_addr
