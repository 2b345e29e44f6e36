"""The hugetlb model (sim/mm/hugetlb.py): exact values of the kernel paths it follows, and
invariants under random sequences of faults, forks, munmaps, DONTNEED and exits.

Invariants after every operation (hypothesis):

* every hugetlb folio's entire and large mapcount are the huge entries mapping
  it in all live processes; its refcount is those plus folio_nr_pages() while
  it is in a hugetlb inode's page cache (__filemap_add_folio());
* every page of it reads KPF_HUGE (COMPOUND_HEAD on the head, COMPOUND_TAIL on
  the others), never THP, and kpagecount is the entire mapcount on every page
  (folio_precise_page_mapcount(): each page's own _mapcount stays -1);
* pagemap: PM_MMAP_EXCLUSIVE exactly where folio_mapcount() is 1, PM_FILE
  exactly on page-cache folios, consecutive PFNs across the huge page;
* the pool: free pages + pages in folios = nr_huge_pages, reservations never
  negative nor above the free pages; when every process has exited, the whole
  pool is free and nothing is reserved.
"""

from __future__ import annotations

import struct
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.arch import Arch, get_arch
from sim.flags import KPF, PM
from sim.mm import Machine, MmError, Process
from sim.mm.hugetlb import HugetlbFile
from sim.mm.pagetable import HugePmd
from sim.procfs import ProcFs

ARCHES = [get_arch("x86_64"), get_arch("ppc64")]
#: Huge pages per region.
REGION_HUGES = 2


def _base(arch: Arch, slot: int) -> int:
    return (1 << 40) + slot * 4 * (arch.hugetlb_page_pages << arch.page_shift)


def _pagemap(machine: Machine, proc: Process, addr: int, pages: int) -> list[int]:
    data = ProcFs(machine).read(f"/proc/{proc.pid}/pagemap",
                                (addr >> machine.arch.page_shift) * 8, pages * 8)
    return list(struct.unpack(f"{machine.arch.struct_prefix}{pages}Q", data))


def _two_private_huge_pages() -> tuple[Arch, Machine, Process, int]:
    """x86_64, a 1 GiB machine, ``main`` with a private hugetlb mapping of two huge pages."""
    arch = get_arch("x86_64")
    m = Machine(arch, ram_bytes=1 << 30)
    p = m.spawn("main")
    addr = _base(arch, 0)
    p.mmap(addr, 2 * arch.hugetlb_page_pages, kind="hugetlb", share="private", prot="rw")
    return arch, m, p, addr


def test_private_fault_fork_cow_values() -> None:
    arch, m, p, addr = _two_private_huge_pages()
    huge = arch.hugetlb_page_pages
    assert m.ctx.hstate is not None and m.ctx.hstate.resv_huge_pages == 2
    p.touch(addr, 1, write=True, tags=[7])
    entries = _pagemap(m, p, addr, huge + 1)
    pfn = entries[0] & PM.PFN_MASK
    assert [e & PM.PFN_MASK for e in entries[:huge]] == list(range(pfn, pfn + huge))
    flags = entries[0] >> 55
    assert flags == (1 << 8) | (1 << 1) | 1  # present, exclusive, soft-dirty (new VMA)
    assert entries[huge] == 1 << PM.SOFT_DIRTY  # none entry: VM_SOFTDIRTY only
    kpf = m.stable_page_flags([pfn, pfn + 1])
    assert kpf[0] >> KPF.HUGE & 1 and kpf[1] >> KPF.HUGE & 1
    assert kpf[0] >> KPF.COMPOUND_HEAD & 1 and kpf[1] >> KPF.COMPOUND_TAIL & 1
    assert not kpf[0] >> KPF.THP & 1 and not kpf[0] >> KPF.LRU & 1
    assert m.kpagecount(pfn + 5) == 1 and m.page_count(pfn + 5) == 1
    assert m.ctx.hstate.resv_huge_pages == 1 and m.ctx.hstate.free_huge_pages == 31
    child = p.fork("child")
    assert m.kpagecount(pfn + 5) == 2 and m.page_count(pfn + 5) == 2
    assert not _pagemap(m, child, addr, 1)[0] >> PM.MMAP_EXCLUSIVE & 1
    child.touch(addr, 1, write=True, tags=[8])  # hugetlb_wp(): a copy
    copy = _pagemap(m, child, addr, 1)[0] & PM.PFN_MASK
    assert copy != pfn and m.frame_tag(copy + 1) == m.frame_tag(pfn + 1)
    assert m.kpagecount(pfn) == 1 and m.ctx.hstate.free_huge_pages == 30
    child.exit()
    p.munmap(addr, 2 * huge)
    assert (m.ctx.hstate.free_huge_pages, m.ctx.hstate.resv_huge_pages) == (32, 0)


