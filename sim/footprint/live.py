"""The live system as a :class:`~sim.footprint.source.PageSource`: /proc of this kernel.

Each proc file is opened once per call and read with ``os.pread`` per run
of entries (no syscall per page).  Errors map to the source's exceptions:
ENOENT/ESRCH (the process is gone) -> :class:`ProcessGone`, EACCES/EPERM ->
:class:`PrivilegeError`, anything else -> :class:`SourceError`.

Byte order, word size and page size come from /proc/kpagemap's header when
the kernel has that file, otherwise from the running system
(``sys.byteorder``, ``sysconf(_SC_PAGESIZE)``, ``sizeof(unsigned long)``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property

from sim.flags import PM
from sim.footprint.source import (
    PageLayout,
    PrivilegeError,
    ProcessGone,
    ProcessInfo,
    Run,
    SourceError,
)
from sim.formats import FormatError, KpagemapHeader

__all__ = ["LiveProc", "freeze"]

#: Entries per pread(): 8 MiB of pagemap, bounded memory for huge VMAs.
_CHUNK_ENTRIES = 1 << 20
_DENIED = (errno.EACCES, errno.EPERM)
#: How long freeze() waits for a SIGSTOP to take hold: 2 s at most.
_STOP_POLLS = 4000
_STOP_POLL_SECONDS = 0.0005


class LiveProc:
    """/proc of the running kernel (``root`` names another mount of procfs)."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root

    # -- layout -----------------------------------------------------------

    @cached_property
    def _kpagemap_header(self) -> KpagemapHeader | None:
        path = f"{self.root}/kpagemap"
        if not os.path.exists(path):
            return None
        data = b"".join(self._read_runs(path, [(0, 16)], 1))
        try:
            return KpagemapHeader.parse(data)
        except FormatError as e:
            raise SourceError(f"{path}: {e}") from None

    @property
    def has_kpagemap(self) -> bool:
        """True if this kernel has /proc/kpagemap (the patch series)."""
        return self._kpagemap_header is not None

    @cached_property
    def layout(self) -> PageLayout:
        """The kpagemap header's layout, else this system's byte order, word and page size."""
        header = self._kpagemap_header
        if header is not None:
            return PageLayout.of_header(header)
        page_size = os.sysconf("SC_PAGE_SIZE")
        return PageLayout(
            little_endian=sys.byteorder == "little",
            word_size=ctypes.sizeof(ctypes.c_ulong),
            page_shift=page_size.bit_length() - 1,
        )

    # -- processes --------------------------------------------------------

    def processes(self) -> list[ProcessInfo]:
        """Every process in /proc (those that exit while listed are left out)."""
        found = []
        for name in os.listdir(self.root):
            if name.isdigit():
                try:
                    found.append(self.process(int(name)))
                except (ProcessGone, PrivilegeError):
                    continue  # exited, or hidden from this user (hidepid)
        return sorted(found, key=lambda info: info.pid)

    def process(self, pid: int) -> ProcessInfo:
        """One process; :class:`ProcessGone` if there is none."""
        base = f"{self.root}/{pid}"
        stat = self._text(f"{base}/stat", pid)
        # comm may hold spaces and parentheses: the fields follow the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        uid = 0
        for line in self._text(f"{base}/status", pid).splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[2])
                break
        comm = self._text(f"{base}/comm", pid).rstrip("\n")
        cmdline = self._text(f"{base}/cmdline", pid).replace("\0", " ").strip()
        return ProcessInfo(pid=pid, ppid=int(fields[1]), uid=uid, comm=comm, cmdline=cmdline)

    def vma_ranges(self, pid: int) -> list[tuple[int, int]]:
        """[start, end) of each line of /proc/PID/maps."""
        ranges = []
        for line in self._text(f"{self.root}/{pid}/maps", pid).splitlines():
            start, _, end = line.split(" ", 1)[0].partition("-")
            ranges.append((int(start, 16), int(end, 16)))
        return ranges

    def smaps_rollup(self, pid: int) -> dict[str, int]:
        """The ``Name: N kB`` lines of /proc/PID/smaps_rollup."""
        fields = {}
        for line in self._text(f"{self.root}/{pid}/smaps_rollup", pid).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].endswith(":") and parts[2] == "kB":
                fields[parts[0][:-1]] = int(parts[1])
        return fields

    # -- binary files -----------------------------------------------------

    def pagemap(self, pid: int, runs: Sequence[Run]) -> list[bytes]:
        """/proc/PID/pagemap, one pread per run (chunked above 8 MiB)."""
        return self._read_runs(f"{self.root}/{pid}/pagemap", runs, PM.ENTRY_BYTES, pid=pid)

    def kpageflags(self, runs: Sequence[Run]) -> list[bytes]:
        """/proc/kpageflags for each run of PFNs."""
        return self._read_runs(f"{self.root}/kpageflags", runs, 8)

    def kpagecount(self, runs: Sequence[Run]) -> list[bytes]:
        """/proc/kpagecount for each run of PFNs."""
        return self._read_runs(f"{self.root}/kpagecount", runs, 8)

    def kpagemap(self, runs: Sequence[Run]) -> list[bytes]:
        """/proc/kpagemap slots for each run of PFNs (PFN n is slot n + 1)."""
        header = self._kpagemap_header
        if header is None:
            raise SourceError(f"{self.root}/kpagemap: this kernel has no such file")
        slots = [(pfn + 1, count) for pfn, count in runs]
        return self._read_runs(f"{self.root}/kpagemap", slots, header.entry_size)

    # -- helpers ----------------------------------------------------------

    def _text(self, path: str, pid: int | None = None) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError as e:
            raise _error(path, e, pid, self.root) from None

    def _read_runs(
        self, path: str, runs: Iterable[Run], entry_size: int, *, pid: int | None = None
    ) -> list[bytes]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise _error(path, e, pid, self.root) from None
        try:
            return [b"".join(_pread_run(fd, first, count, entry_size)) for first, count in runs]
        except OSError as e:
            raise _error(path, e, pid, self.root) from None
        finally:
            os.close(fd)


