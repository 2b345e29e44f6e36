"""Bit numbers of the page-level interfaces, named as the kernel names them.

Only numbers live here; how they are laid out in bytes is :mod:`sim.formats`.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["KPF", "PM", "kpf_names", "kpf_value"]


class KPF(IntEnum):
    """/proc/kpageflags bits.

    0-26: include/uapi/linux/kernel-page-flags.h (stable ABI).
    32-42: include/linux/kernel-page-flags.h (kernel-internal, exported all the
    same by stable_page_flags() in fs/proc/page.c).
    """

    LOCKED = 0
    ERROR = 1
    REFERENCED = 2
    UPTODATE = 3
    DIRTY = 4
    LRU = 5
    ACTIVE = 6
    SLAB = 7
    WRITEBACK = 8
    RECLAIM = 9
    BUDDY = 10
    MMAP = 11
    ANON = 12
    SWAPCACHE = 13
    SWAPBACKED = 14
    COMPOUND_HEAD = 15
    COMPOUND_TAIL = 16
    HUGE = 17
    UNEVICTABLE = 18
    HWPOISON = 19
    NOPAGE = 20
    KSM = 21
    THP = 22
    OFFLINE = 23
    ZERO_PAGE = 24
    IDLE = 25
    PGTABLE = 26
    RESERVED = 32
    MLOCKED = 33
    OWNER_2 = 34  # formerly MAPPEDTODISK; on anon folios: anon-exclusive
    PRIVATE = 35
    PRIVATE_2 = 36
    OWNER_PRIVATE = 37
    ARCH = 38
    UNCACHED = 39
    SOFTDIRTY = 40
    ARCH_2 = 41
    ARCH_3 = 42


def kpf_value(*bits: KPF) -> int:
    """The u64 with exactly ``bits`` set."""
    value = 0
    for bit in bits:
        value |= 1 << bit
    return value


def kpf_names(value: int) -> list[str]:
    """Names (without ``KPF_``) of the known bits set in ``value``, low bit first.

    Unknown set bits are reported as ``BIT<n>`` so nothing is silently lost.
    """
    names = []
    for n in range(64):
        if value >> n & 1:
            try:
                names.append(KPF(n).name)
            except ValueError:
                names.append(f"BIT{n}")
    return names


class PM:
    """/proc/pid/pagemap entry layout (fs/proc/task_mmu.c, PM_* macros)."""

    ENTRY_BYTES = 8
    PFN_BITS = 55
    PFN_MASK = (1 << PFN_BITS) - 1  # PM_PFRAME_MASK: bits 0-54
    SWAP_TYPE_BITS = 5  # bits 0-4 when swapped (MAX_SWAPFILES_SHIFT)
    SWAP_TYPE_MASK = (1 << SWAP_TYPE_BITS) - 1
    SWAP_OFFSET_SHIFT = 5  # bits 5-54 when swapped
    SOFT_DIRTY = 55
    MMAP_EXCLUSIVE = 56
    UFFD_WP = 57
    GUARD_REGION = 58  # 6.15+, always 0 on the pinned 6.12
    FILE = 61  # file page or shared anon (shmem)
    SWAP = 62
    PRESENT = 63
