"""Model scenarios: each expected value follows from the 6.12 function named in the test.

Flags are compared as exact sets of KPF names: a flag the model sets or
misses is a failure.  The default facts are those of the patched kernel the
harness boots: no "KSM" on ordinary anonymous pages (linux-patch/0001 fixes
stable_page_flags()'s ``mapping & PAGE_MAPPING_KSM`` test; see KernelFacts).
"""

from __future__ import annotations

import errno

import pytest

from sim.arch import Arch, get_arch
from sim.flags import kpf_names
from sim.formats import PagemapEntry
from sim.mm import UNPATCHED_6_12, KernelFacts, Machine, MmError, Process
from sim.procfs import kpage_values, pagemap_entries
from sim.smaps import smaps

X86 = get_arch("x86_64")
PPC64 = get_arch("ppc64")
THP_ARCHES = [X86, PPC64, get_arch("ppc64-4k")]
BASE = 1 << 40

ANON = {"UPTODATE", "LRU", "MMAP", "ANON", "SWAPBACKED"}
ANON_EXCLUSIVE = ANON | {"OWNER_2"}
#: A tmpfs page written once by the agent (shmem_write_begin(SGP_WRITE) sets
#: PG_referenced; shmem_write_end() uptodate + dirty; folio_add_lru()).
FILE_PAGE = {"REFERENCED", "UPTODATE", "DIRTY", "LRU", "SWAPBACKED"}
ZERO = {"ZERO_PAGE", "RESERVED"}


def flags(m: Machine, pfn: int | None) -> set[str]:
    assert pfn is not None
    return set(kpf_names(kpage_values(m, "/proc/kpageflags", pfn)))


def mapcount(m: Machine, pfn: int | None) -> int:
    assert pfn is not None
    return kpage_values(m, "/proc/kpagecount", pfn)


def pm(m: Machine, p: Process, page: int, n: int = 1, base: int = BASE) -> list[PagemapEntry]:
    return pagemap_entries(m, p, base + page * m.arch.page_size, n)


def one(m: Machine, p: Process, page: int, base: int = BASE) -> PagemapEntry:
    return pm(m, p, page, 1, base)[0]


def addr(m: Machine, page: int, base: int = BASE) -> int:
    return base + page * m.arch.page_size


@pytest.fixture
def m() -> Machine:
    return Machine(X86, ram_bytes=256 << 20)


def test_anonymous_write_fault(m: Machine) -> None:
    """do_anonymous_page() with FAULT_FLAG_WRITE: a new folio, folio_add_new_anon_rmap()
    (anon, swapbacked, PageAnonExclusive, mapcount 1), folio_add_lru(); the PTE is
    pte_mkwrite(pte_mkdirty()) so soft-dirty; refcount 1 (the PTE's)."""
    p = m.spawn("main")
    p.mmap(BASE, 4)
    assert p.touch(BASE, 2, write=True, tags=[11, 12]).ok
    e0, e1, e2 = pm(m, p, 0, 3)
    assert e0.present and e0.exclusive and e0.soft_dirty and not e0.file_shared
    assert flags(m, e0.pfn) == ANON_EXCLUSIVE
    assert mapcount(m, e0.pfn) == 1 and m.page_count(e0.pfn or 0) == 1
    assert m.frame_tag(e0.pfn or 0) == 11 and m.frame_tag(e1.pfn or 0) == 12
    assert e2 == PagemapEntry(soft_dirty=True)  # pagemap_pte_hole(): VM_SOFTDIRTY


def test_ksm_flag_is_a_kernel_fact() -> None:
    """stable_page_flags(): ``mapping & PAGE_MAPPING_KSM`` is true for every anon page on
    6.12 as shipped; linux-patch/0001 tests folio_test_ksm() instead, so the patched
    kernel (the default facts) sets KPF_KSM on KSM pages only."""
    shipped = Machine(X86, ram_bytes=64 << 20, facts=UNPATCHED_6_12)
    p = shipped.spawn("main")
    p.mmap(BASE, 1)
    p.touch(BASE, 1, write=True)
    assert flags(shipped, one(shipped, p, 0).pfn) == ANON_EXCLUSIVE | {"KSM"}


