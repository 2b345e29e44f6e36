"""Page-table entry bits, and the rules a PTE and a huge PMD leaf share.

The model keeps its own software view of an entry, not an architecture's
hardware layout: :class:`PteFlags` names the bits, and a PTE table stores them
in a numpy column of :data:`PTE_DTYPE`.  A huge PMD leaf (:class:`HugePmd
<sim.mm.pagetable.HugePmd>`) carries the same bits, so each rule below serves
both paths, as the kernel's pte_*() and pmd_*() helpers mirror each other
(include/linux/pgtable.h, arch/x86/include/asm/pgtable.h,
arch/powerpc/include/asm/book3s/64/pgtable.h).

Layout of an entry word (32 bits):

* bits 0-7: present-entry flags (:class:`PteFlags`); bit 6 is kept for the
  userfaultfd write-protect bit (pte_uffd_wp()).
* bits 8-15: kept for non-present entry flags (pte_swp_exclusive(),
  pte_swp_soft_dirty(), pte_swp_uffd_wp(), PTE markers).
* bits 16-20: kept for a swap type (MAX_SWAPFILES_SHIFT = 5); a swap entry's
  offset would go in the table's PFN column.

The fault path works on plain ints (the ``PTE_*`` constants): IntFlag
arithmetic costs a microsecond per operation, which a million faults feel.
"""

from __future__ import annotations

from enum import IntFlag
from typing import Final

import numpy as np

from sim.mm.memmap import PhysMem
from sim.mm.pageflags import PG_ANON_EXCLUSIVE
from sim.mm.vma import VM_SHARED, VM_UFFD_WP, VM_WRITE, Vma

__all__ = [
    "PTE_CLEAR_SOFT_DIRTY",
    "PTE_DIRTY",
    "PTE_DTYPE",
    "PTE_MARKER_UFFD_WP",
    "PTE_MKOLD",
    "PTE_PRESENT",
    "PTE_SOFT_DIRTY",
    "PTE_SPECIAL",
    "PTE_SWAP",
    "PTE_SWP_EXCLUSIVE",
    "PTE_SWP_SOFT_DIRTY",
    "PTE_UFFD_WP",
    "PTE_WRITE",
    "PTE_YOUNG",
    "PteFlags",
    "can_change_writable",
    "change_protection_bits",
    "copy_present_entry",
    "hardware_access",
    "maybe_mkwrite",
    "mk_pte",
    "mkyoung_dirty_write",
    "pte_mkdirty",
    "set_accessed",
    "wp_can_reuse_anon",
]


class PteFlags(IntFlag):
    """The bits of a present entry the model keeps (PTE or huge PMD)."""

    #: pte_present() / pmd_present().
    PRESENT = 0x01
    #: pte_write(): the MMU allows stores.
    WRITE = 0x02
    #: pte_dirty(): set by the MMU on a store, or by pte_mkdirty().
    DIRTY = 0x04
    #: pte_young(): the MMU's accessed bit.
    YOUNG = 0x08
    #: pte_soft_dirty() (_PAGE_SOFT_DIRTY on x86, powerpc book3s).
    SOFT_DIRTY = 0x10
    #: pte_special(): the zero page; vm_normal_page() returns NULL for it.
    SPECIAL = 0x20


#: pte_uffd_wp(): the userfaultfd write-protect bit of a present entry (bit 6, as the
#: layout above keeps it); pte_mkuffd_wp() also clears WRITE (sim/mm/userfaultfd.py).
PTE_UFFD_WP: Final = 0x40
#: A non-present entry holding the PTE marker PTE_MARKER_UFFD_WP (make_pte_marker():
#: an unpopulated page write-protected by userfaultfd; frame column 0).  Bit 12, clear
#: of the swap entry bits (0x100-0x400) and the swap type (bits 16-20).
PTE_MARKER_UFFD_WP: Final = 0x1000

#: The column type of a PTE table's entries: room for the layout above.
PTE_DTYPE: Final = np.uint32
_ALL = (1 << 32) - 1

