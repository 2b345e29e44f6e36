"""Swap: one swap device's slots, the swap cache, and the paths that use them.

Follows mm/swapfile.c (slots, swapon/swapoff, free_swap_and_cache_nr()),
mm/swap_state.c (the swap cache: add_to_swap(), delete_from_swap_cache()),
mm/vmscan.c (shrink_folio_list() of a small anonymous folio MADV_PAGEOUT
isolated), mm/rmap.c (try_to_unmap_one() installing the swap entry),
mm/memory.c (do_swap_page(), zap_pte_range() and copy_nonpresent_pte() of
swap entries) as 6.12.117 has them.

What the model assumes of the guest (the harness makes it true):

* one swap device, type 0, swapped on at boot (``VMConfig.swap``) and never
  full; ``vm.page-cluster`` 0, so a swap-in reads only the faulting slot
  (swapin_nr_pages() is 1: no readahead into the swap cache);
* writeback of a paged-out folio is still in flight when shrink_folio_list()
  tests folio_test_writeback() after pageout() (the bio sits in
  do_madvise()'s blk_plug until the walk ends), so the folio is kept in the
  swap cache (``goto keep``), and the harness waits for ``nr_writeback`` 0
  (/proc/vmstat) after the step, so that no folio is under writeback when
  anything looks at it (do_swap_page()'s SWP_STABLE_WRITES test, folio_free_swap());
* slot numbers are not predicted: pagemap compares swap entries through a
  bijection of (type, offset), as PFNs.  The model hands out offsets from 1
  up and never reuses one within a run (the kernel's scan_swap_map_slots()
  may), so the compare holds the model to its bindings (stable) and lets the
  kernel's rebind.

Not modelled (:class:`~sim.mm.syscall.NotModelled`): a swap-in (a fault or
swapoff's try_to_unuse()) whose folio left the swap cache (read from the disk:
swap_read_folio(), workingset_refault()), paging out a large folio (THP_SWAP
on x86_64, a split elsewhere).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sim.mm.pageflags import PG, PG_ANON_EXCLUSIVE, PG_SWAPCACHE
from sim.mm.pagetable import PteTable
from sim.mm.pte import (
    PTE_DIRTY,
    PTE_SOFT_DIRTY,
    PTE_SWAP,
    PTE_SWP_EXCLUSIVE,
    PTE_SWP_SOFT_DIRTY,
    PTE_WRITE,
    PTE_YOUNG,
    mk_pte,
    pte_mkdirty,
)
from sim.mm.rmap import mlock_vma_folio
from sim.mm.syscall import MmError, NotModelled
from sim.mm.vma import VM_LOCKED, VM_WRITE, Vma

if TYPE_CHECKING:
    from sim.mm.memmap import PhysMem
    from sim.mm.mm_struct import MmStruct

__all__ = [
    "SwapInfo",
    "copy_swap_pte",
    "do_swap_page",
    "free_swap_cache",
    "is_swap_pte",
    "pageout_anon_folio",
    "pte_swp_exclusive",
    "unuse_mm",
    "unuse_pte",
    "zap_swap_pte",
]


def pte_swp_exclusive(bits: int) -> bool:
    """pte_swp_exclusive(): the swap entry says the page was exclusive when swapped out."""
    return bool(bits & PTE_SWP_EXCLUSIVE)


def is_swap_pte(bits: int) -> bool:
    """is_swap_pte(): the entry holds a swap entry (the model has no other non-present kind)."""
    return bool(bits & PTE_SWAP)


@dataclass
class SwapInfo:
    """struct swap_info_struct of the one swap device (type 0), and its swap cache.

    ``last_page`` is the header's: slots 1 .. last_page are usable (slot 0 is
    the header, SWAP_MAP_BAD).  ``swap_map`` counts each slot's page-table
    references (the count without SWAP_HAS_CACHE); ``cache`` maps a slot to
    the folio in the swap cache for it (SWAP_HAS_CACHE), ``folio_swap`` back
    (folio->swap).  A slot is in use while either holds it.
    """

    last_page: int
    #: SWP_WRITEOK: swapped on (swapoff clears it, swapon sets it).
    writeok: bool = True
    swap_map: dict[int, int] = field(default_factory=dict)
    cache: dict[int, int] = field(default_factory=dict)
    folio_swap: dict[int, int] = field(default_factory=dict)
    #: The next offset to hand out (never reused, see the module doc).
    next_offset: int = 1

    @property
    def type(self) -> int:
        """swp_type() of every entry: the device's index in swap_info[]."""
        return 0

    def inuse_pages(self) -> int:
        """si->inuse_pages: slots with a count or a swap-cache folio."""
        return len(self.swap_map.keys() | self.cache.keys())

    def vm_swap_full(self) -> bool:
        """vm_swap_full(): free slots below half (mem_cgroup_swap_full() without CONFIG_MEMCG)."""
        free = self.last_page - self.inuse_pages() if self.writeok else 0
        return free * 2 < self.last_page

    # -- slots (mm/swapfile.c) -------------------------------------------------

    def folio_alloc_swap(self) -> int | None:
        """folio_alloc_swap() of an order-0 folio: a free slot's offset, None if there is none."""
        if not self.writeok or self.inuse_pages() >= self.last_page:
            return None
        if self.next_offset > self.last_page:
            raise NotModelled("swap slot reuse (the model never reuses an offset)")
        offset = self.next_offset
        self.next_offset += 1
        return offset

    def swap_duplicate(self, offset: int) -> None:
        """swap_duplicate(): one more page-table reference to the slot."""
        self.swap_map[offset] = self.swap_map.get(offset, 0) + 1

    def swap_free(self, offset: int) -> None:
        """swap_free_nr() of one slot: one page-table reference less."""
        count = self.swap_map[offset] - 1
        if count:
            self.swap_map[offset] = count
        else:
            del self.swap_map[offset]

    def folio_swapped(self, head: int) -> bool:
        """folio_swapped(): a page-table reference to the folio's slot remains."""
        return self.swap_map.get(self.folio_swap[head], 0) > 0

    # -- the swap cache (mm/swap_state.c) ------------------------------------

    def add_to_swap(self, mem: PhysMem, head: int) -> bool:
        """add_to_swap(): a slot, the folio in the swap cache for it (PG_swapcache, one
        reference per page), and folio_mark_dirty(); False if no slot is free."""
        offset = self.folio_alloc_swap()
        if offset is None:
            return False
        self.cache[offset] = head
        self.folio_swap[head] = offset
        mem.set(head, PG_SWAPCACHE)
        mem.folio_get(head)
        mem.folio_mark_dirty(head)
        return True

    def delete_from_swap_cache(self, mem: PhysMem, head: int) -> None:
        """delete_from_swap_cache(): out of the swap cache, its slot's cache use and
        reference dropped (put_swap_folio(), folio_ref_sub()): freed if that was the last."""
        offset = self.folio_swap.pop(head)
        del self.cache[offset]
        mem.clear(head, PG_SWAPCACHE)
        mem.folio_put(head)

    def folio_free_swap(self, mem: PhysMem, head: int) -> bool:
        """folio_free_swap(): drop the folio from the swap cache if no page table refers
        to its slot any more (no writeback in the model), and folio_set_dirty()."""
        if head not in self.folio_swap or self.folio_swapped(head):
            return False
        mem.set(head, PG.dirty)
        self.delete_from_swap_cache(mem, head)
        return True

    def free_swap_and_cache(self, mem: PhysMem, offset: int) -> None:
        """free_swap_and_cache_nr() of one slot: the reference goes; a slot left with only
        its swap-cache folio is reclaimed if the folio is unmapped or swap is full
        (__try_to_reclaim_swap(TTRS_UNMAPPED | TTRS_FULL)): delete_from_swap_cache(),
        folio_set_dirty(), and the folio is freed with the lookup's reference."""
        self.swap_free(offset)
        if offset in self.swap_map or offset not in self.cache:
            return
        head = self.cache[offset]
        if mem.folio_mapped(head) and not self.vm_swap_full():
            return
        mem.folio_get(head)  # filemap_get_folio()
        mem.set(head, PG.dirty)
        self.delete_from_swap_cache(mem, head)
        mem.folio_put(head)

    # -- swapon, swapoff (mm/swapfile.c) --------------------------------------

    def swapon(self) -> None:
        """SYSCALL_DEFINE2(swapon) of the device: EBUSY while it is on (claim_swapfile())."""
        if self.writeok:
            raise MmError(errno.EBUSY, "swapon: the swap device is in use")
        self.writeok = True

    def swapoff(self, mem: PhysMem, mms: Sequence[MmStruct] = ()) -> None:
        """SYSCALL_DEFINE1(swapoff): EINVAL when not on; else try_to_unuse(): every swap
        entry in the page tables of ``mms`` (every live mm) is mapped back (unuse_mm() ->
        :func:`unuse_pte`), then every swap-cache folio left is dropped from the swap
        cache (folio_free_swap(): PG_dirty).  A slot whose folio left the swap cache
        would be read from the disk: not modelled."""
        if not self.writeok:
            raise MmError(errno.EINVAL, "swapoff: the swap device is not on")
        if self.swap_map:
            for mm in mms:
                unuse_mm(mm, self)
        for head in list(self.cache.values()):
            mem.folio_get(head)
            self.folio_free_swap(mem, head)
            mem.folio_put(head)
        self.writeok = False