def test_zero_page(m: Machine) -> None:
    """do_anonymous_page() without FAULT_FLAG_WRITE maps the zero page with
    pte_mkspecial(): present, but vm_normal_page() is NULL so no PM_FILE and no
    PM_MMAP_EXCLUSIVE; kpagecount 0 (never rmapped), kpageflags ZERO_PAGE|RESERVED.
    A later write goes through do_wp_page() -> wp_page_copy() with a zeroed folio.
    smaps does not count the zero page."""
    p = m.spawn("main")
    p.mmap(BASE, 3)
    p.touch(BASE, 3, write=False)
    entries = pm(m, p, 0, 3)
    assert {e.pfn for e in entries} == {m.zero_pfn}
    assert entries[0] == PagemapEntry.page(m.zero_pfn, soft_dirty=True)
    assert flags(m, m.zero_pfn) == ZERO and mapcount(m, m.zero_pfn) == 0
    assert smaps(p.mm)[0].resident == 0
    # No anon_vma for a zero-page read: the VMA is not copied at fork.
    assert p.vmas[0].anon_vma is None
    p.touch(addr(m, 1), 1, write=True, tags=[5])
    new = one(m, p, 1)
    assert new.pfn != m.zero_pfn and new.exclusive
    assert flags(m, new.pfn) == ANON_EXCLUSIVE
    assert smaps(p.mm)[0].resident == m.arch.page_size


def test_fork_cow_partial_break(m: Machine) -> None:
    """fork(): copy_present_ptes() -> folio_try_dup_anon_rmap_pte() clears
    PageAnonExclusive and raises mapcount and refcount; both PTEs are write-protected.
    The child's write copies (wp_can_reuse_anon_folio(): refcount 2); the parent's
    page is then mapped once: PM_MMAP_EXCLUSIVE (mapcount), but PG_anon_exclusive
    stays clear until the parent writes and reuses it (do_wp_page())."""
    p = m.spawn("main")
    p.mmap(BASE, 4)
    p.touch(BASE, 4, write=True, tags=[1, 2, 3, 4])
    original = [e.pfn or 0 for e in pm(m, p, 0, 4)]
    c = p.fork("child")
    for proc in (p, c):
        for e, pfn in zip(pm(m, proc, 0, 4), original, strict=True):
            assert e == PagemapEntry.page(pfn, soft_dirty=True)
    assert all(flags(m, pfn) == ANON and mapcount(m, pfn) == 2 for pfn in original)
    # The child breaks COW on page 1.
    c.touch(addr(m, 1), 1, write=True, tags=[21])
    child1 = one(m, c, 1)
    assert child1.pfn not in original and child1.exclusive
    assert m.frame_tag(child1.pfn or 0) == 21 and m.frame_tag(original[1]) == 2
    parent1 = one(m, p, 1)
    assert parent1.pfn == original[1] and parent1.exclusive
    assert flags(m, original[1]) == ANON and mapcount(m, original[1]) == 1
    # The parent writes its now-unshared page 1: reused in place, exclusive again.
    p.touch(addr(m, 1), 1, write=True, tags=[31])
    assert one(m, p, 1).pfn == original[1]
    assert flags(m, original[1]) == ANON_EXCLUSIVE
    # The parent breaks COW on page 2: it gets the copy, the child keeps the original.
    p.touch(addr(m, 2), 1, write=True, tags=[32])
    assert one(m, p, 2).pfn not in original
    assert one(m, c, 2) == PagemapEntry.page(original[2], exclusive=True, soft_dirty=True)
    # The child's exit leaves the parent's shared pages mapped once.
    c.exit()
    assert [e.exclusive for e in pm(m, p, 0, 4)] == [True] * 4
    assert m.frame_freed(child1.pfn or 0) and m.frame_freed(original[2])
    assert flags(m, original[0]) == ANON  # PG_anon_exclusive only returns on a write


def test_fork_copies_no_tables_without_anon_vma(m: Machine) -> None:
    """vma_needs_copy(): page tables are copied only for VMAs with an anon_vma.  A
    shared anonymous VMA, a private file VMA only read, and a private anonymous VMA
    only read (zero page: do_anonymous_page() takes no anon_vma for reads) start
    empty in the child; it refaults them."""
    f = m.create_file(4)
    p = m.spawn("main")
    regions = {"shared": BASE, "file": BASE + (8 << 20), "zero": BASE + (16 << 20)}
    p.mmap(regions["shared"], 4, share="shared")
    p.mmap(regions["file"], 4, kind="file", file=f)
    p.mmap(regions["zero"], 4)
    for base in regions.values():
        p.touch(base, 4, write=base == regions["shared"])
    c = p.fork("child")
    for base in regions.values():
        assert pm(m, c, 0, 4, base) == [PagemapEntry(soft_dirty=True)] * 4
        assert all(e.present for e in pm(m, p, 0, 4, base))
    c.touch(regions["shared"], 4, write=False)
    assert [e.pfn for e in pm(m, c, 0, 4, regions["shared"])] == [
        e.pfn for e in pm(m, p, 0, 4, regions["shared"])]
    assert all(mapcount(m, e.pfn) == 2 for e in pm(m, c, 0, 4, regions["shared"]))


