"""Kernel samepage merging: what ksmd's full scans decide (mm/ksm.c of 6.12).

The model runs whole scans only (the guest's ``ksm`` step makes ksmd do
exactly that: sysfs ``pages_to_scan`` high enough that ksm_do_scan() always
ends at the end of a full scan, and ksmd asleep between scans; see
harness/agent/ops.c ``op_ksm_scan``).  State that outlives a scan, as the
kernel keeps it:

* the mm list (``ksm_mm_head``): an mm joins at its first MADV_MERGEABLE
  (__ksm_enter(), behind the scan cursor, which is at the list head between
  scans: so at the tail) or at fork from a registered parent (ksm_fork(),
  called by dup_mmap() before any VMA is copied); it leaves when a scan finds
  no VM_MERGEABLE VMA in it (scan_get_next_rmap_item(): ``ksm_scan.address ==
  0``, MMF_VM_MERGEABLE cleared) or at exit (__ksm_exit(); the slot is freed
  by the next scan before it looks at any page).
* per mm, one rmap_item per address that held an anonymous page in a
  VM_MERGEABLE VMA at the last scan (get_next_rmap_item() frees the items of
  addresses passed without a page, remove_trailing_rmap_items() the rest),
  with its ``oldchecksum``, smart-scan ``age`` and ``remaining_skips``, and
  the stable node it hangs off (stable_tree_append()).
* the stable tree: one KSM folio per content (stable_tree_insert()); a node
  whose folio was freed is stale and dropped when met (ksm_get_folio()).
* the unstable tree lives for one scan (root_unstable_tree reset at its start).

A page's content is what :meth:`PhysMem.content` says; checksums
(calc_checksum(), xxhash) and memcmp_pages() are taken as equal exactly when
contents are equal.  Paths the model does not follow raise
:class:`~sim.mm.syscall.NotModelled`: large folios in a mergeable VMA
(try_to_merge_one_page() splits them), a stable node chain whose choice of dup
depends on time (stable_node_dup()), a failed second half of
try_to_merge_two_pages() (break_cow()).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sim.mm.memmap import FrameState
from sim.mm.pageflags import PG, PG_ANON_EXCLUSIVE
from sim.mm.pagetable import HugePmd, PteTable
from sim.mm.pte import PTE_DIRTY, PTE_PRESENT, PTE_SOFT_DIRTY, PTE_SPECIAL, PTE_WRITE, mk_pte
from sim.mm.pte import pte_mkdirty as pte_mkdirty_bits
from sim.mm.rmap import anon_vma_prepare, folio_add_lru_vma, mlock_vma_folio, munlock_vma_folio
from sim.mm.syscall import NotModelled
from sim.mm.vma import VM_MERGEABLE, Vma

if TYPE_CHECKING:
    from sim.mm.memmap import PhysMem
    from sim.mm.mm_struct import MmStruct

__all__ = ["KSM_MAX_PAGE_SHARING", "Ksm", "RmapItem", "break_ksm_range", "is_ksm_zero_pte"]

#: ksm_max_page_sharing (sysfs max_page_sharing, default 256).
KSM_MAX_PAGE_SHARING = 256
#: rmap_age_t is a u8: age stops at U8_MAX (should_skip_rmap_item()).
_AGE_MAX = 255

Content = tuple[int, int]


@dataclass(eq=False)
class RmapItem:
    """struct ksm_rmap_item: one scanned address of one mm."""

    mm: MmStruct
    address: int
    #: rmap_item->oldchecksum; None is the zeroed item's 0, which no page's
    #: xxhash is taken to be.
    oldchecksum: Content | None = None
    #: rmap_item->age and ->remaining_skips (smart scan, 6.7+).
    age: int = 0
    remaining_skips: int = 0
    #: The KSM folio (head PFN) of the stable node this item hangs off
    #: (STABLE_FLAG, rmap_item->head), None when not in the stable tree.
    stable: int | None = None


@dataclass
class Ksm:
    """ksmd's state in one machine (the file-scope variables of mm/ksm.c)."""

    #: sysfs use_zero_pages (ksm_use_zero_pages, default false).
    use_zero_pages: bool = False
    #: sysfs smart_scan (ksm_smart_scan, default true since 6.7).
    smart_scan: bool = True
    #: ksm_scan.seqnr: full scans completed (sysfs full_scans).
    full_scans: int = 0
    #: The mm list in scan order (ksm_mm_head).
    mms: list[MmStruct] = field(default_factory=list)
    #: Per registered mm: address -> rmap_item (mm_slot->rmap_list).
    items: dict[MmStruct, dict[int, RmapItem]] = field(default_factory=dict)
    #: The stable tree: content -> KSM folios (head PFNs), several when the node is a
    #: chain (ksm_max_page_sharing reached), newest first.
    stable: dict[Content, list[int]] = field(default_factory=dict)
    #: Per KSM folio: the rmap_items hanging off its stable node (rmap_hlist_len).
    hlist: dict[int, list[RmapItem]] = field(default_factory=dict)
    #: The unstable tree of the scan under way: content -> rmap_item.
    _unstable: dict[Content, RmapItem] = field(default_factory=dict)

    # -- the mm list ----------------------------------------------------------

    def registered(self, mm: MmStruct) -> bool:
        """test_bit(MMF_VM_MERGEABLE, &mm->flags)."""
        return mm in self.items

    def enter(self, mm: MmStruct) -> None:
        """__ksm_enter(): at the tail (the cursor rests at the list head between scans)."""
        if mm not in self.items:
            self.mms.append(mm)
            self.items[mm] = {}

    def fork(self, child: MmStruct, parent: MmStruct) -> None:
        """ksm_fork() from dup_mmap(): a registered parent's child is registered too."""
        if self.registered(parent):
            self.enter(child)

    def exit(self, mm: MmStruct) -> None:
        """__ksm_exit(): the mm's rmap_items and slot go (by the next scan's start at the
        latest, before any page is looked at, so at once here)."""
        if mm not in self.items:
            return
        for item in self.items.pop(mm).values():
            self._remove_from_tree(item)
        self.mms.remove(mm)

    # -- the scan -------------------------------------------------------------

    def scan(self, mem: PhysMem) -> None:
        """One full scan: scan_get_next_rmap_item() + cmp_and_merge_page() over every
        registered mm in list order, its VM_MERGEABLE VMAs in address order, their
        anonymous pages ascending (ksm_next_page_pmd_entry(): vm_normal_page(), so
        never the zero page)."""
        if not self.mms:
            return  # ksmd_should_run() is false: no scan, full_scans stays
        mem.lru_add_drain()  # lru_add_drain_all() at the start of a scan
        self._unstable = {}
        for mm in list(self.mms):
            self._scan_mm(mm)
        self._unstable = {}
        self.full_scans += 1

    def _scan_mm(self, mm: MmStruct) -> None:
        items = self.items[mm]
        seen: dict[int, RmapItem] = {}
        any_mergeable = False
        for vma in mm.each_vma():
            if not vma.flags & VM_MERGEABLE:
                continue
            any_mergeable = True
            if vma.anon_vma is None:
                continue
            for addr in range(vma.start, vma.end, mm.page_size):
                page = _anon_page(mm, vma, addr)
                if page is None:
                    continue
                item = items.get(addr) or RmapItem(mm, addr)
                seen[addr] = item
                if self._should_skip(mm.mem, page, item):
                    continue
                self._cmp_and_merge_page(mm.mem, page, item)
        for addr, item in items.items():
            if addr not in seen:  # get_next_rmap_item(), remove_trailing_rmap_items()
                self._remove_from_tree(item)
        if not any_mergeable:
            # No VM_MERGEABLE VMA: the slot is freed, MMF_VM_MERGEABLE cleared.
            del self.items[mm]
            self.mms.remove(mm)
            for item in seen.values():
                self._remove_from_tree(item)
            return
        self.items[mm] = seen

    def _should_skip(self, mem: PhysMem, page: int, item: RmapItem) -> bool:
        """should_skip_rmap_item(): smart scan skips pages that did not merge for a while."""
        if not self.smart_scan or mem.ksm[mem.page_folio(page)]:
            return False
        age = item.age
        if age != _AGE_MAX:
            item.age += 1
        if age < 3:
            return False
        if not item.remaining_skips:
            item.remaining_skips = _skip_age(age)
            return False
        item.remaining_skips -= 1
        self._remove_from_tree(item)
        return True

    def _remove_from_tree(self, item: RmapItem) -> None:
        """remove_rmap_item_from_tree()."""
        if item.stable is not None:
            sharers = self.hlist.get(item.stable)
            if sharers is not None and item in sharers:
                sharers.remove(item)
            item.stable = None
        else:
            content = item.oldchecksum
            if content is not None and self._unstable.get(content) is item:
                del self._unstable[content]

    def _cmp_and_merge_page(self, mem: PhysMem, page: int, item: RmapItem) -> None:
        """cmp_and_merge_page()."""
        head = mem.page_folio(page)
        if mem.ksm[head]:
            if item.stable == head:
                return
        else:
            self._remove_from_tree(item)
            checksum = mem.content(page)
            if checksum is None:
                raise NotModelled(
                    f"KSM: the content of the page at {item.address:#x} is unknown to the model"
                )
            if item.oldchecksum != checksum:
                item.oldchecksum = checksum
                return
            if not self._try_to_merge_with_zero_page(mem, item, page):
                return
        kpage = self._stable_tree_search(mem, page)
        self._remove_from_tree(item)
        if kpage is not None:
            if self._try_to_merge_with_ksm_page(mem, item, page, kpage):
                self._append(item, kpage)
            return
        found = self._unstable_tree_search_insert(mem, item, page)
        if found is None:
            return
        tree_item, tree_page = found
        if self._try_to_merge_with_ksm_page(mem, item, page, None):
            if not self._try_to_merge_with_ksm_page(mem, tree_item, tree_page, page):
                raise NotModelled("KSM: break_cow() after a failed try_to_merge_two_pages()")
            self._stable_tree_insert(mem, page)
            self._append(tree_item, page)
            self._append(item, page)

    def _append(self, item: RmapItem, kpage: int) -> None:
        """stable_tree_append()."""
        item.stable = kpage
        self.hlist.setdefault(kpage, []).append(item)

    def _live_ksm(self, mem: PhysMem, kpage: int) -> bool:
        """ksm_get_folio(): the stable node's folio is still the KSM folio it was."""
        return bool(mem.state[kpage] == FrameState.INUSE and mem.ksm[kpage])

    def _stable_tree_search(self, mem: PhysMem, page: int) -> int | None:
        """stable_tree_search(): the page's own folio if it is KSM already (a KSM page
        forked), else a KSM folio of equal content whose node can take one more sharer
        (is_page_sharing_candidate(): 1..255 items), else None.

        Several KSM folios of one content form a stable node chain (stable_node_dup()):
        stale dups are dropped; of the candidates the kernel takes the first in the
        chain (newest first) within ksm_stable_node_chains_prune_millisecs (2 s) of the
        chain's last prune, else the one with the most sharers: a timing the model does
        not know, so it predicts only when both rules agree.
        """
        head = mem.page_folio(page)
        if mem.ksm[head]:
            return head
        content = mem.content(page)
        assert content is not None
        dups = [k for k in self.stable.get(content, []) if self._live_ksm(mem, k)]
        for dead in set(self.stable.get(content, [])) - set(dups):
            self.hlist.pop(dead, None)  # a stale stable node, pruned
        if dups:
            self.stable[content] = dups
        else:
            self.stable.pop(content, None)
            return None
        lengths = [len(self.hlist.get(k, ())) for k in dups]
        candidates = [i for i, n in enumerate(lengths) if 0 < n < KSM_MAX_PAGE_SHARING]
        if not candidates:
            return None  # not a page-sharing candidate: the unstable tree decides
        first = candidates[0]
        if any(lengths[i] > lengths[first] for i in candidates):
            raise NotModelled("KSM: which dup of a stable node chain takes a page depends "
                              "on the time since the chain's last prune (stable_node_dup())")
        return dups[first]

    def _stable_tree_insert(self, mem: PhysMem, kpage: int) -> None:
        """stable_tree_insert(): a new stable node for the new KSM folio; with a live KSM
        folio of the same content already there, the two form a stable node chain and
        the new dup goes first (stable_node_chain_add_dup(): hlist_add_head())."""
        content = mem.content(kpage)
        assert content is not None
        dups = [k for k in self.stable.get(content, []) if self._live_ksm(mem, k)]
        self.stable[content] = [kpage, *dups]
        self.hlist[kpage] = []

    def _unstable_tree_search_insert(
        self, mem: PhysMem, item: RmapItem, page: int
    ) -> tuple[RmapItem, int] | None:
        """unstable_tree_search_insert(): the item of equal content and its page, or the
        item is inserted.  A forked page meeting itself stops the search, uninserted."""
        content = mem.content(page)
        assert content is not None
        tree_item = self._unstable.get(content)
        if tree_item is None:
            self._unstable[content] = item
            return None
        tree_page = _mapped_anon_page(tree_item.mm, tree_item.address)
        if tree_page is None:
            raise NotModelled("KSM: an unstable tree item lost its page during the scan")
        if tree_page == page:
            return None
        if mem.ksm[mem.page_folio(tree_page)]:
            raise NotModelled("KSM: an unstable tree item's page became a KSM page")
        return tree_item, tree_page

    def _try_to_merge_with_zero_page(self, mem: PhysMem, item: RmapItem, page: int) -> bool:
        """try_to_merge_with_zero_page(): True when the caller must go on (err != 0)."""
        if not (self.use_zero_pages and item.oldchecksum == (0, 0)):
            return True
        vma = _find_mergeable_vma(item.mm, item.address)
        if vma is None:
            return False
        return not _try_to_merge_one_page(item.mm, vma, item.address, page, mem.zero_pfn)

    def _try_to_merge_with_ksm_page(
        self, mem: PhysMem, item: RmapItem, page: int, kpage: int | None
    ) -> bool:
        """try_to_merge_with_ksm_page(): True when merged."""
        vma = _find_mergeable_vma(item.mm, item.address)
        if vma is None:
            return False
        if not _try_to_merge_one_page(item.mm, vma, item.address, page, kpage):
            return False
        self._remove_from_tree(item)
        return True


