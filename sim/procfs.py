"""What open(), read(), pread() and lseek() on the page-level proc files return.

Files: ``/proc/PID/pagemap``, ``/proc/PID/smaps`` and ``/proc/PID/smaps_rollup``
(fs/proc/task_mmu.c; the smaps text of the model's VMAs, :mod:`sim.smaps`), ``/proc/kpageflags`` and
``/proc/kpagecount`` (fs/proc/page.c), ``/proc/kpagemap`` (the project's patch
series).  Errors raise :class:`ProcReadError`, an OSError carrying the errno
the kernel returns.  Arithmetic on offsets follows the kernel's types: the
position is a signed 64-bit loff_t, the functions copy it to an ``unsigned
long`` of the architecture's width, counts are ``size_t``.

    f = open_proc(machine, f"/proc/{pid}/pagemap", Reader.root())
    f.lseek(vaddr // page_size * 8)
    data = f.read(8 * nr_pages)
    data = read(machine, "/proc/kpageflags", offset, count, reader=Reader.user(1000))
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from sim.bulk import bulk_build_kpagemap_entries, bulk_build_u64s
from sim.flags import PM
from sim.formats import KpagemapHeader, PagemapEntry, parse_u64s
from sim.formats_scan import PmScanArg
from sim.mm.facts import PmdExclusive
from sim.mm.machine import Credentials, Machine, Process
from sim.mm.mm_struct import MmStruct
from sim.mm.pagetable import HugePmd, PteBitsArray, PteTable
from sim.mm.pte import (
    PTE_DTYPE,
    PTE_MARKER_UFFD_WP,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_SWAP,
    PTE_SWP_SOFT_DIRTY,
    PTE_UFFD_WP,
)
from sim.mm.userfaultfd import PTE_MARKER_UFFD_WP_BIT, SWP_PTE_MARKER
from sim.pagemap_scan import ScanResult, do_pagemap_scan
from sim.pagewalk import MmWalk, MmWalkOps, walk_page_range
from sim.smaps import render_rollup, render_smaps

__all__ = [
    "ProcError",
    "ProcFile",
    "ProcFs",
    "ProcReadError",
    "Reader",
    "kpage_values",
    "open_proc",
    "pagemap_entries",
    "read",
]

FileKind = Literal["pagemap", "smaps", "smaps_rollup", "kpagemap", "kpageflags", "kpagecount"]
U64Array = npt.NDArray[np.uint64]

LLONG_MAX = (1 << 63) - 1
SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2

_PM_PRESENT = np.uint64(1 << PM.PRESENT)
_PM_FILE = np.uint64(1 << PM.FILE)
_PM_EXCLUSIVE = np.uint64(1 << PM.MMAP_EXCLUSIVE)
_PM_SOFT_DIRTY = np.uint64(1 << PM.SOFT_DIRTY)
_PM_SWAP = np.uint64(1 << PM.SWAP)
_PM_UFFD_WP = np.uint64(1 << PM.UFFD_WP)
#: The frame a uffd-wp PTE marker reads to a privileged reader: swp_type() |
#: swp_offset() << MAX_SWAPFILES_SHIFT of the marker entry (sim/mm/userfaultfd.py).
_MARKER_FRAME = np.uint64(SWP_PTE_MARKER | PTE_MARKER_UFFD_WP_BIT << PM.SWAP_OFFSET_SHIFT)


class ProcReadError(OSError):
    """open() or read() failed with ``errno``; the message says why."""

    errno: int

    def __init__(self, err: int, reason: str) -> None:
        super().__init__(err, f"{errno.errorcode.get(err, err)}: {reason}")
        self.reason = reason


#: The name the harness uses.
ProcError = ProcReadError


@dataclass(frozen=True)
class Reader(Credentials):
    """The process that opens and reads: its credentials, and itself if it is modelled.

    ``pid`` names a process of the machine when the reader reads its own
    pagemap (mm == current->mm skips the ptrace check in mm_access()).
    """

    pid: int | None = None


# ---------------------------------------------------------------------------
# Open
# ---------------------------------------------------------------------------

_PID_PATH = re.compile(r"/proc/(\d+|self)/(pagemap|smaps|smaps_rollup)")
_GLOBAL_FILES: dict[str, FileKind] = {
    "/proc/kpagemap": "kpagemap",
    "/proc/kpageflags": "kpageflags",
    "/proc/kpagecount": "kpagecount",
}


def _may_read_0400(reader: Reader, owner_uid: int) -> bool:
    """generic_permission() on a mode-0400 file owned by ``owner_uid``.

    The owner may read; anyone else needs CAP_DAC_READ_SEARCH or
    CAP_DAC_OVERRIDE (capable_wrt_inode_uidgid()).
    """
    return (
        reader.uid == owner_uid
        or reader.capable("CAP_DAC_READ_SEARCH")
        or reader.capable("CAP_DAC_OVERRIDE")
    )


def _ptrace_may_access(reader: Reader, target: Process) -> bool:
    """__ptrace_may_access(PTRACE_MODE_READ_FSCREDS) and cap_ptrace_access_check()."""
    creds = target.creds
    ptrace_cap = reader.capable("CAP_SYS_PTRACE")
    if not (reader.uid == creds.uid and reader.gid == creds.gid) and not ptrace_cap:
        return False
    if not target.dumpable and not ptrace_cap:
        return False
    return creds.caps <= reader.caps or ptrace_cap


def open_proc(machine: Machine, path: str, reader: Reader | None = None) -> ProcFile:
    """open(path, O_RDONLY) as ``reader`` (default: root)."""
    reader = reader or Reader.root()
    kind = _GLOBAL_FILES.get(path)
    if kind is not None:
        if kind == "kpagemap" and not machine.facts.has_kpagemap:
            raise ProcReadError(errno.ENOENT, f"{path}: this kernel has no kpagemap")
        # proc_create(..., S_IRUSR, ...): root's, mode 0400.
        if not _may_read_0400(reader, 0):
            raise ProcReadError(errno.EACCES, f"{path}: mode 0400 root, reader uid {reader.uid}")
        return ProcFile(machine, kind)
    match = _PID_PATH.fullmatch(path)
    if match is None:
        raise ProcReadError(errno.ENOENT, f"{path}: not a file the model knows")
    if match.group(1) == "self":
        if reader.pid is None:
            raise ProcReadError(errno.ENOENT, f"{path}: the reader is not a modelled process")
        pid = reader.pid
    else:
        pid = int(match.group(1))
    target = machine.process(pid)
    if target is None:
        raise ProcReadError(errno.ENOENT, f"{path}: no process {pid}")
    pid_kind: FileKind = "pagemap" if match.group(2) == "pagemap" else (
        "smaps" if match.group(2) == "smaps" else "smaps_rollup")
    # task_dump_owner(): a non-dumpable task's /proc files belong to root.
    # smaps and smaps_rollup are 0444 (S_IRUGO): only the ptrace check below.
    owner = target.uid if target.dumpable else 0
    if pid_kind == "pagemap" and not _may_read_0400(reader, owner):
        raise ProcReadError(
            errno.EACCES, f"{path}: mode 0400 owned by uid {owner}, reader uid {reader.uid}"
        )
    # pagemap_open(), proc_maps_open() -> proc_mem_open() -> mm_access(): any refusal is -EACCES.
    if reader.pid != pid and not _ptrace_may_access(reader, target):
        raise ProcReadError(errno.EACCES, f"{path}: ptrace access to pid {pid} refused")
    # pm.show_pfn = file_ns_capable(file, &init_user_ns, CAP_SYS_ADMIN): the opener's.
    return ProcFile(machine, pid_kind, mm=target.mm, show_pfn=reader.capable("CAP_SYS_ADMIN"))


def read(
    machine: Machine,
    path: str,
    offset: int,
    count: int,
    *,
    reader: Reader | None = None,
) -> bytes:
    """open(path) then pread(offset, count): the bytes, or ProcReadError."""
    return open_proc(machine, path, reader).pread(offset, count)


def pagemap_entries(
    machine: Machine, process: Process, addr: int, nr_pages: int, reader: Reader | None = None
) -> list[PagemapEntry]:
    """The decoded pagemap entries of ``nr_pages`` pages from ``addr`` (one read)."""
    shift = machine.arch.page_shift
    data = read(machine, f"/proc/{process.pid}/pagemap", (addr >> shift) * PM.ENTRY_BYTES,
                nr_pages * PM.ENTRY_BYTES, reader=reader)
    return [PagemapEntry.from_raw(value) for value in parse_u64s(machine.arch, data)]


def kpage_values(machine: Machine, path: str, pfn: int) -> int:
    """The u64 of /proc/kpageflags or /proc/kpagecount for ``pfn``, read as root."""
    return parse_u64s(machine.arch, read(machine, path, pfn * 8, 8))[0]


@dataclass
class ProcFs:
    """The proc files of one machine, read the way the guest agent reads them."""

    machine: Machine

    def read(self, path: str, offset: int, count: int, *, uid: int = 0) -> bytes:
        """open(path) and pread(offset, count) as a process of ``uid``.

        uid 0 is root with every capability; any other uid is an ordinary
        process (setresuid() from root: no capabilities, gid 0).
        """
        reader = Reader.root() if uid == 0 else Reader.user(uid)
        return read(self.machine, path, offset, count, reader=reader)

    def pagemap_scan(
        self, path: str, arg: PmScanArg, *, uid: int = 0, arg_readable: bool = True
    ) -> ScanResult:
        """open(path) as ``uid`` (as :meth:`read`), then ioctl(PAGEMAP_SCAN, &arg).

        ProcReadError for a failed open; the ioctl's own errors are in the result.
        """
        reader = Reader.root() if uid == 0 else Reader.user(uid)
        return open_proc(self.machine, path, reader).pagemap_scan(arg, arg_readable=arg_readable)


# ---------------------------------------------------------------------------
# The open file
# ---------------------------------------------------------------------------


@dataclass
class ProcFile:
    """An open proc file with its position (f_pos)."""

    machine: Machine
    kind: FileKind
    mm: MmStruct | None = None
    show_pfn: bool = False
    pos: int = field(default=0)

    def read(self, count: int) -> bytes:
        """read(): from the position, which advances by the bytes returned."""
        data, self.pos = self._read(self.pos, count)
        return data

    def pread(self, offset: int, count: int) -> bytes:
        """pread64(): at ``offset``, the position is left alone."""
        if offset < 0:
            raise ProcReadError(errno.EINVAL, f"pread at negative offset {offset}")
        data, _ = self._read(offset, count)
        return data

    def pagemap_scan(self, arg: PmScanArg, *, arg_readable: bool = True) -> ScanResult:
        """ioctl(fd, PAGEMAP_SCAN, &arg): :func:`sim.pagemap_scan.do_pagemap_scan` on the
        file's mm (proc_pagemap_operations.unlocked_ioctl = do_pagemap_cmd()).

        Only pagemap has the ioctl, and only since 6.7 (``facts.pagemap_scan``): on
        the other files, and on 6.1's pagemap, vfs_ioctl() fails with ENOTTY.
        """
        if self.kind != "pagemap" or not self.machine.facts.pagemap_scan:
            return ScanResult(-errno.ENOTTY, arg.walk_end)
        return do_pagemap_scan(self.machine, self.mm, arg, arg_readable=arg_readable)

    def lseek(self, offset: int, whence: int = SEEK_SET) -> int:
        """mem_lseek(): SEEK_SET and SEEK_CUR store any value; SEEK_END is EINVAL."""
        if whence == SEEK_SET:
            self.pos = offset
        elif whence == SEEK_CUR:
            self.pos += offset
        else:
            raise ProcReadError(errno.EINVAL, f"lseek whence {whence} is not SEEK_SET or SEEK_CUR")
        self.pos = _to_loff(self.pos)
        return self.pos

    def _read(self, pos: int, count: int) -> tuple[bytes, int]:
        arch = self.machine.arch
        ssize_max = (1 << (8 * arch.word_size - 1)) - 1
        if not 0 <= count <= 2 * ssize_max + 1:
            raise ProcReadError(errno.EINVAL, f"count {count} is not a size_t")
        # rw_verify_area(): these files have no FOP_UNSIGNED_OFFSET.
        if count > ssize_max:
            raise ProcReadError(errno.EINVAL, f"count {count:#x} is negative as ssize_t")
        if pos < 0:
            raise ProcReadError(errno.EINVAL, f"position {pos} is negative")
        if pos + count > LLONG_MAX:
            raise ProcReadError(errno.EINVAL, f"position {pos} + count {count} overflows loff_t")
        # vfs_read(): count = min(count, MAX_RW_COUNT).
        count = min(count, (0x7FFF_FFFF) & ~(arch.page_size - 1))
        if self.kind == "pagemap":
            return pagemap_read(self.machine, self.mm, self.show_pfn, pos, count)
        if self.kind in ("smaps", "smaps_rollup"):
            return self._text_read(pos, count)
        return kpage_read(self.machine, self.kind, pos, count)


    def _text_read(self, pos: int, count: int) -> tuple[bytes, int]:
        """seq_read() of the smaps text: ``count`` bytes from ``pos`` (the model
        renders the whole file; the kernel's seq_file gives the same bytes)."""
        assert self.mm is not None
        machine = self.machine
        if self.kind == "smaps":
            text = render_smaps(self.mm, machine.facts, machine.arch.word_size)
        else:
            text = render_rollup(self.mm, machine.facts, machine.arch.word_size)
        data = text.encode()[pos : pos + count]
        return data, pos + len(data)


def _to_loff(value: int) -> int:
    """Wrap to a signed 64-bit loff_t."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


# ---------------------------------------------------------------------------
# /proc/PID/pagemap
# ---------------------------------------------------------------------------


@dataclass
class PagemapRead:
    """struct pagemapread: the entries of a read, in order.

    Callbacks append runs of entries; PTE and huge-leaf runs are recorded as
    views on the tables and turned into u64 values for the whole read at once
    (:meth:`values`).  Nothing changes the tables during a read, so this is
    the same as computing each entry in pte_to_pagemap_entry() as the walk
    meets it, and it keeps the walk itself in the kernel's shape.
    """

    machine: Machine
    show_pfn: bool
    pos: int = 0  # entries so far
    fills: list[tuple[int, int, np.uint64]] = field(default_factory=list)
    ptes: list[tuple[int, PteBitsArray, npt.NDArray[np.int64], bool]] = field(
        default_factory=list
    )
    huge: list[tuple[int, int, int, int, bool]] = field(default_factory=list)
    #: Runs of consecutive frames with one flags word (hugetlb pages): (pos, n, flags, pfn).
    frames: list[tuple[int, int, np.uint64, int]] = field(default_factory=list)

    def add_frames(self, n: int, flags: np.uint64, first_pfn: int) -> None:
        """add_to_pagemap() of ``n`` entries with ``flags`` and frames ``first_pfn`` on
        (the PFN only if show_pfn)."""
        if n > 0:
            self.frames.append((self.pos, n, flags, first_pfn))
            self.pos += n

    def add_fill(self, n: int, value: np.uint64) -> None:
        """add_to_pagemap() of ``n`` equal entries."""
        if n > 0:
            self.fills.append((self.pos, n, value))
            self.pos += n

    def add_ptes(
        self, bits: PteBitsArray, pfns: npt.NDArray[np.int64], vma_softdirty: bool
    ) -> None:
        """pte_to_pagemap_entry() for each PTE of a table slice."""
        self.ptes.append((self.pos, bits, pfns, vma_softdirty))
        self.pos += bits.shape[0]

    def add_huge(self, pmd: HugePmd, first_pfn: int, n: int, vma_softdirty: bool) -> None:
        """The entries of a huge leaf from its page ``first_pfn`` on."""
        self.huge.append((self.pos, first_pfn, n, pmd.bits, vma_softdirty))
        self.pos += n

    def values(self) -> U64Array:
        """The u64 entries of the read, in order."""
        out = np.zeros(self.pos, dtype=np.uint64)
        for offset, n, value in self.fills:
            out[offset : offset + n] = value
        for offset, n, value, first in self.frames:
            out[offset : offset + n] = value
            if self.show_pfn:
                out[offset : offset + n] |= np.arange(first, first + n, dtype=np.uint64)
        if self.ptes:
            lengths = np.array([seg[1].shape[0] for seg in self.ptes], dtype=np.int64)
            positions = _positions([seg[0] for seg in self.ptes], lengths)
            bits = np.concatenate([seg[1] for seg in self.ptes])
            pfns = np.concatenate([seg[2] for seg in self.ptes])
            vma_sd = np.repeat(np.array([seg[3] for seg in self.ptes], dtype=np.bool_), lengths)
            values, present, normal = _entry_flags(self.machine, bits, pfns, vma_sd)
            values[normal] |= _exclusive(self.machine, pfns[normal])
            if self.show_pfn:
                values[present] |= pfns[present].astype(np.uint64)
            _swap_entries(values, bits, pfns, self.show_pfn)
            _uffd_wp_markers(values, bits, self.show_pfn)
            out[positions] = values
        if self.huge:
            # The flags are the leaf's, computed once per leaf with the PTE rule;
            # EXCLUSIVE and the PFN are per page.
            lengths = np.array([seg[2] for seg in self.huge], dtype=np.int64)
            positions = _positions([seg[0] for seg in self.huge], lengths)
            pages = _positions([seg[1] for seg in self.huge], lengths)
            leaf_flags, _, _ = _entry_flags(
                self.machine,
                np.array([seg[3] for seg in self.huge], dtype=PTE_DTYPE),
                np.array([seg[1] for seg in self.huge], dtype=np.int64),
                np.array([seg[4] for seg in self.huge], dtype=np.bool_),
            )
            if self.machine.facts.pmd_exclusive is PmdExclusive.HEAD_PAGE:
                # Before 6.11: page_mapcount(pmd_page()) for every subpage.
                asked = self.machine.mem.head[pages]
            else:
                asked = pages
            values = np.repeat(leaf_flags, lengths) | _exclusive(self.machine, asked)
            if self.show_pfn:
                values |= pages.astype(np.uint64)
            out[positions] = values
        return out


def _entry_flags(
    machine: Machine,
    bits: PteBitsArray,
    pages: npt.NDArray[np.int64],
    vma_softdirty: npt.NDArray[np.bool_],
) -> tuple[U64Array, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """pte_to_pagemap_entry() and the huge branch of pagemap_pmd_range(), but for the
    PFN and PM_MMAP_EXCLUSIVE: (flags, present, normal) for each entry.

    PM_PRESENT; PM_SOFT_DIRTY from the entry or the VMA; PM_FILE where the
    entry maps a page (``normal``: vm_normal_page() for a PTE, so not the zero
    page; pmd_page() for a huge leaf, so the huge zero folio too) whose folio
    is not anonymous.
    """
    mem = machine.mem
    present = (bits & PTE_PRESENT) != 0
    values = np.where(present, _PM_PRESENT, np.uint64(0))
    values[((bits & PTE_SOFT_DIRTY) != 0) | vma_softdirty] |= _PM_SOFT_DIRTY
    values[present & ((bits & PTE_UFFD_WP) != 0)] |= _PM_UFFD_WP
    normal = present & ((bits & PTE_SPECIAL) == 0)
    values[normal & ~mem.anon[mem.head[pages]]] |= _PM_FILE
    return values, present, normal


def _swap_entries(
    values: U64Array, bits: PteBitsArray, offsets: npt.NDArray[np.int64], show_pfn: bool
) -> None:
    """The swap branch of pte_to_pagemap_entry(), in place: PM_SWAP, PM_SOFT_DIRTY from
    pte_swp_soft_dirty(), and (show_pfn only: zeroed for unprivileged readers since
    4.18) the frame ``swp_type() | swp_offset() << MAX_SWAPFILES_SHIFT``; never
    PM_MMAP_EXCLUSIVE or PM_FILE (no page).  The model's one device is type 0."""
    swap = (bits & PTE_SWAP) != 0
    if not swap.any():
        return
    values[swap] |= _PM_SWAP
    values[swap & ((bits & PTE_SWP_SOFT_DIRTY) != 0)] |= _PM_SOFT_DIRTY
    if show_pfn:
        values[swap] |= offsets[swap].astype(np.uint64) << np.uint64(PM.SWAP_OFFSET_SHIFT)


def _uffd_wp_markers(values: U64Array, bits: PteBitsArray, show_pfn: bool) -> None:
    """The swap branch of pte_to_pagemap_entry() for uffd-wp PTE markers, in place: a
    marker is a swap PTE (is_swap_pte()), so PM_SWAP, and PM_UFFD_WP from
    pte_marker_entry_uffd_wp(); the frame swp_type | offset << 5 = SWP_PTE_MARKER |
    PTE_MARKER_UFFD_WP << 5 only with show_pfn; no page, so no FILE or EXCLUSIVE."""
    marker = (bits & PTE_MARKER_UFFD_WP) != 0
    if not marker.any():
        return
    values[marker] |= _PM_SWAP | _PM_UFFD_WP
    if show_pfn:
        values[marker] |= _MARKER_FRAME


def _exclusive(machine: Machine, pages: npt.NDArray[np.int64]) -> U64Array:
    """PM_MMAP_EXCLUSIVE where folio_precise_page_mapcount() == 1, else 0, per page."""
    result: U64Array = np.where(
        _precise_mapcount(machine, pages) == 1, _PM_EXCLUSIVE, np.uint64(0)
    )
    return result


def _positions(starts: list[int], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The concatenation of range(start, start + length) for each run."""
    total = int(lengths.sum())
    run_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    offsets = np.repeat(np.asarray(starts, dtype=np.int64) - run_starts, lengths)
    result: npt.NDArray[np.int64] = offsets + np.arange(total, dtype=np.int64)
    return result


def pagemap_pte_hole(start: int, end: int, depth: int, walk: MmWalk) -> int:
    """pagemap_pte_hole(): 0 outside VMAs; inside, soft-dirty iff the VMA is VM_SOFTDIRTY."""
    pm: PagemapRead = walk.private
    mm = walk.mm
    shift = mm.arch.page_shift
    addr = start
    while addr < end:
        vma = mm.find_vma(addr)
        hole_end = min(end, vma.start) if vma is not None else end
        if addr < hole_end:
            pm.add_fill((hole_end - addr) >> shift, np.uint64(0))
            addr = hole_end
        if vma is None:
            break
        vma_end = min(end, vma.end)
        if addr < vma_end:
            value = _PM_SOFT_DIRTY if vma.softdirty else np.uint64(0)
            pm.add_fill((vma_end - addr) >> shift, value)
            addr = vma_end
    return 0


def pagemap_pmd_range(entry: PteTable | HugePmd, addr: int, end: int, walk: MmWalk) -> int:
    """pagemap_pmd_range(): a huge leaf, or a PTE table slice via pte_to_pagemap_entry().

    * PM_PRESENT and the PFN (if show_pfn) for a present entry; a huge leaf
      gives pmd_pfn() + index.
    * PM_SOFT_DIRTY: the entry's soft-dirty bit, or the VMA's VM_SOFTDIRTY.
    * PM_FILE: the page has a struct page (vm_normal_page(): not the zero
      page) whose folio is not anonymous; for a huge leaf pmd_page() is
      used directly, so the huge zero folio reads as a file page.
    * PM_MMAP_EXCLUSIVE: folio_precise_page_mapcount() == 1 for that page.
    """
    pm: PagemapRead = walk.private
    mm = walk.mm
    vma = walk.vma
    assert vma is not None
    shift = mm.arch.page_shift
    n = (end - addr) >> shift
    if isinstance(entry, HugePmd):
        pm.add_huge(entry, entry.pfn + ((addr % mm.pmd_size) >> shift), n, vma.softdirty)
        return 0
    i0 = mm.pt.pte_index(addr)
    pm.add_ptes(entry.bits[i0 : i0 + n], entry.pfn[i0 : i0 + n], vma.softdirty)
    return 0


def pagemap_hugetlb_range(
    entry: HugePmd | None, hmask: int, addr: int, end: int, walk: MmWalk
) -> int:
    """pagemap_hugetlb_range(): one flags word for the whole huge page.

    * PM_SOFT_DIRTY from the VMA's VM_SOFTDIRTY only (6.12 reads no soft-dirty
      bit of a hugetlb entry: a page written after clear_refs 4 reads clean);
    * a present entry: PM_FILE if the folio is not anonymous (shared
      mappings: page-cache folios), PM_MMAP_EXCLUSIVE unless
      folio_likely_mapped_shared() (for hugetlb: folio_mapcount() > 1; no PMD
      sharing below PUD-sized shared mappings, hugetlb_pmd_shared()),
      PM_PRESENT, and the PFN pte_pfn() + the page's index in the huge page.
    """
    pm: PagemapRead = walk.private
    mm = walk.mm
    vma = walk.vma
    assert vma is not None
    shift = mm.arch.page_shift
    n = (end - addr) >> shift
    flags = _PM_SOFT_DIRTY if vma.softdirty else np.uint64(0)
    if entry is None or not entry.bits & PTE_PRESENT:
        pm.add_fill(n, flags)
        return 0
    mem = mm.mem
    head = mem.page_folio(entry.pfn)
    if not mem.folio_test_anon(head):
        flags |= _PM_FILE
    if mem.folio_mapcount(head) <= 1:
        flags |= _PM_EXCLUSIVE
    flags |= _PM_PRESENT
    pm.add_frames(n, flags, entry.pfn + ((addr & ~hmask) >> shift))
    return 0


def _precise_mapcount(machine: Machine, pages: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """folio_precise_page_mapcount() of each page."""
    mem = machine.mem
    heads = mem.head[pages]
    result: npt.NDArray[np.int64] = mem.mapcount[pages] + np.where(
        mem.order[heads] > 0, mem.entire_mapcount[heads], 0
    )
    return result


PAGEMAP_OPS = MmWalkOps(
    pmd_entry=pagemap_pmd_range, pte_hole=pagemap_pte_hole, hugetlb_entry=pagemap_hugetlb_range
)


def pagemap_read(
    machine: Machine, mm: MmStruct | None, show_pfn: bool, ppos: int, count: int
) -> tuple[bytes, int]:
    """pagemap_read(): (bytes, new position), in PMD-sized walks up to mm->task_size."""
    arch = machine.arch
    if mm is None or not mm.alive:
        return b"", ppos  # !mmget_not_zero(mm): the task has exited
    if ppos % PM.ENTRY_BYTES or count % PM.ENTRY_BYTES:
        raise ProcReadError(
            errno.EINVAL, f"position {ppos} or count {count} is not a multiple of 8"
        )
    if count == 0:
        return b"", ppos
    ulong = (1 << (8 * arch.word_size)) - 1
    shift = arch.page_shift
    walk_size = mm.pmd_size  # PAGEMAP_WALK_SIZE
    walk_mask = ~(walk_size - 1) & ulong
    task_size = mm.task_size
    src = ppos & ulong  # unsigned long src = *ppos
    svpfn = src // PM.ENTRY_BYTES
    end_vaddr = task_size
    start_vaddr = end_vaddr
    if svpfn <= ulong >> shift:
        start_vaddr = (svpfn << shift) & ulong
        end = (start_vaddr + (((count // PM.ENTRY_BYTES) << shift) & ulong)) & ulong
        if start_vaddr <= end < task_size:
            end_vaddr = end
    if start_vaddr > task_size:
        start_vaddr = end_vaddr
    pm = PagemapRead(machine, show_pfn)
    copied = 0
    while count and start_vaddr < end_vaddr:
        end = ((start_vaddr + walk_size) & ulong) & walk_mask
        if end < start_vaddr or end > end_vaddr:
            end = end_vaddr
        before = pm.pos
        walk_page_range(mm, start_vaddr, end, PAGEMAP_OPS, pm)
        start_vaddr = end
        length = min(count, PM.ENTRY_BYTES * (pm.pos - before))
        copied += length
        count -= length
    values = pm.values()[: copied // PM.ENTRY_BYTES]
    return bulk_build_u64s(arch, values), ppos + copied


# ---------------------------------------------------------------------------
# /proc/kpageflags, /proc/kpagecount, /proc/kpagemap
# ---------------------------------------------------------------------------


def kpage_read(machine: Machine, kind: FileKind, ppos: int, count: int) -> tuple[bytes, int]:
    """kpageflags_read() / kpagecount_read(), and the kpagemap patch's read.

    Position and count must be multiples of the entry size (8, or KPMSIZE =
    2 * sizeof(long) for kpagemap), else -EINVAL; the file ends after
    get_max_dump_pfn() entries (kpagemap: one more, for the header slot).
    kpageflags_read()/kpagecount_read() copy the position to ``unsigned long
    src`` (on i386 a position 4 GiB further reads the same entries); the
    patch's kpagemap_read() compares the loff_t ``*ppos`` with its loff_t end
    and converts only below the end, so there a position past 4 GiB is past
    the end.
    """
    arch = machine.arch
    mem = machine.mem
    ulong = (1 << (8 * arch.word_size)) - 1
    entry = arch.kpagemap_entry_size if kind == "kpagemap" else 8
    slots = mem.max_dump_pfn + (1 if kind == "kpagemap" else 0)
    src = ppos if kind == "kpagemap" else ppos & ulong
    if src % entry or count % entry:
        raise ProcReadError(
            errno.EINVAL, f"position {ppos} or count {count} is not a multiple of {entry}"
        )
    limit = slots * entry if kind == "kpagemap" else (slots * entry) & ulong
    if src >= limit:
        return b"", ppos
    count = min(count, limit - src)
    if count == 0:
        return b"", ppos
    first = src // entry
    n = count // entry
    if kind == "kpagemap":
        data = b""
        if first == 0:
            data = KpagemapHeader.for_arch(arch).slot_bytes()
            first, n = 1, n - 1
        pfns = np.arange(first - 1, first - 1 + n, dtype=np.int64)
        word = np.uint64(ulong)
        flags = mem.stable_page_flags(pfns) & word
        counts = mem.page_count_values(pfns).astype(np.uint64)
        data += bulk_build_kpagemap_entries(arch, flags, counts)
    else:
        pfns = np.arange(first, first + n, dtype=np.int64)
        if kind == "kpageflags":
            values = mem.stable_page_flags(pfns)
        else:
            values = mem.kpagecount_values(pfns).astype(np.uint64)
        data = bulk_build_u64s(arch, values)
    return data, ppos + len(data)