def test_shared_anonymous_memory_is_shmem(m: Machine) -> None:
    """shmem_zero_setup(): shared anonymous memory is a shmem file, so its pages are
    not anonymous folios: PM_FILE, no KPF_ANON/KSM; a read fault allocates a page
    (shmem_get_folio_gfp(SGP_CACHE) fills the hole: uptodate, clean).  A write
    fault maps it dirty and fault_dirty_shared_page() dirties the folio; a write
    through a PTE the read fault made writable (no write-notify while VM_SOFTDIRTY
    is set) only dirties the PTE.  Refcount: page cache + one per PTE."""
    p = m.spawn("main")
    p.mmap(BASE, 3, share="shared")
    p.touch(BASE, 2, write=False)
    p.touch(addr(m, 1), 2, write=True, tags=[7, 8])
    e = pm(m, p, 0, 3)
    assert all(x.present and x.file_shared and x.exclusive for x in e)
    shmem = {"UPTODATE", "LRU", "MMAP", "SWAPBACKED"}
    assert flags(m, e[0].pfn) == shmem
    assert flags(m, e[1].pfn) == shmem  # read, then written without a fault
    assert flags(m, e[2].pfn) == shmem | {"DIRTY"}  # do_shared_fault()
    assert m.page_count(e[0].pfn or 0) == 2 and mapcount(m, e[0].pfn) == 1
    assert m.frame_tag(e[0].pfn or 0) == 0 and m.frame_tag(e[2].pfn or 0) == 8


def test_file_private_read_then_write(m: Machine) -> None:
    """A private tmpfs mapping: do_read_fault() first runs do_fault_around(), which
    maps every cached page of the fault_around_bytes (64 KiB) window inside the VMA
    read-only (filemap_map_pages()); a write fault copies the page-cache page into a
    new anonymous folio (do_wp_page() -> wp_page_copy()), whose contents are the
    file's; the page-cache page loses that mapping."""
    tags = [0x4654_0000_0000_0000 + i for i in range(20)]
    f = m.create_file(20, tags=tags)
    p = m.spawn("main")
    p.mmap(BASE, 20, kind="file", file=f)
    p.touch(addr(m, 3), 1, write=False)
    e = pm(m, p, 0, 20)
    assert [x.present for x in e] == [True] * 16 + [False] * 4  # 64 KiB / 4 KiB
    assert all(x.file_shared and x.exclusive for x in e[:16])
    assert e[3].pfn == f.cache[3]
    assert flags(m, f.cache[3]) == FILE_PAGE | {"MMAP"}
    assert m.page_count(f.cache[3]) == 2
    p.touch(addr(m, 3), 1, write=True, tags=[99])
    copy = one(m, p, 3)
    assert copy.pfn != f.cache[3] and not copy.file_shared and copy.exclusive
    assert flags(m, copy.pfn) == ANON_EXCLUSIVE
    assert m.frame_tag(copy.pfn or 0) == 99 and m.frame_tag(f.cache[3]) == tags[3]
    assert flags(m, f.cache[3]) == FILE_PAGE and m.page_count(f.cache[3]) == 1
    # A write fault on a page never read: do_cow_fault() copies the file page.
    p.touch(addr(m, 18), 1, write=True, tags=[None])
    assert not one(m, p, 18).file_shared
    assert m.frame_tag(one(m, p, 18).pfn or 0) is None


def test_fault_around_is_one_page_with_64k_pages() -> None:
    """fault_around_pages = 65536 >> PAGE_SHIFT is 1 with 64 KiB pages, and
    should_fault_around() then declines: only the faulting page is mapped."""
    m = Machine(PPC64, ram_bytes=256 << 20)
    f = m.create_file(4)
    p = m.spawn("main")
    p.mmap(BASE, 4, kind="file", file=f)
    p.touch(addr(m, 1), 1, write=False)
    assert [e.present for e in pm(m, p, 0, 4)] == [False, True, False, False]