def _skip_age(age: int) -> int:
    """skip_age()."""
    if age <= 3:
        return 1
    if age <= 5:
        return 2
    if age <= 8:
        return 4
    return 8


def _find_mergeable_vma(mm: MmStruct, addr: int) -> Vma | None:
    """find_mergeable_vma(): the VMA at ``addr`` if VM_MERGEABLE with an anon_vma."""
    if not mm.alive:
        return None
    vma = mm.vmas.vma_at(addr)
    if vma is None or not vma.flags & VM_MERGEABLE or vma.anon_vma is None:
        return None
    return vma


def _mapped_anon_page(mm: MmStruct, addr: int) -> int | None:
    """get_mergeable_page(): the anonymous page mapped at ``addr``, if any."""
    vma = _find_mergeable_vma(mm, addr)
    return None if vma is None else _anon_page(mm, vma, addr)


def _anon_page(mm: MmStruct, vma: Vma, addr: int) -> int | None:
    """ksm_next_page_pmd_entry() at one address: the normal anonymous page mapped there.

    A huge PMD or a large folio would be split by try_to_merge_one_page():
    not modelled.
    """
    entry = mm.pt.get_pmd(addr)
    if entry is None:
        return None
    mem = mm.mem
    if isinstance(entry, HugePmd):
        if mem.is_huge_zero_folio(entry.pfn):
            return None
        raise NotModelled("KSM: a PMD-mapped THP in a VM_MERGEABLE VMA (split_huge_page())")
    i = mm.pt.pte_index(addr)
    bits = int(entry.bits[i])
    if not bits & PTE_PRESENT or bits & PTE_SPECIAL:
        return None
    page = int(entry.pfn[i])
    head = mem.page_folio(page)
    if not mem.folio_test_anon(head):
        return None
    if mem.folio_test_large(head):
        raise NotModelled("KSM: a large folio in a VM_MERGEABLE VMA (split_huge_page())")
    return page


