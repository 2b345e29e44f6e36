"""The footprint computation: one pass over pagemaps, one over the PFNs they name.

Which file answers which question (fs/proc/task_mmu.c, fs/proc/page.c):

* **pagemap** (per process, per virtual page): present or swapped, and the
  PFN (zero without CAP_SYS_ADMIN).  Each present entry is one mapping of a
  frame, as smaps_pte_range() walks them: per-process RSS and PSS count
  mappings, the group's union RSS counts frames.
* **kpagecount** = the mapcount (``folio_precise_page_mapcount()``): how many
  page-table entries map the frame, all processes together.  It answers
  *sharing*: PSS divides by it (smaps_account()), USS is the frames with
  mapcount 1, and a frame is *group-exclusive* when the group's own mappings
  of it (counted from the group's pagemaps) equal it.
* **kpageflags** (or the flags word of **kpagemap**) = the KPF bits
  (stable_page_flags()): the category split -- anon (KPF_ANON), shmem
  (KPF_SWAPBACKED without ANON), file (neither), THP (KPF_THP: any large
  folio), KSM, zero page, hugetlb (KPF_HUGE), locked (KPF_MLOCKED), swap
  cache, dirty (KPF_DIRTY is the folio flag: PTE dirty bits are not
  exported, so smaps' *_Dirty, which also counts PTE-dirty pages, can be larger).
* **kpagemap**'s count = the refcount (``page_count()``), where the kernel has
  the file: mappings plus every other reference.  It answers *pins*: an
  order-0 frame with more references than its mappings plus its page-cache /
  swap-cache reference is held by someone else (GUP pins, I/O in flight,
  per-CPU LRU batches).  mapcount never tells that; refcount alone never
  tells sharing.

What smaps counts and this follows: a present PTE/PMD whose page has a
struct page mapping (vm_normal_page() non-NULL).  The zero pages and
VM_PFNMAP/VM_IO frames have mapcount 0 and are left out of RSS (zero-page
mappings are reported apart), as are hugetlb pages (smaps shows them only in
*_Hugetlb).  PSS per mapping is ``(PAGE_SIZE << PSS_SHIFT) / mapcount``
(integer division) for mapcount >= 2, else ``PAGE_SIZE << PSS_SHIFT``,
summed in that fixed point; smaps_rollup prints ``sum >> PSS_SHIFT >> 10``.
Migration entries, which smaps counts as resident, read as swapped in
pagemap and are not counted here.  Swap is counted from pagemap: entries with
PM_SWAP whose swap type is a swap device's (below :data:`MAX_SWAPFILES`), as
smaps_pte_entry() counts only ``!non_swap_entry()``; a uffd-wp PTE marker
(type SWP_PTE_MARKER) or a migration entry is not swap.  An unprivileged
reader sees type 0 for every entry, so markers count as swap there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sim.bulk import bulk_decode_pagemap, bulk_parse_kpagemap_entries, bulk_parse_u64s
from sim.flags import KPF
from sim.footprint.source import PageSource, PrivilegeError, ProcessGone, ProcessInfo, Run

__all__ = [
    "CATEGORIES",
    "PSS_SHIFT",
    "SHARING",
    "Footprint",
    "GroupFootprint",
    "ProcessFootprint",
    "ScanStats",
    "pfn_runs",
    "scan",
]

#: Swap types of swap devices (include/linux/swap.h MAX_SWAPFILES): 32 less the
#: types kept for non-swap entries, here 3 for migration (CONFIG_MIGRATION) and 1
#: for PTE markers, as in the guest kernels (no DEVICE_PRIVATE, no MEMORY_FAILURE).
MAX_SWAPFILES = 28

#: The fixed point of Pss in fs/proc/task_mmu.c (mem_size_stats.pss is bytes << 12).
PSS_SHIFT = 12
#: Category split of a group's frames; anon + file + shmem = union RSS, the
#: others are attributes that overlap them.
CATEGORIES = ("anon", "file", "shmem", "thp", "ksm", "locked", "swapcache", "dirty", "pinned")
#: Sharing split of a group's frames (sums to union RSS): mapped once
#: (private), mapped more than once but only by the group (shared_inside),
#: mapped by someone outside too (shared_outside).
SHARING = ("private", "shared_inside", "shared_outside")
#: PFN runs closer than this many entries are read as one (fewer syscalls).
DEFAULT_MAX_GAP = 16
#: Pagemap entries decoded at once (8 MiB of reads): a process reserving
#: terabytes of address space is read in bounded memory.
_BATCH_ENTRIES = 1 << 20

U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]


@dataclass
class ProcessFootprint:
    """One process's numbers, in bytes (``pss_*_fixed``: bytes << PSS_SHIFT).

    ``status`` is "ok", "exited" (vanished while scanned), "no-mm" (a
    kernel thread or zombie: nothing mapped) or "denied" (not readable by
    this user; only with ``scan(skip_denied=True)``).  ``exact`` is False when the
    numbers come from smaps_rollup (PFNs hidden): then PSS is the rollup's
    floored kB and ``pss_*_fixed`` hold that value shifted.  ``swap`` is the
    pagemap's swap entries (bytes); ``swap_pss`` smaps_rollup's (a kB floor) when
    the process has swapped pages, else 0.
    """

    pid: int
    comm: str
    status: str = "ok"
    rss: int = 0
    pss_fixed: int = 0
    pss_anon_fixed: int = 0
    pss_file_fixed: int = 0
    pss_shmem_fixed: int = 0
    uss: int = 0
    swap: int = 0
    swap_pss: int = 0
    zero_page: int = 0
    hugetlb: int = 0
    exact: bool = True

    @property
    def pss(self) -> int:
        """PSS in bytes as the kernel keeps it before printing (``mss->pss >> PSS_SHIFT``)."""
        return self.pss_fixed >> PSS_SHIFT


@dataclass
class GroupFootprint:
    """A group's numbers in bytes; None where the source cannot tell (PFNs hidden).

    ``rss`` is the union (each frame once); ``exclusive`` = private +
    shared_inside: frames all of whose mappings belong to the group.
    ``categories[c][s]`` is the bytes of frames of category c with sharing s.
    ``inconsistent_frames`` counts frames the group maps more often than
    their mapcount says (a process changed while read: freeze the group).
    """

    name: str
    members: list[ProcessFootprint]
    rss: int | None = 0
    exclusive: int | None = 0
    private: int | None = 0
    shared_inside: int | None = 0
    shared_outside: int | None = 0
    pss_fixed: int = 0
    swap: int = 0
    swap_pss: int = 0
    zero_page: int = 0
    categories: dict[str, dict[str, int]] | None = None
    inconsistent_frames: int = 0
    exact: bool = True

    @property
    def pss(self) -> int:
        """Sum of the members' PSS in bytes (fixed-point sum >> PSS_SHIFT)."""
        return self.pss_fixed >> PSS_SHIFT


