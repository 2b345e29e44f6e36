"""The swap model (sim/mm/swapfile.py): the paths one by one, and the bookkeeping as a property.

Kernel: mm/swapfile.c, mm/swap_state.c, mm/vmscan.c shrink_folio_list(),
mm/rmap.c try_to_unmap_one(), mm/memory.c do_swap_page() (6.12.117).
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import get_arch
from sim.flags import KPF
from sim.mm import Machine, MmError, Process
from sim.mm.pagetable import PteTable
from sim.mm.syscall import NotModelled
from sim.procfs import pagemap_entries
from sim.smaps import PSS_SHIFT, smap_gather_stats

ADDR = 0x10000000
SWAP_BYTES = 64 << 20


def _machine(arch_name: str = "x86_64") -> tuple[Machine, Process]:
    machine = Machine(get_arch(arch_name))
    machine.add_swap_device(SWAP_BYTES)
    return machine, machine.spawn("main")


def _flags(machine: Machine, pfn: int | None) -> int:
    assert pfn is not None
    machine.lru_add_drain()
    return machine.stable_page_flags([pfn])[0]


def test_pageout_swaps_out_and_a_read_maps_the_swap_cache_folio_back() -> None:
    machine, p = _machine()
    p.mmap(ADDR, 2)
    p.touch(ADDR, 2, write=True, tags=[7, 8])
    before = pagemap_entries(machine, p, ADDR, 2)
    p.madvise(ADDR, 2, "pageout")
    swapped = pagemap_entries(machine, p, ADDR, 2)
    assert [e.swapped for e in swapped] == [True, True]
    assert [e.present or e.exclusive for e in swapped] == [False, False]
    assert all(e.soft_dirty for e in swapped)  # pte_swp_mksoft_dirty()
    assert len({e.swap_offset for e in swapped}) == 2
    p.touch(ADDR, 1, write=False)
    back = pagemap_entries(machine, p, ADDR, 1)[0]
    assert back.present and back.pfn == before[0].pfn and back.exclusive
    flags = _flags(machine, before[0].pfn)
    assert flags & (1 << KPF.SWAPCACHE) and flags & (1 << KPF.OWNER_2)
    assert not flags & (1 << KPF.DIRTY)
    # The read mapped it writable (exclusive): a write needs no fault, the page stays
    # in the swap cache; the MMU dirties the PTE.
    p.touch(ADDR, 1, write=True, tags=[9])
    assert _flags(machine, before[0].pfn) & (1 << KPF.SWAPCACHE)


def test_write_fault_frees_the_swap_cache() -> None:
    machine, p = _machine()
    p.mmap(ADDR, 1)
    p.touch(ADDR, 1, write=True, tags=[1])
    pfn = pagemap_entries(machine, p, ADDR, 1)[0].pfn
    p.madvise(ADDR, 1, "pageout")
    p.touch(ADDR, 1, write=True, tags=[2])
    entry = pagemap_entries(machine, p, ADDR, 1)[0]
    assert entry.pfn == pfn and entry.exclusive
    flags = _flags(machine, pfn)
    assert not flags & (1 << KPF.SWAPCACHE) and flags & (1 << KPF.DIRTY)
    swap = machine.ctx.swap
    assert swap is not None and swap.inuse_pages() == 0


def test_fork_shares_the_swap_entry_and_smaps_halves_swap_pss() -> None:
    machine, p = _machine()
    p.mmap(ADDR, 1)
    p.touch(ADDR, 1, write=True, tags=[1])
    p.madvise(ADDR, 1, "pageout")
    child = p.fork("child")
    swap = machine.ctx.swap
    assert swap is not None and list(swap.swap_map.values()) == [2]
    vma = child.mm.vmas.vma_at(ADDR)
    assert vma is not None
    stats = smap_gather_stats(child.mm, vma)
    assert stats.swap == machine.arch.page_size
    assert stats.swap_pss >> PSS_SHIFT == machine.arch.page_size // 2
    child.touch(ADDR, 1, write=False)
    entry = pagemap_entries(machine, child, ADDR, 1)[0]
    # Refcount 2 (the swap cache's and the fault's), entry not exclusive: read-only,
    # not anon-exclusive, though mapped once (PM_MMAP_EXCLUSIVE is the mapcount's).
    assert entry.present and entry.exclusive
    assert not _flags(machine, entry.pfn) & (1 << KPF.OWNER_2)


def test_swapoff_and_swapon_errors() -> None:
    machine, p = _machine()
    with pytest.raises(MmError) as on:
        machine.swapon()
    assert on.value.errno == errno.EBUSY
    machine.swapoff()
    with pytest.raises(MmError) as off:
        machine.swapoff()
    assert off.value.errno == errno.EINVAL
    p.mmap(ADDR, 1)
    p.touch(ADDR, 1, write=True, tags=[1])
    p.madvise(ADDR, 1, "pageout")  # no swap: add_to_swap() fails, the page stays
    assert pagemap_entries(machine, p, ADDR, 1)[0].present
    machine.swapon()
    p.madvise(ADDR, 1, "pageout")
    assert pagemap_entries(machine, p, ADDR, 1)[0].swapped
    child = p.fork("child")
    machine.swapoff()  # try_to_unuse(): both entries mapped back, read-only, old
    for proc in (p, child):
        entry = pagemap_entries(machine, proc, ADDR, 1)[0]
        assert entry.present and not entry.exclusive
    swap = machine.ctx.swap
    assert swap is not None and swap.inuse_pages() == 0


_OPS = st.lists(
    st.tuples(st.sampled_from(["write", "read", "pageout", "fork", "munmap", "exit",
                               "dontneed", "free"]),
              st.integers(0, 7), st.integers(1, 4), st.integers(0, 3)),
    max_size=25,
)


def _check_bookkeeping(machine: Machine) -> None:
    """Every swap entry in a page table is one count of its slot; every swap-cache folio
    holds one reference and is mapped or still referred to by an entry."""
    swap = machine.ctx.swap
    assert swap is not None
    counts: dict[int, int] = {}
    for proc in machine.processes:
        for _, entry, _, _ in proc.mm.pt.pmd_ranges(0, machine.arch.task_size):
            if isinstance(entry, PteTable):
                for i in range(entry.bits.shape[0]):
                    if int(entry.bits[i]) & 0x100:
                        offset = int(entry.pfn[i])
                        counts[offset] = counts.get(offset, 0) + 1
    assert counts == swap.swap_map
    mem = machine.mem
    for offset, head in swap.cache.items():
        assert swap.folio_swap[head] == offset
        assert mem.folio_ref_count(head) == 1 + mem.folio_mapcount(head)
        assert mem.folio_mapped(head) or offset in swap.swap_map


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_swap_bookkeeping_holds(ops: list[tuple[str, int, int, int]]) -> None:
    machine, main = _machine()
    main.mmap(ADDR, 8)
    procs = [main]
    for op, first, n, who in ops:
        proc = procs[who % len(procs)]
        n = min(n, 8 - first)
        addr = ADDR + first * machine.arch.page_size
        try:
            if op in ("write", "read"):
                proc.touch(addr, n, write=op == "write",
                           tags=[1] * n if op == "write" else None)
            elif op == "pageout":
                proc.madvise(addr, n, "pageout")
            elif op in ("dontneed", "free"):
                proc.madvise(addr, n, op)
            elif op == "fork" and len(procs) < 4:
                procs.append(proc.fork(f"c{len(procs)}"))
            elif op == "munmap":
                proc.munmap(addr, n)
            elif op == "exit" and len(procs) > 1 and proc is not main:
                proc.exit()
                procs.remove(proc)
        except NotModelled:
            return  # a swap-in from the disk: no prediction, nothing to check
        except MmError:
            pass  # ENOMEM for a range an earlier munmap left a hole in: nothing changed
        _check_bookkeeping(machine)


def test_thp_pageout_with_swap_is_not_modelled() -> None:
    """THP_SWAP (x86_64) or a split in shrink_folio_list() (powerpc): no prediction."""
    machine, p = _machine()
    pages = machine.arch.thp_pages
    assert pages
    addr = ADDR - ADDR % (pages * machine.arch.page_size) + pages * machine.arch.page_size
    p.mmap(addr, pages)
    p.madvise(addr, pages, "hugepage")
    p.touch(addr, 1, write=True, tags=[1])
    with pytest.raises(NotModelled, match="large folio"):
        p.madvise(addr, pages, "pageout")