def _pte_of(mm: MmStruct, addr: int) -> tuple[PteTable, int]:
    table = mm.pt.get_pmd(addr)
    assert isinstance(table, PteTable)
    return table, mm.pt.pte_index(addr)


def _try_to_merge_one_page(
    mm: MmStruct, vma: Vma, addr: int, page: int, kpage: int | None
) -> bool:
    """try_to_merge_one_page(): True when merged (err == 0); ``addr`` is where ``vma``
    maps ``page`` (page_address_in_vma()).

    ``kpage`` None: the page becomes a KSM folio in place (folio_set_stable_node(),
    mark_page_accessed(), PG_dirty); else its PTE is replaced by ``kpage``
    (a KSM folio or the zero page) if the contents are identical.
    """
    mem = mm.mem
    if page == kpage:
        return True  # a KSM page forked
    head = mem.page_folio(page)
    if not mem.folio_test_anon(head):
        return False
    if not _write_protect_page(mm, addr, page):
        return False
    if kpage is None:
        mem.ksm[head] = True
        mem.folio_mark_accessed(head)
        mem.set(head, PG.dirty)
        return True
    if mem.content(page) != mem.content(kpage):  # pages_identical()
        return False
    _replace_page(mm, vma, addr, page, kpage)
    return True


def _write_protect_page(mm: MmStruct, addr: int, page: int) -> bool:
    """write_protect_page(): make the PTE read-only and clean, and the page shared.

    Only when the PTE is writable or dirty or the page PageAnonExclusive: then
    the folio must hold no reference beyond its mappings
    (folio_mapcount() + 1 + swapcache == refcount, the 1 being the scan's own;
    references of the per-CPU batches count: PhysMem.folio_batch_refs()),
    PG_anon_exclusive is cleared (folio_try_share_anon_rmap_pte()), a dirty PTE
    dirties the folio (folio_mark_dirty()), and the PTE loses dirty
    (pte_mkclean(), soft-dirty stays) and write.
    """
    mem = mm.mem
    head = mem.page_folio(page)
    table, i = _pte_of(mm, addr)
    if not table.present(i) or int(table.pfn[i]) != page:
        return False  # page_vma_mapped_walk() finds no PTE of the page there
    bits = int(table.bits[i])
    exclusive = mem.test(page, PG_ANON_EXCLUSIVE)
    if bits & (PTE_WRITE | PTE_DIRTY) or exclusive:
        # ksmd drains nothing within a scan: a folio that replace_page() just
        # munlocked (a VM_LOCKED VMA) still sits in the mlock batch, so another
        # mm's mapping of it does not merge in this scan.
        if mem.folio_mapcount(head) != mem.folio_ref_count(head) + mem.folio_batch_refs(head):
            return False
        if exclusive:
            mem.clear(page, PG_ANON_EXCLUSIVE)
        if bits & PTE_DIRTY:
            mem.folio_mark_dirty(head)
        table.bits[i] = bits & ~(PTE_DIRTY | PTE_WRITE)
    return True


