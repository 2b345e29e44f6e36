"""The PAGEMAP_SCAN model (sim/pagemap_scan.py) against fs/proc/task_mmu.c of the pinned 6.12.

Each expectation names the kernel code it follows: pagemap_scan_get_args()
(validation order), pagemap_scan_test_walk() without uffd, the categories
of pagemap_page_category() / pagemap_thp_category(), pagemap_scan_output()
(merging, max_pages, a full buffer) and do_pagemap_scan()'s walk_end.
"""

from __future__ import annotations

import errno

import pytest

from sim.arch import Arch, get_arch
from sim.formats_scan import (
    PAGE_REGION_BYTES,
    PM_SCAN_ARG_BYTES,
    PageRegion,
    PmScanArg,
    build_page_regions,
    build_pm_scan_arg,
    parse_page_regions,
    parse_pm_scan_arg,
)
from sim.mm import Machine, Process
from sim.pagemap_scan import PM_SCAN_CATEGORIES, PageIs, PmScan, ScanResult, access_ok
from sim.procfs import ProcFs, ProcReadError, Reader, open_proc

X86 = get_arch("x86_64")
PPC = get_arch("ppc64")
ALL = PM_SCAN_CATEGORIES
P, W, F, Z, H, SD = (PageIs.PRESENT, PageIs.WRITTEN, PageIs.FILE, PageIs.PFNZERO,
                     PageIs.HUGE, PageIs.SOFT_DIRTY)
VEC = 0x10000


