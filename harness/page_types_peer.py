"""tools/mm/page-types as a peer decoder: its per-page view of a guest process against ours.

A named process of the agent maps a few kinds of page (anonymous written,
anonymous read = the shared zero page, a private file mapping read, shared
anonymous = shmem written); after an LRU drain (SETTLE) the guest runs
``page-types -p PID -L -r -N`` (every page of every VMA, raw flags, no
summary), then the harness reads the same process's /proc/PID/maps,
/proc/PID/pagemap and /proc/kpageflags through the agent, decodes them with
the model's formats (:mod:`sim.formats`, :mod:`sim.flags`) and renders each
page as page-types does (:func:`page_types_flags`, after page-types.c
walk_vma(), walk_pfn(), expand_overloaded_flags(), page_flag_name()).  The
two listings must be equal line for line: voffset, offset (PFN, or swap
offset), flag letters.  Differences are cases that fail, with the first few
lines that differ.

And its whole-PFN summary (:func:`summary_check`): the harness reads all of
/proc/kpageflags once, writes those bytes to a file in the guest, and runs
``page-types -F FILE`` over them twice (raw flags ``-r``, and the default
well-known flags); each summary (one row per distinct flags value: pages, MB,
short and long names, and the total) must equal the one our decode of the same
bytes renders (:func:`summary_rows`).  Reading a snapshot, not the live file,
makes the comparison exact: the guest's kernel pages change flags all the time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from harness.agent.protocol import BackingCode, Op
from harness.selftests_tap import Case, Outcome
from harness.vm import VM
from sim.arch import Arch, get_arch
from sim.flags import KPF, PM
from sim.formats import parse_u64s

__all__ = ["PAGE_TYPES_BITS", "PAGE_TYPES_LONG_NAMES", "Line", "SummaryRow", "our_lines",
           "page_types_flags", "page_types_lines", "page_types_summary", "peer_check",
           "summary_check", "summary_rows"]

#: page-types' page_flag_names[] (tools/mm/page-types.c): bit -> letter, in bit
#: order (its flag string has one character per named bit).  Bits 47-63 are its
#: own: overloaded kernel flags expanded, and pagemap bits.
PAGE_TYPES_BITS: dict[int, str] = {
    KPF.LOCKED: "L", KPF.ERROR: "E", KPF.REFERENCED: "R", KPF.UPTODATE: "U",
    KPF.DIRTY: "D", KPF.LRU: "l", KPF.ACTIVE: "A", KPF.SLAB: "S", KPF.WRITEBACK: "W",
    KPF.RECLAIM: "I", KPF.BUDDY: "B", KPF.MMAP: "M", KPF.ANON: "a", KPF.SWAPCACHE: "s",
    KPF.SWAPBACKED: "b", KPF.COMPOUND_HEAD: "H", KPF.COMPOUND_TAIL: "T", KPF.HUGE: "G",
    KPF.UNEVICTABLE: "u", KPF.HWPOISON: "X", KPF.NOPAGE: "n", KPF.KSM: "x", KPF.THP: "t",
    KPF.OFFLINE: "o", KPF.ZERO_PAGE: "z", KPF.IDLE: "i", KPF.PGTABLE: "g",
    KPF.RESERVED: "r", KPF.MLOCKED: "m", KPF.OWNER_2: "d", KPF.PRIVATE: "P",
    KPF.PRIVATE_2: "p", KPF.OWNER_PRIVATE: "O", KPF.ARCH: "h", KPF.SOFTDIRTY: "f",
    KPF.ARCH_2: "H",
    47: "d",  # ANON_EXCLUSIVE (OWNER_2 on an anonymous page)
    48: "I",  # READAHEAD (RECLAIM without WRITEBACK)
    50: "A",  # SLUB_FROZEN
    51: "E",  # SLUB_DEBUG
    61: "F",  # FILE (pagemap bit 61)
    62: "w",  # SWAP (pagemap bit 62)
    63: "1",  # MMAP_EXCLUSIVE (pagemap bit 56)
}
_ANON_EXCLUSIVE, _READAHEAD, _SLUB_FROZEN, _SLUB_DEBUG = 47, 48, 50, 51

#: page-types' long flag names (page_flag_longname(): the text after "X:" of
#: page_flag_names[]), for the summary's long-symbolic-flags column.
PAGE_TYPES_LONG_NAMES: dict[int, str] = {
    KPF.LOCKED: "locked", KPF.ERROR: "error", KPF.REFERENCED: "referenced",
    KPF.UPTODATE: "uptodate", KPF.DIRTY: "dirty", KPF.LRU: "lru", KPF.ACTIVE: "active",
    KPF.SLAB: "slab", KPF.WRITEBACK: "writeback", KPF.RECLAIM: "reclaim", KPF.BUDDY: "buddy",
    KPF.MMAP: "mmap", KPF.ANON: "anonymous", KPF.SWAPCACHE: "swapcache",
    KPF.SWAPBACKED: "swapbacked", KPF.COMPOUND_HEAD: "compound_head",
    KPF.COMPOUND_TAIL: "compound_tail", KPF.HUGE: "huge", KPF.UNEVICTABLE: "unevictable",
    KPF.HWPOISON: "hwpoison", KPF.NOPAGE: "nopage", KPF.KSM: "ksm", KPF.THP: "thp",
    KPF.OFFLINE: "offline", KPF.ZERO_PAGE: "zero_page", KPF.IDLE: "idle_page",
    KPF.PGTABLE: "pgtable", KPF.RESERVED: "reserved", KPF.MLOCKED: "mlocked",
    KPF.OWNER_2: "owner_2", KPF.PRIVATE: "private", KPF.PRIVATE_2: "private_2",
    KPF.OWNER_PRIVATE: "owner_private", KPF.ARCH: "arch", KPF.SOFTDIRTY: "softdirty",
    KPF.ARCH_2: "arch_2", 47: "anon_exclusive", 48: "readahead", 50: "slub_frozen",
    51: "slub_debug", 61: "file", 62: "swap", 63: "mmap_exclusive",
}
#: well_known_flags(): bits 32-47 are for kernel hackers; compound bits show only on hugetlb.
_HACKERS_BITS = 0xFFFF << 32
_FILE, _SWAP, _MMAP_EXCLUSIVE = 61, 62, 63

#: (virtual page number, PFN or swap offset, flag letters): one page-types -L line.
Line = tuple[int, int, str]


def _bit(n: int) -> int:
    return 1 << n


def page_types_flags(kpageflags: int, pme: int) -> str:
    """page-types -r's flag string of one page: expand_overloaded_flags(), page_flag_name().

    ``kpageflags``: the /proc/kpageflags u64 (0 for a swapped page); ``pme``:
    the page's /proc/PID/pagemap u64.  Raises ValueError for a bit page-types
    has no name for (page-types itself stops there).
    """
    return _flag_name(_expand_overloaded(kpageflags, pme))


def _expand_overloaded(kpageflags: int, pme: int) -> int:
    """page-types.c expand_overloaded_flags(): the -r view of one page's flags."""
    flags = kpageflags
    if flags & _bit(KPF.ANON) and flags & _bit(KPF.OWNER_2):
        flags ^= _bit(KPF.OWNER_2) | _bit(_ANON_EXCLUSIVE)
    if flags & _bit(KPF.SLAB):
        if flags & _bit(KPF.ACTIVE):
            flags ^= _bit(KPF.ACTIVE) | _bit(_SLUB_FROZEN)
        if flags & _bit(KPF.ERROR):
            flags ^= _bit(KPF.ERROR) | _bit(_SLUB_DEBUG)
    if flags & (_bit(KPF.RECLAIM) | _bit(KPF.WRITEBACK)) == _bit(KPF.RECLAIM):
        flags ^= _bit(KPF.RECLAIM) | _bit(_READAHEAD)
    for pm_bit, bit in ((PM.SOFT_DIRTY, KPF.SOFTDIRTY), (PM.FILE, _FILE), (PM.SWAP, _SWAP),
                        (PM.MMAP_EXCLUSIVE, _MMAP_EXCLUSIVE)):
        if pme & _bit(pm_bit):
            flags |= _bit(bit)
    return flags


