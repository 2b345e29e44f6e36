"""anon_vma bookkeeping (mm/rmap.c): which VMAs share an anon_vma, as merging sees it.

The model keeps an anon_vma's identity and the length of a VMA's
anon_vma_chain, which is all VMA merging and anon_vma reuse look at.
"""

from __future__ import annotations

from sim.mm.memmap import PhysMem
from sim.mm.pagetable import PteTable
from sim.mm.pte import PTE_DIRTY
from sim.mm.vma import (
    VM_EXEC,
    VM_LOCKED,
    VM_READ,
    VM_SOFTDIRTY,
    VM_WRITE,
    AnonVma,
    Vma,
    VmaList,
)

__all__ = [
    "anon_vma_fork",
    "anon_vma_prepare",
    "folio_add_lru_vma",
    "mlock_vma_folio",
    "munlock_vma_folio",
    "try_to_unmap_pte",
]

#: Flags anon_vma_compatible() ignores: VM_ACCESS_FLAGS and VM_SOFTDIRTY.
_COMPATIBLE_IGNORES = VM_READ | VM_WRITE | VM_EXEC | VM_SOFTDIRTY


def _anon_vma_compatible(a: Vma, b: Vma) -> bool:
    """anon_vma_compatible(): adjacent, same file, flags equal but for
    VM_ACCESS_FLAGS and VM_SOFTDIRTY, contiguous pgoff."""
    return (
        a.end == b.start
        and a.file is b.file
        and not ((a.flags ^ b.flags) & ~_COMPATIBLE_IGNORES)
        and b.pgoff == a.pgoff + ((b.start - a.start) >> a.page_shift)
    )


def anon_vma_prepare(vmas: VmaList, vma: Vma) -> None:
    """__anon_vma_prepare(): give ``vma`` an anon_vma, a compatible neighbour's or a new one.

    find_mergeable_anon_vma() tries the next VMA, then the previous one;
    reusable_anon_vma() takes a neighbour's anon_vma only if its chain is
    singular and anon_vma_compatible() holds.
    """
    if vma.anon_vma is not None:
        return
    prev, nxt = vmas.prev_next(vma.start, vma.end)
    for old, a, b in ((nxt, vma, nxt), (prev, prev, vma)):
        if old is None or a is None or b is None:
            continue
        if _anon_vma_compatible(a, b) and old.anon_vma is not None and old.chain_len == 1:
            vma.anon_vma = old.anon_vma
            vma.chain_len = 1
            return
    vma.anon_vma = AnonVma()
    vma.chain_len = 1


def anon_vma_fork(child: Vma, parent: Vma) -> None:
    """anon_vma_fork(): the child VMA gets an anon_vma of its own, chained to the parent's."""
    if parent.anon_vma is not None:
        child.anon_vma = AnonVma()
        child.chain_len = parent.chain_len + 1


# ---------------------------------------------------------------------------
# mlock on the rmap paths (mm/internal.h, mm/rmap.c, mm/swap.c)
# ---------------------------------------------------------------------------


def folio_add_lru_vma(mem: PhysMem, head: int, vma: Vma) -> None:
    """folio_add_lru_vma(): a new folio of a VM_LOCKED VMA is mlock_new_folio()ed."""
    mem.folio_add_lru_vma(head, vma.flags, VM_LOCKED)


def mlock_vma_folio(mem: PhysMem, head: int, vma: Vma) -> None:
    """mlock_vma_folio(), as __folio_add_anon_rmap() and folio_add_file_rmap_ptes()
    call it: only an order-0 folio mapped into a VM_LOCKED VMA is mlocked here (a
    large folio is left to reclaim, "not easy to check whether fully mapped")."""
    if vma.flags & VM_LOCKED and not mem.folio_test_large(head):
        mem.mlock_folio(head)


def munlock_vma_folio(mem: PhysMem, head: int, vma: Vma, pmd: bool = False) -> None:
    """munlock_vma_folio() at the end of __folio_remove_rmap(): every unmap from a
    VM_LOCKED VMA munlocks the folio (PTE or PMD, small or large).  6.1's
    munlock_vma_page() skips PTE unmaps of a large folio
    (``facts.mlock_pte_mapped_large_folios`` False)."""
    if not vma.flags & VM_LOCKED:
        return
    if pmd or not mem.folio_test_large(head) or mem.facts.mlock_pte_mapped_large_folios:
        mem.munlock_folio(head)


def try_to_unmap_pte(mem: PhysMem, table: PteTable, i: int, head: int) -> None:
    """try_to_unmap_one() (mm/rmap.c) of one PTE, ``table`` index ``i``, that maps a
    page of the folio ``head``: the entry cleared, a dirty PTE dirtying the folio, the
    rmap and the mapping's reference dropped."""
    bits = int(table.bits[i])
    pfn = int(table.pfn[i])
    table.clear(i)
    if bits & PTE_DIRTY:
        mem.folio_mark_dirty(head)
    mem.folio_remove_rmap_ptes(head, pfn, 1)
    mem.folio_put(head)