def _replace_page(mm: MmStruct, vma: Vma, addr: int, page: int, kpage: int) -> None:
    """replace_page(): the PTE of ``page`` now maps ``kpage``.

    A KSM folio gets a reference and an anon rmap (not exclusive) and
    mk_pte(kpage, vma->vm_page_prot): young, read-only, clean, not
    soft-dirty.  The zero page (use_zero_pages) gets
    pte_mkdirty(pte_mkspecial()): dirty, so soft-dirty too, which is how
    break_ksm() knows a KSM-placed zero page (is_ksm_zero_pte()).  The old
    page loses its rmap and reference (freed if that was its last).
    """
    mem = mm.mem
    table, i = _pte_of(mm, addr)
    soft_dirty = mm.ctx.soft_dirty
    if kpage == mem.zero_pfn:
        bits = (mk_pte(vma, soft_dirty) & ~PTE_WRITE) | PTE_SPECIAL | pte_mkdirty_bits(soft_dirty)
    else:
        mem.folio_get(kpage)
        mem.folio_add_anon_rmap_ptes(kpage, kpage, 1, exclusive=False)
        mlock_vma_folio(mem, kpage, vma)
        bits = mk_pte(vma, soft_dirty) & ~PTE_WRITE
    table.set(i, kpage, bits)
    head = mem.page_folio(page)
    mem.folio_remove_rmap_ptes(head, page, 1)
    munlock_vma_folio(mem, head, vma)
    mem.folio_put(head)