def test_file_shared_write(m: Machine) -> None:
    """A shared tmpfs mapping: do_shared_fault() maps the page-cache page writable
    and dirty; the store lands in the page cache (the file's page)."""
    f = m.create_file(4)
    p = m.spawn("main")
    p.mmap(BASE, 4, kind="file", share="shared", file=f)
    p.touch(addr(m, 2), 1, write=True, tags=[42])
    e = one(m, p, 2)
    assert e.pfn == f.cache[2] and e.file_shared and e.exclusive
    assert m.frame_tag(f.cache[2]) == 42
    assert flags(m, e.pfn) == FILE_PAGE | {"MMAP"}


def test_munmap_activates_file_pages(m: Machine) -> None:
    """zap_present_folio_ptes(): a file page's young PTE calls folio_mark_accessed():
    already PG_referenced -> activated (PG_active once the LRU batch drains) and
    PG_referenced cleared."""
    f = m.create_file(2)
    p = m.spawn("main")
    p.mmap(BASE, 2, kind="file", file=f)
    p.touch(BASE, 1, write=False)
    p.munmap(BASE, 2)
    assert flags(m, f.cache[0]) == FILE_PAGE - {"REFERENCED"} | {"ACTIVE"}


def test_munmap_partial(m: Machine) -> None:
    """munmap() of the middle splits the VMA (__split_vma()); the unmapped range reads
    0 (no VMA), its pages are freed; the rest keeps its pages."""
    p = m.spawn("main")
    p.mmap(BASE, 6)
    p.touch(BASE, 6, write=True)
    before = [e.pfn for e in pm(m, p, 0, 6)]
    p.munmap(addr(m, 2), 2)
    after = pm(m, p, 0, 6)
    assert [e.pfn for e in after] == [*before[:2], None, None, *before[4:]]
    assert after[2] == after[3] == PagemapEntry()
    assert m.frame_freed(before[2] or 0) and not m.frame_freed(before[1] or 0)
    assert [(v.start, v.end) for v in p.vmas] == [
        (BASE, addr(m, 2)), (addr(m, 4), addr(m, 6))]
    p.munmap(BASE, 1)
    assert [e.present for e in pm(m, p, 0, 6)] == [False, True, False, False, True, True]


def test_mprotect_and_sigsegv(m: Machine) -> None:
    """mprotect(PROT_READ): change_pte_range() keeps PTEs present (pte_modify()), a
    write is refused by the arch fault handler (access_error(): SIGSEGV, the pages
    before it were touched).  mprotect(PROT_READ|PROT_WRITE) makes exclusive anon
    PTEs writable again (can_change_pte_writable()) and the frames stay."""
    p = m.spawn("main")
    p.mmap(BASE, 4)
    p.touch(BASE, 4, write=True, tags=[10, 20, 30, 40])
    before = [e.pfn for e in pm(m, p, 0, 4)]
    p.mprotect(addr(m, 2), 2, "r")
    assert [e.pfn for e in pm(m, p, 0, 4)] == before
    result = p.touch(BASE, 4, write=True, tags=[1, 2, 3, 4])
    assert (result.touched, result.signal, result.addr) == (2, "SIGSEGV", addr(m, 2))
    assert result.segv_vaddr == addr(m, 2)
    assert [m.frame_tag(pfn or 0) for pfn in before[:3]] == [1, 2, 30]
    p.mprotect(addr(m, 2), 2, "rw")
    assert len(p.vmas) == 1  # vma_merge_existing_range() merged both sides back
    assert p.touch(BASE, 4, write=True).ok
    assert [e.pfn for e in pm(m, p, 0, 4)] == before
    with pytest.raises(MmError) as raised:
        p.mprotect(addr(m, 3), 3, "r")
    assert raised.value.errno == errno.ENOMEM  # do_mprotect_pkey(): a hole in the range


def test_read_only_mapping_refuses_writes(m: Machine) -> None:
    p = m.spawn("main")
    p.mmap(BASE, 2, prot="r")
    assert p.touch(BASE, 2, write=False).ok
    result = p.touch(BASE, 2, write=True)
    assert (result.touched, result.signal) == (0, "SIGSEGV")
    assert p.touch(addr(m, 5), 1, write=False).signal == "SIGSEGV"  # no VMA