def test_dontneed_rules() -> None:
    arch, m, p, addr = _two_private_huge_pages()
    huge = arch.hugetlb_page_pages
    p.touch(addr, 2 * huge, write=True, tags=list(range(1, 2 * huge + 1)))
    for advice, first, pages in (("dontneed", 1, huge), ("free", 0, huge)):
        try:
            p.madvise(addr + first * arch.page_size, pages, advice)
        except MmError as e:
            assert e.errno == 22
        else:
            raise AssertionError(f"{advice} at page {first} is EINVAL")
    p.madvise(addr, huge + 3, "dontneed")  # rounded down to the first huge page
    entries = _pagemap(m, p, addr, 2 * huge)
    assert not entries[0] >> PM.PRESENT & 1 and entries[huge] >> PM.PRESENT & 1


ops = st.lists(
    st.tuples(st.sampled_from(["mmap", "write", "read", "fork", "munmap", "dontneed", "exit"]),
              st.integers(0, 3), st.integers(0, 2), st.integers(0, REGION_HUGES - 1),
              st.booleans()),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=st.sampled_from(ARCHES), program=ops)
def test_invariants(arch: Arch, program: list[tuple[str, int, int, int, bool]]) -> None:
    m = Machine(arch, ram_bytes=1 << 30)
    huge = arch.hugetlb_page_pages
    procs = [m.spawn("main")]
    mapped: list[dict[int, set[int]]] = [{}]  # per process: slot -> huge pages mapped
    for name, who, slot, page, shared in program:
        i = who % len(procs)
        proc, regions = procs[i], mapped[i]
        addr = _base(arch, slot)
        page_addr = addr + page * huge * arch.page_size
        if name == "mmap" and slot not in regions:
            proc.mmap(addr, REGION_HUGES * huge, kind="hugetlb",
                      share="shared" if shared else "private", prot="rw")
            regions[slot] = set(range(REGION_HUGES))
        elif name in ("write", "read") and page in regions.get(slot, ()):
            proc.touch(page_addr, 1, write=name == "write", tags=[1] if name == "write" else None)
        elif name == "fork" and len(procs) < 4:
            procs.append(proc.fork(f"c{len(procs)}"))
            mapped.append({s: set(pages) for s, pages in regions.items()})
        elif name == "munmap" and page in regions.get(slot, ()):
            proc.munmap(page_addr, huge)
            regions[slot].discard(page)
        elif name == "dontneed" and page in regions.get(slot, ()):
            proc.madvise(page_addr, huge, "dontneed")
        elif name == "exit" and i > 0:
            proc.exit()
            del procs[i], mapped[i]
        _check(m, procs)
    for proc in reversed(procs):
        proc.exit()
    hstate = m.ctx.hstate
    assert hstate is not None
    assert (hstate.free_huge_pages, hstate.resv_huge_pages) == (hstate.nr_huge_pages, 0)


def _check(m: Machine, procs: list[Process]) -> None:
    mem = m.mem
    hstate = m.ctx.hstate
    assert hstate is not None
    maps: Counter[int] = Counter()
    for proc in procs:
        for vma in proc.vmas:
            if not vma.hugetlb:
                continue
            for addr in range(vma.start, vma.end, m.arch.hugetlb_page_pages << m.arch.page_shift):
                entry = proc.mm.pt.get_pmd(addr)
                if isinstance(entry, HugePmd):
                    maps[entry.pfn] += 1
    cached: set[int] = set()
    for proc in procs:
        for vma in proc.vmas:
            if isinstance(vma.file, HugetlbFile):
                cached |= set(vma.file.cache.values())
    heads = set(np.flatnonzero(mem.hugetlb).tolist())
    assert set(maps) | cached <= heads
    assert len(heads) + hstate.free_huge_pages == hstate.nr_huge_pages
    assert 0 <= hstate.resv_huge_pages <= hstate.free_huge_pages
    nr = hstate.nr_pages
    for head in heads:
        assert mem.entire_mapcount[head] == mem.large_mapcount[head] == maps[head]
        assert mem.refcount[head] == maps[head] + (nr if head in cached else 0)
        pfns = np.arange(head, head + nr)
        kpf = np.asarray(m.stable_page_flags(pfns), dtype=np.uint64)
        assert np.all(kpf >> np.uint64(KPF.HUGE) & np.uint64(1))
        assert not np.any(kpf >> np.uint64(KPF.THP) & np.uint64(1))
        assert kpf[0] >> np.uint64(KPF.COMPOUND_HEAD) & np.uint64(1)
        assert np.all(kpf[1:] >> np.uint64(KPF.COMPOUND_TAIL) & np.uint64(1))
        assert {m.kpagecount(int(p)) for p in pfns[:: nr // 4]} == {maps[head]}
    for proc in procs:
        for vma in proc.vmas:
            if not vma.hugetlb:
                continue
            pages = (vma.end - vma.start) >> m.arch.page_shift
            for k, value in enumerate(_pagemap(m, proc, vma.start, pages)[:: nr]):
                if not value >> PM.PRESENT & 1:
                    continue
                head = value & PM.PFN_MASK
                assert bool(value >> PM.MMAP_EXCLUSIVE & 1) == (maps[head] == 1), k
                assert bool(value >> PM.FILE & 1) == (head in cached), k
