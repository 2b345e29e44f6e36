"""smaps accounting: smaps_account(), smaps_pte_entry(), smaps_pmd_entry() (fs/proc/task_mmu.c)."""

from __future__ import annotations

from sim.arch import get_arch
from sim.mm import Machine
from sim.smaps import smaps, smaps_rollup

X86 = get_arch("x86_64")
BASE = 1 << 40
KB = 4  # one 4 KiB page in kB


def test_private_anonymous_pages() -> None:
    """Written anonymous pages with refcount 1: Rss = Pss = Private_Dirty = Anonymous
    (the PTE is dirty); zero-page PTEs count nowhere (vm_normal_page() is NULL)."""
    m = Machine(X86, ram_bytes=64 << 20)
    p = m.spawn("main")
    p.mmap(BASE, 8)
    p.touch(BASE, 3, write=True)
    p.touch(BASE + 3 * 4096, 2, write=False)
    (mss,) = smaps(p.mm)
    fields = mss.kb()
    assert fields["Rss"] == fields["Pss"] == fields["Private_Dirty"] == 3 * KB
    assert fields["Anonymous"] == 3 * KB
    assert fields["Shared_Clean"] == fields["Shared_Dirty"] == fields["Private_Clean"] == 0
    assert fields["Referenced"] == 3 * KB  # young PTEs


def test_shared_after_fork_halves_pss() -> None:
    """After fork the pages have refcount 2 and mapcount 2: Shared_Dirty, Pss / 2.
    The child's PTEs are old (pte_mkold() in __copy_present_ptes()) but the
    parent's, still young, make the pages Referenced in the parent."""
    m = Machine(X86, ram_bytes=64 << 20)
    p = m.spawn("main")
    p.mmap(BASE, 4)
    p.touch(BASE, 4, write=True)
    c = p.fork("child")
    for proc in (p, c):
        fields = smaps(proc.mm)[0].kb()
        assert fields["Rss"] == 4 * KB
        assert fields["Pss"] == 2 * KB
        assert fields["Shared_Dirty"] == 4 * KB and fields["Private_Dirty"] == 0
    assert smaps(c.mm)[0].kb()["Referenced"] == 0
    assert smaps(p.mm)[0].kb()["Referenced"] == 4 * KB


def test_file_pages_are_shared_clean_or_dirty_by_folio() -> None:
    """A tmpfs page is PG_dirty from its write(): smaps_page_accumulate() counts it
    dirty; it has refcount 2 (page cache + PTE) and mapcount 1: private."""
    m = Machine(X86, ram_bytes=64 << 20)
    f = m.create_file(2)
    p = m.spawn("main")
    p.mmap(BASE, 2, kind="file", share="shared", file=f)
    p.touch(BASE, 2, write=False)
    fields = smaps(p.mm)[0].kb()
    assert fields["Rss"] == fields["Private_Dirty"] == 2 * KB
    assert fields["Anonymous"] == 0


def test_thp_counts_anon_huge_pages() -> None:
    """smaps_pmd_entry(): a PMD-mapped anonymous THP adds HPAGE_PMD_SIZE to
    AnonHugePages; the huge zero folio is skipped (vm_normal_page_pmd())."""
    m = Machine(X86, ram_bytes=64 << 20)
    p = m.spawn("main")
    p.mmap(BASE, 1024)
    p.madvise(BASE, 1024, "hugepage")
    p.touch(BASE, 1, write=True)
    p.touch(BASE + (2 << 20), 1, write=False)
    total = smaps_rollup(p.mm).kb()
    assert total["AnonHugePages"] == 2048
    assert total["Rss"] == total["Anonymous"] == 2048