def test_dontneed(m: Machine) -> None:
    """MADV_DONTNEED: zap_page_range_single() drops the PTEs but not the tables or
    the page cache.  Anonymous: the next read maps the zero page.  Private file:
    the COW copy is gone, a read maps the file page again.  Shared file: the same
    page-cache page comes back."""
    f = m.create_file(2, tags=[100, 101])
    g = m.create_file(2, tags=[200, 201])
    p = m.spawn("main")
    anon, priv, shared = BASE, BASE + (8 << 20), BASE + (16 << 20)
    p.mmap(anon, 2)
    p.mmap(priv, 2, kind="file", file=f)
    p.mmap(shared, 2, kind="file", share="shared", file=g)
    for base in (anon, priv, shared):
        p.touch(base, 2, write=True, tags=[1, 2])
    anon_pfn = one(m, p, 0, anon).pfn
    for base in (anon, priv, shared):
        p.madvise(base, 2, "dontneed")
        assert pm(m, p, 0, 2, base) == [PagemapEntry(soft_dirty=True)] * 2
        p.touch(base, 2, write=False)
    assert one(m, p, 0, anon).pfn == m.zero_pfn and m.frame_freed(anon_pfn or 0)
    assert one(m, p, 0, priv).pfn == f.cache[0] and m.frame_tag(f.cache[0]) == 100
    assert one(m, p, 0, shared).pfn == g.cache[0] and m.frame_tag(g.cache[0]) == 1


def test_soft_dirty_cycle(m: Machine) -> None:
    """clear_refs 4 (clear_refs_write()): VM_SOFTDIRTY cleared on every VMA, every
    present PTE write-protected and its soft-dirty bit cleared (clear_soft_dirty()).
    A write then faults (do_wp_page() -> wp_page_reuse(): pte_mkdirty() sets
    soft-dirty); untouched pages and holes read without the bit.  A new mapping
    is VM_SOFTDIRTY (__mmap_region())."""
    p = m.spawn("main")
    p.mmap(BASE, 4)
    p.touch(BASE, 3, write=True)
    pfns = [e.pfn for e in pm(m, p, 0, 3)]
    p.clear_refs(4)
    assert [e.soft_dirty for e in pm(m, p, 0, 4)] == [False] * 4
    assert [e.present for e in pm(m, p, 0, 4)] == [True, True, True, False]
    p.touch(addr(m, 1), 1, write=True)
    after = pm(m, p, 0, 4)
    assert [e.soft_dirty for e in after] == [False, True, False, False]
    assert after[1].pfn == pfns[1]  # reused: PageAnonExclusive
    p.mmap(BASE + (8 << 20), 1)
    assert one(m, p, 0, BASE + (8 << 20)).soft_dirty


def test_soft_dirty_merge_redirties_the_whole_vma(m: Machine) -> None:
    """__mmap_region(): a new mapping that merges into its neighbour
    (vma_merge_new_range()) marks the expanded VMA VM_SOFTDIRTY as a whole."""
    p = m.spawn("main")
    p.mmap(BASE, 2)
    p.touch(BASE, 2, write=True)
    p.clear_refs(4)
    assert not one(m, p, 0).soft_dirty
    p.mmap(addr(m, 2), 2)
    assert len(p.vmas) == 1
    assert [e.soft_dirty for e in pm(m, p, 0, 4)] == [True] * 4


def test_no_soft_dirty_without_the_config() -> None:
    """Without CONFIG_MEM_SOFT_DIRTY, VM_SOFTDIRTY is 0 and pte_soft_dirty() false."""
    m = Machine(X86, ram_bytes=64 << 20, facts=KernelFacts(mem_soft_dirty=False))
    p = m.spawn("main")
    p.mmap(BASE, 2)
    p.touch(BASE, 1, write=True)
    assert [e.soft_dirty for e in pm(m, p, 0, 2)] == [False, False]


