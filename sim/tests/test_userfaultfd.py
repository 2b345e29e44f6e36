"""uffd-wp (WP_ASYNC) in the model: each expected value follows from the 6.12 function named.

fs/userfaultfd.c (userfaultfd_api(), userfaultfd_register()), mm/userfaultfd.c
(mwriteprotect_range(), uffd_wp_range()), mm/mprotect.c (change_pte_range()),
mm/memory.c (do_wp_page(), handle_pte_marker(), zap_install_uffd_wp_if_needed(),
__copy_present_ptes()), fs/proc/task_mmu.c (pte_to_pagemap_entry(), pagemap_scan_*()).
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import get_arch
from sim.formats_scan import PmScanArg
from sim.mm import Machine, MmError, Process
from sim.mm.userfaultfd import SWP_PTE_MARKER
from sim.mm.vma import VM_UFFD_WP
from sim.pagemap_scan import PageIs, PmScan, do_pagemap_scan
from sim.procfs import pagemap_entries
from sim.smaps import smap_blocks

X86 = get_arch("x86_64")
BASE = 1 << 40


@pytest.fixture
def m() -> Machine:
    return Machine(X86, ram_bytes=256 << 20)


def entries(m: Machine, p: Process, n: int) -> list[tuple[bool, bool, bool]]:
    """(present, swapped, uffd_wp) of the first ``n`` pages at BASE."""
    return [(e.present, e.swapped, e.uffd_wp) for e in pagemap_entries(m, p, BASE, n)]


def registered(m: Machine, n: int = 4) -> Process:
    p = m.spawn("main")
    p.mmap(BASE, n)
    p.uffd_register(BASE, n)
    return p


def test_register_sets_vm_uffd_wp_and_uw_and_splits(m: Machine) -> None:
    """userfaultfd_register_range(): vma_modify_flags_uffd() on the range only; VmFlags uw."""
    p = m.spawn("main")
    p.mmap(BASE, 4)
    p.uffd_register(BASE, 2)
    assert [bool(v.flags & VM_UFFD_WP) for v in p.vmas] == [True, False]
    assert "uw" in smap_blocks(p.mm, m.facts)[0].vm_flags


def test_wp_unpopulated_installs_markers(m: Machine) -> None:
    """change_pte_range(): none PTE + MM_CP_UFFD_WP + WP_UNPOPULATED -> a PTE marker, which
    pagemap reads through the swap path: PM_SWAP, PM_UFFD_WP, frame SWP_PTE_MARKER | 1 << 5."""
    p = registered(m)
    p.uffd_wp(BASE, 2, True)
    assert entries(m, p, 4) == [(False, True, True)] * 2 + [(False, False, False)] * 2
    e = pagemap_entries(m, p, BASE, 1)[0]
    assert (e.swap_type, e.swap_offset) == (SWP_PTE_MARKER, 1)
    p.uffd_wp(BASE, 4, False)
    assert entries(m, p, 4) == [(False, False, False)] * 4


def test_async_write_clears_the_bit(m: Machine) -> None:
    """do_wp_page(): WP_ASYNC clears uffd-wp; a marker fault leaves a wp PTE the retried
    write clears; a read of a marker maps the zero page with uffd-wp."""
    p = registered(m)
    p.touch(BASE, 1, write=True)
    p.uffd_wp(BASE, 4, True)
    assert entries(m, p, 1) == [(True, False, True)]
    p.touch(BASE, 2, write=True)
    p.touch(BASE + 2 * X86.page_size, 1, write=False)
    assert entries(m, p, 4) == [(True, False, False)] * 2 + [(True, False, True),
                                                             (False, True, True)]


def test_dontneed_drops_anon_markers_keeps_shmem_ones(m: Machine) -> None:
    """zap_install_uffd_wp_if_needed(): anonymous VMAs drop; file (shmem) VMAs keep a marker
    and a uffd-wp PTE becomes one (pte_install_uffd_wp_if_needed())."""
    p = registered(m)
    p.touch(BASE, 1, write=True)
    p.uffd_wp(BASE, 4, True)
    p.madvise(BASE, 4, "dontneed")
    assert entries(m, p, 4) == [(False, False, False)] * 4
    q = m.spawn("q")
    q.mmap(BASE, 4, share="shared")
    q.touch(BASE, 1, write=True)
    q.uffd_register(BASE, 4)
    q.uffd_wp(BASE, 4, True)
    q.madvise(BASE, 4, "dontneed")
    assert entries(m, q, 4) == [(False, True, True)] * 4


def test_fork_without_event_fork_clears(m: Machine) -> None:
    """dup_userfaultfd() resets the child's VMA; __copy_present_ptes() clears its bit."""
    p = registered(m)
    p.touch(BASE, 1, write=True)
    p.uffd_wp(BASE, 4, True)
    c = p.fork("c")
    assert entries(m, c, 2) == [(True, False, False), (False, False, False)]
    assert entries(m, p, 2) == [(True, False, True), (False, True, True)]
    assert not any(v.flags & VM_UFFD_WP for v in c.vmas)


def test_ppc64_has_no_uffd_wp() -> None:
    """powerpc selects no HAVE_ARCH_USERFAULTFD_WP: mode WP is EINVAL; WRITEPROTECT ENOENT."""
    m = Machine(get_arch("ppc64"), ram_bytes=256 << 20)
    p = m.spawn("main")
    p.mmap(BASE, 1)
    with pytest.raises(MmError) as e:
        p.uffd_register(BASE, 1)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(MmError) as e:
        p.uffd_wp(BASE, 1, True)
    assert e.value.errno == errno.ENOENT


def scan(m: Machine, p: Process, n: int, **kw: int) -> list[tuple[int, int, int]]:
    fields = {"return_mask": 0xFF, **kw}
    arg = PmScanArg(start=BASE, end=BASE + n * X86.page_size, vec=1 << 30, vec_len=64, **fields)
    result = do_pagemap_scan(m, p.mm, arg)
    assert result.ret >= 0
    return [((r.start - BASE) >> 12, (r.end - BASE) >> 12, r.categories) for r in result.regions]


@settings(max_examples=25, deadline=None)
@given(written=st.lists(st.booleans(), min_size=8, max_size=8))
def test_wp_matching_then_written_is_what_was_written_after(written: list[bool]) -> None:
    """Property (pagemap_scan_pmd_entry() + make_uffd_wp_pte(), then do_wp_page()): after a
    WP_MATCHING scan of the whole range, a WRITTEN scan reports exactly the pages written
    since."""
    m = Machine(X86, ram_bytes=64 << 20)
    p = registered(m, 8)
    p.touch(BASE, 3, write=True)
    wr = int(PageIs.WRITTEN)
    scan(m, p, 8, category_mask=wr, flags=int(PmScan.WP_MATCHING))
    for i, w in enumerate(written):
        if w:
            p.touch(BASE + i * X86.page_size, 1, write=True)
    got = scan(m, p, 8, category_mask=wr, return_mask=wr)
    pages = {i for s, e, _ in got for i in range(s, e)}
    assert pages == {i for i, w in enumerate(written) if w}
