"""Reads of the page-level proc files in a guest, decoded by the model's formats.

Raw bytes come from the agent (READ_FILE, as root unless said otherwise);
decoding is :mod:`sim.formats`, the one place that knows the layouts.
"""

from __future__ import annotations

from harness.agent.client import AgentClient
from harness.agent.protocol import INIT
from sim.arch import Arch
from sim.formats import (
    PagemapEntry,
    parse_kpagemap_entries,
    parse_pagemap_entries,
    parse_u64s,
)

__all__ = [
    "ReadFailed",
    "file_size",
    "kpagecount",
    "kpageflags",
    "kpagemap",
    "pagemap",
    "read_exact",
]

#: u64 entries of pagemap, kpageflags and kpagecount.
_U64 = 8


class ReadFailed(Exception):
    """A read that had to succeed in full did not; the message says how."""


def read_exact(
    agent: AgentClient, path: str, offset: int, count: int, *, target: str = INIT
) -> bytes:
    """``count`` bytes of ``path`` at ``offset`` (pread), or ReadFailed."""
    result = agent.read_file(path, count, offset=offset, target=target)
    if not result.ok or len(result.data) != count:
        raise ReadFailed(
            f"{path} at {offset:#x}, {count} bytes (in '{target}'): {result.describe()}"
        )
    return result.data


def pagemap(
    agent: AgentClient, arch: Arch, pid: int | str, addr: int, pages: int, *, target: str = INIT
) -> list[PagemapEntry]:
    """The pagemap entries of ``pages`` pages from ``addr`` of process ``pid``."""
    offset = (addr >> arch.page_shift) * _U64
    data = read_exact(agent, f"/proc/{pid}/pagemap", offset, pages * _U64, target=target)
    return parse_pagemap_entries(arch, data)


def kpageflags(agent: AgentClient, arch: Arch, first_pfn: int, n: int) -> list[int]:
    return parse_u64s(arch, read_exact(agent, "/proc/kpageflags", first_pfn * _U64, n * _U64))


def kpagecount(agent: AgentClient, arch: Arch, first_pfn: int, n: int) -> list[int]:
    return parse_u64s(arch, read_exact(agent, "/proc/kpagecount", first_pfn * _U64, n * _U64))


def kpagemap(agent: AgentClient, arch: Arch, first_pfn: int, n: int) -> list[tuple[int, int]]:
    """(flags, count) of PFNs first_pfn .. first_pfn + n - 1 (slot pfn + 1)."""
    size = arch.kpagemap_entry_size
    data = read_exact(agent, "/proc/kpagemap", (first_pfn + 1) * size, n * size)
    return parse_kpagemap_entries(arch, data)


def file_size(agent: AgentClient, path: str, limit: int = 32 << 20) -> int:
    """Bytes ``path`` yields when read from 0 until read() returns 0."""
    result = agent.read_file(path, limit, offset=0, loop=True)
    if not result.ok:
        raise ReadFailed(f"{path}: {result.describe()}")
    if len(result.data) == limit:
        raise ReadFailed(f"{path}: still not at its end after {limit} bytes")
    return len(result.data)