PTE_PRESENT: Final = int(PteFlags.PRESENT)
PTE_WRITE: Final = int(PteFlags.WRITE)
PTE_DIRTY: Final = int(PteFlags.DIRTY)
PTE_YOUNG: Final = int(PteFlags.YOUNG)
PTE_SOFT_DIRTY: Final = int(PteFlags.SOFT_DIRTY)
PTE_SPECIAL: Final = int(PteFlags.SPECIAL)

#: is_swap_pte(): a non-present, non-none entry holding a swap entry (swp_entry_to_pte());
#: its swap offset is in the table's PFN column, its type (always 0: one device) in bits 16-20.
PTE_SWAP: Final = 0x100
#: pte_swp_exclusive(): the page was PageAnonExclusive when try_to_unmap_one() swapped it.
PTE_SWP_EXCLUSIVE: Final = 0x200
#: pte_swp_soft_dirty(): the present entry was soft-dirty (pte_swp_mksoft_dirty()).
PTE_SWP_SOFT_DIRTY: Final = 0x400

#: ``bits & PTE_MKOLD``: pte_mkold() / pmd_mkold().
PTE_MKOLD: Final = ~PTE_YOUNG & _ALL
#: ``bits & PTE_CLEAR_SOFT_DIRTY``: clear_soft_dirty() and clear_soft_dirty_pmd()
#: (fs/proc/task_mmu.c): pte_wrprotect() and pte_clear_soft_dirty().
PTE_CLEAR_SOFT_DIRTY: Final = ~(PTE_WRITE | PTE_SOFT_DIRTY) & _ALL


def pte_mkdirty(soft_dirty: bool) -> int:
    """The bits pte_mkdirty()/pmd_mkdirty() add.

    x86 and powerpc book3s set _PAGE_SOFT_DIRTY with the dirty bit;
    ``soft_dirty`` is whether the machine has soft-dirty at all
    (:attr:`MachineContext.soft_dirty <sim.mm.mm_struct.MachineContext.soft_dirty>`).
    """
    return PTE_DIRTY | PTE_SOFT_DIRTY if soft_dirty else PTE_DIRTY


def mk_pte(vma: Vma, soft_dirty: bool) -> int:
    """mk_pte(page, vma->vm_page_prot): present and young, writable per vm_page_prot.

    The base protections carry the accessed bit on x86 and powerpc; they
    grant write only to shared writable mappings without write-notify
    (:meth:`Vma.page_prot_writable <sim.mm.vma.Vma.page_prot_writable>`).
    """
    bits = PTE_PRESENT | PTE_YOUNG
    if vma.page_prot_writable(soft_dirty):
        bits |= PTE_WRITE
    return bits


def maybe_mkwrite(bits: int, vma: Vma) -> int:
    """maybe_mkwrite() / maybe_pmd_mkwrite(): writable if the VMA is VM_WRITE."""
    return bits | PTE_WRITE if vma.flags & VM_WRITE else bits


def mkyoung_dirty_write(bits: int, vma: Vma, soft_dirty: bool) -> int:
    """maybe_mkwrite(pte_mkdirty(pte_mkyoung(entry)), vma): the entry a write fault leaves.

    wp_page_reuse(), wp_page_copy(), set_pte_range() for a write (mm/memory.c);
    do_huge_pmd_wp_page() reuse and do_huge_pmd_anonymous_page() with the
    pmd_*() twins (mm/huge_memory.c).
    """
    return maybe_mkwrite(bits | PTE_YOUNG | pte_mkdirty(soft_dirty), vma)


def set_accessed(bits: int, write: bool, soft_dirty: bool) -> int:
    """The tail of handle_pte_fault() and huge_pmd_set_accessed(): young, dirty on a write."""
    return bits | PTE_YOUNG | pte_mkdirty(soft_dirty) if write else bits | PTE_YOUNG


def hardware_access(bits: int, write: bool) -> int | None:
    """What the MMU does to a PTE or huge PMD on an access: the new bits, or None to fault.

    A present entry that permits the access gets the accessed bit (and
    dirty on a store; never soft-dirty, which only pte_mkdirty() sets).
    """
    if not bits & PTE_PRESENT or (write and not bits & PTE_WRITE):
        return None
    return bits | PTE_YOUNG | PTE_DIRTY if write else bits | PTE_YOUNG


