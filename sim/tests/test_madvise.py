"""madvise() advice in the model: each expected value follows from the 6.12 function named.

The guest side of the same rules is the madv_* catalog (tests/scenarios/); these run
without QEMU.
"""

from __future__ import annotations

import errno

import pytest

from sim.arch import get_arch
from sim.flags import kpf_names
from sim.mm import Machine, MmError
from sim.mm.madvise import MADV, advice_number
from sim.procfs import kpage_values, pagemap_entries
from sim.smaps import smaps, smaps_rollup, vm_flag_mnemonics

X86 = get_arch("x86_64")
BASE = 1 << 40
#: MADV_FREE'd: lru_lazyfree() cleared PG_swapbacked (and active/referenced).
LAZYFREE = {"UPTODATE", "LRU", "MMAP", "ANON", "OWNER_2"}


@pytest.fixture
def m() -> Machine:
    return Machine(X86, ram_bytes=256 << 20)


def _flags(m: Machine, pfn: int | None) -> set[str]:
    assert pfn is not None
    return set(kpf_names(kpage_values(m, "/proc/kpageflags", pfn)))


def test_names_are_the_kernels_numbers() -> None:
    """include/uapi/asm-generic/mman-common.h."""
    assert [advice_number(a) for a in ("dontneed", "free", "wipeonfork", "collapse")] == [
        4, 8, 18, 25]
    assert advice_number(102) == MADV.GUARD_INSTALL
    with pytest.raises(ValueError, match="unknown advice"):
        advice_number("guard")


@pytest.mark.parametrize("advice", [102, 103, 100, -1, 26, 1 << 20])
def test_unknown_advice_is_einval_and_changes_nothing(m: Machine, advice: int) -> None:
    """madvise_behavior_valid(): 6.12 has no guard regions, no MEMORY_FAILURE here."""
    p = m.spawn("main")
    p.mmap(BASE, 2)
    p.touch(BASE, 2, write=True, tags=[1, 2])
    before = pagemap_entries(m, p, BASE, 2)
    with pytest.raises(MmError) as caught:
        p.madvise(BASE, 2, advice)
    assert caught.value.errno == errno.EINVAL
    assert pagemap_entries(m, p, BASE, 2) == before


def test_free_then_write(m: Machine) -> None:
    """madvise_free_pte_range(): clean, old PTEs, lazyfree folio; the MMU re-dirties on write."""
    p = m.spawn("main")
    p.mmap(BASE, 2)
    p.touch(BASE, 2, write=True, tags=[1, 2])
    p.madvise(BASE, 2, "free")
    pfns = [e.pfn for e in pagemap_entries(m, p, BASE, 2)]
    assert all(e.present for e in pagemap_entries(m, p, BASE, 2))
    assert _flags(m, pfns[0]) == LAZYFREE
    assert smaps(p.mm)[0].lazyfree == 2 * X86.page_size
    p.touch(BASE, 1, write=True, tags=[3])
    assert smaps(p.mm)[0].lazyfree == X86.page_size
    assert [e.pfn for e in pagemap_entries(m, p, BASE, 2)] == pfns


def test_free_of_a_file_vma_is_einval(m: Machine) -> None:
    """madvise_free_single_vma(): !vma_is_anonymous() -> EINVAL (shared anon is shmem)."""
    p = m.spawn("main")
    p.mmap(BASE, 1, share="shared")
    with pytest.raises(MmError) as caught:
        p.madvise(BASE, 1, "free")
    assert caught.value.errno == errno.EINVAL


def test_hole_is_enomem_after_the_mapped_parts(m: Machine) -> None:
    """madvise_walk_vmas(): the mapped pieces are advised, then ENOMEM."""
    p = m.spawn("main")
    p.mmap(BASE, 3)
    p.touch(BASE, 3, write=True, tags=[1, 2, 3])
    p.munmap(BASE + X86.page_size, 1)
    with pytest.raises(MmError) as caught:
        p.madvise(BASE, 3, "dontneed")
    assert caught.value.errno == errno.ENOMEM
    assert not any(e.present for e in pagemap_entries(m, p, BASE, 3))


def test_wipeonfork_and_dontfork(m: Machine) -> None:
    """dup_mmap(): VM_DONTCOPY skipped, VM_WIPEONFORK copied empty; WIPEONFORK EINVAL on files."""
    p = m.spawn("main")
    wipe, skip = BASE, BASE + (2 << 20)
    p.mmap(wipe, 1)
    p.mmap(skip, 1)
    p.touch(wipe, 1, write=True, tags=[1])
    p.touch(skip, 1, write=True, tags=[2])
    p.madvise(wipe, 1, "wipeonfork")
    p.madvise(skip, 1, "dontfork")
    child = p.fork("child")
    assert [v.start for v in child.vmas] == [wipe]
    assert not pagemap_entries(m, child, wipe, 1)[0].present
    assert "wf" in vm_flag_mnemonics(child.vmas[0].flags)
    f = m.create_file(1, tags=[7])
    p.mmap(BASE + (4 << 20), 1, kind="file", file=f)
    with pytest.raises(MmError) as caught:
        p.madvise(BASE + (4 << 20), 1, "wipeonfork")
    assert caught.value.errno == errno.EINVAL


