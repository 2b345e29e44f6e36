"""Huge shmem folios (sim/mm/shmem_thp.py): allocation rules, PMD mapping, splits.

Unit tests of the rules of shmem_allowable_huge_orders() / shmem_huge_global_enabled()
(mm/shmem.c), do_set_pmd() from finish_fault() and filemap_map_pmd(), the file
VMA's PMD split that only zaps (__split_huge_pmd_locked()) and the folio split of
a partly punched hole (shmem_undo_range()); and a property: for any sequence of
faults and partial munmaps over a huge shmem region, every present page reads as
a file page (bit 61) at folio_pfn + index.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import Arch, get_arch
from sim.flags import KPF
from sim.mm import Machine, Process
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.settings import ShmemMode, ThpSettings
from sim.procfs import kpage_values, pagemap_entries
from sim.smaps import thp_eligible

X86 = get_arch("x86_64")
PPC64 = get_arch("ppc64")
BASE = 1 << 40


def _machine(arch: Arch, mode: ShmemMode) -> tuple[Machine, Process]:
    m = Machine(arch, ram_bytes=64 << 20)
    m.ctx.settings = ThpSettings(shmem_enabled=mode)
    return m, m.spawn("main")


def _thp(m: Machine) -> int:
    return m.arch.thp_pages


def _kpf(m: Machine, pfn: int, bit: KPF) -> bool:
    return bool(kpage_values(m, "/proc/kpageflags", pfn) >> bit & 1)


def test_always_write_fault_maps_one_dirty_pmd_of_a_file_thp() -> None:
    m, p = _machine(X86, "always")
    n = _thp(m)
    p.mmap(BASE, n, kind="anon", share="shared")
    p.touch(BASE + 3 * m.arch.page_size, 1, write=True, tags=[5])
    pmd = p.mm.pt.get_pmd(BASE)
    assert isinstance(pmd, HugePmd)
    head = pmd.pfn
    assert m.mem.folio_nr_pages(head) == n
    entries = pagemap_entries(m, p, BASE, n)
    assert all(e.present and e.file_shared and e.exclusive for e in entries)
    assert [e.pfn for e in entries] == list(range(head, head + n))
    assert _kpf(m, head, KPF.COMPOUND_HEAD) and _kpf(m, head + 1, KPF.COMPOUND_TAIL)
    assert _kpf(m, head + 7, KPF.THP) and _kpf(m, head, KPF.DIRTY)
    assert not _kpf(m, head, KPF.ANON)
    # The page cache's n references and the PMD's.
    assert m.page_count(head + 9) == n + 1 and m.kpagecount(head + 9) == 1
    assert thp_eligible(p.mm, p.mm.vmas.vma_at(BASE))  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "hugepage", "huge"), [
    ("never", True, False),
    ("advise", False, False),
    ("advise", True, True),
    ("within_size", False, True),
    ("always", False, True),
    ("deny", True, False),
])
def test_mode_and_vm_hugepage_decide_the_folio_order(
    mode: ShmemMode, hugepage: bool, huge: bool
) -> None:
    m, p = _machine(X86, mode)
    n = _thp(m)
    f = m.create_memfd(n, "m")
    p.mmap(BASE, n, kind="memfd", share="shared", file=f)
    if hugepage:
        p.madvise(BASE, n, "hugepage")
    p.touch(BASE, 1, write=True, tags=[1])
    assert isinstance(p.mm.pt.get_pmd(BASE), HugePmd) == huge
    assert m.mem.folio_test_large(f.cache[0]) == huge


def test_within_size_small_region_is_not_thp_eligible_but_always_is() -> None:
    for mode, eligible in (("within_size", False), ("always", True)):
        m, p = _machine(X86, mode)  # type: ignore[arg-type]
        vma = p.mmap(BASE, _thp(m) - 1, kind="anon", share="shared")
        p.touch(BASE, 2, write=True)
        assert not m.mem.folio_test_large(m.mem.page_folio(
            int(p.mm.pt.pte_table(BASE).pfn[0])))
        assert thp_eligible(p.mm, vma) == eligible


def test_nohugepage_keeps_small_folios_under_always() -> None:
    m, p = _machine(X86, "always")
    n = _thp(m)
    vma = p.mmap(BASE, n, kind="anon", share="shared")
    p.madvise(BASE, n, "nohugepage")
    p.touch(BASE, 1, write=True)
    assert isinstance(p.mm.pt.get_pmd(BASE), PteTable)
    assert not thp_eligible(p.mm, vma)


def test_tmpfs_file_gets_no_huge_folio_under_always() -> None:
    """A linked tmpfs file lives on the rootfs, mounted without huge=."""
    m, p = _machine(X86, "always")
    n = _thp(m)
    f = m.create_file(n, "f")
    p.mmap(BASE, n, kind="file", share="shared", file=f)
    p.touch(BASE, 1, write=False)
    assert isinstance(p.mm.pt.get_pmd(BASE), PteTable)


@pytest.mark.parametrize("arch", [X86, PPC64], ids=lambda a: a.name)
def test_child_munmap_zaps_its_pmd_and_fault_around_maps_ptes(arch: Arch) -> None:
    """The measured case (sim/MODEL.md "shmem THP")."""
    m, p = _machine(arch, "advise")
    n = _thp(m)
    ps = m.arch.page_size
    p.mmap(BASE, n, kind="anon", share="shared")
    p.madvise(BASE, n, "hugepage")
    p.touch(BASE, n, write=True)
    c = p.fork("c")
    c.touch(BASE, n, write=False)
    pmd = p.mm.pt.get_pmd(BASE)
    assert isinstance(pmd, HugePmd) and isinstance(c.mm.pt.get_pmd(BASE), HugePmd)
    head = pmd.pfn
    assert m.kpagecount(head + 5) == 2 and not pagemap_entries(m, p, BASE, 1)[0].exclusive
    c.munmap(BASE, 4)
    assert c.mm.pt.get_pmd(BASE) is None
    assert m.mem.folio_nr_pages(head) == n
    assert m.kpagecount(head + 5) == 1 and _kpf(m, head, KPF.REFERENCED)
    c.touch(BASE + 8 * ps, 1, write=False)
    present = [i for i, e in enumerate(pagemap_entries(m, c, BASE, n)) if e.present]
    fault_around = m.ctx.facts.fault_around_pages(arch.page_shift)
    assert present == (list(range(4, 20)) if fault_around == 16 else [8])


def test_remove_splits_the_folio_and_drops_the_hole() -> None:
    m, p = _machine(X86, "always")
    n = _thp(m)
    f = m.create_memfd(n, "m")
    p.mmap(BASE, n, kind="memfd", share="shared", file=f)
    p.touch(BASE, n, write=True)
    head = f.cache[0]
    p.madvise(BASE + 4 * m.arch.page_size, 4, "remove")
    assert p.mm.pt.get_pmd(BASE) is None
    assert sorted(f.cache) == [i for i in range(n) if not 4 <= i < 8]
    for i in (0, 3, 8, n - 1):
        pfn = f.cache[i]
        assert pfn == head + i and not m.mem.folio_test_large(pfn)
        assert m.page_count(pfn) == 1 and _kpf(m, pfn, KPF.DIRTY)
    assert m.frame_freed(head + 5)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(
    st.tuples(st.sampled_from(["read", "write", "munmap", "fork_read"]),
              st.integers(0, 511), st.integers(1, 8)),
    min_size=1, max_size=12,
))
def test_present_pages_are_file_pages_at_folio_pfn_plus_index(
    ops: list[tuple[str, int, int]],
) -> None:
    """For any faults and partial munmaps over a huge shmem region (and a child's reads),
    every present page has bit 61 and the PFN of its index in the (one) huge folio."""
    m, p = _machine(X86, "always")
    n = _thp(m)
    ps = m.arch.page_size
    f = m.create_memfd(n, "m")
    p.mmap(BASE, n, kind="memfd", share="shared", file=f)
    p.touch(BASE, 1, write=True)
    head = f.cache[0]
    procs = [p]
    for op, page, length in ops:
        length = min(length, n - page)
        if op == "fork_read":
            child = p.fork(f"c{len(procs)}")
            procs.append(child)
            child.touch(BASE + page * ps, 1, write=False)
            continue
        target = procs[-1]
        if op == "munmap":
            target.munmap(BASE + page * ps, length)
            continue
        for i in range(page, page + length):
            if target.mm.vmas.vma_at(BASE + i * ps) is not None:
                target.touch(BASE + i * ps, 1, write=op == "write")
    assert m.mem.folio_nr_pages(head) == n
    for proc in procs:
        for i, e in enumerate(pagemap_entries(m, proc, BASE, n)):
            if e.present:
                assert e.file_shared and e.pfn == head + i


def test_zap_of_a_pte_batch_marks_the_folio_accessed_once() -> None:
    """zap_present_ptes() -> folio_pte_batch(): 16 young PTEs of one large page-cache folio
    mark it accessed once (PG_referenced), not 16 times (which would activate it)."""
    m, p = _machine(X86, "advise")
    n = _thp(m)
    ps = m.arch.page_size
    p.mmap(BASE, n, kind="anon", share="shared")
    p.madvise(BASE, n, "hugepage")
    p.touch(BASE, 1, write=True)
    c = p.fork("c")
    c.munmap(BASE, 4)
    c.touch(BASE + 8 * ps, 1, write=False)  # fault-around: PTEs [4, 20)
    table = c.mm.pt.get_pmd(BASE)
    assert isinstance(table, PteTable) and table.none_range(0, 4) and not table.none_range(4, 16)
    head = m.mem.page_folio(int(table.pfn[4]))
    assert not _kpf(m, head, KPF.REFERENCED)
    c.madvise(BASE + 4 * ps, 16, "dontneed")
    assert _kpf(m, head, KPF.REFERENCED) and not _kpf(m, head, KPF.ACTIVE)
    assert m.kpagecount(head + 5) == 1 and m.page_count(head) == n + 1


def test_no_huge_shmem_where_the_pmd_order_passes_max_pagecache_order() -> None:
    """arm64 with 64K pages: HPAGE_PMD_ORDER 13 > MAX_PAGECACHE_ORDER 11, so
    shmem_huge_global_enabled() allows nothing under ``always`` (THPeligible 0)."""
    m, p = _machine(get_arch("arm64-64k"), "always")
    n = _thp(m)
    assert n == 8192
    p.mmap(BASE, n, kind="anon", share="shared")
    p.touch(BASE, 1, write=True, tags=[5])
    assert not isinstance(p.mm.pt.get_pmd(BASE), HugePmd)
    pfn = pagemap_entries(m, p, BASE, 1)[0].pfn
    assert pfn is not None and m.mem.folio_nr_pages(pfn) == 1
    assert not thp_eligible(p.mm, p.mm.vmas.vma_at(BASE))  # type: ignore[arg-type]