@dataclass
class ScanStats:
    """What a scan read: entries and read() calls per file."""

    pagemap_entries: int = 0
    pagemap_reads: int = 0
    pfns: int = 0
    pfn_runs: int = 0
    pfn_entries_read: int = 0


@dataclass
class Footprint:
    """The result of :func:`scan`: groups in order, the data used, what is approximate."""

    groups: list[GroupFootprint]
    page_size: int
    data: str
    approximations: list[str] = field(default_factory=list)
    stats: ScanStats = field(default_factory=ScanStats)


def pfn_runs(pfns: U64, max_gap: int = DEFAULT_MAX_GAP) -> list[Run]:
    """Runs (first PFN, count) covering the sorted unique ``pfns``.

    PFNs with at most ``max_gap`` unwanted PFNs between them share a run, so
    a read covers a few unneeded entries instead of costing another syscall.
    """
    if pfns.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(pfns) > np.uint64(max_gap + 1)) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [pfns.size])) - 1
    return [
        (int(pfns[s]), int(pfns[e]) - int(pfns[s]) + 1)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    ]


@dataclass
class _Pages:
    """One process's pagemap, decoded: PFNs of present entries, swapped count."""

    info: ProcessInfo
    status: str
    pfns: U64
    swapped: int = 0


@dataclass
class _FrameTable:
    """Values per PFN for the sorted unique PFNs the group pagemaps name."""

    pfns: U64
    flags: U64
    mapcount: U64
    refcount: U64 | None

    def lookup(self, pfns: U64) -> npt.NDArray[np.intp]:
        index: npt.NDArray[np.intp] = np.searchsorted(self.pfns, pfns)
        return index