def wp_can_reuse_anon(mem: PhysMem, page: int, pmd_mapped: bool) -> bool:
    """Whether a write fault may reuse an anonymous page instead of copying it.

    do_wp_page() and do_huge_pmd_wp_page() (mm/memory.c, mm/huge_memory.c)
    reuse a PageAnonExclusive page; otherwise the folio must hold only the
    faulting mapping's reference.  A PTE-mapped large folio is never reused
    since 6.9 (wp_can_reuse_anon_folio(); before, facts.cow_reuses_large_anon_folio:
    a lone reference reuses it too); a PMD-mapped one is judged whole; a KSM
    folio never (wp_can_reuse_anon_folio()).  The
    caller sets PG_anon_exclusive when this says yes.
    """
    if mem.test(page, PG_ANON_EXCLUSIVE):
        return True
    head = mem.page_folio(page)
    large_pte_mapped = mem.folio_test_large(head) and not pmd_mapped
    if large_pte_mapped and not mem.facts.cow_reuses_large_anon_folio:
        return False
    if mem.ksm[head]:
        return False  # folio_test_ksm(): a KSM page is always copied
    return mem.folio_ref_count(head) == 1


def can_change_writable(
    vma: Vma, bits: int, page: int | None, mem: PhysMem, tracking: bool
) -> bool:
    """can_change_pte_writable() / can_change_pmd_writable() (mm/mprotect.c).

    ``page`` is vm_normal_page() (None for a zero page); ``tracking`` is
    vma_soft_dirty_enabled(): then an entry without soft-dirty stays
    read-only so that the next write is seen; so does a uffd-wp entry of a
    VMA in wp mode (userfaultfd_pte_wp()).  Private: only an exclusive
    anonymous page; shared: only a dirty entry.
    """
    if tracking and not bits & PTE_SOFT_DIRTY:
        return False
    if bits & PTE_UFFD_WP and vma.flags & VM_UFFD_WP:
        return False  # userfaultfd_pte_wp(): the write must fault
    if not vma.flags & VM_SHARED:
        return (
            page is not None
            and mem.folio_test_anon(mem.page_folio(page))
            and mem.test(page, PG_ANON_EXCLUSIVE)
        )
    return bool(bits & PTE_DIRTY)


def change_protection_bits(
    bits: int,
    vma: Vma,
    page: int | None,
    mem: PhysMem,
    prot_write: bool,
    try_writable: bool,
    tracking: bool,
    mkyoung: bool = False,
) -> int:
    """change_pte_range() / change_huge_pmd(): a present entry under the VMA's new protections.

    pte_modify() keeps PFN, dirty, young and soft-dirty; write follows the new
    vm_page_prot (``prot_write``), and with MM_CP_TRY_CHANGE_WRITABLE
    (``try_writable``) an entry :func:`can_change_writable` accepts becomes
    writable at once.  ``mkyoung``: the architecture's pte_modify() ORs in
    the accessed bit (``Arch.modify_sets_young``: powerpc book3s 64).
    """
    write = prot_write
    if try_writable and not write and vma.flags & VM_WRITE:
        write = can_change_writable(vma, bits, page, mem, tracking)
    if mkyoung:
        bits |= PTE_YOUNG
    return bits | PTE_WRITE if write else bits & ~PTE_WRITE


def copy_present_entry(bits: int, vma: Vma) -> tuple[int, int]:
    """copy_present_ptes() / copy_huge_pmd() at fork: (parent's bits, child's bits).

    A COW mapping write-protects the entry in both processes
    (is_cow_mapping()); the child's entry is old (pte_mkold()), and clean in a
    shared mapping (pte_mkclean()).
    """
    if vma.is_cow_mapping():
        bits &= ~PTE_WRITE
    child = bits & PTE_MKOLD
    if vma.flags & VM_SHARED:
        child &= ~PTE_DIRTY
    return bits, child