@pytest.mark.parametrize("arch", THP_ARCHES, ids=lambda a: a.name)
def test_thp_write_fault(arch: Arch) -> None:
    """do_huge_pmd_anonymous_page(): in a VM_HUGEPAGE VMA covering the aligned PMD
    range, a write fault maps one PMD-sized folio: consecutive PFNs from an aligned
    head, COMPOUND_HEAD/TAIL, THP (large_rmappable), PageAnonExclusive on the head
    (KPF_OWNER_2 copies folio->flags, so tails show it too), kpagecount 1 each
    (entire mapcount), refcount 1.  pagemap_pmd_range() gives pmd_pfn() + index."""
    m = Machine(arch, ram_bytes=256 << 20)
    nr = arch.thp_pages
    p = m.spawn("main")
    p.mmap(BASE, nr)
    p.madvise(BASE, nr, "hugepage")
    p.touch(BASE, 1, write=True, tags=[5])
    entries = pm(m, p, 0, nr)
    head = entries[0].pfn
    assert head is not None and head % nr == 0
    assert [e.pfn for e in entries] == list(range(head, head + nr))
    assert all(e.present and e.exclusive and e.soft_dirty and not e.file_shared for e in entries)
    assert flags(m, head) == ANON_EXCLUSIVE | {"COMPOUND_HEAD", "THP"}
    assert flags(m, head + nr - 1) == ANON_EXCLUSIVE | {"COMPOUND_TAIL", "THP"}
    assert {mapcount(m, pfn) for pfn in range(head, head + nr)} == {1}
    assert m.page_count(head + 1) == 1
    assert m.frame_tag(head) == 5 and m.frame_tag(head + 1) == 0
    assert smaps(p.mm)[0].anonymous_thp == nr * arch.page_size


@pytest.mark.parametrize("arch", THP_ARCHES, ids=lambda a: a.name)
def test_thp_read_maps_the_huge_zero_folio(arch: Arch) -> None:
    """do_huge_pmd_anonymous_page() without FAULT_FLAG_WRITE maps the huge zero folio
    (use_zero_page).  pagemap_pmd_range() takes pmd_page() directly, and the huge
    zero folio is not anonymous: PM_FILE is set.  stable_page_flags():
    is_huge_zero_folio() -> ZERO_PAGE|THP (get_huge_zero_page() clears
    large_rmappable).  A write splits it into small zero-page PTEs
    (__split_huge_zero_page_pmd()) and copies one page."""
    m = Machine(arch, ram_bytes=256 << 20)
    nr = arch.thp_pages
    p = m.spawn("main")
    p.mmap(BASE, nr)
    p.madvise(BASE, nr, "hugepage")
    p.touch(BASE, 1, write=False)
    entries = pm(m, p, 0, nr)
    hz = m.huge_zero_pfn
    assert hz is not None and entries[0] == PagemapEntry.page(hz, file_shared=True,
                                                            soft_dirty=True)
    assert entries[-1].pfn == hz + nr - 1
    assert flags(m, hz) == {"COMPOUND_HEAD", "THP", "ZERO_PAGE"}
    assert flags(m, hz + 1) == {"COMPOUND_TAIL", "THP", "ZERO_PAGE"}
    assert mapcount(m, hz) == 0
    p.touch(addr(m, 1), 1, write=True)
    after = pm(m, p, 0, nr)
    assert after[0].pfn == m.zero_pfn and not after[0].file_shared
    assert after[1].pfn not in (m.zero_pfn, hz + 1) and after[1].exclusive