def _bit(flags: U64, bit: KPF) -> Bools:
    mask: Bools = (flags & np.uint64(1 << bit)) != 0
    return mask


def scan(
    source: PageSource,
    groups: Mapping[str, Sequence[ProcessInfo]],
    *,
    max_gap: int = DEFAULT_MAX_GAP,
    skip_denied: bool = False,
) -> Footprint:
    """The footprint of each group, from one read of each file.

    Every process is read once even if in several groups; PFN data is read
    once for the union of all groups, in runs (:func:`pfn_runs`).  Processes
    that vanish are reported with status "exited"; with ``skip_denied``,
    those whose pagemap this reader may not open get status "denied".  Raises
    :class:`~sim.footprint.source.PrivilegeError` (or another SourceError)
    when a file cannot be read at all.
    """
    layout = source.layout
    stats = ScanStats()
    pages: dict[int, _Pages] = {}
    for members in groups.values():
        for info in members:
            if info.pid not in pages:
                pages[info.pid] = _read_process(
                    source, info, stats, skip_denied=skip_denied
                )
    present = [p.pfns for p in pages.values() if p.pfns.size]
    hidden = bool(present) and not any(bool(p.any()) for p in present)
    if hidden:
        return _from_rollups(source, groups, pages, layout.page_size, stats)
    table = _read_frames(source, present, max_gap, stats)
    data = (
        "pagemap + kpagemap + kpagecount" if source.has_kpagemap else
        "pagemap + kpageflags + kpagecount"
    )
    result = Footprint(groups=[], page_size=layout.page_size, data=data, stats=stats)
    per_process: dict[int, tuple[ProcessFootprint, U64]] = {}
    for pid, p in pages.items():
        per_process[pid] = _process_footprint(source, p, table, layout.page_size)
    for name, members in groups.items():
        result.groups.append(
            _group_footprint(name, [per_process[i.pid] for i in members], table, layout.page_size)
        )
    if not source.has_kpagemap:
        result.approximations.append(
            "pinned: no /proc/kpagemap, so no refcounts; pins are not counted"
        )
    return result


def _batches(runs: list[Run]) -> list[list[Run]]:
    """``runs`` cut into batches of at most _BATCH_ENTRIES entries (bounded memory)."""
    batches: list[list[Run]] = [[]]
    size = 0
    for first, count in runs:
        while count:
            take = min(count, _BATCH_ENTRIES - size)
            batches[-1].append((first, take))
            first, count, size = first + take, count - take, size + take
            if size == _BATCH_ENTRIES:
                batches.append([])
                size = 0
    return [batch for batch in batches if batch]


def _read_process(
    source: PageSource, info: ProcessInfo, stats: ScanStats, *, skip_denied: bool
) -> _Pages:
    empty = np.zeros(0, dtype=np.uint64)
    shift = source.layout.page_shift
    pfns: list[U64] = []
    swapped = 0
    try:
        ranges = source.vma_ranges(info.pid)
        if not ranges:
            return _Pages(info, "no-mm", empty)
        runs = [(start >> shift, (end - start) >> shift) for start, end in ranges]
        for batch in _batches(runs):
            data = b"".join(source.pagemap(info.pid, batch))
            stats.pagemap_reads += len(batch)
            # A short read (past the task size) leaves whole entries.
            data = data[: len(data) - len(data) % 8]
            columns = bulk_decode_pagemap(source.layout, data, validate=False)
            stats.pagemap_entries += len(columns)
            pfns.append(columns.pfn[columns.present])
            swapped += int(np.count_nonzero(
                columns.swapped & (columns.swap_type < MAX_SWAPFILES)))
    except ProcessGone:
        return _Pages(info, "exited", empty)
    except PrivilegeError:
        if not skip_denied:
            raise
        return _Pages(info, "denied", empty)
    return _Pages(info, "ok", np.concatenate(pfns) if pfns else empty, swapped)


