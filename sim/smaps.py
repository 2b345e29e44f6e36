"""Per-VMA memory accounting as /proc/PID/smaps and smaps_rollup show it (fs/proc/task_mmu.c).

smap_gather_stats() walks each VMA with smaps_pte_range() as pmd_entry;
smaps_account() adds each mapped page (not the zero pages: vm_normal_page()
and vm_normal_page_pmd() return NULL for them) to Rss, Pss, the four
Shared/Private Clean/Dirty counters, Anonymous, LazyFree, KSM and the
*PmdMapped counters.  The Pss family (Pss, Pss_Dirty, Pss_Anon, Pss_File,
Pss_Shmem, Locked, SwapPss) is kept in the kernel's fixed point
(bytes << PSS_SHIFT): show_smap() prints ``x >> PSS_SHIFT >> 10`` of one VMA's
sum, show_smaps_rollup() the same of the sum over every VMA, so the rollup
can exceed the sum of the per-VMA kB values.

Swap entries count in Swap and SwapPss (smaps_pte_entry()); what the model's
regions never have, and the model therefore prints as 0: KSM (no MADV_MERGEABLE), PMD-mapped
shmem or file folios (shmem_enabled = never; tmpfs is order 0).
:func:`render_smaps` and :func:`render_rollup` print the text exactly as
show_smap() and show_smaps_rollup() do (:mod:`sim.smaps_format`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sim.mm.facts import KernelFacts
from sim.mm.memmap import PhysMem
from sim.mm.mm_struct import MmStruct
from sim.mm.mthp import thp_vma_suitable_order
from sim.mm.pageflags import PG
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_DIRTY, PTE_PRESENT, PTE_SPECIAL, PTE_SWAP, PTE_YOUNG
from sim.mm.settings import anon_order_mask
from sim.mm.shmem_thp import shmem_thp_eligible
from sim.mm.vma import VM_LOCKED, VM_NOHUGEPAGE, Vma
from sim.pagewalk import MmWalk, MmWalkOps, walk_page_vma
from sim.smaps_format import SmapsBlock, SmapsHeader, render_block, smaps_field_names

__all__ = [
    "PSS_SHIFT",
    "SHMEM_ZERO_PATH",
    "MemSizeStats",
    "render_rollup",
    "render_smaps",
    "rollup_fixed_point",
    "smap_blocks",
    "smaps",
    "smaps_rollup",
    "thp_eligible",
    "vma_header",
]

PSS_SHIFT = 12
#: d_path() of shmem_zero_setup()'s unlinked "dev/zero" on the internal shm mount.
SHMEM_ZERO_PATH = "/dev/zero (deleted)"

#: The fields in bytes << PSS_SHIFT; the rest are bytes.
_FIXED_POINT = ("pss", "pss_dirty", "pss_anon", "pss_file", "pss_shmem", "pss_locked", "swap_pss")


@dataclass
class MemSizeStats:
    """struct mem_size_stats: byte counts; the Pss family in bytes << PSS_SHIFT."""

    start: int = 0
    end: int = 0
    resident: int = 0
    shared_clean: int = 0
    shared_dirty: int = 0
    private_clean: int = 0
    private_dirty: int = 0
    referenced: int = 0
    anonymous: int = 0
    lazyfree: int = 0
    anonymous_thp: int = 0
    shmem_thp: int = 0
    file_thp: int = 0
    swap: int = 0
    shared_hugetlb: int = 0
    private_hugetlb: int = 0
    ksm: int = 0
    pss: int = 0
    pss_anon: int = 0
    pss_file: int = 0
    pss_shmem: int = 0
    pss_dirty: int = 0
    pss_locked: int = 0
    swap_pss: int = 0

    def add(self, other: MemSizeStats) -> None:
        """Accumulate ``other`` (smap_gather_stats() into one mss, as the rollup does)."""
        for f in fields(self):
            if f.name not in ("start", "end"):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def kb(self, rollup: bool = False, facts: KernelFacts | None = None) -> dict[str, int]:
        """The kB fields __show_smap() prints, in its order: ``>> 10`` of bytes,
        ``>> PSS_SHIFT >> 10`` of the fixed-point ones.

        Pss_Anon/File/Shmem only with ``rollup``; KSM only where the kernel
        prints it (``facts.smaps_ksm``, default the pinned kernel's).
        """
        values = {
            "Rss": self.resident,
            "Pss": self.pss >> PSS_SHIFT,
            "Pss_Dirty": self.pss_dirty >> PSS_SHIFT,
            "Pss_Anon": self.pss_anon >> PSS_SHIFT,
            "Pss_File": self.pss_file >> PSS_SHIFT,
            "Pss_Shmem": self.pss_shmem >> PSS_SHIFT,
            "Shared_Clean": self.shared_clean,
            "Shared_Dirty": self.shared_dirty,
            "Private_Clean": self.private_clean,
            "Private_Dirty": self.private_dirty,
            "Referenced": self.referenced,
            "Anonymous": self.anonymous,
            "KSM": self.ksm,
            "LazyFree": self.lazyfree,
            "AnonHugePages": self.anonymous_thp,
            "ShmemPmdMapped": self.shmem_thp,
            "FilePmdMapped": self.file_thp,
            "Shared_Hugetlb": self.shared_hugetlb,
            "Private_Hugetlb": self.private_hugetlb,
            "Swap": self.swap,
            "SwapPss": self.swap_pss >> PSS_SHIFT,
            "Locked": self.pss_locked >> PSS_SHIFT,
        }
        ksm = facts.smaps_ksm if facts is not None else True
        return {name: values[name] >> 10 for name in smaps_field_names(rollup=rollup, ksm=ksm)}


def _page_accumulate(
    mss: MemSizeStats, mem: PhysMem, head: int, size: int, pss: int, dirty: bool, locked: bool,
    private: bool,
) -> None:
    """smaps_page_accumulate()."""
    mss.pss += pss
    if mem.folio_test_anon(head):
        mss.pss_anon += pss
    elif mem.test(head, PG.swapbacked):
        mss.pss_shmem += pss
    else:
        mss.pss_file += pss
    if locked:
        mss.pss_locked += pss
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
    mss: MemSizeStats, mem: PhysMem, page: int, nr: int, page_size: int, young: bool,
    dirty: bool, locked: bool = False,
) -> None:
    """smaps_account() for ``nr`` present pages from ``page`` (1, or a whole PMD-mapped folio).

    The model has no page_idle young bit (folio_test_young() is false).
    """
    head = mem.page_folio(page)
    size = nr * page_size
    if mem.folio_test_anon(head):
        mss.anonymous += size
        if not mem.test(head, PG.swapbacked) and not dirty and not mem.test(head, PG.dirty):
            mss.lazyfree += size
    if mem.ksm[head]:
        mss.ksm += size
    mss.resident += size
    if young or mem.test(head, PG.referenced):
        mss.referenced += size
    if mem.folio_ref_count(head) == 1:
        _page_accumulate(mss, mem, head, size, size << PSS_SHIFT, dirty, locked, True)
        return
    for i in range(nr):
        mapcount = mem.folio_precise_page_mapcount(page + i)
        pss = page_size << PSS_SHIFT
        if mapcount >= 2:
            pss //= mapcount
        _page_accumulate(mss, mem, head, page_size, pss, dirty, locked, mapcount < 2)


def smaps_pte_range(entry: PteTable | HugePmd, addr: int, end: int, walk: MmWalk) -> int:
    """smaps_pte_range(): smaps_pmd_entry() for a huge leaf, smaps_pte_entry() per PTE."""
    mss: MemSizeStats = walk.private
    mm = walk.mm
    mem = mm.mem
    # smaps_pte_entry() / smaps_pmd_entry(): locked = vma->vm_flags & VM_LOCKED.
    locked = walk.vma is not None and bool(walk.vma.flags & VM_LOCKED)
    if isinstance(entry, HugePmd):
        if mem.is_huge_zero_folio(entry.pfn):
            return 0  # vm_normal_page_pmd() is NULL for the huge zero page
        if mem.folio_test_anon(entry.pfn):
            mss.anonymous_thp += mm.pmd_size
        elif mem.test(entry.pfn, PG.swapbacked):
            mss.shmem_thp += mm.pmd_size
        else:
            mss.file_thp += mm.pmd_size
        _account_entry(mss, mem, entry.pfn, mm.hpage_pmd_nr, mm.page_size, entry.bits, locked)
        return 0
    i0 = mm.pt.pte_index(addr)
    for i in range(i0, i0 + ((end - addr) >> mm.arch.page_shift)):
        bits = int(entry.bits[i])
        if bits & PTE_SWAP:
            _account_swap(mss, mm, int(entry.pfn[i]))
            continue
        if not bits & PTE_PRESENT or bits & PTE_SPECIAL:
            continue
        _account_entry(mss, mem, int(entry.pfn[i]), 1, mm.page_size, bits, locked)
    return 0


def _account_swap(mss: MemSizeStats, mm: MmStruct, offset: int) -> None:
    """smaps_pte_entry() of a swap entry: Swap += PAGE_SIZE, SwapPss += PAGE_SIZE divided
    by swp_swapcount() (the slot's page-table references) when that is 2 or more."""
    swap = mm.ctx.swap
    assert swap is not None
    mss.swap += mm.page_size
    count = swap.swap_map.get(offset, 0)
    pss = mm.page_size << PSS_SHIFT
    mss.swap_pss += pss // count if count >= 2 else pss


def _account_entry(
    mss: MemSizeStats, mem: PhysMem, page: int, nr: int, page_size: int, bits: int,
    locked: bool = False,
) -> None:
    """smaps_account() with young and dirty taken from a PTE's or huge PMD's bits."""
    smaps_account(mss, mem, page, nr, page_size, bool(bits & PTE_YOUNG), bool(bits & PTE_DIRTY),
                  locked)


def smaps_hugetlb_range(
    entry: HugePmd | None, hmask: int, addr: int, end: int, walk: MmWalk
) -> int:
    """smaps_hugetlb_range(): a mapped huge page counts whole, in Private_Hugetlb unless
    folio_likely_mapped_shared() (hugetlb: folio_mapcount() > 1), then Shared_Hugetlb.
    Nothing else (Rss, Pss, ...) counts hugetlb pages."""
    if entry is None or not entry.bits & PTE_PRESENT:
        return 0
    mss: MemSizeStats = walk.private
    mem = walk.mm.mem
    size = (~hmask + 1) & ((1 << 64) - 1)
    if mem.folio_mapcount(mem.page_folio(entry.pfn)) > 1:
        mss.shared_hugetlb += size
    else:
        mss.private_hugetlb += size
    return 0


SMAPS_OPS = MmWalkOps(pmd_entry=smaps_pte_range, hugetlb_entry=smaps_hugetlb_range)
"""smaps_walk_ops: hugetlb pages only in Shared/Private_Hugetlb (smaps_hugetlb_range())."""


def smap_gather_stats(mm: MmStruct, vma: Vma) -> MemSizeStats:
    """smap_gather_stats(): walk_page_vma() with the smaps callbacks."""
    mss = MemSizeStats(start=vma.start, end=vma.end)
    walk_page_vma(vma, mm, SMAPS_OPS, mss)
    return mss


def smaps(mm: MmStruct) -> list[MemSizeStats]:
    """One MemSizeStats per VMA, in address order (show_smap())."""
    return [smap_gather_stats(mm, vma) for vma in mm.each_vma()]


def smaps_rollup(mm: MmStruct) -> MemSizeStats:
    """The fixed-point sums over all VMAs (show_smaps_rollup()): one mss, one floor when shown."""
    total = MemSizeStats()
    vmas = mm.each_vma()
    if vmas:
        total.start, total.end = vmas[0].start, vmas[-1].end
    for mss in smaps(mm):
        total.add(mss)
    return total


def rollup_fixed_point(mm: MmStruct) -> dict[str, int]:
    """The rollup's fixed-point sums (bytes << PSS_SHIFT) by field name, before the kB floor."""
    total = smaps_rollup(mm)
    return {
        "Pss": total.pss,
        "Pss_Dirty": total.pss_dirty,
        "Pss_Anon": total.pss_anon,
        "Pss_File": total.pss_file,
        "Pss_Shmem": total.pss_shmem,
        "SwapPss": total.swap_pss,
        "Locked": total.pss_locked,
    }


def thp_eligible(mm: MmStruct, vma: Vma) -> bool:
    """THPeligible: thp_vma_allowable_orders(vma, TVA_SMAPS | TVA_ENFORCE_SYSFS, all) != 0.

    mm/huge_memory.c __thp_vma_allowable_orders(): an anonymous VMA without
    VM_NOHUGEPAGE whose sysfs order mask (:func:`sim.mm.settings.anon_order_mask`,
    every order 2..PMD_ORDER; with the boot knobs only VM_HUGEPAGE VMAs, for
    the PMD order) holds an order for which a naturally aligned range ending
    at or before vm_end lies inside it (thp_vma_suitable_order() at
    ``vm_end - size``).  6.1's
    hugepage_vma_check(smaps=true) answers the same for these VMAs.  A shmem VMA:
    :func:`~sim.mm.shmem_thp.shmem_thp_eligible` (shmem_allowable_huge_orders()).
    """
    if vma.file is not None and not vma.hugetlb:
        return shmem_thp_eligible(mm, vma)
    if not mm.ctx.thp or not vma.anonymous or vma.flags & VM_NOHUGEPAGE:
        return False
    pmd_order = mm.pt.pmd_shift - mm.arch.page_shift
    for order in anon_order_mask(mm.ctx.settings, vma.flags, pmd_order):
        size = mm.page_size << order
        if thp_vma_suitable_order(mm, vma, vma.end - size, order):
            return True
    return False


def vma_header(mm: MmStruct, vma: Vma, path: str | None) -> SmapsHeader:
    """show_map_vma()'s line: range, perms, offset, device, inode, name.

    An anonymous VMA prints offset 0, device 00:00, inode 0 and no name.  A
    VMA with a file prints ``vm_pgoff << PAGE_SHIFT``; its device and inode are
    the guest's (tmpfs, or the internal shm mount for shared anonymous memory)
    and the model gives the kernel's numbers only as far as it knows them:
    ``device`` None, ``inode`` the model's own.  ``path``: the file's name
    (d_path() of an unlinked file ends in `` (deleted)``).
    """
    flags = vma.flags
    perms = "".join((
        "r" if flags & 0x1 else "-",
        "w" if flags & 0x2 else "-",
        "x" if flags & 0x4 else "-",
        "s" if flags & 0x80 else "p",
    ))
    if vma.file is None:
        return SmapsHeader(vma.start, vma.end, perms, 0, "00:00", 0, "")
    return SmapsHeader(
        vma.start, vma.end, perms, vma.pgoff << mm.arch.page_shift, None, vma.file.inode,
        path or "",
    )


def smap_blocks(
    mm: MmStruct, facts: KernelFacts, path_of: dict[int, str] | None = None
) -> list[SmapsBlock]:
    """show_smap() of every VMA: header, sizes, the counters in kB, THPeligible, VmFlags.

    ``path_of``: inode -> the path the guest names the file by (default the
    model file's own name).
    """
    blocks = []
    page_kb = mm.page_size >> 10
    for vma in mm.each_vma():
        mss = smap_gather_stats(mm, vma)
        path = None
        # vma_kernel_pagesize() / vma_mmu_pagesize() (powerpc radix: the same):
        # the huge page size in a hugetlb VMA.
        kb = page_kb
        if vma.hugetlb and mm.ctx.hstate is not None:
            kb = (mm.page_size << mm.ctx.hstate.order) >> 10
        if vma.hugetlb and vma.file is not None:
            path = vma.file.name  # HUGETLB_ANON_PATH
        elif vma.file is not None and vma.file.anonymous:
            path = SHMEM_ZERO_PATH
        elif vma.file is not None:
            path = (path_of or {}).get(vma.file.inode, vma.file.name)
        values = {
            "Size": (vma.end - vma.start) >> 10,
            "KernelPageSize": kb,
            "MMUPageSize": kb,
            **mss.kb(rollup=False, facts=facts),
        }
        blocks.append(SmapsBlock(
            header=vma_header(mm, vma, path),
            values=values,
            thp_eligible=int(thp_eligible(mm, vma)),
            vm_flags=vm_flag_mnemonics(vma.flags, facts.smaps_lockonfault_mnemonic),
        ))
    return blocks


#: show_smap_vma_flags(): the mnemonic of each VM_* bit the model's VMAs can carry.
_MNEMONICS = {
    0: "rd", 1: "wr", 2: "ex", 3: "sh", 4: "mr", 5: "mw", 6: "me", 7: "ms",
    12: "uw", 13: "lo", 19: "lf", 20: "ac", 21: "nr", 27: "sd", 29: "hg", 30: "nh",
    # hugetlbfs_file_mmap(): VM_DONTEXPAND, VM_HUGETLB.
    18: "de", 22: "ht",
    # madvise(): MADV_SEQUENTIAL/RANDOM, DONTFORK, WIPEONFORK, DONTDUMP, MERGEABLE.
    15: "sr", 16: "rr", 17: "dc", 25: "wf", 26: "dd", 31: "mg",
}


def vm_flag_mnemonics(flags: int, lockonfault: str = "lf") -> tuple[str, ...]:
    """The VmFlags words of ``flags``, in bit order as show_smap_vma_flags() prints them.

    ``lockonfault``: the word for VM_LOCKONFAULT (bit 19), which depends on the
    kernel (``KernelFacts.smaps_lockonfault_mnemonic``).  Raises ValueError for
    a bit the model has no mnemonic for.
    """
    words = []
    for bit in range(64):
        if flags >> bit & 1:
            if bit not in _MNEMONICS:
                raise ValueError(f"VM_* bit {bit} has no smaps mnemonic in the model")
            words.append(lockonfault if bit == 19 else _MNEMONICS[bit])
    return tuple(words)


def render_smaps(
    mm: MmStruct, facts: KernelFacts, word_size: int, path_of: dict[int, str] | None = None
) -> str:
    """The text of /proc/PID/smaps for the model's VMAs (show_smap() per VMA)."""
    return "".join(
        render_block(b, word_size=word_size, thp_width=facts.smaps_thp_eligible_width)
        for b in smap_blocks(mm, facts, path_of)
    )


def render_rollup(mm: MmStruct, facts: KernelFacts, word_size: int) -> str:
    """The text of /proc/PID/smaps_rollup (show_smaps_rollup()): first VMA start to last end."""
    total = smaps_rollup(mm)
    block = SmapsBlock(
        header=SmapsHeader(total.start, total.end, "---p", 0, "00:00", 0, "[rollup]"),
        values=total.kb(rollup=True, facts=facts),
    )
    return render_block(block, word_size=word_size, thp_width=facts.smaps_thp_eligible_width)
