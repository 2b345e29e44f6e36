"""Invariants of the memory model under random operation sequences (hypothesis).

After every operation:

* every folio's refcount is its mappings (one per PTE and per PMD, in every
  live process) plus the page cache's reference (the huge zero folio and the
  zero page are never counted: set_huge_zero_folio(), pte_mkspecial());
* every page's mapcount is the PTEs mapping it; the head's entire mapcount the
  PMDs; the large mapcount their sum (mm/rmap.c);
* no frame leaks: an in-use frame is mapped, in a page cache, or the huge zero
  folio;
* the proc files agree with each other: the present PFNs of all pagemaps count
  up to kpagecount, PM_MMAP_EXCLUSIVE is exactly "kpagecount == 1", kpagemap
  repeats kpageflags and page_count(), smaps' Rss is the present entries that
  are not zero pages.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.arch import Arch, get_arch
from sim.bulk import bulk_parse_kpagemap, bulk_parse_u64s
from sim.mm import FrameState, Machine, MmError, Process
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_PRESENT, PTE_SPECIAL
from sim.mm.settings import ThpSettings
from sim.procfs import pagemap_entries, read
from sim.smaps import smaps

ARCHES = [get_arch("x86_64"), get_arch("ppc64"), get_arch("i386")]
SLOTS = 3


@dataclass(frozen=True)
class Op:
    name: str
    proc: int
    slot: int
    first: int
    count: int
    choice: int


def region_pages(arch: Arch) -> int:
    return arch.thp_pages or 8


def slot_base(arch: Arch, slot: int) -> int:
    span = 1 << arch.level_shifts[-2]
    base = (arch.task_size // 4) // span * span
    return base + slot * 4 * span


ops = st.builds(
    Op,
    name=st.sampled_from(
        ["mmap", "mmap", "write", "write", "read", "fork", "exit", "munmap", "mprotect",
         "dontneed", "hugepage", "clear_refs", "mremap", "mremap_resize"]
    ),
    proc=st.integers(0, 3),
    slot=st.integers(0, SLOTS - 1),
    first=st.integers(0, 1 << 16),
    count=st.integers(1, 1 << 16),
    choice=st.integers(0, 7),
)


def apply(m: Machine, procs: list[Process], files: list[object], op: Op) -> None:
    arch = m.arch
    live = [p for p in procs if p.alive]
    p = live[op.proc % len(live)]
    n = region_pages(arch)
    base = slot_base(arch, op.slot)
    first = op.first % n
    count = 1 + op.count % (n - first)
    start = base + first * arch.page_size
    with contextlib.suppress(MmError):
        if op.name == "mmap":
            kind = ("anon", "file")[op.choice % 2]
            share = ("private", "shared")[op.choice // 2 % 2]
            prot = ("rw", "r")[op.choice // 4 % 2]
            file = m.create_file(n) if kind == "file" else None
            p.mmap(base, n, kind=kind, share=share, prot=prot, file=file)
        elif op.name in ("write", "read"):
            tags = [op.choice * 1000 + i for i in range(count)] if op.name == "write" else None
            p.touch(start, count, write=op.name == "write", tags=tags)
        elif op.name == "fork":
            if len(live) < 4:
                procs.append(p.fork(f"p{len(procs)}", uid=1000 if op.choice == 1 else None))
        elif op.name == "exit":
            if p is not procs[0]:
                p.exit()
        elif op.name == "munmap":
            p.munmap(start, count)
        elif op.name == "mprotect":
            p.mprotect(start, count, ("r", "rw", "none")[op.choice % 3])
        elif op.name == "dontneed":
            p.madvise(start, count, "dontneed")
        elif op.name == "mremap":
            # To the next slot: PMD-aligned, one page off, or past its region's pages.
            offset = (0, 1, n)[op.choice % 3] * arch.page_size
            target = slot_base(arch, (op.slot + 1) % SLOTS) + offset
            dontunmap = op.choice >= 4
            new = count if dontunmap else 1 + op.first % (count + 2)
            p.mremap(start, count, new, new_addr=target, dontunmap=dontunmap)
        elif op.name == "mremap_resize":
            p.mremap(start, count, 1 + op.first % (count + 4))
        elif op.name == "hugepage":
            if arch.thp_level is not None:
                p.madvise(start, count, "hugepage")
        else:
            p.clear_refs(4)


def check_invariants(m: Machine, procs: list[Process]) -> None:
    mem = m.mem
    arch = m.arch
    n = mem.max_dump_pfn
    pte_maps = np.zeros(n, dtype=np.int64)
    pmd_maps = np.zeros(n, dtype=np.int64)
    live = [p for p in procs if p.alive]
    for p in live:
        for _, entry in p.mm.pt.pmd_entries(0, arch.task_size):
            if isinstance(entry, HugePmd):
                if not mem.is_huge_zero_folio(entry.pfn):
                    pmd_maps[entry.pfn] += 1
                continue
            assert isinstance(entry, PteTable)
            normal = ((entry.bits & PTE_PRESENT) != 0) & ((entry.bits & PTE_SPECIAL) == 0)
            np.add.at(pte_maps, entry.pfn[normal], 1)
    inuse = mem.state == FrameState.INUSE
    heads = np.flatnonzero(inuse & (mem.head == np.arange(n)))
    for head in heads.tolist():
        nr = 1 << int(mem.order[head])
        if mem.is_huge_zero_folio(head):
            assert mem.refcount[head] == 1
            continue
        ptes = int(pte_maps[head : head + nr].sum())
        pmds = int(pmd_maps[head])
        cache = nr if mem.file_id[head] else 0
        assert mem.refcount[head] == ptes + pmds + cache, f"folio {head:#x}"
        assert (mem.mapcount[head : head + nr] == pte_maps[head : head + nr]).all()
        if nr > 1:
            assert mem.entire_mapcount[head] == pmds
            assert mem.large_mapcount[head] == ptes + pmds
        assert ptes + pmds + cache > 0, f"folio {head:#x} leaked"
    assert not (pte_maps[~inuse]).any() and not (pmd_maps[~inuse]).any()

    # The proc files against each other.
    seen: Counter[int] = Counter()
    kflags = bulk_parse_u64s(arch, read(m, "/proc/kpageflags", 0, n * 8))
    kcount = bulk_parse_u64s(arch, read(m, "/proc/kpagecount", 0, n * 8))
    _header, flags, counts = bulk_parse_kpagemap(
        read(m, "/proc/kpagemap", 0, (n + 1) * arch.kpagemap_entry_size))
    word = (1 << (8 * arch.word_size)) - 1
    assert (flags.astype(np.uint64) == (kflags & np.uint64(word))).all()
    assert (counts.astype(np.int64) == mem.page_count_values(np.arange(n))).all()
    zero_pfns = {m.zero_pfn}
    if m.huge_zero_pfn is not None:
        zero_pfns |= set(range(m.huge_zero_pfn, m.huge_zero_pfn + arch.thp_pages))
    for p in live:
        for vma, mss in zip(p.vmas, smaps(p.mm), strict=True):
            nr_pages = (vma.end - vma.start) >> arch.page_shift
            entries = pagemap_entries(m, p, vma.start, nr_pages)
            rss = 0
            for e in entries:
                if not e.present:
                    continue
                assert e.pfn is not None
                if e.pfn in zero_pfns:
                    assert not e.exclusive
                    continue
                rss += 1
                seen[e.pfn] += 1
                assert e.exclusive == (int(kcount[e.pfn]) == 1)
            assert mss.resident == rss * arch.page_size
    for pfn, count in seen.items():
        assert int(kcount[pfn]) == count, f"pfn {pfn:#x}"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(arch=st.sampled_from(ARCHES), sequence=st.lists(ops, min_size=1, max_size=14))
def test_random_operations_keep_the_invariants(arch: Arch, sequence: list[Op]) -> None:
    m = Machine(arch, ram_bytes=64 << 20)
    procs = [m.spawn("main")]
    for op in sequence:
        apply(m, procs, [], op)
        check_invariants(m, procs)


mthp_settings = st.builds(
    lambda enabled, modes: ThpSettings(enabled=enabled, mthp=MappingProxyType(
        {order: mode for order, mode in enumerate(modes, start=2) if mode is not None})),
    enabled=st.sampled_from(["always", "madvise", "never"]),
    modes=st.lists(st.sampled_from([None, "always", "inherit", "madvise", "never"]),
                   min_size=8, max_size=8),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(arch=st.sampled_from(ARCHES[:2]), knobs=mthp_settings,
       sequence=st.lists(ops, min_size=1, max_size=14))
def test_random_operations_with_mthp_keep_the_invariants(
    arch: Arch, knobs: ThpSettings, sequence: list[Op]
) -> None:
    """The same invariants with random THP and mTHP knobs (sim/mm/settings.py): PTE-mapped
    large folios through fork, COW, munmap, mprotect, DONTNEED and mremap."""
    m = Machine(arch, ram_bytes=64 << 20)
    pmd_order = arch.thp_pages.bit_length() - 1
    m.ctx.settings = ThpSettings(
        enabled=knobs.enabled,
        mthp=MappingProxyType({o: v for o, v in knobs.mthp.items() if o <= pmd_order}),
    )
    procs = [m.spawn("main")]
    for op in sequence:
        apply(m, procs, [], op)
        check_invariants(m, procs)
