"""Physical memory: the memmap (one ``struct page`` per frame), folios and the allocator.

Every per-frame field is a numpy column indexed by PFN, so the proc files can
read thousands of frames in one vectorised step.  Folio-wide fields (refcount,
large and entire mapcount, order, mapping kind, folio flags) live on the head
frame, as they do in ``struct folio`` which overlays the head page.

Frame states:

* ``HOLE``: no online ``struct page`` (pfn_to_online_page() returns NULL): a
  memory section without RAM.  kpageflags reads KPF_NOPAGE, counts read 0.
* ``RESERVED``: a ``struct page`` with PG_reserved and refcount 1: the kernel's
  own memory, and memmap of holes inside a present section
  (init_unavailable_range() in mm/mm_init.c).
* ``FREE``: in the buddy allocator (PageBuddy(), or page_count() 0 and
  is_free_buddy_page()), refcount 0.
* ``INUSE``: part of an allocated folio.

The allocator is deterministic: the lowest free frame, the lowest naturally
aligned free block; by default it never reuses a freed frame, so a PFN names
one frame for the whole run.  The harness compares frames through a PFN
bijection, never by value.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from sim.arch import Arch
from sim.flags import KPF
from sim.mm.facts import KernelFacts, KpfFlagsWord
from sim.mm.pageflags import PG, PG_ANON_EXCLUSIVE

__all__ = ["FrameState", "OutOfMemory", "PhysMem"]

IntArray = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]


class FrameState(IntEnum):
    HOLE = 0
    RESERVED = 1
    FREE = 2
    INUSE = 3


class OutOfMemory(RuntimeError):
    """The model ran out of free frames (give the Machine more RAM)."""


def _bit(n: int) -> int:
    return 1 << n


_FREE = int(FrameState.FREE)
_INUSE = int(FrameState.INUSE)
_PG_HEAD = _bit(PG.head)
_PG_LRU = _bit(PG.lru)
_PG_ACTIVE = _bit(PG.active)
_PG_REFERENCED = _bit(PG.referenced)
_PG_UNEVICTABLE = _bit(PG.unevictable)
_PG_DIRTY = _bit(PG.dirty)
_PG_SWAPBACKED = _bit(PG.swapbacked)
_PG_RESERVED = _bit(PG.reserved)
_PG_AE = _bit(PG_ANON_EXCLUSIVE)
_PG_LARGE_RMAPPABLE = _bit(PG.large_rmappable)

#: Per PG bit, the numpy words that set and clear it (made once: the fault path
#: sets flags a few times per page).
_PG_SET = [np.uint64(1 << bit) for bit in range(max(PG) + 1)]
_PG_CLEAR = [np.uint64(~(1 << bit) & 0xFFFF_FFFF_FFFF_FFFF) for bit in range(max(PG) + 1)]

#: folio flag -> KPF bit copied verbatim by stable_page_flags() (kpf_copy_bit).
_COPIED_BITS: tuple[tuple[PG, KPF], ...] = (
    (PG.locked, KPF.LOCKED),
    (PG.dirty, KPF.DIRTY),
    (PG.uptodate, KPF.UPTODATE),
    (PG.writeback, KPF.WRITEBACK),
    (PG.lru, KPF.LRU),
    (PG.referenced, KPF.REFERENCED),
    (PG.active, KPF.ACTIVE),
    (PG.reclaim, KPF.RECLAIM),
    (PG.swapbacked, KPF.SWAPBACKED),
    (PG.unevictable, KPF.UNEVICTABLE),
    (PG.mlocked, KPF.MLOCKED),
    (PG.reserved, KPF.RESERVED),
    (PG.owner_2, KPF.OWNER_2),
    (PG.private, KPF.PRIVATE),
    (PG.private_2, KPF.PRIVATE_2),
    (PG.owner_priv_1, KPF.OWNER_PRIVATE),
    (PG.arch_1, KPF.ARCH),
)


class PhysMem:
    """The frames of one machine and the folio operations of mm/ on them."""

    def __init__(
        self,
        arch: Arch,
        facts: KernelFacts,
        ram: Sequence[tuple[int, int]],
        reserved: Sequence[tuple[int, int]],
        reuse_frames: bool = False,
    ) -> None:
        """``ram`` and ``reserved`` are half-open PFN ranges.

        max_pfn is the end of the highest RAM range; the memmap reaches
        get_max_dump_pfn() (max_pfn rounded up to a section with SPARSEMEM).
        Without ``reuse_frames`` the allocator is monotonic: a freed frame is
        never handed out again, so a PFN names one frame for the whole run.
        """
        self.reuse_frames = reuse_frames
        if not ram:
            raise ValueError("a machine needs at least one RAM range")
        self.arch = arch
        self.facts = facts
        self.max_pfn = max(end for _, end in ram)
        per_section = arch.pages_per_section
        if per_section is None:
            self.max_dump_pfn = self.max_pfn
        else:
            self.max_dump_pfn = -(-self.max_pfn // per_section) * per_section
        n = self.max_dump_pfn
        self.state = np.full(n, FrameState.HOLE, dtype=np.uint8)
        self.flags = np.zeros(n, dtype=np.uint64)
        self.refcount = np.zeros(n, dtype=np.int64)
        self.mapcount = np.zeros(n, dtype=np.int64)  # page->_mapcount + 1
        self.entire_mapcount = np.zeros(n, dtype=np.int64)  # folio->_entire_mapcount + 1
        self.large_mapcount = np.zeros(n, dtype=np.int64)  # folio->_large_mapcount + 1
        self.head = np.arange(n, dtype=np.int64)
        self.order = np.zeros(n, dtype=np.int8)
        self.anon = np.zeros(n, dtype=np.bool_)  # folio->mapping & PAGE_MAPPING_ANON
        #: folio_test_hugetlb(): the head's page type PGTY_hugetlb (set on the
        #: head frame only; sim/mm/hugetlb.py).
        self.hugetlb = np.zeros(n, dtype=np.bool_)
        self.file_id = np.zeros(n, dtype=np.int64)  # page-cache owner (shmem inode), 0 = none
        self.index = np.zeros(n, dtype=np.int64)  # page->index in its file
        self.tag = np.zeros(n, dtype=np.uint64)  # content: first u64 of the frame
        self.tag_known = np.zeros(n, dtype=np.bool_)
        #: content past the first u64: every other byte of the frame holds this
        #: value (0 for a fresh frame; a ``write`` with ``fill`` sets it).
        self.fill = np.zeros(n, dtype=np.uint8)
        #: folio_test_ksm(): (folio->mapping & PAGE_MAPPING_FLAGS) == PAGE_MAPPING_KSM,
        #: on the head frame (sim/mm/ksm.py makes and keeps KSM folios).
        self.ksm = np.zeros(n, dtype=np.bool_)
        self.freed = np.zeros(n, dtype=np.bool_)  # freed after use: guest state unknowable

        self._mark_present_sections(ram)
        for start, end in ram:
            self._check_range(start, end)
            self.state[start:end] = FrameState.FREE
        for start, end in reserved:
            self._check_range(start, end)
            self.state[start:end] = FrameState.RESERVED
        reserved_mask = self.state == FrameState.RESERVED
        self.flags[reserved_mask] = np.uint64(_PG_RESERVED)
        self.refcount[reserved_mask] = 1  # init_page_count() in __init_single_page()
        self._hint = 0
        #: folio->mlock_count of unevictable folios, by head PFN (absent: 0).
        self.mlock_count: dict[int, int] = {}
        #: The per-CPU mlock_fbatch (mm/mlock.c): (head PFN, what) queued by
        #: mlock_folio() ("lru"), mlock_new_folio() ("new") and munlock_folio()
        #: ("munlock"), applied in order by mlock_folio_batch().
        self.mlock_fbatch: list[tuple[int, str]] = []
        #: The per-CPU lru_add batch (cpu_fbatches.lru_add, mm/swap.c): head
        #: PFNs queued by folio_add_lru(), in order; -1 keeps the slot of a folio
        #: the model freed meanwhile (the kernel's batch holds a reference, so
        #: the folio stays queued until the batch drains).  Its flags are taken
        #: as applied at once (PG_lru set); it only counts where mlock looks at
        #: the LRU (__mlock_folio(), __munlock_folio(), lru_add()).
        self.lru_add_fbatch: list[int] = []

        # The shared zero page: a reserved kernel page (empty_zero_page).
        reserved_pfns = np.flatnonzero(reserved_mask)
        if reserved_pfns.size == 0:
            raise ValueError("the zero page needs a reserved frame")
        self.zero_pfn = int(reserved_pfns[min(1, reserved_pfns.size - 1)])
        self.tag_known[self.zero_pfn] = True
        self.huge_zero_pfn: int | None = None

    def _check_range(self, start: int, end: int) -> None:
        if not 0 <= start < end <= self.max_dump_pfn:
            raise ValueError(f"PFN range [{start:#x}, {end:#x}) is outside the memmap")

    def _mark_present_sections(self, ram: Sequence[tuple[int, int]]) -> None:
        """Sections holding any RAM get a full memmap of reserved pages.

        init_unavailable_range() (mm/mm_init.c) initialises the struct pages of
        a present section's holes and marks them PG_reserved; a section without
        RAM has no memmap and pfn_to_online_page() returns NULL.  memmap_init()
        starts its hole at PFN 0, so the holes below the first RAM range count
        too (x86's PFN 0, a BIOS page e820 calls reserved: trim_bios_range()
        in arch/x86/kernel/setup.c; it is not System RAM in /proc/iomem).

        FLATMEM: every PFN from ARCH_PFN_OFFSET below max_pfn has a struct page
        (pfn_valid() in include/asm-generic/memory_model.h).  ARCH_PFN_OFFSET
        is the arch's :attr:`Arch.ram_base_pfn` (0 on x86, the asm-generic
        default), not the first PFN of the RAM ranges given.
        """
        per_section = self.arch.pages_per_section
        if per_section is None:
            self.state[self.arch.ram_base_pfn : self.max_pfn] = FrameState.RESERVED
            return
        for start, end in ram:
            first = start // per_section * per_section
            last = -(-end // per_section) * per_section
            self.state[first:last] = FrameState.RESERVED

    # ------------------------------------------------------------------
    # Allocation (the buddy allocator, deterministic)
    # ------------------------------------------------------------------

    def alloc_folio(self, order: int) -> int:
        """A new folio of ``2**order`` frames, refcount 1, contents zero; its head PFN.

        Large folios are naturally aligned, as the buddy allocator makes them.
        """
        nr = 1 << order
        if order == 0:
            head = self._find_free_frame()
            self.state[head] = _INUSE
            self.flags[head] = 0
            self.head[head] = head
            self.mapcount[head] = 0
            self.index[head] = 0
            self.tag[head] = 0
            self.tag_known[head] = True
            self.fill[head] = 0
            self.ksm[head] = False
            self.freed[head] = False
            self.order[head] = 0
            self.refcount[head] = 1
            self.entire_mapcount[head] = 0
            self.large_mapcount[head] = 0
            self.anon[head] = False
            self.hugetlb[head] = False
            self.file_id[head] = 0
            return head
        head = self._find_free_block(nr)
        end = head + nr
        self.state[head:end] = FrameState.INUSE
        self.flags[head:end] = 0
        self.head[head:end] = head
        self.mapcount[head:end] = 0
        self.index[head:end] = 0
        self.tag[head:end] = 0
        self.tag_known[head:end] = True
        self.fill[head:end] = 0
        self.ksm[head:end] = False
        self.freed[head:end] = False
        self.order[head] = order
        self.refcount[head] = 1
        self.entire_mapcount[head] = 0
        self.large_mapcount[head] = 0
        self.anon[head] = False
        self.hugetlb[head] = False
        self.file_id[head] = 0
        if order:
            # prep_compound_page(): PG_head on the head page.
            self.flags[head] = np.uint64(_PG_HEAD)
        return head

    def _out_of_memory(self, what: str) -> OutOfMemory:
        advice = "" if self.reuse_frames else " (freed frames are not reused: reuse_frames=True)"
        return OutOfMemory(f"no {what} left in {self.max_pfn} frames{advice}")

    def _find_free_frame(self) -> int:
        n = self.state.shape[0]
        pfn = self._hint
        while pfn < n:
            if self.state[pfn] == _FREE:
                self._hint = pfn + 1
                return pfn
            chunk = self.state[pfn : pfn + 4096]
            hits = np.flatnonzero(chunk == FrameState.FREE)
            if hits.size:
                pfn += int(hits[0])
                self._hint = pfn + 1
                return pfn
            pfn += chunk.shape[0]
        raise self._out_of_memory("free frame")

    def _find_free_block(self, nr: int) -> int:
        first = -(-self._hint // nr) if not self.reuse_frames else 0
        usable = self.state.shape[0] // nr
        if first >= usable:
            raise self._out_of_memory(f"free aligned block of {nr} frames")
        window = self.state[first * nr : usable * nr]
        blocks = (window == FrameState.FREE).reshape(-1, nr).all(axis=1)
        hits = np.flatnonzero(blocks)
        if hits.size == 0:
            raise self._out_of_memory(f"free aligned block of {nr} frames")
        head = (first + int(hits[0])) * nr
        if not self.reuse_frames:
            self._hint = head + nr
        return head

    def free_folio(self, head: int) -> None:
        """Return a folio whose refcount reached zero to the allocator."""
        end = head + (1 << int(self.order[head]))
        self.state[head:end] = FrameState.FREE
        self.flags[head:end] = 0
        self.head[head:end] = np.arange(head, end, dtype=np.int64)
        self.order[head:end] = 0
        self.mapcount[head:end] = 0
        self.refcount[head:end] = 0
        self.entire_mapcount[head:end] = 0
        self.large_mapcount[head:end] = 0
        self.anon[head:end] = False
        self.hugetlb[head:end] = False
        self.file_id[head:end] = 0
        self.ksm[head:end] = False
        self.freed[head:end] = True
        # The kernel's batch holds a reference until it drains; the model counts
        # no batch references, so a freed folio leaves the batch at once.
        self.mlock_count.pop(head, None)
        if self.mlock_fbatch:
            self.mlock_fbatch = [(h, what) for h, what in self.mlock_fbatch if h != head]
        if head in self.lru_add_fbatch:
            self.lru_add_fbatch = [-1 if h == head else h for h in self.lru_add_fbatch]
        if self.reuse_frames:
            self._hint = min(self._hint, head)

    # ------------------------------------------------------------------
    # Folio basics (include/linux/mm.h)
    # ------------------------------------------------------------------

    def page_folio(self, pfn: int) -> int:
        return int(self.head[pfn])

    def folio_nr_pages(self, head: int) -> int:
        return 1 << int(self.order[head])

    def folio_test_large(self, head: int) -> bool:
        return bool(self.order[head])

    def folio_test_anon(self, head: int) -> bool:
        return bool(self.anon[head])

    def folio_get(self, head: int, nr: int = 1) -> None:
        self.refcount[head] += nr

    def folio_put(self, head: int, nr: int = 1) -> None:
        """Drop references; free the folio when the last one goes (folio_put())."""
        count = int(self.refcount[head]) - nr
        if count < 0:
            raise AssertionError(f"folio {head:#x}: refcount below zero")
        self.refcount[head] = count
        if count == 0:
            self.free_folio(head)

    def folio_ref_count(self, head: int) -> int:
        """The folio's references, without those the per-CPU batches hold (below)."""
        return int(self.refcount[head])

    def folio_batch_refs(self, head: int) -> int:
        """References the per-CPU batches hold on the folio: one per entry in
        mlock_fbatch and lru_add_fbatch (mlock_folio(), munlock_folio() and
        folio_add_lru() take folio_get(); the drain puts them).  The model keeps
        them out of ``refcount``; a kernel check of folio_ref_count() that runs with
        no drain before it (ksmd's write_protect_page()) sees them."""
        return sum(1 for h, _ in self.mlock_fbatch if h == head) + self.lru_add_fbatch.count(head)

    def test(self, pfn: int, bit: PG) -> bool:
        """PageFoo(): the frame's own flag ``bit``."""
        return bool(int(self.flags[pfn]) >> bit & 1)

    def set(self, pfn: int, bit: PG) -> None:
        """SetPageFoo()."""
        self.flags[pfn] |= _PG_SET[bit]

    def clear(self, pfn: int, bit: PG) -> None:
        """ClearPageFoo()."""
        self.flags[pfn] &= _PG_CLEAR[bit]

    def folio_mapcount(self, head: int) -> int:
        """folio_mapcount(): PTE and PMD mappings of the whole folio."""
        if self.order[head]:
            return int(self.large_mapcount[head])
        return int(self.mapcount[head])

    def folio_mapped(self, head: int) -> bool:
        return self.folio_mapcount(head) >= 1

    def folio_precise_page_mapcount(self, pfn: int) -> int:
        """folio_precise_page_mapcount() (fs/proc/internal.h)."""
        head = int(self.head[pfn])
        count = int(self.mapcount[pfn])
        if self.order[head]:
            count += int(self.entire_mapcount[head])
        return count

    def page_count(self, pfn: int) -> int:
        """page_count(): the folio's refcount, also for tail pages."""
        return int(self.refcount[self.head[pfn]])

    def is_huge_zero_folio(self, head: int) -> bool:
        return self.huge_zero_pfn is not None and head == self.huge_zero_pfn

    # ------------------------------------------------------------------
    # Reverse map (mm/rmap.c)
    # ------------------------------------------------------------------

    def folio_add_new_anon_rmap(self, head: int, exclusive: bool) -> None:
        """folio_add_new_anon_rmap(): first mapping of a new anonymous folio.

        Sets PG_swapbacked and the anon mapping; an order-0 folio gets
        mapcount 1, a PMD-sized one entire/large mapcount 1; PG_anon_exclusive
        goes on the (head) page when exclusive.
        """
        self.set(head, PG.swapbacked)
        self.anon[head] = True
        if self.order[head]:
            self.entire_mapcount[head] = 1
            self.large_mapcount[head] = 1
        else:
            self.mapcount[head] = 1
        if exclusive:
            self.set(head, PG_ANON_EXCLUSIVE)

    def folio_add_new_anon_rmap_ptes(self, head: int, exclusive: bool) -> None:
        """folio_add_new_anon_rmap() of a large folio that is not PMD-mappable (mTHP):
        PG_swapbacked and the anon mapping, every page mapped once (_mapcount 0),
        _large_mapcount nr, PageAnonExclusive on every page when exclusive."""
        nr = self.folio_nr_pages(head)
        self.set(head, PG.swapbacked)
        self.anon[head] = True
        self.mapcount[head : head + nr] = 1
        self.large_mapcount[head] = nr
        if exclusive:
            self.flags[head : head + nr] |= np.uint64(_PG_AE)

    def folio_add_anon_rmap_ptes(self, head: int, pfn: int, nr: int, exclusive: bool) -> None:
        """folio_add_anon_rmap_ptes(): ``nr`` PTEs of an existing anon folio."""
        self.mapcount[pfn : pfn + nr] += 1
        if self.order[head]:
            self.large_mapcount[head] += nr
        if exclusive:
            self.flags[pfn : pfn + nr] |= np.uint64(_PG_AE)

    def folio_add_file_rmap_ptes(self, head: int, pfn: int, nr: int) -> None:
        """folio_add_file_rmap_ptes() / folio_dup_file_rmap_ptes()."""
        self.mapcount[pfn : pfn + nr] += 1
        if self.order[head]:
            self.large_mapcount[head] += nr

    def folio_try_dup_anon_rmap_pte(self, head: int, pfn: int) -> None:
        """folio_try_dup_anon_rmap_pte() at fork: the page is now shared (6.12's
        copy_present_ptes() calls folio_try_dup_anon_rmap_ptes() for a run of PTEs of
        one large folio: the same, page by page).

        No page is pinned in the model, so the dup always succeeds and clears
        PG_anon_exclusive (__folio_try_dup_anon_rmap()).
        """
        self.clear(pfn, PG_ANON_EXCLUSIVE)
        self.mapcount[pfn] += 1
        if self.order[head]:
            self.large_mapcount[head] += 1

    def folio_try_dup_anon_rmap_pmd(self, head: int) -> None:
        """folio_try_dup_anon_rmap_pmd() at fork (copy_huge_pmd())."""
        self.clear(head, PG_ANON_EXCLUSIVE)
        self.entire_mapcount[head] += 1
        self.large_mapcount[head] += 1

    def folio_remove_rmap_ptes(self, head: int, pfn: int, nr: int) -> None:
        """folio_remove_rmap_ptes()."""
        self.mapcount[pfn : pfn + nr] -= 1
        if self.order[head]:
            self.large_mapcount[head] -= nr

    def folio_add_file_rmap_pmd(self, head: int) -> None:
        """folio_add_file_rmap_pmd() (do_set_pmd()): one more entire mapping."""
        self.entire_mapcount[head] += 1
        self.large_mapcount[head] += 1

    def folio_remove_rmap_pmd(self, head: int) -> None:
        """folio_remove_rmap_pmd()."""
        self.entire_mapcount[head] -= 1
        self.large_mapcount[head] -= 1

    # ------------------------------------------------------------------
    # LRU and state bits (mm/swap.c, mm/page-writeback.c)
    # ------------------------------------------------------------------

    def folio_add_lru(self, head: int) -> None:
        """folio_add_lru() (mm/swap.c): the folio joins the per-CPU lru_add batch.

        Its flags are set as lru_add() will set them (PG_unevictable cleared,
        PG_lru set; without MGLRU PG_active stays as it was; the batch's own
        reference is not counted), but it stays queued in ``lru_add_fbatch``
        until the batch drains: the entry that fills its 31 slots (PAGEVEC_SIZE)
        or a large folio drains it at once (folio_batch_add_and_move()), else
        lru_add_drain().  While queued it is off the LRU for mlock
        (:meth:`_on_lru`).
        """
        self.clear(head, PG.unevictable)
        self.set(head, PG.lru)
        self.lru_add_fbatch.append(head)
        if len(self.lru_add_fbatch) >= self.facts.mlock_batch_size or self.order[head]:
            self._lru_add_batch_move()

    def _lru_add_batch_move(self) -> None:
        """folio_batch_move_lru(lru_add) (mm/swap.c): lru_add() of each queued folio.

        Evictable: as folio_add_lru() left it.  Mlocked meanwhile (its mlock
        batch drained first and __mlock_folio() found it off the LRU): culled
        to the unevictable list with PG_active cleared and mlock_count 0, not 1
        ("it is safe to clear mlock_count"): the kernel then undercounts, and
        the next munlock from any VMA clears PG_mlocked.
        """
        batch, self.lru_add_fbatch = self.lru_add_fbatch, []
        for head in batch:
            if head < 0 or self._evictable(head):
                continue
            self.clear(head, PG.active)
            self.set(head, PG.unevictable)
            self.mlock_count[head] = 0

    def _on_lru(self, head: int) -> bool:
        """folio_test_lru() as the mlock batch sees it: PG_lru and not still
        queued in the lru_add batch."""
        return self.test(head, PG.lru) and head not in self.lru_add_fbatch

    def folio_mark_accessed(self, head: int) -> None:
        """folio_mark_accessed() (mm/swap.c), activation taken as done.

        Unreferenced -> PG_referenced.  Referenced, evictable and inactive ->
        activated (folio_activate() / __lru_cache_activate_folio(); PG_active
        once the batch is drained) and PG_referenced cleared.  A folio on no
        LRU and in no batch (the zero page, which GUP's FOLL_TOUCH marks) is
        not activated: __lru_cache_activate_folio() does not find it, so its
        PG_referenced just toggles.
        """
        flags = int(self.flags[head])
        if not flags & _PG_REFERENCED:
            self.set(head, PG.referenced)
        elif flags & _PG_UNEVICTABLE:
            pass
        elif not flags & _PG_ACTIVE:
            # Off the LRU (the zero page, a new folio waiting in the mlock
            # batch) __lru_cache_activate_folio() finds it in no lru_add batch:
            # only PG_referenced is cleared.  (A folio still in the lru_add
            # batch would get PG_active there; the model applies that batch's
            # flags at once and keeps it only for mlock, and the agent drains it
            # after writing a file region's pages, sim/MODEL.md.)
            if flags & _PG_LRU:
                self.set(head, PG.active)
            self.clear(head, PG.referenced)

    # ------------------------------------------------------------------
    # mlock (mm/mlock.c, mm/swap.c): the per-CPU mlock and lru_add batches
    # ------------------------------------------------------------------

    def folio_add_lru_vma(self, head: int, vma_flags: int, vm_locked: int) -> None:
        """folio_add_lru_vma() (mm/swap.c): a new folio mapped into a VMA.

        In a VM_LOCKED VMA (``vma_flags & vm_locked``; VM_SPECIAL never
        occurs here) it is mlock_new_folio(), otherwise folio_add_lru().
        """
        if vma_flags & vm_locked:
            self.mlock_new_folio(head)
        else:
            self.folio_add_lru(head)

    def mlock_folio(self, head: int) -> None:
        """mlock_folio(): PG_mlocked now, the LRU move when the batch drains."""
        self.set(head, PG.mlocked)
        self._mlock_batch_add(head, "lru")

    def mlock_new_folio(self, head: int) -> None:
        """mlock_new_folio(): a new folio not yet on the LRU; PG_mlocked now."""
        self.set(head, PG.mlocked)
        self._mlock_batch_add(head, "new")

    def munlock_folio(self, head: int) -> None:
        """munlock_folio(): everything happens when the batch drains (__munlock_folio())."""
        self._mlock_batch_add(head, "munlock")

    def _mlock_batch_add(self, head: int, what: str) -> None:
        """folio_batch_add() to mlock_fbatch; a full batch (``facts.mlock_batch_size``:
        the entry that fills it), or a large folio (!folio_may_be_lru_cached()),
        drains it at once (mlock_folio_batch())."""
        self.mlock_fbatch.append((head, what))
        if len(self.mlock_fbatch) >= self.facts.mlock_batch_size or self.order[head]:
            self._mlock_folio_batch()

    def lru_add_drain(self) -> None:
        """lru_add_drain() -> lru_add_drain_cpu() (mm/swap.c) on the one CPU: the
        lru_add batch first, mlock_drain_local() last.  The model calls it
        wherever the kernel calls lru_add_drain(), and before each check."""
        if self.lru_add_fbatch:
            self._lru_add_batch_move()
        self._mlock_folio_batch()

    def mlock_drain_local(self) -> None:
        """mlock_drain_local() (mm/mlock.c): the mlock batch drains now (the lru_add
        batch is left as it is), as remove_migration_pte() does after remapping a page
        into a VM_LOCKED VMA."""
        self._mlock_folio_batch()

    def _mlock_folio_batch(self) -> None:
        """mlock_folio_batch() (mm/mlock.c): each queued folio in order; the
        lru_add batch is left as it is (a folio still there is off the LRU)."""
        batch, self.mlock_fbatch = self.mlock_fbatch, []
        for head, what in batch:
            if what == "lru":
                self._mlock_lru_folio(head)
            elif what == "new":
                self._mlock_new_folio_drained(head)
            else:
                self._munlock_folio_drained(head)

    def _evictable(self, head: int) -> bool:
        """folio_evictable(): not mlocked (no SHM_LOCKed mapping in the model)."""
        return not self.test(head, PG.mlocked)

    def _mlock_lru_folio(self, head: int) -> None:
        """__mlock_folio(): onto the unevictable list (PG_active cleared), mlock_count."""
        if not self._on_lru(head):
            return  # folio_test_clear_lru() failed: nothing to do off the LRU
        if self._evictable(head):
            self.clear(head, PG.unevictable)
        elif self.test(head, PG.unevictable):
            self.mlock_count[head] = self.mlock_count.get(head, 0) + 1
        else:
            self.clear(head, PG.active)
            self.set(head, PG.unevictable)
            self.mlock_count[head] = 1
        self.set(head, PG.lru)

    def _mlock_new_folio_drained(self, head: int) -> None:
        """__mlock_new_folio(): onto the unevictable list with mlock_count 1."""
        if not self._evictable(head):
            self.set(head, PG.unevictable)
            self.mlock_count[head] = 1
        self.set(head, PG.lru)

    def _munlock_folio_drained(self, head: int) -> None:
        """__munlock_folio(): one mlock fewer; the last clears PG_mlocked and
        moves the folio back to an evictable list (PG_active stays clear)."""
        isolated = self._on_lru(head)
        if isolated and self.test(head, PG.unevictable):
            count = self.mlock_count.get(head, 0)
            if count:
                count -= 1
                self.mlock_count[head] = count
            if count:
                return
        self.clear(head, PG.mlocked)
        if isolated and self.test(head, PG.unevictable) and self._evictable(head):
            self.clear(head, PG.unevictable)

    def folio_mark_dirty(self, head: int) -> None:
        """folio_mark_dirty(): shmem and anonymous folios just get PG_dirty."""
        self.set(head, PG.dirty)

    # ------------------------------------------------------------------
    # Content
    # ------------------------------------------------------------------

    def copy_content(self, dst: int, src: int) -> None:
        self.tag[dst] = self.tag[src]
        self.tag_known[dst] = self.tag_known[src]
        self.fill[dst] = self.fill[src]

    def write_tag(self, pfn: int, tag: int | None) -> None:
        """Store ``tag`` in the frame's first u64 (None: a value the model does not know)."""
        if tag is None:
            self.tag_known[pfn] = False
        else:
            self.tag[pfn] = np.uint64(tag)
            self.tag_known[pfn] = True

    def write_fill(self, pfn: int, value: int) -> None:
        """memset() the whole frame to the byte ``value`` (a ``write`` with ``fill``)."""
        self.tag[pfn] = np.uint64(value * 0x0101_0101_0101_0101)
        self.tag_known[pfn] = True
        self.fill[pfn] = value

    def content(self, pfn: int) -> tuple[int, int] | None:
        """The frame's whole content as (first u64, value of every later byte), or None
        when the model does not know it.  Two frames hold equal bytes iff their
        contents are equal (what memcmp_pages() and calc_checksum() see, mm/ksm.c)."""
        if not self.tag_known[pfn]:
            return None
        return int(self.tag[pfn]), int(self.fill[pfn])

    # ------------------------------------------------------------------
    # What fs/proc/page.c reads, vectorised over PFNs
    # ------------------------------------------------------------------

    def stable_page_flags(self, pfns: IntArray) -> U64Array:
        """stable_page_flags() of fs/proc/page.c for every PFN in ``pfns``.

        ``pfns`` must be below max_dump_pfn.  k is the folio's flags word
        (the head frame's); only HWPoison and head/tail come from the page,
        and with ``facts.kpf_flags_word`` PAGE (before 6.10) the copied bits too.
        THP is set on every page of a large folio that
        folio_test_large_rmappable() (PMD-sized and mTHP alike).
        """
        pfns = np.asarray(pfns, dtype=np.int64)
        state = self.state[pfns]
        heads = self.head[pfns]
        k = self.flags[heads]
        large = self.order[heads] > 0
        u = np.zeros(pfns.shape, dtype=np.uint64)

        def put(mask: npt.NDArray[np.bool_], bit: KPF) -> None:
            u[mask] |= np.uint64(1 << bit)

        def kbit(bit: PG) -> npt.NDArray[np.bool_]:
            result: npt.NDArray[np.bool_] = ((k >> np.uint64(bit)) & np.uint64(1)) != 0
            return result

        mapped = np.where(large, self.large_mapcount[heads] >= 1, self.mapcount[heads] >= 1)
        put(mapped, KPF.MMAP)
        is_anon = self.anon[heads]
        put(is_anon, KPF.ANON)
        if self.facts.ksm_flag_on_every_anon_page:
            # mapping & PAGE_MAPPING_KSM is true for PAGE_MAPPING_ANON alone.
            put(is_anon, KPF.KSM)
        else:
            # linux-patch/0001: folio_test_ksm() on the mapping word read once.
            put(is_anon & self.ksm[heads], KPF.KSM)
        is_head = heads == pfns
        put(is_head & kbit(PG.head), KPF.COMPOUND_HEAD)
        put(~is_head, KPF.COMPOUND_TAIL)
        # folio_test_hugetlb() first: a hugetlb folio is HUGE and never THP.
        hugetlb = self.hugetlb[heads]
        put(hugetlb, KPF.HUGE)
        large_rmappable = large & kbit(PG.large_rmappable) & ~hugetlb
        put(large_rmappable, KPF.THP)
        huge_zero = np.zeros(pfns.shape, dtype=np.bool_)
        if self.huge_zero_pfn is not None:
            huge_zero = ~large_rmappable & ~hugetlb & (heads == self.huge_zero_pfn)
        put(huge_zero, KPF.ZERO_PAGE)
        put(huge_zero, KPF.THP)
        put(~large_rmappable & ~hugetlb & ~huge_zero & (pfns == self.zero_pfn), KPF.ZERO_PAGE)
        put(state == FrameState.FREE, KPF.BUDDY)
        # kpf_copy_bit() of folio->flags since 6.10, of page->flags before.
        copied = self.flags[pfns] if self.facts.kpf_flags_word is KpfFlagsWord.PAGE else k
        for pg, kpf in _COPIED_BITS:
            put(((copied >> np.uint64(pg)) & np.uint64(1)) != 0, kpf)
        # SWAPCACHE needs both PG_swapbacked and PG_swapcache.
        put(kbit(PG.swapbacked) & kbit(PG.owner_priv_1), KPF.SWAPCACHE)
        own = self.flags[pfns]
        put(((own >> np.uint64(PG.hwpoison)) & np.uint64(1)) != 0, KPF.HWPOISON)
        u[state == FrameState.HOLE] = np.uint64(1 << KPF.NOPAGE)
        return u

    def kpagecount_values(self, pfns: IntArray) -> IntArray:
        """kpagecount_read(): folio_precise_page_mapcount(), 0 without a page."""
        pfns = np.asarray(pfns, dtype=np.int64)
        heads = self.head[pfns]
        count = self.mapcount[pfns] + np.where(
            self.order[heads] > 0, self.entire_mapcount[heads], 0
        )
        count[self.state[pfns] == FrameState.HOLE] = 0
        result: IntArray = count
        return result

    def page_count_values(self, pfns: IntArray) -> IntArray:
        """page_count() of each PFN (the folio refcount), 0 without a page."""
        pfns = np.asarray(pfns, dtype=np.int64)
        count = self.refcount[self.head[pfns]].copy()
        count[self.state[pfns] == FrameState.HOLE] = 0
        result: IntArray = count
        return result