def _base(arch: Arch) -> int:
    pmd = 1 << arch.level_shifts[-2]
    return (arch.task_size // 4) // pmd * pmd


def _setup(arch: Arch = X86) -> tuple[Machine, Process, int]:
    """16 anonymous pages: 0-3 written, 4-5 read (zero page), 6-15 untouched (same table)."""
    m = Machine(arch, ram_bytes=64 << 20)
    p = m.spawn("main")
    base = _base(arch)
    p.mmap(base, 16)
    p.touch(base, 4, write=True, tags=[1, 2, 3, 4])
    p.touch(base + 4 * arch.page_size, 2, write=False)
    return m, p, base


def _scan(m: Machine, p: Process, base: int, pages: int = 16, **kw: int) -> ScanResult:
    fields = {"start": base, "end": base + pages * m.arch.page_size, "vec": VEC,
              "vec_len": 64, "return_mask": ALL, **kw}
    return ProcFs(m).pagemap_scan(f"/proc/{p.pid}/pagemap", PmScanArg(**fields))


def _regions(result: ScanResult, base: int, page: int) -> list[tuple[int, int, int]]:
    """(first page, pages, categories) of each record, relative to ``base``."""
    return [((r.start - base) // page, (r.end - r.start) // page, r.categories)
            for r in result.regions]


def test_categories_of_written_zero_and_unpopulated_pages() -> None:
    m, p, base = _setup()
    got = _scan(m, p, base, return_mask=int(P | W | Z))
    # pte_none() in a populated table is WRITTEN in the pinned tree.
    assert _regions(got, base, 4096) == [(0, 4, P | W), (4, 2, P | W | Z), (6, 10, W)]
    assert got.ret == 3 and got.walk_end == base + 16 * 4096


def test_masks_inverted_anyof_and_excluded() -> None:
    m, p, base = _setup()
    not_present = _scan(m, p, base, category_mask=int(P), category_inverted=int(P),
                        return_mask=int(P))
    assert _regions(not_present, base, 4096) == [(6, 10, 0)]
    excluded = _scan(m, p, base, category_mask=int(P | Z), category_inverted=int(Z),
                     return_mask=int(P))
    assert _regions(excluded, base, 4096) == [(0, 4, P)]
    anyof = _scan(m, p, base, category_anyof_mask=int(Z | F), return_mask=int(Z))
    assert _regions(anyof, base, 4096) == [(4, 2, Z)]


def test_a_range_without_page_table_is_not_written() -> None:
    """pagemap_scan_pte_hole(): WRITTEN only in a uffd-wp VMA; the fast path agrees."""
    m, p, base = _setup()
    other = base + (4 << 20)
    p.mmap(other, 4)
    for kw in ({}, {"return_mask": int(W)}):
        got = _scan(m, p, other, pages=4, category_mask=int(W), **kw)
        assert got == ScanResult(0, other + 4 * 4096)
    holes = _scan(m, p, other, pages=4, category_mask=int(P), category_inverted=int(P))
    assert _regions(holes, other, 4096) == [(0, 4, int(SD))]  # a new VMA is VM_SOFTDIRTY


def test_max_pages_cuts_and_walk_end_is_the_next_match() -> None:
    m, p, base = _setup()
    got = _scan(m, p, base, category_mask=int(P), max_pages=3, return_mask=int(P))
    assert _regions(got, base, 4096) == [(0, 3, P)]
    # The walk went on to the next matching page, where the limit stopped it.
    assert got.walk_end == base + 3 * 4096
    # A hole is cut inside: n_too_much pages off its end.
    holes = _scan(m, p, base, category_mask=int(P), category_inverted=int(P), max_pages=4,
                  return_mask=int(P))
    assert _regions(holes, base, 4096) == [(6, 4, 0)] and holes.walk_end == base + 10 * 4096


def test_a_full_vec_stops_at_the_record_that_does_not_fit() -> None:
    m, p, base = _setup()
    got = _scan(m, p, base, vec_len=2, return_mask=int(P | Z))
    assert _regions(got, base, 4096) == [(0, 4, P), (4, 2, P | Z)]
    assert got.ret == 2 and got.walk_end == base + 6 * 4096


def test_without_a_vec_nothing_is_counted() -> None:
    m, p, base = _setup()
    assert _scan(m, p, base, vec=0, vec_len=0) == ScanResult(0, base + 16 * 4096)
    assert _scan(m, p, base, vec_len=0) == ScanResult(0, base + 16 * 4096)


def test_uffd_flags_on_vmas_without_uffd() -> None:
    """pagemap_scan_test_walk(): CHECK_WPASYNC -> EPERM, WP_MATCHING skips, WPALLOWED never."""
    m, p, base = _setup()
    end = base + 16 * 4096
    assert _scan(m, p, base, flags=int(PmScan.CHECK_WPASYNC)) == ScanResult(-errno.EPERM, end)
    assert _scan(m, p, base, flags=int(PmScan.WP_MATCHING)) == ScanResult(0, end)
    assert _scan(m, p, base, category_mask=int(PageIs.WPALLOWED)) == ScanResult(0, end)
    inverted = _scan(m, p, base, category_mask=int(PageIs.WPALLOWED),
                     category_inverted=int(PageIs.WPALLOWED), return_mask=int(P))
    assert _regions(inverted, base, 4096) == [(0, 6, P), (6, 10, 0)]
    # No VMA in the range: CHECK_WPASYNC has nothing to refuse.
    far = base + (64 << 20)
    assert _scan(m, p, far, flags=int(PmScan.CHECK_WPASYNC)) == ScanResult(0, far + 16 * 4096)


@pytest.mark.parametrize(
    ("fields", "err"),
    [
        ({"size": PM_SCAN_ARG_BYTES - 8}, errno.EINVAL),
        ({"size": 0}, errno.EINVAL),
        ({"flags": 4}, errno.EINVAL),
        ({"category_mask": 1 << 8}, errno.EINVAL),
        ({"return_mask": 1 << 63}, errno.EINVAL),
        ({"start": 1}, errno.EINVAL),
        ({"end": 0}, errno.EFAULT),  # end below start: end - start wraps
        ({"start": 0, "end": 1 << 63}, errno.EFAULT),
        ({"vec": 0, "vec_len": 1}, errno.EINVAL),
        ({"vec": 1 << 63}, errno.EFAULT),
        ({"vec_len": 1 << 62}, errno.EFAULT),  # size_mul() saturates
        ({"vec_len": 1 << 63, "vec": 0}, errno.EINVAL),
        ({"size": 1, "start": 1}, errno.EINVAL),  # size first
    ],
)
def test_bad_arguments(fields: dict[str, int], err: int) -> None:
    m, p, base = _setup()
    got = _scan(m, p, base, walk_end=0x1234, **fields)
    assert got == ScanResult(-err, 0x1234)  # nothing written back


def test_arm64_top_byte_ignore() -> None:
    """arm64's untagged_addr() clears bits 56-63 where bit 55 is clear: vec 1 << 63 is
    vec 0 (EINVAL with a vec_len), a tagged start/end scans the untagged range, and
    addresses with bit 55 set (kernel ones) keep their tag (EFAULT)."""
    arm64 = get_arch("arm64")
    assert arm64.untagged_addr(1 << 63) == 0 and X86.untagged_addr(1 << 63) == 1 << 63
    assert arm64.untagged_addr((1 << 64) - 4096) == (1 << 64) - 4096
    m, p, base = _setup(arm64)
    assert _scan(m, p, base, walk_end=0x1234, vec=1 << 63) == ScanResult(-errno.EINVAL, 0x1234)
    tag = 0x5A << 56
    tagged = _scan(m, p, base | tag, end=(base + 16 * 4096) | tag, vec=VEC | tag)
    assert tagged == _scan(m, p, base)
    kernel = _scan(m, p, base, walk_end=0x1234, vec=0xFF80_0000_0000_0000)
    assert kernel == ScanResult(-errno.EFAULT, 0x1234)


def test_unaligned_end_is_rounded_up_and_an_empty_range_returns_zero() -> None:
    m, p, base = _setup()
    got = _scan(m, p, base, end=base + 4096 + 1, return_mask=int(P))
    assert got.walk_end == base + 2 * 4096 and _regions(got, base, 4096) == [(0, 2, P)]
    assert _scan(m, p, base, end=base) == ScanResult(0, base)


def test_access_ok_per_architecture() -> None:
    m = Machine(X86, ram_bytes=64 << 20)
    assert access_ok(m, X86.task_size, 0) and not access_ok(m, X86.task_size, 1)
    assert not access_ok(m, (1 << 64) - 1, 2)  # wraps
    ppc = Machine(PPC, ram_bytes=64 << 20)
    assert access_ok(ppc, 0, PPC.task_size) and not access_ok(ppc, 1, PPC.task_size)


def test_file_shmem_and_cow_pages() -> None:
    m = Machine(X86, ram_bytes=64 << 20)
    p = m.spawn("main")
    base = _base(X86)
    file = m.create_file(4, name="f")
    p.mmap(base, 4, "file", "private", "rw", file=file)
    p.touch(base, 1, write=False)
    p.touch(base + 4096, 1, write=True, tags=[7])
    got = _scan(m, p, base, pages=2, return_mask=int(F | P))
    assert _regions(got, base, 4096) == [(0, 1, F | P), (1, 1, P)]
    shm = base + (4 << 20)
    p.mmap(shm, 2, "anon", "shared", "rw")
    p.touch(shm, 1, write=True, tags=[1])
    got = _scan(m, p, shm, pages=1, return_mask=int(F))
    assert _regions(got, shm, 4096) == [(0, 1, F)]


def test_thp_and_huge_zero() -> None:
    arch = X86
    m = Machine(arch, ram_bytes=64 << 20)
    p = m.spawn("main")
    base = _base(arch)
    thp = arch.thp_pages
    p.mmap(base, thp)
    p.madvise(base, thp, "hugepage")
    p.touch(base, 1, write=True, tags=[1])
    zero = base + (4 << 20)
    p.mmap(zero, thp)
    p.madvise(zero, thp, "hugepage")
    p.touch(zero, 1, write=False)
    got = _scan(m, p, base, pages=thp, return_mask=int(H | P | Z | F))
    assert _regions(got, base, 4096) == [(0, thp, H | P)]
    # The huge zero folio: PFNZERO, and (vm_normal_page_pmd() is NULL) not FILE.
    got = _scan(m, p, zero, pages=thp, return_mask=int(H | P | Z | F))
    assert _regions(got, zero, 4096) == [(0, thp, H | P | Z)]
    # max_pages inside the THP: the record is cut, walk_end where it was cut.
    got = _scan(m, p, base, pages=thp, max_pages=5, return_mask=int(H))
    assert _regions(got, base, 4096) == [(0, 5, H)] and got.walk_end == base + 5 * 4096
    # A scan starting inside the THP sees the rest of it.
    got = _scan(m, p, base + 7 * 4096, pages=3, return_mask=int(H))
    assert _regions(got, base + 7 * 4096, 4096) == [(0, 3, H)]


def test_open_rules_and_other_files() -> None:
    m, p, _ = _setup()
    with pytest.raises(ProcReadError) as e:
        ProcFs(m).pagemap_scan(f"/proc/{p.pid}/pagemap", PmScanArg(), uid=1000)
    assert e.value.errno == errno.EACCES
    f = open_proc(m, "/proc/kpageflags", Reader.root())
    assert f.pagemap_scan(PmScanArg()).ret == -errno.ENOTTY
    pm = open_proc(m, f"/proc/{p.pid}/pagemap", Reader.root())
    assert pm.pagemap_scan(PmScanArg(), arg_readable=False) == ScanResult(-errno.EFAULT, 0)
    p.exit()
    assert pm.pagemap_scan(PmScanArg()).ret == -errno.ESRCH


@pytest.mark.parametrize("arch", [X86, PPC])
def test_formats_round_trip_in_both_byte_orders(arch: Arch) -> None:
    arg = PmScanArg(flags=3, start=1 << 40, end=(1 << 40) + 4096, vec=VEC, vec_len=9,
                    return_mask=ALL)
    data = build_pm_scan_arg(arch, arg)
    assert len(data) == PM_SCAN_ARG_BYTES and parse_pm_scan_arg(arch, data) == arg
    # size is the first __u64, in the architecture's byte order.
    assert data[:8] == PM_SCAN_ARG_BYTES.to_bytes(8, "little" if arch.little_endian else "big")
    regions = [PageRegion(1 << 40, (1 << 40) + 8192, int(P | W))]
    raw = build_page_regions(arch, regions)
    assert len(raw) == PAGE_REGION_BYTES and parse_page_regions(arch, raw) == regions


def test_6_1_has_no_pagemap_scan() -> None:
    """6.1's proc_pagemap_operations has no unlocked_ioctl: ENOTTY (facts.pagemap_scan)."""
    from sim.mm.facts import FACTS_6_1

    m = Machine(X86, ram_bytes=64 << 20, facts=FACTS_6_1)
    p = m.spawn("main")
    base = _base(X86)
    assert _scan(m, p, base) == ScanResult(-errno.ENOTTY, 0)
