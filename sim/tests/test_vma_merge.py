"""VMA merges and splits on mmap and mprotect, MAP_FIXED, MAP_POPULATE, MAP_LOCKED, memfd.

Each expected layout follows the 6.12 function named in the test (mm/vma.c,
mm/mmap.c, mm/mprotect.c, mm/gup.c).
"""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest

from sim.arch import get_arch
from sim.flags import kpf_names
from sim.mm import PINNED, Machine, MmError, Process
from sim.mm.facts import FACTS_6_1, KernelFacts
from sim.mm.vma import VM_LOCKED, VM_SOFTDIRTY
from sim.procfs import kpage_values, pagemap_entries

X86 = get_arch("x86_64")
BASE = 1 << 40
PAGE = X86.page_size


def at(page: int) -> int:
    return BASE + page * PAGE


def ranges(p: Process) -> list[tuple[int, int]]:
    """The VMAs as page ranges from BASE."""
    return [((v.start - BASE) // PAGE, (v.end - BASE) // PAGE) for v in p.vmas]


def soft_dirty(m: Machine, p: Process, first: int, n: int) -> list[bool]:
    return [e.soft_dirty for e in pagemap_entries(m, p, at(first), n)]


@pytest.fixture
def m() -> Machine:
    return Machine(X86, ram_bytes=256 << 20)


def test_adjacent_mmaps_merge(m: Machine) -> None:
    """vma_merge_new_range(): equal flags, no anon_vma yet, continuous pgoff: prev extends."""
    p = m.spawn("p")
    p.mmap(at(0), 4)
    p.touch(at(0), 2, write=True)
    p.mmap(at(4), 4)
    assert ranges(p) == [(0, 8)]


def test_adjacent_mmaps_of_other_kinds_do_not_merge(m: Machine) -> None:
    """is_mergeable_vma(): another prot (flags) or another file (memfd) keeps VMAs apart."""
    p = m.spawn("p")
    p.mmap(at(0), 4)
    p.mmap(at(4), 2, prot="r")
    p.mmap(at(6), 2, kind="memfd", file=m.create_memfd(2, "/memfd:pmh (deleted)"))
    p.mmap(at(8), 2, share="shared")
    p.mmap(at(10), 2, share="shared")  # shared anonymous: a shmem file each
    assert ranges(p) == [(0, 4), (4, 6), (6, 8), (8, 10), (10, 12)]


@pytest.mark.parametrize(("facts", "expected"), [
    # is_mergeable_anon_vma(): 6.12 joins the new range to prev only.
    (PINNED, [(0, 8), (8, 12)]),
    # 6.1's mmap_region() checks next first, then prev against next's anon_vma.
    (FACTS_6_1, [(0, 4), (4, 12)]),
])
def test_a_range_between_incompatible_anon_vmas_merges_on_one_side(
    facts: KernelFacts, expected: list[tuple[int, int]]
) -> None:
    """A new range between two VMAs with anon_vmas of their own merges with one of them."""
    m = Machine(X86, ram_bytes=256 << 20, facts=facts)
    p = m.spawn("p")
    p.mmap(at(0), 4)
    p.touch(at(0), 4, write=True)
    p.mmap(at(8), 4)
    p.touch(at(8), 4, write=True)
    p.mmap(at(4), 4)
    assert ranges(p) == expected


def test_mapping_into_a_hole_merges_both_pieces_and_redirties(m: Machine) -> None:
    """Both pieces share one anon_vma: the new range joins them; __mmap_region() sets
    VM_SOFTDIRTY on the merged VMA, so clean written pages read soft-dirty again."""
    p = m.spawn("p")
    p.mmap(at(0), 8)
    p.touch(at(0), 8, write=True)
    p.munmap(at(3), 2)
    p.clear_refs(4)
    assert not any(soft_dirty(m, p, 0, 3))
    p.mmap(at(3), 2)
    assert ranges(p) == [(0, 8)]
    assert all(soft_dirty(m, p, 0, 8))


def test_map_fixed_unmaps_what_it_covers(m: Machine) -> None:
    """MAP_FIXED: the old pages are zapped, an equal mapping merges back, another splits."""
    p = m.spawn("p")
    p.mmap(at(0), 8)
    p.touch(at(0), 8, write=True)
    p.mmap(at(2), 2, fixed=True)
    assert ranges(p) == [(0, 8)]
    assert [e.present for e in pagemap_entries(m, p, at(0), 8)] == [
        True, True, False, False, True, True, True, True]
    p.mmap(at(6), 1, prot="r", fixed=True)
    assert ranges(p) == [(0, 6), (6, 7), (7, 8)]


def test_map_fixed_noreplace_on_a_mapping_is_eexist(m: Machine) -> None:
    p = m.spawn("p")
    p.mmap(at(0), 4)
    with pytest.raises(MmError) as e:
        p.mmap(at(2), 4)
    assert e.value.errno == errno.EEXIST
    assert ranges(p) == [(0, 4)]


def test_mprotect_merge_loses_softdirty_on_6_12(m: Machine) -> None:
    """mprotect_fixup(): the merged VMA gets the clean VMA's newflags (vma_merge_propagates_
    softdirty False); the fresh neighbour's unwritten pages stop reading soft-dirty."""
    p = m.spawn("p")
    p.mmap(at(0), 4, prot="r")
    p.clear_refs(4)
    p.mmap(at(4), 4)
    assert ranges(p) == [(0, 4), (4, 8)]
    assert soft_dirty(m, p, 4, 4) == [True] * 4
    p.mprotect(at(0), 4, "rw")
    assert ranges(p) == [(0, 8)]
    assert not p.vmas[0].flags & VM_SOFTDIRTY
    assert soft_dirty(m, p, 0, 8) == [False] * 8


def test_mprotect_merge_keeps_softdirty_with_the_upstream_fix() -> None:
    """6707915e030a (6.19): the merged VMA keeps VM_SOFTDIRTY of the VMA it absorbed."""
    m = Machine(X86, ram_bytes=256 << 20,
                facts=replace(PINNED, vma_merge_propagates_softdirty=True))
    p = m.spawn("p")
    p.mmap(at(0), 4, prot="r")
    p.clear_refs(4)
    p.mmap(at(4), 4)
    p.mprotect(at(0), 4, "rw")
    assert ranges(p) == [(0, 8)]
    assert soft_dirty(m, p, 0, 8) == [True] * 8


def test_mprotect_of_a_middle_range_splits_and_merges_back(m: Machine) -> None:
    """vma_modify(): a middle range splits in three; restoring its prot merges all three."""
    p = m.spawn("p")
    p.mmap(at(0), 8)
    p.touch(at(0), 8, write=True)
    p.mprotect(at(2), 2, "r")
    assert ranges(p) == [(0, 2), (2, 4), (4, 8)]
    p.mprotect(at(2), 2, "rw")
    assert ranges(p) == [(0, 8)]


def test_populate_faults_as_gup_does(m: Machine) -> None:
    """populate_vma_page_range(): private rw -> write faults (anonymous pages), r -> read
    faults (zero page), shared -> read faults (shmem pages), PROT_NONE -> nothing."""
    p = m.spawn("p")
    p.mmap(at(0), 2, populate=True)
    p.mmap(at(4), 2, prot="r", populate=True)
    p.mmap(at(8), 2, kind="memfd", share="shared", populate=True,
           file=m.create_memfd(2, "/memfd:pmh (deleted)"))
    p.mmap(at(12), 2, prot="none", populate=True)
    entries = pagemap_entries(m, p, at(0), 14)
    assert [e.present for e in entries] == [True] * 2 + [False] * 2 + [True] * 2 + [False] * 2 \
        + [True] * 2 + [False] * 2 + [False] * 2
    anon = entries[0].pfn
    assert anon is not None
    assert "ANON" in kpf_names(kpage_values(m, "/proc/kpageflags", anon))
    assert entries[4].pfn == m.zero_pfn
    assert entries[8].file_shared


def test_map_locked_sets_vm_locked_and_populates(m: Machine) -> None:
    p = m.spawn("p")
    p.mmap(at(0), 2, locked=True)
    assert p.vmas[0].flags & VM_LOCKED
    assert all(e.present for e in pagemap_entries(m, p, at(0), 2))


def test_memfd_dies_with_its_last_mapping(m: Machine) -> None:
    """A closed memfd lives in its VMAs only: the last munmap truncates it."""
    p = m.spawn("p")
    file = m.create_memfd(2, "/memfd:pmh (deleted)")
    p.mmap(at(0), 2, kind="memfd", share="shared", file=file)
    p.touch(at(0), 2, write=True)
    child = p.fork("c")
    p.munmap(at(0), 2)
    assert len(file.cache) == 2
    child.munmap(at(0), 2)
    assert file.cache == {}