# ---------------------------------------------------------------------------
# Reclaim: shrink_folio_list() of a small anonymous folio (mm/vmscan.c)
# ---------------------------------------------------------------------------


def pageout_anon_folio(mm: MmStruct, swap: SwapInfo, table: PteTable, i: int, head: int) -> bool:
    """shrink_folio_list() of the order-0 anonymous folio mapped once at ``table[i]``,
    isolated by MADV_PAGEOUT (reclaim_pages() has cleared PG_active); False if
    add_to_swap() fails (the caller activates it, ``activate_locked``).

    Not yet in the swap cache: add_to_swap() (PG_dirty).  try_to_unmap_one():
    a dirty PTE dirties the folio; the swap entry takes the slot
    (swap_duplicate()), pte_swp_mkexclusive() if the page was PageAnonExclusive
    (folio_try_share_anon_rmap_pte() clears it), pte_swp_mksoft_dirty() if the
    PTE was soft-dirty; the mapping and its reference go.  A dirty folio is
    written (pageout(): folio_clear_dirty_for_io(), swap_writepage()) and, its
    writeback in flight, kept in the swap cache and put back on the LRU; a
    clean one (a swap-cache folio read back and never written) is freed
    (__remove_mapping()), which leaves its data only on the disk.
    """
    mem = mm.mem
    if head not in swap.folio_swap and not swap.add_to_swap(mem, head):
        return False
    bits = int(table.bits[i])
    pfn = int(table.pfn[i])
    if bits & PTE_DIRTY:
        mem.folio_mark_dirty(head)
    offset = swap.folio_swap[head]
    swap.swap_duplicate(offset)
    entry = PTE_SWAP
    if mem.test(pfn, PG_ANON_EXCLUSIVE):
        entry |= PTE_SWP_EXCLUSIVE
        mem.clear(pfn, PG_ANON_EXCLUSIVE)
    if bits & PTE_SOFT_DIRTY:
        entry |= PTE_SWP_SOFT_DIRTY
    table.set(i, offset, entry)
    mem.folio_remove_rmap_ptes(head, pfn, 1)
    mem.folio_put(head)
    mem.clear(head, PG.active)  # reclaim_pages(): folio_clear_active()
    if mem.test(head, PG.dirty):
        mem.clear(head, PG.dirty)  # pageout(): folio_clear_dirty_for_io()
        return True
    # PAGE_CLEAN: __remove_mapping() takes it out of the swap cache; freed.
    swap.delete_from_swap_cache(mem, head)
    return True


