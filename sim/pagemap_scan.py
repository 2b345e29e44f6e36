"""The PAGEMAP_SCAN ioctl on /proc/PID/pagemap, as the pinned 6.12 kernel has it.

Source: fs/proc/task_mmu.c (do_pagemap_scan(), pagemap_scan_get_args(),
pagemap_scan_test_walk(), pagemap_scan_pmd_entry(), pagemap_scan_thp_entry(),
pagemap_scan_pte_hole(), pagemap_scan_output(), pagemap_scan_push_range(),
pagemap_scan_flush_buffer(), pagemap_page_category(), pagemap_thp_category()),
UAPI include/uapi/linux/fs.h.

    result = do_pagemap_scan(machine, mm, PmScanArg(start=..., end=..., vec=BUF,
                             vec_len=16, category_mask=PageIs.PRESENT,
                             return_mask=PM_SCAN_CATEGORIES))
    result.ret          # regions written (>= 0) or -errno
    result.walk_end     # the arg's walk_end after the call
    result.regions      # the page_region records copied to vec, in order

What it covers and leaves out (sim/MODEL.md says more):

* userfaultfd: a VMA is wp-async when registered for uffd-wp by a userfaultfd
  with WP_ASYNC (sim/mm/userfaultfd.py; x86_64 and arm64 only): PAGE_IS_WPALLOWED
  there, PAGE_IS_WRITTEN is "no uffd-wp bit" (a PTE marker is SWAPPED, not
  WRITTEN; in this tree a pte_none() entry of an existing table is WRITTEN, and
  a range without a table is WRITTEN in a VM_UFFD_WP VMA), PM_SCAN_WP_MATCHING
  write-protects what it reports (make_uffd_wp_pte(), make_uffd_wp_pmd() or a
  split, uffd_wp_range() for holes).  Elsewhere PM_SCAN_CHECK_WPASYNC is EPERM
  and PM_SCAN_WP_MATCHING skips the VMA.
* swap, hugetlb, VM_PFNMAP: the model has none (PAGE_IS_SWAPPED only for uffd-wp markers).
* copy_to_user() faults: any ``vec`` that passes access_ok() is taken to be
  writable memory of the caller (the harness passes a buffer of its own).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from enum import IntFlag

from sim.formats_scan import PM_SCAN_ARG_BYTES, PageRegion, PmScanArg
from sim.mm.machine import Machine
from sim.mm.mm_struct import MmStruct
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_MARKER_UFFD_WP, PTE_PRESENT, PTE_SOFT_DIRTY, PTE_SPECIAL, PTE_UFFD_WP
from sim.mm.swapfile import is_swap_pte
from sim.mm.syscall import NotModelled
from sim.mm.userfaultfd import (
    pte_mkuffd_wp,
    uffd_wp_range,
    userfaultfd_wp,
    userfaultfd_wp_async,
    userfaultfd_wp_use_markers,
)
from sim.pagewalk import MmWalk, MmWalkOps, walk_page_range

__all__ = [
    "PM_SCAN_CATEGORIES",
    "PM_SCAN_FLAGS",
    "PageIs",
    "PmScan",
    "ScanResult",
    "access_ok",
    "do_pagemap_scan",
]


class PageIs(IntFlag):
    """PAGE_IS_* categories (include/uapi/linux/fs.h); PAGE_IS_GUARD is 6.15+."""

    WPALLOWED = 1 << 0
    WRITTEN = 1 << 1
    FILE = 1 << 2
    PRESENT = 1 << 3
    SWAPPED = 1 << 4
    PFNZERO = 1 << 5
    HUGE = 1 << 6
    SOFT_DIRTY = 1 << 7


class PmScan(IntFlag):
    """PM_SCAN_* flags of pm_scan_arg.flags."""

    WP_MATCHING = 1 << 0
    CHECK_WPASYNC = 1 << 1


#: Every category 6.12 knows (PM_SCAN_CATEGORIES); any other bit is EINVAL.
PM_SCAN_CATEGORIES = int(
    PageIs.WPALLOWED | PageIs.WRITTEN | PageIs.FILE | PageIs.PRESENT
    | PageIs.SWAPPED | PageIs.PFNZERO | PageIs.HUGE | PageIs.SOFT_DIRTY
)
#: Every flag 6.12 knows (PM_SCAN_FLAGS).
PM_SCAN_FLAGS = int(PmScan.WP_MATCHING | PmScan.CHECK_WPASYNC)

_U64 = (1 << 64) - 1
_WRITTEN = int(PageIs.WRITTEN)


@dataclass(frozen=True)
class ScanResult:
    """What the ioctl did: its return value, the written-back walk_end, the records.

    ``ret``: the number of page_region records written (>= 0) or -errno.
    ``walk_end``: the pm_scan_arg's walk_end field after the call (the value
    the caller put there when the kernel failed before writing it back).
    ``regions``: every record copied to ``vec``, in order (the records of all
    flushes; more than ``ret`` never, fewer only on an error after a flush).
    """

    ret: int
    walk_end: int
    regions: tuple[PageRegion, ...] = ()

    @property
    def errno(self) -> int | None:
        return -self.ret if self.ret < 0 else None


def access_ok(machine: Machine, addr: int, size: int) -> bool:
    """access_ok(addr, size) of the architecture (addr and size as unsigned long).

    x86_64 (arch/x86/include/asm/uaccess_64.h __access_ok() with a
    non-constant size): ``addr + size`` must not wrap and must be at most
    USER_PTR_MAX = TASK_SIZE_MAX.  Elsewhere asm-generic/access_ok.h:
    ``size <= TASK_SIZE_MAX && addr <= TASK_SIZE_MAX - size``.
    """
    arch = machine.arch
    ulong = (1 << (8 * arch.word_size)) - 1
    addr &= ulong
    size &= ulong
    limit = arch.task_size
    if arch.name == "x86_64":
        total = (addr + size) & ulong
        return total <= limit and total >= addr
    return size <= limit and addr <= limit - size


@dataclass
class _Private:
    """struct pagemap_scan_private: the arguments and the bounce buffer."""

    machine: Machine
    arg: dict[str, int]
    masks_of_interest: int = 0
    cur_vma_category: int = 0
    #: The bounce buffer (None: no vec): [start, end, categories] per record.
    vec_buf: list[list[int]] | None = None
    vec_buf_len: int = 0
    vec_buf_index: int = 0
    found_pages: int = 0
    #: What pagemap_scan_flush_buffer() copied to user memory so far.
    out: list[PageRegion] = field(default_factory=list)


def _is_interesting_page(categories: int, p: _Private) -> bool:
    """pagemap_scan_is_interesting_page()."""
    categories ^= p.arg["category_inverted"]
    mask = p.arg["category_mask"]
    if categories & mask != mask:
        return False
    anyof = p.arg["category_anyof_mask"]
    return not (anyof and not categories & anyof)


def _is_interesting_vma(categories: int, p: _Private) -> bool:
    """pagemap_scan_is_interesting_vma(): only PAGE_IS_WPALLOWED of the mask is a VMA test."""
    required = p.arg["category_mask"] & PageIs.WPALLOWED
    categories ^= p.arg["category_inverted"]
    return categories & required == required


def _test_walk(start: int, end: int, walk: MmWalk) -> int:
    """pagemap_scan_test_walk(): wp_allowed = userfaultfd_wp_async() &&
    userfaultfd_wp_use_markers() (a VMA registered for uffd-wp by a userfaultfd with
    WP_ASYNC, sim/mm/userfaultfd.py); without it CHECK_WPASYNC is EPERM and
    WP_MATCHING skips the VMA; with it the VMA's category has WPALLOWED."""
    p: _Private = walk.private
    vma = walk.vma
    assert vma is not None
    wp_allowed = userfaultfd_wp_async(walk.mm, vma) and userfaultfd_wp_use_markers(walk.mm, vma)
    if not wp_allowed:
        if p.arg["flags"] & PmScan.CHECK_WPASYNC:
            return -errno.EPERM  # explicit failure over wp-async capability
        if p.arg["flags"] & PmScan.WP_MATCHING:
            return 1  # write-protect asked: skip VMAs that cannot do it
    vma_category = int(PageIs.WPALLOWED) if wp_allowed else 0
    if vma.softdirty:
        vma_category |= PageIs.SOFT_DIRTY
    if not _is_interesting_vma(vma_category, p):
        return 1
    p.cur_vma_category = vma_category
    return 0


