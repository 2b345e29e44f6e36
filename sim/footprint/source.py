"""Where the footprint reads its pages from: the :class:`PageSource` interface.

A source hands out raw bytes exactly as the proc files hold them (pagemap
u64s, kpageflags u64s, kpagecount u64s, kpagemap slots) plus the small text
facts around them (process list, VMA ranges, smaps_rollup fields).  Decoding
happens once, in :mod:`sim.footprint.scan`, with the project's formats.  The
live system implements it in :mod:`sim.footprint.live`; recorded or
synthetic data in :mod:`sim.footprint.recorded` (a guest's recorded
Observations are meant to implement it the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sim.formats import KpagemapHeader

__all__ = [
    "PageLayout",
    "PageSource",
    "PrivilegeError",
    "ProcessGone",
    "ProcessInfo",
    "Run",
    "SourceError",
]

#: (first index, number of entries): a run of consecutive virtual pages of
#: one process or of consecutive PFNs; one read() each.
Run = tuple[int, int]


class SourceError(Exception):
    """A source cannot answer; the message is one line for the user."""


class PrivilegeError(SourceError):
    """A file exists but this reader may not open it (EACCES/EPERM)."""


class ProcessGone(SourceError):
    """The process exited (or became a zombie) while it was being read."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} exited")
        self.pid = pid


@dataclass(frozen=True)
class PageLayout:
    """Byte order, word size and page size of the files (a :class:`~sim.formats.ByteLayout`).

    ``word_size`` is the kernel's ``sizeof(unsigned long)`` (kpagemap slots);
    pagemap, kpageflags and kpagecount hold u64 on every architecture.
    """

    little_endian: bool
    word_size: int
    page_shift: int

    @property
    def page_size(self) -> int:
        """PAGE_SIZE in bytes."""
        return 1 << self.page_shift

    @classmethod
    def of_header(cls, header: KpagemapHeader) -> PageLayout:
        """The layout slot 0 of /proc/kpagemap declares."""
        return cls(header.little_endian, header.word_size, header.page_shift)


@dataclass(frozen=True)
class ProcessInfo:
    """One process (thread group) as the process list shows it.

    ``uid`` is the effective uid (the second field of ``Uid:`` in
    /proc/PID/status, as ``pgrep -u`` matches); ``cmdline`` is argv joined by
    spaces ("" for kernel threads and zombies).
    """

    pid: int
    ppid: int
    uid: int
    comm: str
    cmdline: str = ""


class PageSource(Protocol):
    """The reads a footprint needs, as raw bytes.

    Errors: :class:`ProcessGone` when a process vanished,
    :class:`PrivilegeError` when a file may not be read, :class:`SourceError`
    for anything else; all carry a one-line message.
    """

    @property
    def layout(self) -> PageLayout:
        """How the files are laid out (kpagemap's header, else the system's facts)."""
        ...

    @property
    def has_kpagemap(self) -> bool:
        """True if /proc/kpagemap exists: flags and refcount in one read per run."""
        ...

    def processes(self) -> Sequence[ProcessInfo]:
        """Every process of the system, by pid."""
        ...

    def vma_ranges(self, pid: int) -> Sequence[tuple[int, int]]:
        """[start, end) virtual addresses (bytes) of each VMA (/proc/PID/maps); [] without mm."""
        ...

    def pagemap(self, pid: int, runs: Sequence[Run]) -> list[bytes]:
        """/proc/PID/pagemap bytes for each run of virtual pages (``runs`` in pages).

        A read may be shorter than asked where the address space ends
        (pagemap_read() stops at the task size); missing entries mean "not mapped".
        """
        ...

    def kpageflags(self, runs: Sequence[Run]) -> list[bytes]:
        """/proc/kpageflags bytes (u64 per PFN) for each run of PFNs."""
        ...

    def kpagecount(self, runs: Sequence[Run]) -> list[bytes]:
        """/proc/kpagecount bytes (u64 mapcount per PFN) for each run of PFNs."""
        ...

    def kpagemap(self, runs: Sequence[Run]) -> list[bytes]:
        """/proc/kpagemap slots (flags, refcount) for each run of PFNs, header excluded."""
        ...

    def smaps_rollup(self, pid: int) -> dict[str, int]:
        """The kB fields of /proc/PID/smaps_rollup (``{"Rss": 1234, ...}``)."""
        ...