@pytest.mark.parametrize("arch", THP_ARCHES, ids=lambda a: a.name)
def test_thp_fork_and_split(arch: Arch) -> None:
    """copy_huge_pmd() shares the THP (entire mapcount 2, PageAnonExclusive cleared).
    The child's write: do_huge_pmd_wp_page() cannot reuse (refcount 2), splits the
    child's PMD (__split_huge_pmd_locked(): a dirty PMD dirties the folio, nr - 1
    more references) and wp_page_copy() copies one subpage.  The parent's pagemap
    then shows PM_MMAP_EXCLUSIVE on that one subpage only (per-page
    folio_precise_page_mapcount())."""
    m = Machine(arch, ram_bytes=256 << 20)
    nr = arch.thp_pages
    p = m.spawn("main")
    p.mmap(BASE, nr)
    p.madvise(BASE, nr, "hugepage")
    p.touch(BASE, 1, write=True)
    head = one(m, p, 0).pfn
    assert head is not None
    c = p.fork("child")
    assert mapcount(m, head) == 2 and m.page_count(head) == 2
    c.touch(addr(m, 1), 1, write=True)
    parent = pm(m, p, 0, nr)
    assert [e.exclusive for e in parent[:3]] == [False, True, False]
    assert flags(m, head) == ANON | {"COMPOUND_HEAD", "THP", "DIRTY"}
    assert m.page_count(head) == 1 + (nr - 1)
    assert mapcount(m, head + 1) == 1 and mapcount(m, head + 2) == 2
    # Partial munmap in the parent splits its PMD too; the folio stays large.
    p.munmap(addr(m, nr // 2), nr // 2)
    assert m.page_count(head) == (nr - 1) + nr // 2
    assert flags(m, head + nr - 1) == ANON | {"COMPOUND_TAIL", "THP", "DIRTY"}


def test_thp_needs_the_whole_aligned_range(m: Machine) -> None:
    """thp_vma_suitable_order(): the aligned PMD range must lie inside the VMA; and a
    PMD that already holds a page table (pmd_none() false) gets small pages."""
    nr = X86.thp_pages
    p = m.spawn("main")
    p.mmap(BASE, nr - 1)
    p.madvise(BASE, nr - 1, "hugepage")
    p.touch(BASE, 1, write=True)
    assert flags(m, one(m, p, 0).pfn) == ANON_EXCLUSIVE
    q = m.spawn("q")
    q.mmap(BASE, nr)
    q.touch(BASE, 1, write=True)  # not VM_HUGEPAGE yet: a PTE table
    q.madvise(BASE, nr, "hugepage")
    q.touch(addr(m, 1), 1, write=True)
    assert "THP" not in flags(m, one(m, q, 1).pfn)
    # MADV_DONTNEED keeps the table (zap only): still small pages.
    q.madvise(BASE, nr, "dontneed")
    q.touch(BASE, 1, write=True)
    assert "THP" not in flags(m, one(m, q, 0).pfn)
    # munmap frees the table (free_pgtables()); a new mapping gets a THP.
    q.munmap(BASE, nr)
    q.mmap(BASE, nr)
    q.madvise(BASE, nr, "hugepage")
    q.touch(BASE, 1, write=True)
    assert "THP" in flags(m, one(m, q, 0).pfn)


def test_madvise_hugepage_without_thp() -> None:
    m = Machine(get_arch("i386"), ram_bytes=64 << 20)
    p = m.spawn("main")
    p.mmap(0x3000_0000, 4)
    with pytest.raises(MmError) as raised:
        p.madvise(0x3000_0000, 4, "hugepage")
    assert raised.value.errno == errno.EINVAL


def test_mmap_errors(m: Machine) -> None:
    p = m.spawn("main")
    p.mmap(BASE, 4)
    for call, err in (
        (lambda: p.mmap(addr(m, 2), 4), errno.EEXIST),
        (lambda: p.mmap(BASE + 1, 1), errno.EINVAL),
        (lambda: p.mmap(X86.task_size - 4096, 2), errno.ENOMEM),
        (lambda: p.munmap(X86.task_size - 4096, 2), errno.EINVAL),
    ):
        with pytest.raises(MmError) as raised:
            call()
        assert raised.value.errno == err
    p.exit()
    with pytest.raises(MmError):
        p.touch(BASE, 1, write=False)


def test_file_beyond_eof_is_sigbus(m: Machine) -> None:
    """shmem_get_folio_gfp(): index >= i_size -> -EINVAL -> VM_FAULT_SIGBUS."""
    f = m.create_file(2)
    p = m.spawn("main")
    p.mmap(BASE, 4, kind="file", file=f)
    result = p.touch(BASE, 4, write=False)
    assert (result.touched, result.signal, result.addr) == (2, "SIGBUS", addr(m, 2))


def test_anonymous_shared_object_dies_with_its_last_mapping(m: Machine) -> None:
    """shmem_zero_setup()'s file is unlinked: when the last VMA drops its reference
    (remove_vma() -> fput()), shmem_evict_inode() truncates and frees the pages; a
    partial munmap keeps them (the rest of the VMA still holds the file)."""
    p = m.spawn("main")
    p.mmap(BASE, 2, share="shared")
    p.touch(BASE, 2, write=True)
    pfns = [e.pfn or 0 for e in pm(m, p, 0, 2)]
    p.munmap(BASE, 1)
    assert not m.frame_freed(pfns[0]) and "MMAP" not in flags(m, pfns[0])
    p.munmap(addr(m, 1), 1)
    assert m.frame_freed(pfns[0]) and m.frame_freed(pfns[1])