# ---------------------------------------------------------------------------
# Faults and page tables (mm/memory.c)
# ---------------------------------------------------------------------------


def do_swap_page(mm: MmStruct, vma: Vma, table: PteTable, i: int, write: bool) -> bool:
    """do_swap_page() for the swap entry at ``table[i]``; True if the write still needs
    do_wp_page() (the caller's FAULT_FLAG_WRITE is left set).

    The folio is the one in the swap cache (swap_cache_get_folio(), whose
    reference becomes the PTE's).  exclusive = pte_swp_exclusive() (the folio
    is the swap cache's and never under writeback here).  swap_free_nr(); then
    should_try_to_free_swap() (swap cache, and swap full or VM_LOCKED or
    PG_mlocked, or a write with refcount 2: the swap cache's and ours) ->
    folio_free_swap().  The PTE is mk_pte() (young), soft-dirty from the swap
    entry; exclusive or refcount 1 maps it RMAP_EXCLUSIVE and, in a VM_WRITE
    VMA unless soft-dirty tracking wants a fault (pte_needs_soft_dirty_wp()),
    writable, and dirty for a write (which is then done).  The folio is still
    anonymous (folio->mapping outlives its mappings): folio_add_anon_rmap_ptes(),
    which mlocks it in a VM_LOCKED VMA (mlock_vma_folio()).
    """
    mem = mm.mem
    swap = mm.ctx.swap
    bits = int(table.bits[i])
    offset = int(table.pfn[i])
    if swap is None or offset not in swap.cache:
        raise NotModelled("swap-in from the swap disk (a folio no longer in the swap cache)")
    head = swap.cache[offset]
    mem.folio_get(head)  # swap_cache_get_folio()
    exclusive = pte_swp_exclusive(bits)
    swap.swap_free(offset)
    if _should_try_to_free_swap(mem, swap, head, vma, write):
        swap.folio_free_swap(mem, head)
    soft_dirty = mm.ctx.soft_dirty
    pte = mk_pte(vma, soft_dirty)
    if bits & PTE_SWP_SOFT_DIRTY:
        pte |= PTE_SOFT_DIRTY
    rmap_exclusive = False
    if exclusive or mem.folio_ref_count(head) == 1:
        tracking = vma.soft_dirty_enabled(soft_dirty)
        if vma.flags & VM_WRITE and not (tracking and not pte & PTE_SOFT_DIRTY):
            pte |= PTE_WRITE
            if write:
                pte |= pte_mkdirty(soft_dirty)
                write = False
        rmap_exclusive = True
    mem.folio_add_anon_rmap_ptes(head, head, 1, exclusive=rmap_exclusive)
    mlock_vma_folio(mem, head, vma)  # the end of __folio_add_anon_rmap()
    table.set(i, head, pte)
    return write