def _well_known(kpageflags: int) -> int:
    """page-types.c well_known_flags(): the default (not -r) view of one page's flags."""
    flags = kpageflags & ~_HACKERS_BITS
    compound = _bit(KPF.COMPOUND_HEAD) | _bit(KPF.COMPOUND_TAIL)
    if flags & compound and not flags & _bit(KPF.HUGE):
        flags &= ~compound
    return flags


def _flag_name(flags: int) -> str:
    """page-types.c page_flag_name(): one letter or '_' per named bit, in bit order."""
    unknown = flags & ~sum(_bit(b) for b in PAGE_TYPES_BITS)
    if unknown:
        raise ValueError(f"flag bits {unknown:#x} have no page-types name (it would stop)")
    return "".join(letter if flags >> bit & 1 else "_"
                   for bit, letter in sorted(PAGE_TYPES_BITS.items()))


def _flag_longname(flags: int) -> str:
    """page-types.c page_flag_longname(): the names of the set bits, comma-separated."""
    return ",".join(name for bit, name in sorted(PAGE_TYPES_LONG_NAMES.items())
                    if flags >> bit & 1)


@dataclass(frozen=True)
class SummaryRow:
    """One row of page-types' summary (show_summary()): a flags value and its pages."""

    flags: int
    pages: int
    mib: int
    short: str
    long: str