def test_collapse_makes_one_pmd_mapped_thp(m: Machine) -> None:
    """madvise_collapse(): none PTEs allowed without limit (not khugepaged), old frames freed."""
    p = m.spawn("main")
    nr = X86.thp_pages
    p.mmap(BASE, nr)
    p.touch(BASE, 3, write=True, tags=[1, 2, 3])
    old = pagemap_entries(m, p, BASE, 1)[0].pfn
    p.madvise(BASE, nr, "collapse")
    entries = pagemap_entries(m, p, BASE, nr)
    head = entries[0].pfn
    assert head is not None and head % nr == 0 and m.frame_freed(old or 0)
    assert [e.pfn for e in entries] == list(range(head, head + nr))
    assert {"THP", "COMPOUND_HEAD"} <= _flags(m, head)
    assert [m.frame_tag(head + i) for i in range(4)] == [1, 2, 3, 0]


@pytest.mark.parametrize(("first", "end", "err"), [
    (1, 2, errno.EINVAL),  # inside one PMD range, not from its start: hend < hstart
    (0, 1, None),  # from its start: hstart == hend, nothing to do
    (1, 512, None),  # not from its start but up to its end: hstart == hend again
])
def test_collapse_of_less_than_a_pmd_range(m: Machine, first: int, end: int,
                                          err: int | None) -> None:
    """madvise_collapse(): ``thps == (hend - hstart) >> HPAGE_PMD_SHIFT`` in unsigned long."""
    p = m.spawn("main")
    nr = X86.thp_pages
    p.mmap(BASE, nr, locked=True)  # populated: the VMA has its anon_vma
    if err is None:
        p.madvise(BASE + first * X86.page_size, end - first, "collapse")
        return
    with pytest.raises(MmError) as caught:
        p.madvise(BASE + first * X86.page_size, end - first, "collapse")
    assert caught.value.errno == err


def test_collapse_in_a_locked_vma_mlocks_the_new_thp(m: Machine) -> None:
    """collapse_huge_page() -> folio_add_lru_vma(): mlock_new_folio() in a VM_LOCKED VMA."""
    p = m.spawn("main")
    nr = X86.thp_pages
    p.mmap(BASE, nr)
    p.mlock(BASE, nr)
    p.madvise(BASE, nr, "collapse")
    m.mem.lru_add_drain()
    head = pagemap_entries(m, p, BASE, 1)[0].pfn
    assert head is not None and {"THP", "MLOCKED", "UNEVICTABLE"} <= _flags(m, head)


def test_flags_advice_splitting_a_vma_splits_its_huge_pmd(m: Machine) -> None:
    """madvise_update_vma() -> __split_vma() -> vma_adjust_trans_huge(): MADV_NOHUGEPAGE
    of the first page cuts the VMA inside a huge PMD, which is split to PTEs first; the
    folio stays whole (khugepaged.c collapse_full_of_compound)."""
    p = m.spawn("main")
    nr = X86.thp_pages
    p.mmap(BASE, nr)
    p.madvise(BASE, nr, "hugepage")
    p.touch(BASE, 1, write=True)
    assert smaps_rollup(p.mm).kb()["AnonHugePages"] == 2048
    p.madvise(BASE, 1, "nohugepage")
    p.madvise(BASE, nr, "nohugepage")
    assert len(p.vmas) == 1
    assert smaps_rollup(p.mm).kb()["AnonHugePages"] == 0
    head = pagemap_entries(m, p, BASE, 1)[0].pfn
    assert head is not None and {"THP", "COMPOUND_HEAD"} <= _flags(m, head)


def test_collapse_of_a_pte_mapped_large_folio(m: Machine) -> None:
    """hpage_collapse_scan_pmd() checks a large folio whole (LRU, is_refcount_suitable());
    __collapse_huge_page_copy_succeeded() drops one mapping and reference per PTE: the
    old THP, mapped by one PTE after MADV_DONTNEED of the rest, is freed."""
    p = m.spawn("main")
    nr = X86.thp_pages
    p.mmap(BASE, nr)
    p.madvise(BASE, nr, "hugepage")
    p.touch(BASE, 1, write=True, tags=[7])
    old = pagemap_entries(m, p, BASE, 1)[0].pfn
    p.madvise(BASE, nr, "nohugepage")
    p.madvise(BASE + X86.page_size, nr - 1, "dontneed")
    assert smaps_rollup(p.mm).kb()["AnonHugePages"] == 0
    p.madvise(BASE, nr, "hugepage")
    p.madvise(BASE, nr, "collapse")
    head = pagemap_entries(m, p, BASE, 1)[0].pfn
    assert old is not None and head is not None and head != old and m.frame_freed(old)
    assert smaps_rollup(p.mm).kb()["AnonHugePages"] == 2048
    assert m.frame_tag(head) == 7


def test_remove_punches_a_hole_in_every_mapping(m: Machine) -> None:
    """shmem_fallocate(PUNCH_HOLE): unmap_mapping_range() in every mm, then the page cache."""
    f = m.create_file(2, tags=[5, 6])
    p = m.spawn("main")
    p.mmap(BASE, 2, kind="file", share="shared", file=f)
    p.touch(BASE, 2, write=False)
    child = p.fork("child")
    child.touch(BASE, 2, write=False)
    p.madvise(BASE, 1, "remove")
    assert 0 not in f.cache and 1 in f.cache
    for proc in (p, child):
        assert [e.present for e in pagemap_entries(m, proc, BASE, 2)] == [False, True]