def _push_range(categories: int, p: _Private, addr: int, end: int) -> bool:
    """pagemap_scan_push_range(): extend the current record, or start the next one."""
    assert p.vec_buf is not None
    cur = p.vec_buf[p.vec_buf_index]
    if addr == cur[1] and categories == cur[2]:
        cur[1] = end
        return True
    if cur[1]:
        if p.vec_buf_index >= p.vec_buf_len - 1:
            return False
        p.vec_buf_index += 1
        cur = p.vec_buf[p.vec_buf_index]
    cur[:] = [addr, end, categories]
    return True


def _output(categories: int, p: _Private, addr: int, end: int) -> tuple[int, int]:
    """pagemap_scan_output(): (ret 0 or -ENOSPC, the end actually recorded)."""
    if p.vec_buf is None:
        return 0, end
    categories &= p.arg["return_mask"]
    shift = p.machine.arch.page_shift
    n_pages = (end - addr) >> shift
    ret = 0
    total = p.found_pages + n_pages
    if total > _U64 or total > p.arg["max_pages"]:  # check_add_overflow() or past max_pages
        too_much = (total - p.arg["max_pages"]) & _U64
        end -= too_much << shift
        n_pages -= too_much
        ret = -errno.ENOSPC
    if not _push_range(categories, p, addr, end):
        end = addr
        n_pages = 0
        ret = -errno.ENOSPC
    p.found_pages += n_pages
    if ret:
        p.arg["walk_end"] = end
    return ret, end


