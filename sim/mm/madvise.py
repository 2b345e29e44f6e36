"""madvise() (mm/madvise.c): MADV_DONTNEED and MADV_HUGEPAGE.

Addresses are bytes, lengths pages.  Functions take the
:class:`~sim.mm.mm_struct.MmStruct` they work on; failures raise
:class:`~sim.mm.syscall.MmError`.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from sim.mm.memory import zap_page_range
from sim.mm.syscall import MmError, user_range_end
from sim.mm.vma import VM_HUGEPAGE, VM_LOCKED, VM_NOHUGEPAGE, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = ["ADVICE", "do_madvise"]

#: The advice values the model knows, by the name the harness uses.
ADVICE = ("dontneed", "hugepage")


def do_madvise(mm: MmStruct, addr: int, nr_pages: int, advice: str) -> None:
    """do_madvise(): MADV_DONTNEED zaps (zap_page_range_single(), keeping page tables);
    MADV_HUGEPAGE sets VM_HUGEPAGE (hugepage_madvise(), EINVAL without THP).

    madvise_walk_vmas() applies the advice to every mapped piece and then
    fails with ENOMEM if the range had a hole.  EINVAL for an unknown advice.
    """
    if advice not in ADVICE:
        raise MmError(errno.EINVAL, f"madvise: unknown advice {advice!r}")
    if advice == "hugepage" and not mm.ctx.thp:
        raise MmError(errno.EINVAL, "madvise: MADV_HUGEPAGE needs transparent hugepages")
    end = user_range_end(mm.arch, addr, nr_pages, "madvise")
    pieces, gap = _madvise_pieces(mm, addr, end)
    for vma, lo, hi in pieces:
        if advice == "dontneed":
            if vma.flags & VM_LOCKED:
                # madvise_dontneed_free_valid_vma(): VM_LOCKED is forbidden
                # (MADV_DONTNEED_LOCKED aside); the pieces before were zapped.
                raise MmError(errno.EINVAL, "madvise: MADV_DONTNEED on a VM_LOCKED VMA")
            mm.mem.mlock_drain_local()  # zap_page_range_single(): lru_add_drain()
            zap_page_range(mm, vma, lo, hi)
        else:
            newflags = (vma.flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
            if newflags != vma.flags:
                vma = mm.vmas.modify(vma, lo, hi, newflags)  # madvise_update_vma()
                vma.flags = newflags
    if gap:
        raise MmError(errno.ENOMEM, f"madvise: [{addr:#x}, {end:#x}) has unmapped pages")


def _madvise_pieces(mm: MmStruct, start: int, end: int) -> tuple[list[tuple[Vma, int, int]], bool]:
    """madvise_walk_vmas(): the (vma, lo, hi) pieces of [start, end) and whether a gap was found."""
    pieces = []
    addr = start
    gap = False
    for vma in mm.vmas.overlapping(start, end):
        if vma.start > addr:
            gap = True
        lo, hi = max(addr, vma.start), min(end, vma.end)
        pieces.append((vma, lo, hi))
        addr = hi
    if addr < end:
        gap = True
    return pieces, gap
