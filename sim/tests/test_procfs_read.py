"""read()/pread()/lseek()/open() semantics of the model's proc files.

Each expectation names the kernel function it comes from (Debian 6.12.117):
fs/proc/task_mmu.c pagemap_read(), fs/proc/page.c kpageflags_read() and
kpagecount_read(), fs/read_write.c rw_verify_area()/vfs_read(), fs/proc/base.c
mem_lseek() and proc_mem_open(), kernel/fork.c mm_access().
"""

from __future__ import annotations

import errno
from contextlib import AbstractContextManager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import ARCH_NAMES, Arch, get_arch
from sim.flags import KPF, PM
from sim.formats import KpagemapHeader, PagemapEntry, parse_kpagemap_entries, parse_u64s
from sim.mm import KernelFacts, Machine, Process
from sim.procfs import (
    SEEK_CUR,
    SEEK_END,
    ProcReadError,
    Reader,
    open_proc,
    pagemap_entries,
    read,
)

ARCHES = [get_arch(name) for name in ARCH_NAMES]
X86 = get_arch("x86_64")
I386 = get_arch("i386")


def base_of(arch: Arch) -> int:
    """An address well inside the user range, aligned to a PMD."""
    pmd = 1 << arch.level_shifts[-2]
    return (arch.task_size // 4) // pmd * pmd


def small_machine(arch: Arch, **kw: object) -> Machine:
    return Machine(arch, ram_bytes=64 << 20, **kw)  # type: ignore[arg-type]


def populated(arch: Arch) -> tuple[Machine, Process, int]:
    """A process with 8 pages: 0-1 read (zero page), 2-5 written, 6-7 untouched."""
    m = small_machine(arch)
    p = m.spawn("main")
    base = base_of(arch)
    p.mmap(base, 8)
    p.touch(base, 2, write=False)
    p.touch(base + 2 * arch.page_size, 4, write=True, tags=[1, 2, 3, 4])
    return m, p, base


def pagemap_path(p: Process) -> str:
    return f"/proc/{p.pid}/pagemap"


def vpn_offset(arch: Arch, addr: int) -> int:
    return (addr >> arch.page_shift) * PM.ENTRY_BYTES


def expect_errno(err: int) -> AbstractContextManager[object]:
    """pytest.raises(ProcReadError) whose errno is ``err``."""
    return pytest.raises(ProcReadError, match=f"^\\[Errno {err}\\] {errno.errorcode[err]}:")


# ---------------------------------------------------------------------------
# /proc/PID/pagemap
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
@pytest.mark.parametrize(("offset", "count"), [(4, 8), (8, 12), (1, 0), (0, 7)])
def test_pagemap_unaligned_is_einval(arch: Arch, offset: int, count: int) -> None:
    """pagemap_read(): ``(*ppos % PM_ENTRY_BYTES) || (count % PM_ENTRY_BYTES)`` -> -EINVAL,
    checked before the zero-count shortcut."""
    m, p, base = populated(arch)
    f = open_proc(m, pagemap_path(p))
    f.lseek(vpn_offset(arch, base) + offset)
    before = f.pos
    with expect_errno(errno.EINVAL):
        f.read(count)
    assert f.pos == before


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_pagemap_zero_count(arch: Arch) -> None:
    """pagemap_read(): ``if (!count) goto out_mm`` returns 0, the position stays."""
    m, p, base = populated(arch)
    f = open_proc(m, pagemap_path(p))
    f.lseek(vpn_offset(arch, base))
    assert f.read(0) == b""
    assert f.pos == vpn_offset(arch, base)


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_pagemap_eof_at_task_size(arch: Arch) -> None:
    """pagemap_read(): end_vaddr = mm->task_size; a read at or past it returns 0 bytes,
    one across it is short."""
    m = small_machine(arch)
    p = m.spawn("main")
    last = (arch.task_size >> arch.page_shift) * 8
    assert read(m, pagemap_path(p), last, 64) == b""
    assert read(m, pagemap_path(p), last + 800, 8) == b""
    data = read(m, pagemap_path(p), last - 24, 64)
    assert data == bytes(24)
    f = open_proc(m, pagemap_path(p))
    f.lseek(last - 16)
    assert len(f.read(4096)) == 16
    assert f.pos == last
    assert f.read(8) == b""
    assert f.pos == last


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_pagemap_position_and_lseek(arch: Arch) -> None:
    """read() advances f_pos by the bytes copied (``*ppos += copied``); pread() leaves
    it; mem_lseek() takes SEEK_SET and SEEK_CUR and rejects SEEK_END."""
    m, p, base = populated(arch)
    f = open_proc(m, pagemap_path(p))
    start = vpn_offset(arch, base)
    assert f.lseek(start) == start
    first = f.read(16)
    assert f.pos == start + 16
    second = f.read(16)
    assert f.pos == start + 32
    assert first + second == read(m, pagemap_path(p), start, 32)
    assert f.pread(start, 8) == first[:8]
    assert f.pos == start + 32
    assert f.lseek(-16, SEEK_CUR) == start + 16
    assert f.read(16) == second
    with expect_errno(errno.EINVAL):
        f.lseek(0, SEEK_END)


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_pagemap_negative_position(arch: Arch) -> None:
    """rw_verify_area(): a negative position is -EINVAL (no FOP_UNSIGNED_OFFSET), and
    so is pos + count overflowing loff_t; mem_lseek() itself accepts any value."""
    m, p, _ = populated(arch)
    f = open_proc(m, pagemap_path(p))
    assert f.lseek(-8) == -8
    with expect_errno(errno.EINVAL):
        f.read(8)
    f.lseek((1 << 63) - 8)
    with expect_errno(errno.EINVAL):
        f.read(16)


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_pagemap_entries(arch: Arch) -> None:
    """pte_to_pagemap_entry() and pagemap_pte_hole(): zero page (present, no FILE, no
    EXCLUSIVE), new anonymous pages (present, exclusive), untouched pages of a
    VMA (soft-dirty only where the architecture has VM_SOFTDIRTY), no VMA (0)."""
    m, p, base = populated(arch)
    entries = pagemap_entries(m, p, base, 10)
    sd = arch.soft_dirty
    for e in entries[:2]:
        assert e == PagemapEntry.page(m.zero_pfn, soft_dirty=sd)
    pfns = [e.pfn or 0 for e in entries[2:6]]
    assert len(set(pfns)) == 4 and m.zero_pfn not in pfns
    for e, pfn in zip(entries[2:6], pfns, strict=True):
        assert e == PagemapEntry.page(pfn, exclusive=True, soft_dirty=sd)
    assert entries[6:8] == [PagemapEntry(soft_dirty=sd)] * 2
    assert entries[8:] == [PagemapEntry()] * 2


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_pagemap_without_cap_sys_admin_hides_pfn(arch: Arch) -> None:
    """pagemap_read(): pm.show_pfn = file_ns_capable(file, CAP_SYS_ADMIN); flags stay."""
    m, p, base = populated(arch)
    no_admin = Reader(caps=frozenset({"CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE"}))
    hidden = pagemap_entries(m, p, base, 8, reader=no_admin)
    shown = pagemap_entries(m, p, base, 8)
    for h, s in zip(hidden, shown, strict=True):
        assert h.pfn == (0 if s.present else None)
        assert (h.present, h.exclusive, h.soft_dirty, h.file_shared) == (
            s.present, s.exclusive, s.soft_dirty, s.file_shared)


@settings(max_examples=40, deadline=None)
@given(
    arch=st.sampled_from(ARCHES),
    cuts=st.lists(st.integers(min_value=0, max_value=1100), max_size=6),
    lead=st.integers(min_value=0, max_value=600),
)
def test_pagemap_any_chunking_gives_the_same_bytes(arch: Arch, cuts: list[int], lead: int) -> None:
    """pagemap_read() walks in PMD-sized pieces whatever the count: reading a range
    in any number of 8-byte-aligned pieces gives the bytes of one read."""
    m = small_machine(arch)
    p = m.spawn("main")
    base = base_of(arch)
    pmd_pages = 1 << (arch.level_shifts[-2] - arch.page_shift)
    second = max(2 * pmd_pages, 64) - 8  # crosses a PMD boundary
    p.mmap(base, 40)
    p.mmap(base + second * arch.page_size, 20, prot="r")
    p.touch(base, 40, write=True)
    p.touch(base + second * arch.page_size, 20, write=False)
    start = vpn_offset(arch, base) - lead * 8
    total = 8 * (second + 400)
    whole = read(m, pagemap_path(p), start, total)
    f = open_proc(m, pagemap_path(p))
    f.lseek(start)
    pieces = []
    previous = 0
    for cut in sorted({min(c * 8 * 4, total) for c in cuts} | {total}):
        pieces.append(f.read(cut - previous))
        previous = cut
    assert b"".join(pieces) == whole


def test_pagemap_i386_position_is_cut_to_unsigned_long() -> None:
    """pagemap_read(): ``unsigned long src = *ppos`` keeps the low 32 bits on i386, so
    a position 4 GiB further reads the same entries (the position still advances
    from the 64-bit value)."""
    m, p, base = populated(I386)
    near = vpn_offset(I386, base)
    f = open_proc(m, pagemap_path(p))
    f.lseek(near + (1 << 32))
    assert f.read(64) == read(m, pagemap_path(p), near, 64)
    assert f.pos == near + (1 << 32) + 64


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_pagemap_after_exit(arch: Arch) -> None:
    """After exit and reaping, /proc/PID is gone (ENOENT); a file opened before reads
    0 bytes (pagemap_read(): ``!mmget_not_zero(mm)`` skips every check, even the
    alignment one)."""
    m, p, _base = populated(arch)
    f = open_proc(m, pagemap_path(p))
    p.exit()
    with expect_errno(errno.ENOENT):
        open_proc(m, pagemap_path(p))
    assert f.read(8) == b""
    assert f.read(3) == b""


# ---------------------------------------------------------------------------
# Permissions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_pagemap_permissions(arch: Arch) -> None:
    """Opening /proc/PID/pagemap (mode 0400, owned by the task's euid when dumpable):
    generic_permission() then mm_access(PTRACE_MODE_READ_FSCREDS), whose every
    refusal is -EACCES."""
    m, root_proc, base = populated(arch)
    user_proc = root_proc.fork("child", uid=1000)
    user = Reader.user(1000)
    # Another uid's file: the mode check refuses (no CAP_DAC_*).
    with expect_errno(errno.EACCES):
        open_proc(m, pagemap_path(root_proc), user)
    # The same uid: allowed, flags without PFNs (no CAP_SYS_ADMIN).
    entries = pagemap_entries(m, user_proc, base, 6, reader=user)
    assert [e.present for e in entries] == [True] * 6
    assert {e.pfn for e in entries} == {0}
    # Root reads anyone, with PFNs.
    assert pagemap_entries(m, user_proc, base, 1)[0].pfn == m.zero_pfn
    # A non-dumpable task's files belong to root (task_dump_owner()).
    user_proc.dumpable = False
    with expect_errno(errno.EACCES):
        open_proc(m, pagemap_path(user_proc), user)
    # Passing the mode check is not enough: another uid fails __ptrace_may_access().
    snoop = Reader(uid=1001, caps=frozenset({"CAP_DAC_READ_SEARCH"}))
    user_proc.dumpable = True
    with expect_errno(errno.EACCES):
        open_proc(m, pagemap_path(user_proc), snoop)


@pytest.mark.parametrize("path", ["/proc/kpagemap", "/proc/kpageflags", "/proc/kpagecount"])
def test_kpage_files_are_root_0400(path: str) -> None:
    """proc_create(name, S_IRUSR, ...): only uid 0 (the owner) or CAP_DAC_* may open."""
    m = small_machine(X86)
    with expect_errno(errno.EACCES):
        open_proc(m, path, Reader.user(1000))
    assert open_proc(m, path, Reader(uid=0, caps=frozenset())).read(0) == b""
    assert open_proc(m, path, Reader(uid=5, caps=frozenset({"CAP_DAC_READ_SEARCH"}))).read(0) == b""


def test_kpagemap_absent_without_the_patch() -> None:
    m = Machine(X86, ram_bytes=64 << 20, facts=KernelFacts(has_kpagemap=False))
    with expect_errno(errno.ENOENT):
        open_proc(m, "/proc/kpagemap")


# ---------------------------------------------------------------------------
# /proc/kpageflags, /proc/kpagecount, /proc/kpagemap
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
@pytest.mark.parametrize("path", ["/proc/kpageflags", "/proc/kpagecount"])
def test_kpage_alignment_and_zero_count(arch: Arch, path: str) -> None:
    """kpageflags_read()/kpagecount_read(): ``src & KPMMASK || count & KPMMASK`` ->
    -EINVAL; count 0 returns 0."""
    m = small_machine(arch)
    for offset, count in ((4, 8), (8, 4), (3, 0)):
        with expect_errno(errno.EINVAL):
            read(m, path, offset, count)
    assert read(m, path, 8, 0) == b""


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_kpage_eof_is_max_pfn_rounded_to_a_section(arch: Arch) -> None:
    """get_max_dump_pfn(): max_pfn rounded up to PAGES_PER_SECTION with SPARSEMEM,
    max_pfn itself with FLATMEM (i386).  Frames past RAM inside a present section
    have reserved struct pages (init_unavailable_range())."""
    ram = (64 << 20) - 5 * arch.page_size
    m = Machine(arch, ram_bytes=ram)
    # RAM is one block from the arch's RAM base (arm64's virt: 0x40000000).
    max_pfn = (arch.ram_base + ram) >> arch.page_shift
    per_section = arch.pages_per_section
    dump = max_pfn if per_section is None else -(-max_pfn // per_section) * per_section
    assert m.max_dump_pfn == dump
    for path in ("/proc/kpageflags", "/proc/kpagecount"):
        assert read(m, path, dump * 8, 8) == b""
        assert len(read(m, path, (dump - 2) * 8, 64)) == 16
    if dump > max_pfn:
        flags = parse_u64s(arch, read(m, "/proc/kpageflags", max_pfn * 8, 8))[0]
        assert flags == 1 << KPF.RESERVED


def test_kpage_sections_without_ram_read_nopage() -> None:
    """stable_page_flags(NULL) = 1 << KPF_NOPAGE for a section without a memmap
    (pfn_to_online_page() returns NULL); kpagecount reads 0 there."""
    arch = X86
    section = 1 << arch.section_size_bits  # type: ignore[operator]
    m = Machine(arch, ram=[(0, section), (2 * section, 3 * section)])
    pfn = (section + section // 2) >> arch.page_shift
    assert parse_u64s(arch, read(m, "/proc/kpageflags", pfn * 8, 8)) == [1 << KPF.NOPAGE]
    assert parse_u64s(arch, read(m, "/proc/kpagecount", pfn * 8, 8)) == [0]
    assert m.max_dump_pfn == (3 * section) >> arch.page_shift


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_kpage_position(arch: Arch) -> None:
    """``*ppos += (char __user *)out - buf``: the position advances by what was read."""
    m = small_machine(arch)
    f = open_proc(m, "/proc/kpageflags")
    f.lseek(16)
    assert len(f.read(24)) == 24
    assert f.pos == 40
    f.lseek((m.max_dump_pfn - 1) * 8)
    assert len(f.read(800)) == 8
    assert f.pos == m.max_dump_pfn * 8


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_kpagemap_layout(arch: Arch) -> None:
    """The patch's /proc/kpagemap: slot 0 the header, PFN n in slot n + 1 with
    (stable_page_flags(), page_count()); KPMSIZE alignment; EOF after the last
    dumped PFN's slot."""
    m, p, base = populated(arch)
    size = arch.kpagemap_entry_size
    header = read(m, "/proc/kpagemap", 0, size)
    assert header == KpagemapHeader.for_arch(arch).slot_bytes()
    anon_pfn = pagemap_entries(m, p, base + 2 * arch.page_size, 1)[0].pfn
    assert anon_pfn is not None
    for pfn in (m.zero_pfn, anon_pfn, anon_pfn + 50, m.max_dump_pfn - 1):
        (flags, count), = parse_kpagemap_entries(arch, read(m, "/proc/kpagemap",
                                                           (pfn + 1) * size, size))
        kflags = parse_u64s(arch, read(m, "/proc/kpageflags", pfn * 8, 8))[0]
        assert flags == kflags & ((1 << (8 * arch.word_size)) - 1)
        assert count == m.page_count(pfn)
    whole = read(m, "/proc/kpagemap", 0, (m.max_dump_pfn + 5) * size)
    assert len(whole) == (m.max_dump_pfn + 1) * size
    assert read(m, "/proc/kpagemap", (m.max_dump_pfn + 1) * size, size) == b""
    with expect_errno(errno.EINVAL):
        read(m, "/proc/kpagemap", size // 2, size)
    with expect_errno(errno.EINVAL):
        read(m, "/proc/kpagemap", size, size + 4)
    assert read(m, "/proc/kpagemap", size, 0) == b""


def test_kpagemap_i386_flags_are_one_word() -> None:
    """On i386 a kpagemap slot is two 4-byte words: the flags word keeps bits 0-31 of
    stable_page_flags() (KPF_RESERVED, bit 32, is lost)."""
    m = small_machine(I386)
    data = read(m, "/proc/kpagemap", (m.zero_pfn + 1) * 8, 8)
    ((flags, count),) = parse_kpagemap_entries(I386, data)
    assert flags == 1 << KPF.ZERO_PAGE
    assert count == 1


def test_kpage_i386_positions_past_4g() -> None:
    """kpageflags_read(): ``unsigned long src = *ppos`` keeps the low 32 bits on i386,
    so 4 GiB further reads the same entries; the patch's kpagemap_read() compares the
    loff_t position with its loff_t end first, so 4 GiB further is past the end."""
    m = small_machine(I386)
    four_g = 1 << 32
    f = open_proc(m, "/proc/kpageflags")
    f.lseek(four_g + 16)
    assert f.read(16) == read(m, "/proc/kpageflags", 16, 16)
    assert f.pos == four_g + 32
    g = open_proc(m, "/proc/kpagemap")
    g.lseek(four_g + 16)
    assert g.read(16) == b""
    assert g.pos == four_g + 16
    assert read(m, "/proc/kpagemap", four_g, 8) == b""


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_free_frames_read_buddy(arch: Arch) -> None:
    """A free frame: PageBuddy() or page_count() 0 with is_free_buddy_page() -> KPF_BUDDY
    only; kpagecount 0."""
    m = small_machine(arch)
    pfn = m.max_pfn - 1
    assert parse_u64s(arch, read(m, "/proc/kpageflags", pfn * 8, 8)) == [1 << KPF.BUDDY]
    assert parse_u64s(arch, read(m, "/proc/kpagecount", pfn * 8, 8)) == [0]


def test_whole_kpageflags_matches_vectorised_flags() -> None:
    m, _, _ = populated(X86)
    data = read(m, "/proc/kpageflags", 0, m.max_dump_pfn * 8)
    values = np.frombuffer(data, dtype="<u8")
    assert values.shape[0] == m.max_dump_pfn
    assert int(values[m.zero_pfn]) == (1 << KPF.ZERO_PAGE) | (1 << KPF.RESERVED)