def pagemap_page_category(p: _Private, bits: int, pfn: int) -> int:
    """pagemap_page_category() for one PTE (``bits``: :class:`~sim.mm.pte.PteFlags`).

    The pinned Debian tree (6.12.117-1~deb12u1) returns PAGE_IS_WRITTEN for a
    pte_none() entry ("an unpopulated pte carries no uffd-wp marker"), so the
    generic path agrees with the PAGE_IS_WRITTEN fast path; upstream 6.12
    returned 0 there.  A uffd-wp marker: SWAPPED only (the swap branch).
    A present entry: PRESENT, WRITTEN (no uffd-wp bit),
    FILE if it maps a normal page (not pte_special()) whose folio is not
    anonymous (asked only when FILE is of interest), PFNZERO for the zero
    page, SOFT_DIRTY from the entry.
    """
    if not bits:
        return _WRITTEN
    if is_swap_pte(bits):
        raise NotModelled("PAGEMAP_SCAN of a swap entry (PAGE_IS_SWAPPED)")
    categories = 0
    if bits & PTE_MARKER_UFFD_WP:
        # is_swap_pte(): a marker is SWAPPED; pte_swp_uffd_wp_any(): not WRITTEN.
        return int(PageIs.SWAPPED)
    if bits & PTE_PRESENT:
        categories |= PageIs.PRESENT
        if not bits & PTE_UFFD_WP:
            categories |= PageIs.WRITTEN
        mem = p.machine.mem
        if p.masks_of_interest & PageIs.FILE and not bits & PTE_SPECIAL:
            if not mem.anon[mem.head[pfn]]:
                categories |= PageIs.FILE
        if pfn == mem.zero_pfn:
            categories |= PageIs.PFNZERO
        if bits & PTE_SOFT_DIRTY:
            categories |= PageIs.SOFT_DIRTY
    return int(categories)