def summary_rows(kpageflags: Sequence[int], page_size: int, *, raw: bool
                 ) -> tuple[list[SummaryRow], int]:
    """The summary page-types prints for a kpageflags file (walk_pfn() over every PFN,
    ``pme`` 0): rows sorted by flags value, and the total pages.

    ``raw``: ``-r`` (expand_overloaded_flags()), else well_known_flags().
    ``page_size`` in bytes (pages2mb()).  Raises ValueError as page_types_flags().
    """
    counts = Counter(_expand_overloaded(f, 0) if raw else _well_known(f) for f in kpageflags)
    rows = [SummaryRow(flags, n, n * page_size >> 20, _flag_name(flags), _flag_longname(flags))
            for flags, n in sorted(counts.items())]
    return rows, len(kpageflags)


_SUMMARY_ROW = re.compile(
    r"^0x([0-9a-f]{16})\t\s*(\d+)\s+(\d+)  (\S+)\t(\S*)$")
_SUMMARY_TOTAL = re.compile(r"^\s+total\t\s*(\d+)\s+(\d+)$")


def page_types_summary(output: str) -> tuple[list[SummaryRow], int | None]:
    """page-types' summary rows (sorted by flags value, as :func:`summary_rows`) and its
    total pages (None: no total line)."""
    rows = []
    total = None
    for line in output.splitlines():
        if (m := _SUMMARY_ROW.match(line)) is not None:
            rows.append(SummaryRow(int(m.group(1), 16), int(m.group(2)), int(m.group(3)),
                                   m.group(4), m.group(5)))
        elif (t := _SUMMARY_TOTAL.match(line)) is not None:
            total = int(t.group(1))
    return sorted(rows, key=lambda row: row.flags), total


def our_lines(vmas: Sequence[tuple[int, Sequence[int]]], kpageflags: Sequence[int]) -> list[Line]:
    """The lines page-types -p -L -r prints for ``vmas`` ((first virtual page, pagemap
    u64s)), with ``kpageflags`` indexed by PFN (walk_vma(): PFN 0 is skipped)."""
    lines: list[Line] = []
    for first, entries in vmas:
        for index, pme in enumerate(entries):
            pfn = pme & PM.PFN_MASK if pme >> PM.PRESENT & 1 else 0
            if pfn:
                flags = kpageflags[pfn] if pfn < len(kpageflags) else 0
                lines.append((first + index, pfn, page_types_flags(flags, pme)))
            if pme >> PM.SWAP & 1:
                offset = (pme & PM.PFN_MASK) >> PM.SWAP_OFFSET_SHIFT
                lines.append((first + index, offset, page_types_flags(0, pme)))
    return lines


