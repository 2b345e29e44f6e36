"""Per-VMA memory accounting as /proc/PID/smaps shows it (fs/proc/task_mmu.c).

smap_gather_stats() walks each VMA with smaps_pte_range() as pmd_entry;
smaps_account() adds each mapped page (not the zero pages: vm_normal_page()
and vm_normal_page_pmd() return NULL for them) to Rss, Pss, the four
Shared/Private Clean/Dirty counters, Anonymous and AnonHugePages.  Pss is
kept in the kernel's fixed point (bytes << PSS_SHIFT) and shown in kB as
the kernel prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.mm.memmap import PhysMem
from sim.mm.mm_struct import MmStruct
from sim.mm.pageflags import PG
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_DIRTY, PTE_PRESENT, PTE_SPECIAL, PTE_YOUNG
from sim.mm.vma import Vma
from sim.pagewalk import MmWalk, MmWalkOps, walk_page_vma

__all__ = ["PSS_SHIFT", "MemSizeStats", "smaps", "smaps_rollup"]

PSS_SHIFT = 12


@dataclass
class MemSizeStats:
    """struct mem_size_stats: byte counts (``pss`` in bytes << PSS_SHIFT)."""

    start: int = 0
    end: int = 0
    resident: int = 0
    shared_clean: int = 0
    shared_dirty: int = 0
    private_clean: int = 0
    private_dirty: int = 0
    referenced: int = 0
    anonymous: int = 0
    anonymous_thp: int = 0
    pss: int = 0
    pss_dirty: int = 0
    pss_anon: int = 0
    pss_file: int = 0
    pss_shmem: int = 0

    def kb(self) -> dict[str, int]:
        """The fields as the smaps file prints them (kB; Pss after >> PSS_SHIFT)."""
        return {
            "Rss": self.resident >> 10,
            "Pss": (self.pss >> PSS_SHIFT) >> 10,
            "Pss_Dirty": (self.pss_dirty >> PSS_SHIFT) >> 10,
            "Shared_Clean": self.shared_clean >> 10,
            "Shared_Dirty": self.shared_dirty >> 10,
            "Private_Clean": self.private_clean >> 10,
            "Private_Dirty": self.private_dirty >> 10,
            "Referenced": self.referenced >> 10,
            "Anonymous": self.anonymous >> 10,
            "AnonHugePages": self.anonymous_thp >> 10,
        }


def _page_accumulate(
    mss: MemSizeStats, mem: PhysMem, head: int, size: int, pss: int, dirty: bool, private: bool
) -> None:
    """smaps_page_accumulate()."""
    mss.pss += pss
    if mem.folio_test_anon(head):
        mss.pss_anon += pss
    elif mem.test(head, PG.swapbacked):
        mss.pss_shmem += pss
    else:
        mss.pss_file += pss
    if dirty or mem.test(head, PG.dirty):
        mss.pss_dirty += pss
        if private:
            mss.private_dirty += size
        else:
            mss.shared_dirty += size
    elif private:
        mss.private_clean += size
    else:
        mss.shared_clean += size


def smaps_account(
    mss: MemSizeStats, mem: PhysMem, page: int, nr: int, page_size: int, young: bool, dirty: bool
) -> None:
    """smaps_account() for ``nr`` pages from ``page`` (1, or a whole PMD-mapped folio)."""
    head = mem.page_folio(page)
    size = nr * page_size
    if mem.folio_test_anon(head):
        mss.anonymous += size
    mss.resident += size
    if young or mem.test(head, PG.referenced):
        mss.referenced += size
    if mem.folio_ref_count(head) == 1:
        _page_accumulate(mss, mem, head, size, size << PSS_SHIFT, dirty, True)
        return
    for i in range(nr):
        mapcount = mem.folio_precise_page_mapcount(page + i)
        pss = page_size << PSS_SHIFT
        if mapcount >= 2:
            pss //= mapcount
        _page_accumulate(mss, mem, head, page_size, pss, dirty, mapcount < 2)


def smaps_pte_range(entry: PteTable | HugePmd, addr: int, end: int, walk: MmWalk) -> int:
    """smaps_pte_range(): smaps_pmd_entry() for a huge leaf, smaps_pte_entry() per PTE."""
    mss: MemSizeStats = walk.private
    mm = walk.mm
    mem = mm.mem
    if isinstance(entry, HugePmd):
        if mem.is_huge_zero_folio(entry.pfn):
            return 0  # vm_normal_page_pmd() is NULL for the huge zero page
        if mem.folio_test_anon(entry.pfn):
            mss.anonymous_thp += mm.pmd_size
        _account_entry(mss, mem, entry.pfn, mm.hpage_pmd_nr, mm.page_size, entry.bits)
        return 0
    i0 = mm.pt.pte_index(addr)
    for i in range(i0, i0 + ((end - addr) >> mm.arch.page_shift)):
        bits = int(entry.bits[i])
        if not bits & PTE_PRESENT or bits & PTE_SPECIAL:
            continue
        _account_entry(mss, mem, int(entry.pfn[i]), 1, mm.page_size, bits)
    return 0


def _account_entry(
    mss: MemSizeStats, mem: PhysMem, page: int, nr: int, page_size: int, bits: int
) -> None:
    """smaps_account() with young and dirty taken from a PTE's or huge PMD's bits."""
    smaps_account(mss, mem, page, nr, page_size, bool(bits & PTE_YOUNG), bool(bits & PTE_DIRTY))


SMAPS_OPS = MmWalkOps(pmd_entry=smaps_pte_range)


def smap_gather_stats(mm: MmStruct, vma: Vma) -> MemSizeStats:
    """smap_gather_stats(): walk_page_vma() with the smaps callbacks."""
    mss = MemSizeStats(start=vma.start, end=vma.end)
    walk_page_vma(vma, mm, SMAPS_OPS, mss)
    return mss


def smaps(mm: MmStruct) -> list[MemSizeStats]:
    """One MemSizeStats per VMA, in address order (show_smap())."""
    return [smap_gather_stats(mm, vma) for vma in mm.each_vma()]


def smaps_rollup(mm: MmStruct) -> MemSizeStats:
    """The sums over all VMAs (show_smaps_rollup())."""
    total = MemSizeStats()
    for mss in smaps(mm):
        for name in vars(total):
            if name not in ("start", "end"):
                setattr(total, name, getattr(total, name) + getattr(mss, name))
    return total
