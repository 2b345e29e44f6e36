"""Anonymous multi-size THP: a write fault maps a PTE-mapped large folio (mm/memory.c).

do_anonymous_page() takes its folio from alloc_anon_folio(): the orders below
PMD_ORDER that thp_vma_allowable_orders() allows (the sysfs knobs of
:class:`sim.mm.settings.ThpSettings`; VM_NOHUGEPAGE none), filtered by
thp_vma_suitable_orders() (the naturally aligned range lies in the VMA),
then the highest whose aligned range is all pte_none(); lower orders follow
if the allocation fails.  Every PTE of
the range gets the same entry (set_ptes()); the folio is large_rmappable
(page_rmappable_folio()), holds one reference per PTE (folio_ref_add()) and
each page is mapped once and PageAnonExclusive (folio_add_new_anon_rmap()).
Read faults never come here: they map the zero page, 4K.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.mm.memmap import OutOfMemory
from sim.mm.pageflags import PG
from sim.mm.pagetable import PteTable
from sim.mm.rmap import folio_add_lru_vma
from sim.mm.settings import anon_orders
from sim.mm.vma import VM_NOHUGEPAGE, VM_UFFD_WP, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = ["alloc_anon_folio", "map_anon_folio_ptes", "thp_vma_suitable_order"]


def thp_vma_suitable_order(mm: MmStruct, vma: Vma, addr: int, order: int) -> bool:
    """thp_vma_suitable_order() (include/linux/huge_mm.h): the ``2**order``-page range
    around ``addr`` (bytes), aligned down, lies in ``vma``; a VMA with a file also
    needs vm_pgoff aligned alike (not an anonymous one)."""
    nr = 1 << order
    size = nr << mm.arch.page_shift
    if not vma.anonymous and ((vma.start >> mm.arch.page_shift) - vma.pgoff) % nr:
        return False
    haddr = addr - addr % size
    return vma.start <= haddr and haddr + size <= vma.end


def alloc_anon_folio(mm: MmStruct, vma: Vma, addr: int, table: PteTable) -> tuple[int, int]:
    """alloc_anon_folio(): (head PFN, order) of the new folio for a write fault at ``addr``.

    Order 0 when no large order is allowed, suitable and free, and in a VMA
    registered with a userfaultfd (``userfaultfd_armed()``: "per-page fault
    fidelity"); the folio is
    allocated here (refcount 1, zeroed: folio_zero_user()) and, when large,
    marked large_rmappable.  Raises OutOfMemory only for order 0.
    """
    mem = mm.mem
    pmd_order = mm.pt.pmd_shift - mm.arch.page_shift
    orders: list[int] = []
    if mm.ctx.thp and not vma.flags & (VM_NOHUGEPAGE | VM_UFFD_WP):  # vma_thp_disabled(), armed
        orders = [
            o for o in anon_orders(mm.ctx.settings, vma.flags, pmd_order, below=pmd_order)
            if thp_vma_suitable_order(mm, vma, addr, o)
        ]
    # The highest order whose aligned range is all pte_none(); all below it are too.
    for n, order in enumerate(orders):
        nr = 1 << order
        if table.none_range(mm.pt.pte_index(addr - addr % (nr << mm.arch.page_shift)), nr):
            orders = orders[n:]
            break
    else:
        orders = []
    for order in orders:
        try:
            head = mem.alloc_folio(order)
        except OutOfMemory:
            continue  # MTHP_STAT_ANON_FAULT_FALLBACK: the next order
        mem.set(head, PG.large_rmappable)  # page_rmappable_folio()
        return head, order
    return mem.alloc_folio(0), 0


def map_anon_folio_ptes(
    mm: MmStruct, vma: Vma, table: PteTable, addr: int, head: int, order: int, bits: int
) -> None:
    """The rest of do_anonymous_page() for a large folio: folio_ref_add(nr - 1),
    folio_add_new_anon_rmap(RMAP_EXCLUSIVE) (every page mapped once and
    PageAnonExclusive, large mapcount nr), folio_add_lru_vma(), and set_ptes() of
    the same entry ``bits`` over the ``2**order`` pages aligned around ``addr``."""
    mem = mm.mem
    nr = 1 << order
    first = mm.pt.pte_index(addr - addr % (nr << mm.arch.page_shift))
    mem.folio_get(head, nr - 1)
    mem.folio_add_new_anon_rmap_ptes(head, exclusive=True)
    folio_add_lru_vma(mem, head, vma)
    for k in range(nr):
        table.set(first + k, head + k, bits)