_LINE = re.compile(r"^([0-9a-f]+)\t([0-9a-f]+)\t(\S+)$")


def page_types_lines(output: str) -> list[Line]:
    """The per-page lines of page-types -p PID -L output (its header line skipped)."""
    return [(int(m.group(1), 16), int(m.group(2), 16), m.group(3))
            for m in map(_LINE.match, output.splitlines()) if m is not None]


def _maps(text: str, page_size: int) -> list[tuple[int, int]]:
    """(first page, end page) of each /proc/PID/maps line, as page-types' parse_pid()."""
    out = []
    for line in text.splitlines():
        start, _, end = line.split(" ", 1)[0].partition("-")
        out.append((int(start, 16) // page_size, int(end, 16) // page_size))
    return out


#: Where the peer's regions go (1 TiB: free on every arch the project boots).
_BASE = 1 << 40


def peer_check(vm: VM, arch: str) -> tuple[list[Case], str]:
    """Run page-types on a named process with every kind of page; cases and its output.

    Raises the agent's errors (VMError, AgentOpError) as they come.
    """
    agent = vm.agent
    model = get_arch(arch)
    page = 1 << model.page_shift
    name = "pt_peer"
    pid = agent.fork(name)
    try:
        regions = {
            "anon written": (_BASE, BackingCode.ANON, False, True),
            "anon read (zero page)": (_BASE + (64 << 20), BackingCode.ANON, False, False),
            "private file read": (_BASE + (128 << 20), BackingCode.FILE, False, False),
            "shared anon written": (_BASE + (192 << 20), BackingCode.ANON, True, True),
        }
        for addr, backing, shared, write in regions.values():
            agent.mmap(addr, 8 * page, backing=backing, shared=shared, file_tag=0x50, target=name)
            agent.touch(addr, 8, write=write, tag=0x70, target=name)
        agent.settle(target=name)
        before = _observe(vm, model, pid, page)
        ran = agent.call_op(
            Op.EXEC_TEST, timeout=360, path=b"/selftests/page-types",
            argv=["page-types", "-p", str(pid), "-L", "-r", "-N"], timeout_ms=300_000,
            output_max=16 << 20,
        )
        output = ran["output"].decode(errors="replace")
        after = _observe(vm, model, pid, page)
    finally:
        agent.kill(name)
    theirs = page_types_lines(output)
    ours = _between(theirs, before, after)
    changed = sum(before.get(line[0]) != after.get(line[0]) for line in theirs)
    cases = [_compare(f"every page of the process, {changed} changed meanwhile", theirs, ours)]
    by_vpn = {line[0]: line for line in theirs}
    for label, (addr, *_) in regions.items():
        first = addr // page
        want = [line for line in ours if first <= line[0] < first + 8]
        got = [by_vpn[v] for v in range(first, first + 8) if v in by_vpn]
        case = _compare(label, got, want)
        if case.outcome is Outcome.PASS and got:
            case = Case(case.number, f"{label}: {got[0][2]}", Outcome.PASS)
        cases.append(case)
    summary_cases, summary_output = summary_check(vm, arch)
    cases += summary_cases
    output += summary_output
    return [Case(i + 1, c.name, c.outcome, c.reason) for i, c in enumerate(cases)], output


#: Where summary_check() puts its snapshot of /proc/kpageflags (the agent's tmpfs).
_SNAPSHOT = "/tmp/pt-kpageflags"


def summary_check(vm: VM, arch: str) -> tuple[list[Case], str]:
    """page-types' whole-PFN summary of a /proc/kpageflags snapshot against ours.

    Two cases: raw flags (``-r``) and well-known flags; each passes when every
    row (flags value, pages, MB, short and long names) and the total are equal.
    Returns the cases and page-types' two outputs.  Raises the agent's errors.
    """
    agent = vm.agent
    model = get_arch(arch)
    data = agent.read_file("/proc/kpageflags", 1 << 25, timeout=120).data
    agent.write_file(_SNAPSHOT, data, create=True)
    kpageflags = parse_u64s(model, data)
    cases, outputs = [], []
    try:
        for raw in (True, False):
            argv = ["page-types", "-F", _SNAPSHOT, *(["-r"] if raw else [])]
            ran = agent.call_op(
                Op.EXEC_TEST, timeout=360, path=b"/selftests/page-types", argv=argv,
                timeout_ms=300_000, output_max=1 << 20,
            )
            output = ran["output"].decode(errors="replace")
            outputs.append(f"\n$ {' '.join(argv)}\n{output}")
            theirs, total = page_types_summary(output)
            ours, our_total = summary_rows(kpageflags, 1 << model.page_shift, raw=raw)
            label = (f"whole-PFN summary of {len(kpageflags)} PFNs, "
                     f"{'raw' if raw else 'well-known'} flags")
            cases.append(_compare_summary(label, theirs, total, ours, our_total))
    finally:
        agent.write_file(_SNAPSHOT, b"", create=True)  # give the snapshot's pages back
    return cases, "".join(outputs)


def _compare_summary(label: str, theirs: Sequence[SummaryRow], total: int | None,
                     ours: Sequence[SummaryRow], our_total: int) -> Case:
    if list(theirs) == list(ours) and total == our_total:
        return Case(0, f"{label} ({len(ours)} flag sets)", Outcome.PASS)
    differ = [*(f"page-types {r}" for r in theirs if r not in ours),
              *(f"ours {r}" for r in ours if r not in theirs)][:4]
    if total != our_total:
        differ.insert(0, f"total: page-types {total}, ours {our_total}")
    return Case(0, f"{label} (page-types {len(theirs)} rows, ours {len(ours)})",
                Outcome.FAIL, "; ".join(differ))


def _observe(vm: VM, model: Arch, pid: int, page: int) -> dict[int, Line]:
    """Our lines of ``pid`` now (maps, pagemap per VMA, then kpageflags), by virtual page."""
    agent = vm.agent
    maps = agent.read_file(f"/proc/{pid}/maps", 1 << 20).data.decode()
    vmas = []
    for first, end in _maps(maps, page):
        data = agent.read_file(f"/proc/{pid}/pagemap", (end - first) * 8, offset=first * 8).data
        vmas.append((first, parse_u64s(model, data)))
    kpageflags = parse_u64s(model, agent.read_file("/proc/kpageflags", 1 << 25, timeout=120).data)
    return {line[0]: line for line in our_lines(vmas, kpageflags)}


def _between(theirs: Sequence[Line], before: dict[int, Line], after: dict[int, Line]) -> list[Line]:
    """Ours, page by page as page-types saw it: it ran between our two observations, and the
    agent's own work (init's heap, copy-on-write shared with the forked process) may change a
    page meanwhile; where it saw what either observation saw, that observation is ours."""
    ours = []
    seen_by_vpn = {line[0]: line for line in theirs}
    for vpn in sorted(set(before) | set(after)):
        seen = seen_by_vpn.get(vpn)
        choice = after.get(vpn) if seen is not None and seen == after.get(vpn) else before.get(vpn)
        if choice is not None:
            ours.append(choice)
    return ours


def _compare(label: str, theirs: Sequence[Line], ours: Sequence[Line]) -> Case:
    if list(theirs) == list(ours):
        return Case(0, f"{label} ({len(ours)} pages)", Outcome.PASS)
    extra = sorted(set(theirs) - set(ours))[:3]
    missing = sorted(set(ours) - set(theirs))[:3]
    show = "; ".join([*(f"page-types {v:x} {o:x} {f}" for v, o, f in extra),
                      *(f"ours {v:x} {o:x} {f}" for v, o, f in missing)])
    return Case(0, f"{label} (page-types {len(theirs)}, ours {len(ours)} pages)",
                Outcome.FAIL, show or "same lines, other order")