def _pread_run(fd: int, first: int, count: int, entry_size: int) -> Iterator[bytes]:
    """The bytes of entries [first, first + count), stopping early at end of file."""
    offset = first * entry_size
    end = offset + count * entry_size
    while offset < end:
        data = os.pread(fd, min(end - offset, _CHUNK_ENTRIES * entry_size), offset)
        if not data:
            return
        yield data
        offset += len(data)


def _error(path: str, e: OSError, pid: int | None, root: str) -> SourceError:
    # ENOENT/ESRCH on a process's file: gone, unless the process is still
    # there and the file itself is missing (a kernel without PROC_PAGE_MONITOR).
    if pid is not None and (
        e.errno == errno.ESRCH
        or (e.errno == errno.ENOENT and not os.path.exists(f"{root}/{pid}/stat"))
    ):
        return ProcessGone(pid)
    reason = e.strerror or str(e)
    if e.errno in _DENIED:
        if os.geteuid() == 0:
            # Root refused: the ptrace access check (another user namespace,
            # Yama, lockdown) or a procfs mount option, not a missing privilege.
            why = "refused even to root: ptrace access check or procfs mount options"
        else:
            why = "needs " + ("root or the process's own user" if pid is not None else "root")
        return PrivilegeError(f"cannot read {path}: {reason} ({why})")
    return SourceError(f"cannot read {path}: {reason}")


def _state(pid: int, root: str) -> str | None:
    try:
        with open(f"{root}/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def _ancestors(root: str) -> set[int]:
    """This process and its ancestors up to init."""
    found, pid = set(), os.getpid()
    while pid > 0 and pid not in found:
        found.add(pid)
        try:
            with open(f"{root}/{pid}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            break
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return found


@contextmanager
def freeze(pids: Iterable[int], root: str = "/proc") -> Iterator[list[int]]:
    """SIGSTOP ``pids`` for the duration, SIGCONT after; yields the pids it stopped.

    Processes already stopped (state T/t), this process and its ancestors
    (the shell waiting for it) are left alone; those that vanish are
    skipped.  A stopped process maps and unmaps nothing, so every file read
    inside sees one state of its memory (the mapcounts of pages shared with
    processes outside still move).
    """
    stopped: list[int] = []
    spared = _ancestors(root)
    try:
        for pid in pids:
            if pid in spared or _state(pid, root) in (None, "T", "t"):
                continue
            try:
                os.kill(pid, signal.SIGSTOP)
            except (ProcessLookupError, PermissionError):
                continue
            stopped.append(pid)
        for pid in stopped:
            # SIGSTOP is asynchronous: wait until each reports stopped.
            for _ in range(_STOP_POLLS):
                if _state(pid, root) in (None, "T", "t"):
                    break
                time.sleep(_STOP_POLL_SECONDS)
        yield stopped
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
