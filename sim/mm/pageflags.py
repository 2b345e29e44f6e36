"""The kernel's page flags (``enum pageflags``, include/linux/page-flags.h) the model uses.

The model keeps ``page->flags`` per frame with these bit numbers (its own
numbering: only the names are the kernel's).  :mod:`sim.mm.memmap` turns them
into KPF bits the way stable_page_flags() does.  Aliases follow the kernel:
PG_anon_exclusive is PG_owner_2, PG_swapcache is PG_owner_priv_1.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["PG", "PG_ANON_EXCLUSIVE", "PG_SWAPCACHE", "pg_mask"]


class PG(IntEnum):
    locked = 0
    writeback = 1
    referenced = 2
    uptodate = 3
    dirty = 4
    lru = 5
    head = 6
    waiters = 7
    active = 8
    workingset = 9
    owner_priv_1 = 10  # PG_swapcache on swap-backed folios
    owner_2 = 11  # PG_anon_exclusive on anonymous pages, PG_mappedtodisk on files
    arch_1 = 12
    reserved = 13
    private = 14
    private_2 = 15
    reclaim = 16
    swapbacked = 17
    unevictable = 18
    mlocked = 19
    hwpoison = 20
    arch_2 = 21
    arch_3 = 22
    # Second-page folio flag (PG_large_rmappable, FOLIO_SECOND_PAGE); the
    # model keeps it on the head frame.
    large_rmappable = 23


#: PG_anon_exclusive = PG_owner_2 (include/linux/page-flags.h).
PG_ANON_EXCLUSIVE = PG.owner_2
#: PG_swapcache = PG_owner_priv_1 (include/linux/page-flags.h).
PG_SWAPCACHE = PG.owner_priv_1


def pg_mask(*bits: PG) -> int:
    """The flags word with exactly ``bits`` set."""
    value = 0
    for bit in bits:
        value |= 1 << bit
    return value