def pagemap_thp_category(p: _Private, pmd: HugePmd) -> int:
    """pagemap_thp_category() of a present huge PMD.

    HUGE, PRESENT, WRITTEN; FILE if vm_normal_page_pmd() gives a page (not
    the huge zero folio) whose folio is not anonymous; PFNZERO for the huge
    zero folio (is_huge_zero_pmd()); SOFT_DIRTY from the PMD.
    """
    mem = p.machine.mem
    categories = PageIs.HUGE | PageIs.PRESENT
    if not pmd.bits & PTE_UFFD_WP:
        categories |= PageIs.WRITTEN
    huge_zero = mem.is_huge_zero_folio(pmd.pfn)
    if p.masks_of_interest & PageIs.FILE and not huge_zero and not mem.anon[mem.head[pmd.pfn]]:
        categories |= PageIs.FILE
    if huge_zero:
        categories |= PageIs.PFNZERO
    if pmd.bits & PTE_SOFT_DIRTY:
        categories |= PageIs.SOFT_DIRTY
    return int(categories)


def _backout_range(p: _Private, addr: int, end: int) -> None:
    """pagemap_scan_backout_range(): take [addr, end) back out of the current record."""
    if p.vec_buf is None:
        return
    cur = p.vec_buf[p.vec_buf_index]
    if cur[0] != addr:
        cur[1] = addr
    else:
        cur[0] = cur[1] = 0
    p.found_pages -= (end - addr) >> p.machine.arch.page_shift


def _is_wp(bits: int) -> bool:
    """(pte_present() && pte_uffd_wp()) || pte_swp_uffd_wp_any(): already write-protected."""
    return bool(bits & PTE_MARKER_UFFD_WP or (bits & PTE_PRESENT and bits & PTE_UFFD_WP))


def make_uffd_wp_pte(table: PteTable, i: int) -> None:
    """make_uffd_wp_pte(): a present PTE gets pte_mkuffd_wp(), a none one a marker."""
    bits = int(table.bits[i])
    if bits & PTE_PRESENT:
        table.bits[i] = pte_mkuffd_wp(bits)
    elif not bits:
        table.set(i, 0, PTE_MARKER_UFFD_WP)