def _unique(values: U64) -> tuple[U64, npt.NDArray[np.intp]]:
    """Sorted distinct values and how often each occurs (a sort, no hashing)."""
    ordered = np.sort(values)
    if ordered.size == 0:
        return ordered, np.zeros(0, dtype=np.intp)
    first = np.empty(ordered.size, dtype=np.bool_)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts: npt.NDArray[np.intp] = np.diff(np.append(starts, ordered.size))
    distinct: U64 = ordered[starts]
    return distinct, counts


class _Placement:
    """Where each wanted PFN sits in the concatenation of the runs' reads.

    Reads may be short (past the end of the file): a PFN beyond what its
    run returned is not ``valid`` and keeps the default values (NOPAGE,
    count 0), as the kernel reports PFNs without a page.
    """

    def __init__(self, pfns: U64, runs: list[Run], reads: list[bytes], entry_size: int) -> None:
        firsts = np.array([first for first, _ in runs], dtype=np.uint64)
        got = np.array([len(data) // entry_size for data in reads], dtype=np.intp)
        starts = np.concatenate(([0], np.cumsum(got)[:-1])).astype(np.intp)
        run_of = np.searchsorted(firsts, pfns, side="right") - 1
        relative = (pfns - firsts[run_of]).astype(np.intp)
        self.valid: Bools = relative < got[run_of]
        self.position = (starts[run_of] + relative)[self.valid]

    def fill(self, target: U64, values: npt.NDArray[np.unsignedinteger[Any]]) -> None:
        target[self.valid] = values[self.position]


def _read_frames(
    source: PageSource, present: list[U64], max_gap: int, stats: ScanStats
) -> _FrameTable:
    layout = source.layout
    pfns: U64 = _unique(np.concatenate(present))[0] if present else np.zeros(0, np.uint64)
    runs = pfn_runs(pfns, max_gap)
    stats.pfns, stats.pfn_runs = int(pfns.size), len(runs)
    stats.pfn_entries_read = sum(count for _, count in runs)
    # Defaults for a PFN past the end of the files: NOPAGE, count 0, as the
    # kernel reports PFNs without a page.
    flags = np.full(pfns.size, 1 << KPF.NOPAGE, dtype=np.uint64)
    mapcount = np.zeros(pfns.size, dtype=np.uint64)
    refcount = np.zeros(pfns.size, dtype=np.uint64) if source.has_kpagemap else None
    if not runs:
        return _FrameTable(pfns, flags, mapcount, refcount)
    counts = source.kpagecount(runs)
    _Placement(pfns, runs, counts, 8).fill(mapcount, bulk_parse_u64s(layout, b"".join(counts)))
    wide: list[bytes] | None = None
    if source.has_kpagemap:
        slots = source.kpagemap(runs)
        slot_flags, slot_refs = bulk_parse_kpagemap_entries(layout, b"".join(slots))
        placement = _Placement(pfns, runs, slots, 2 * layout.word_size)
        assert refcount is not None
        placement.fill(refcount, slot_refs)
        if layout.word_size < 8:
            # A 32-bit kpagemap holds KPF bits 0-31 only; take them all from kpageflags.
            wide = source.kpageflags(runs)
        else:
            placement.fill(flags, slot_flags)
    else:
        wide = source.kpageflags(runs)
    if wide is not None:
        _Placement(pfns, runs, wide, 8).fill(flags, bulk_parse_u64s(layout, b"".join(wide)))
    return _FrameTable(pfns, flags, mapcount, refcount)


def _process_footprint(
    source: PageSource, p: _Pages, table: _FrameTable, page_size: int
) -> tuple[ProcessFootprint, U64]:
    result = ProcessFootprint(pid=p.info.pid, comm=p.info.comm, status=p.status)
    if p.status != "ok":
        return result, np.zeros(0, dtype=np.uint64)
    index = table.lookup(p.pfns)
    flags, mapcount = table.flags[index], table.mapcount[index]
    zero = _bit(flags, KPF.ZERO_PAGE)
    hugetlb = _bit(flags, KPF.HUGE)
    counted = (mapcount > 0) & ~zero & ~hugetlb & ~_bit(flags, KPF.NOPAGE)
    result.zero_page = int(np.count_nonzero(zero)) * page_size
    result.hugetlb = int(np.count_nonzero(hugetlb & ~zero)) * page_size
    m = mapcount[counted]
    f = flags[counted]
    whole = page_size << PSS_SHIFT
    # smaps_account(): pss = (PAGE_SIZE << PSS_SHIFT) / mapcount for mapcount >= 2.
    share = np.where(m >= 2, np.uint64(whole) // np.maximum(m, np.uint64(1)), np.uint64(whole))
    anon = _bit(f, KPF.ANON)
    shmem = _bit(f, KPF.SWAPBACKED) & ~anon
    result.rss = int(m.size) * page_size
    result.pss_fixed = int(share.sum(dtype=np.uint64))
    result.pss_anon_fixed = int(share[anon].sum(dtype=np.uint64))
    result.pss_shmem_fixed = int(share[shmem].sum(dtype=np.uint64))
    result.pss_file_fixed = result.pss_fixed - result.pss_anon_fixed - result.pss_shmem_fixed
    result.uss = int(np.count_nonzero(m == 1)) * page_size
    result.swap = p.swapped * page_size
    if p.swapped:
        # SwapPss needs the swap count (swp_swapcount()), which no file exports:
        # smaps_rollup's, for the whole process.
        try:
            rollup = source.smaps_rollup(p.info.pid)
        except ProcessGone:
            result.status = "exited"
            return result, np.zeros(0, dtype=np.uint64)
        result.swap_pss = rollup.get("SwapPss", 0) << 10
    counted_pfns: U64 = p.pfns[counted]
    return result, counted_pfns


def _group_footprint(
    name: str,
    members: list[tuple[ProcessFootprint, U64]],
    table: _FrameTable,
    page_size: int,
) -> GroupFootprint:
    live = [(pf, pfns) for pf, pfns in members if pf.status == "ok"]
    group = GroupFootprint(name=name, members=[pf for pf, _ in members])
    group.pss_fixed = sum(pf.pss_fixed for pf, _ in live)
    group.swap = sum(pf.swap for pf, _ in live)
    group.swap_pss = sum(pf.swap_pss for pf, _ in live)
    group.zero_page = sum(pf.zero_page for pf, _ in live)
    mapped = np.concatenate([pfns for _, pfns in live]) if live else np.zeros(0, np.uint64)
    frames, times = _unique(mapped)
    index = table.lookup(frames)
    mapcount, flags = table.mapcount[index], table.flags[index]
    inside = times.astype(np.uint64)
    group.inconsistent_frames = int(np.count_nonzero(inside > mapcount))
    exclusive = inside >= mapcount
    sharing = {
        "private": exclusive & (mapcount <= 1),
        "shared_inside": exclusive & (mapcount >= 2),
        "shared_outside": ~exclusive,
    }
    anon = _bit(flags, KPF.ANON)
    swapbacked = _bit(flags, KPF.SWAPBACKED)
    categories = {
        "anon": anon,
        "file": ~anon & ~swapbacked,
        "shmem": ~anon & swapbacked,
        "thp": _bit(flags, KPF.THP),
        "ksm": _bit(flags, KPF.KSM),
        "locked": _bit(flags, KPF.MLOCKED),
        "swapcache": _bit(flags, KPF.SWAPCACHE),
        "dirty": _bit(flags, KPF.DIRTY),
        "pinned": _pinned(table, index, flags, mapcount, anon),
    }
    group.categories = {
        category: {
            kind: int(np.count_nonzero(mask & share)) * page_size
            for kind, share in sharing.items()
        }
        for category, mask in categories.items()
    }
    group.rss = int(frames.size) * page_size
    group.private = int(np.count_nonzero(sharing["private"])) * page_size
    group.shared_inside = int(np.count_nonzero(sharing["shared_inside"])) * page_size
    group.shared_outside = int(np.count_nonzero(sharing["shared_outside"])) * page_size
    group.exclusive = group.private + group.shared_inside
    return group


def _pinned(
    table: _FrameTable, index: npt.NDArray[np.intp], flags: U64, mapcount: U64, anon: Bools
) -> Bools:
    """Order-0 frames with more references than mappings + their cache reference."""
    if table.refcount is None:
        return np.zeros(index.size, dtype=np.bool_)
    refcount = table.refcount[index]
    small = ~_bit(flags, KPF.COMPOUND_HEAD) & ~_bit(flags, KPF.COMPOUND_TAIL)
    cached = (~anon | _bit(flags, KPF.SWAPCACHE)).astype(np.uint64)
    pinned: Bools = small & (refcount > mapcount + cached)
    return pinned


def _from_rollups(
    source: PageSource,
    groups: Mapping[str, Sequence[ProcessInfo]],
    pages: dict[int, _Pages],
    page_size: int,
    stats: ScanStats,
) -> Footprint:
    """Without PFNs: per-process numbers from smaps_rollup, group numbers bounded."""
    per_process: dict[int, ProcessFootprint] = {}
    for pid, p in pages.items():
        pf = ProcessFootprint(pid=pid, comm=p.info.comm, status=p.status, exact=False)
        if p.status == "ok":
            try:
                rollup = source.smaps_rollup(pid)
            except ProcessGone:
                pf.status = "exited"
            else:
                kb = {key: value << 10 for key, value in rollup.items()}
                pf.rss = kb.get("Rss", 0)
                pf.pss_fixed = kb.get("Pss", 0) << PSS_SHIFT
                pf.pss_anon_fixed = kb.get("Pss_Anon", 0) << PSS_SHIFT
                pf.pss_file_fixed = kb.get("Pss_File", 0) << PSS_SHIFT
                pf.pss_shmem_fixed = kb.get("Pss_Shmem", 0) << PSS_SHIFT
                pf.uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
                pf.swap = kb.get("Swap", 0)
                pf.swap_pss = kb.get("SwapPss", 0)
        per_process[pid] = pf
    result = Footprint(
        groups=[],
        page_size=page_size,
        data="smaps_rollup (pagemap PFNs hidden: no CAP_SYS_ADMIN)",
        stats=stats,
        approximations=[
            "PSS, USS, RSS: smaps_rollup's whole kB (PSS floored once per process)",
            "group RSS: sum of member RSS, an upper bound (shared frames counted per member)",
            "group exclusive: sum of member USS, a lower bound (frames shared only inside "
            "the group are missed); shared inside/outside and the category split: unknown",
        ],
    )
    for name, members in groups.items():
        rows = [per_process[i.pid] for i in members]
        live = [pf for pf in rows if pf.status == "ok"]
        result.groups.append(
            GroupFootprint(
                name=name,
                members=rows,
                rss=sum(pf.rss for pf in live),
                exclusive=sum(pf.uss for pf in live),
                private=None,
                shared_inside=None,
                shared_outside=None,
                pss_fixed=sum(pf.pss_fixed for pf in live),
                swap=sum(pf.swap for pf in live),
                swap_pss=sum(pf.swap_pss for pf in live),
                exact=False,
            )
        )
    return result