def _should_try_to_free_swap(
    mem: PhysMem, swap: SwapInfo, head: int, vma: Vma, write: bool
) -> bool:
    """should_try_to_free_swap() (mm/memory.c)."""
    if head not in swap.folio_swap:
        return False
    if swap.vm_swap_full() or vma.flags & VM_LOCKED or mem.test(head, PG.mlocked):
        return True
    return write and mem.folio_ref_count(head) == 2


def copy_swap_pte(mm: MmStruct, src: PteTable, dst: PteTable, i: int) -> None:
    """copy_nonpresent_pte() of a swap entry at fork: swap_duplicate(), and the entry
    marked shared (pte_swp_clear_exclusive()) in the parent, then copied to the child."""
    swap = mm.ctx.swap
    assert swap is not None
    offset = int(src.pfn[i])
    swap.swap_duplicate(offset)
    bits = int(src.bits[i]) & ~PTE_SWP_EXCLUSIVE
    src.bits[i] = bits
    dst.set(i, offset, bits)


def unuse_mm(mm: MmStruct, swap: SwapInfo) -> None:
    """unuse_mm() -> unuse_vma() -> unuse_pte_range() of one mm: each swap entry, VMA by
    VMA in address order, is mapped back to its swap-cache folio (:func:`unuse_pte`), and
    folio_free_swap() follows each (the last entry of a slot frees it from the cache)."""
    mem = mm.mem
    for vma in mm.each_vma():
        if vma.anon_vma is None:
            continue
        for base, entry, lo, hi in mm.pt.pmd_ranges(vma.start, vma.end):
            if not isinstance(entry, PteTable):
                continue
            for i in mm.pt.pte_range(base, lo, hi):
                bits = int(entry.bits[i])
                if not is_swap_pte(bits):
                    continue
                offset = int(entry.pfn[i])
                head = swap.cache.get(offset)
                if head is None:
                    raise NotModelled("swapoff of a slot whose folio left the swap cache "
                                      "(swapin_readahead() from the disk)")
                mem.folio_get(head)  # swap_cache_get_folio()
                unuse_pte(mm, vma, entry, i, head)
                swap.folio_free_swap(mem, head)
                mem.folio_put(head)


def unuse_pte(mm: MmStruct, vma: Vma, table: PteTable, i: int, head: int) -> None:
    """unuse_pte() (mm/swapfile.c): the swap entry at ``table[i]`` becomes
    pte_mkold(mk_pte(page, vma->vm_page_prot)) (read-only in a private mapping, clean,
    old), soft-dirty from the entry; folio_add_anon_rmap_pte() with RMAP_EXCLUSIVE iff
    pte_swp_exclusive() (mlocked in a VM_LOCKED VMA); a reference for the PTE;
    swap_free()."""
    mem = mm.mem
    swap = mm.ctx.swap
    assert swap is not None
    bits = int(table.bits[i])
    offset = int(table.pfn[i])
    pte = mk_pte(vma, mm.ctx.soft_dirty) & ~PTE_YOUNG
    if bits & PTE_SWP_SOFT_DIRTY:
        pte |= PTE_SOFT_DIRTY
    mem.folio_get(head)
    mem.folio_add_anon_rmap_ptes(head, head, 1, exclusive=pte_swp_exclusive(bits))
    mlock_vma_folio(mem, head, vma)
    table.set(i, head, pte)
    swap.swap_free(offset)


def free_swap_cache(mm: MmStruct, head: int) -> None:
    """free_swap_cache() of a folio whose PTE a zap removed (the mmu_gather's
    free_pages_and_swap_cache(), before its reference goes): an unmapped swap-cache
    folio no page table's swap entry refers to leaves the swap cache (folio_free_swap())."""
    swap = mm.ctx.swap
    if swap is not None and head in swap.folio_swap and not mm.mem.folio_mapped(head):
        swap.folio_free_swap(mm.mem, head)


def zap_swap_pte(mm: MmStruct, table: PteTable, i: int) -> None:
    """zap_pte_range() of a swap entry (should_zap_cows(): munmap, exit, MADV_DONTNEED):
    free_swap_and_cache_nr(), then the entry is cleared."""
    swap = mm.ctx.swap
    assert swap is not None
    offset = int(table.pfn[i])
    table.clear(i)
    swap.free_swap_and_cache(mm.mem, offset)