def _pmd_entry(entry: PteTable | HugePmd, start: int, end: int, walk: MmWalk) -> int:
    """pagemap_scan_pmd_entry() (with pagemap_scan_thp_entry() for a huge PMD).

    PM_SCAN_WP_MATCHING (only in wp-async VMAs, :func:`_test_walk`)
    write-protects each matching WRITTEN page after its output
    (make_uffd_wp_pte()); without an output buffer every entry not yet
    write-protected is (the exclusive-WP fast path).  A huge PMD whose whole
    range is output is write-protected whole (make_uffd_wp_pmd()); one output
    in part (the scan's range or max_pages ends inside it) is split, its
    output backed out, and the PTE path runs over the new table.
    """
    p: _Private = walk.private
    wp = bool(p.arg["flags"] & PmScan.WP_MATCHING)
    mm = walk.mm
    if isinstance(entry, HugePmd):
        categories = p.cur_vma_category | pagemap_thp_category(p, entry)
        if not _is_interesting_page(categories, p):
            return 0
        ret, nxt = _output(categories, p, start, end)
        if nxt == start or not wp or not categories & PageIs.WRITTEN:
            return ret
        if nxt == start + mm.pmd_size:
            entry.bits = pte_mkuffd_wp(entry.bits)  # make_uffd_wp_pmd()
            return ret
        # WP of part of the huge page: split_huge_pmd(), pagemap_scan_backout_range(),
        # and -ENOENT: "report as if there was no THP" (the PTE path below).
        assert walk.vma is not None
        mm.split_huge_pmd(walk.vma, start - start % mm.pmd_size)
        _backout_range(p, start, nxt)
        table = mm.pt.get_pmd(start)
        assert isinstance(table, PteTable)
        entry = table
    page = mm.page_size
    i = mm.pt.pte_index(start)
    arg = p.arg
    ret = 0
    if wp and p.vec_buf is None:
        # The exclusive-WP fast path: write-protect everything not yet so.
        for k in range((end - start) // page):
            if not _is_wp(int(entry.bits[i + k])):
                make_uffd_wp_pte(entry, i + k)
        return 0
    if (not arg["category_anyof_mask"] and not arg["category_inverted"]
            and arg["category_mask"] == _WRITTEN and arg["return_mask"] == _WRITTEN):
        # The PAGE_IS_WRITTEN fast path: every entry without a uffd-wp bit.
        for k, addr in enumerate(range(start, end, page)):
            if _is_wp(int(entry.bits[i + k])):
                continue
            ret, nxt = _output(p.cur_vma_category | _WRITTEN, p, addr, addr + page)
            if nxt == addr:
                break
            if wp:
                make_uffd_wp_pte(entry, i + k)
        return ret
    for k, addr in enumerate(range(start, end, page)):
        categories = p.cur_vma_category | pagemap_page_category(
            p, int(entry.bits[i + k]), int(entry.pfn[i + k])
        )
        if not _is_interesting_page(categories, p):
            continue
        ret, nxt = _output(categories, p, addr, addr + page)
        if nxt == addr:
            break
        if wp and categories & PageIs.WRITTEN:
            make_uffd_wp_pte(entry, i + k)
    return ret


def _pte_hole(start: int, end: int, depth: int, walk: MmWalk) -> int:
    """pagemap_scan_pte_hole(): no VMA, nothing; in a VMA the VMA's category, WRITTEN
    too in a uffd-wp VMA (userfaultfd_wp()); under WP_MATCHING the output part is
    write-protected with uffd_wp_range() (page tables allocated, markers installed).
    """
    p: _Private = walk.private
    vma = walk.vma
    if vma is None:
        return 0
    categories = p.cur_vma_category
    if userfaultfd_wp(vma):
        categories |= _WRITTEN
    if not _is_interesting_page(categories, p):
        return 0
    ret, end = _output(categories, p, start, end)
    if start == end or not p.arg["flags"] & PmScan.WP_MATCHING:
        return ret
    uffd_wp_range(walk.mm, vma, start, end, True)
    return ret


_SCAN_OPS = MmWalkOps(pmd_entry=_pmd_entry, pte_hole=_pte_hole, test_walk=_test_walk)


def pagemap_scan_get_args(machine: Machine, arg: PmScanArg) -> tuple[int, dict[str, int]]:
    """pagemap_scan_get_args(): (0 or -errno, the fixed-up fields).

    In this order: size != 96 -> EINVAL; unknown flags -> EINVAL; a
    category bit outside PM_SCAN_CATEGORIES in any of the four masks ->
    EINVAL; start not page-aligned -> EINVAL; access_ok(start, end - start)
    fails (end below start wraps) -> EFAULT; vec 0 with vec_len != 0 -> EINVAL;
    vec_len > SIZE_MAX on a 32-bit kernel -> EINVAL; vec != 0 and
    access_ok(vec, vec_len * 24 saturated) fails -> EFAULT.  Then end is
    rounded up to a page, walk_end zeroed, max_pages 0 becomes ULONG_MAX.
    start, end and vec go through untagged_addr() first (:meth:`Arch.untagged_addr`:
    the identity but on arm64, whose Top Byte Ignore turns vec 1 << 63 into 0,
    so EINVAL, not EFAULT).
    """
    a = {name: value & _U64 for name, value in vars(arg).items()}
    arch = machine.arch
    ulong = (1 << (8 * arch.word_size)) - 1
    if a["size"] != PM_SCAN_ARG_BYTES:
        return -errno.EINVAL, a
    if a["flags"] & ~PM_SCAN_FLAGS:
        return -errno.EINVAL, a
    masks = (a["category_inverted"] | a["category_mask"] | a["category_anyof_mask"]
             | a["return_mask"])
    if masks & ~PM_SCAN_CATEGORIES:
        return -errno.EINVAL, a
    # The fields are __u64, the kernel's locals unsigned long.
    start, end, vec = (arch.untagged_addr(a[name] & ulong) for name in ("start", "end", "vec"))
    a["start"], a["end"], a["vec"] = start, end, vec
    if start % arch.page_size:
        return -errno.EINVAL, a
    if not access_ok(machine, start, (end - start) & ulong):
        return -errno.EFAULT, a
    if not vec and a["vec_len"]:
        return -errno.EINVAL, a
    if ulong == 0xFFFF_FFFF and a["vec_len"] > ulong:
        return -errno.EINVAL, a
    if vec:
        size = a["vec_len"] * 24
        if size > ulong:  # size_mul() saturates at SIZE_MAX
            size = ulong
        if not access_ok(machine, vec, size):
            return -errno.EFAULT, a
    page = arch.page_size
    a["end"] = (end + page - 1) // page * page & ulong
    a["walk_end"] = 0
    if not a["max_pages"]:
        a["max_pages"] = ulong
    return 0, a


def _flush_buffer(p: _Private) -> int:
    """pagemap_scan_flush_buffer(): copy the full records out; their number."""
    buf = p.vec_buf
    if buf is None:
        return 0
    n = p.vec_buf_index
    if buf[n][1] != buf[n][0]:
        n += 1
    if not n:
        return 0
    p.out.extend(PageRegion(*record) for record in buf[:n])
    p.arg["vec_len"] -= n
    p.vec_buf_index = 0
    p.vec_buf_len = min(p.vec_buf_len, p.arg["vec_len"])
    buf[0][0] = buf[0][1] = 0
    return n


def do_pagemap_scan(
    machine: Machine, mm: MmStruct | None, arg: PmScanArg, *, arg_readable: bool = True
) -> ScanResult:
    """ioctl(pagemap_fd, PAGEMAP_SCAN, &arg) on the pagemap of ``mm``.

    ``arg_readable`` False: the argument pointer is not readable
    (copy_from_user() fails: EFAULT, nothing written back).  ESRCH if the
    task has exited (mmget_not_zero()).  Otherwise the walk in chunks: each
    walk_page_range() from walk_end to end stops when the bounce buffer
    (min(PMD pages, vec_len) records) is full or max_pages is reached
    (-ENOSPC, walk_end set there), is flushed to ``vec``, and the next walk
    starts at walk_end while vec_len and max_pages allow.  The return value
    is the number of records written; walk_end is end when the walk finished.
    """
    if mm is None or not mm.alive:
        return ScanResult(-errno.ESRCH, arg.walk_end)
    if not arg_readable:
        return ScanResult(-errno.EFAULT, arg.walk_end)
    ret, a = pagemap_scan_get_args(machine, arg)
    if ret:
        return ScanResult(ret, arg.walk_end)
    p = _Private(machine, a)
    p.masks_of_interest = a["category_mask"] | a["category_anyof_mask"] | a["return_mask"]
    if a["vec_len"]:
        p.vec_buf_len = min(mm.pmd_size >> machine.arch.page_shift, a["vec_len"])
        # kmalloc_array(): the first record's categories are not initialised; -1
        # matches no categories value.
        p.vec_buf = [[0, 0, -1]] + [[0, 0, 0] for _ in range(p.vec_buf_len - 1)]
    n_ranges_out = 0
    walk_start = a["start"]
    while walk_start < a["end"]:
        ret = walk_page_range(mm, walk_start, a["end"], _SCAN_OPS, p)
        n_ranges_out += _flush_buffer(p)
        if ret != -errno.ENOSPC:
            break
        if a["vec_len"] == 0 or p.found_pages == a["max_pages"]:
            break
        walk_start = a["walk_end"]
    if not ret or ret == -errno.ENOSPC:
        ret = n_ranges_out
    if not a["walk_end"]:
        a["walk_end"] = a["end"]
    return ScanResult(ret, a["walk_end"], tuple(p.out))