def is_ksm_zero_pte(mm: MmStruct, bits: int, pfn: int) -> bool:
    """is_ksm_zero_pte(): the zero page with the dirty bit replace_page() gave it."""
    return bool(bits & PTE_SPECIAL and bits & PTE_DIRTY) and pfn == mm.mem.zero_pfn


def break_ksm_range(mm: MmStruct, vma: Vma, start: int, end: int) -> None:
    """unmerge_ksm_pages() for MADV_UNMERGEABLE: break_ksm() at each address of [start, end).

    A KSM page or a KSM-placed zero page takes an unshare fault
    (FAULT_FLAG_UNSHARE -> do_wp_page() -> wp_page_copy(): a KSM folio is never
    reused, wp_can_reuse_anon_folio()): a new exclusive anonymous copy (zeroed for
    the zero page), mapped mk_pte(): young, read-only, clean, soft-dirty if the old
    PTE was.
    """
    mem = mm.mem
    for addr in range(start, end, mm.page_size):
        entry = mm.pt.get_pmd(addr)
        if not isinstance(entry, PteTable):
            continue
        i = mm.pt.pte_index(addr)
        bits = int(entry.bits[i])
        if not bits & PTE_PRESENT:
            continue
        pfn = int(entry.pfn[i])
        if bits & PTE_SPECIAL:
            if not is_ksm_zero_pte(mm, bits, pfn):
                continue
            old = None
        else:
            head = mem.page_folio(pfn)
            if not mem.ksm[head] or mem.folio_test_large(head):
                continue
            old = pfn
        anon_vma_prepare(mm.vmas, vma)
        new = mem.alloc_folio(0)
        if old is not None:
            mem.copy_content(new, old)
        mem.set(new, PG.uptodate)
        mem.folio_add_new_anon_rmap(new, exclusive=True)
        folio_add_lru_vma(mem, new, vma)
        new_bits = mk_pte(vma, mm.ctx.soft_dirty) & ~PTE_WRITE
        if bits & PTE_SOFT_DIRTY:
            new_bits |= PTE_SOFT_DIRTY
        entry.set(i, new, new_bits)
        if old is not None:
            head = mem.page_folio(old)
            mem.folio_remove_rmap_ptes(head, old, 1)
            munlock_vma_folio(mem, head, vma)
            mem.folio_put(head)
