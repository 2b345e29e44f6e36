"""hugetlb pages: MAP_HUGETLB mappings of the boot pool (mm/hugetlb.c, fs/hugetlbfs/inode.c).

A ``MAP_HUGETLB | MAP_ANONYMOUS`` mmap() maps a new unlinked hugetlbfs inode
(ksys_mmap_pgoff() -> hugetlb_file_setup(), name ``/anon_hugepage``) whose
pages come from the pool of the default huge page size the kernel reserved at
boot (``hugepages=N``: :attr:`sim.arch.Arch.hugetlb_pages`).  The model maps
a huge page with the leaf of the level it lives at (a PMD on x86_64 and on
powerpc radix, the only case the model follows: :class:`HugePmd`), and every
path that meets a hugetlb VMA hands over to this module:

* faults: hugetlb_fault() -> hugetlb_no_page() (a whole zeroed huge page from
  the pool; private: a new anonymous, exclusive folio; shared: a page-cache
  folio of the inode) and hugetlb_wp() (reuse when mapped once, else copy);
* fork: copy_hugetlb_page_range() (private: shared read-only, COW later;
  shared VMAs have no anon_vma, vma_needs_copy() skips them);
* zapping: __unmap_hugepage_range() (munmap, exit, MADV_DONTNEED);
* the pool: struct hstate's free and reserved counts, reservations made at
  mmap() (hugetlb_reserve_pages()), consumed by faults, released when the
  owner's VMA closes (hugetlb_vm_op_close()) or the inode dies
  (remove_inode_hugepages() -> hugetlb_unreserve_pages()).

Folio state (include/linux/hugetlb.h, mm/rmap.c): the folio is the page type
``hugetlb`` (``PhysMem.hugetlb``: kpageflags KPF_HUGE on head and tails, never
THP, never on an LRU), mapped only as a whole: hugetlb_add_new_anon_rmap() /
hugetlb_add_file_rmap() / hugetlb_remove_rmap() count ``_entire_mapcount``
and ``_large_mapcount``, each page's ``_mapcount`` stays -1 (so kpagecount =
folio_precise_page_mapcount() = the entire mapcount on every page).  The
refcount is one per mapping plus, for a page-cache folio,
folio_nr_pages() (__filemap_add_folio()).  Anonymous folios carry
PG_anon_exclusive on the head while mapped once, never PG_swapbacked;
page-cache folios get PG_dirty (hugetlb_add_to_page_cache()).

What the model does not follow raises :class:`~sim.mm.syscall.NotModelled`
(the run reports a model error, never a prediction): a pool that would run
short (ENOMEM at mmap(), SIGBUS at a fault, unmap_ref_private() of a COW by the
owner), huge pages that are not PMD leaves, and the ops a hugetlb VMA refuses
or treats apart (:func:`check_modelled_op`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sim.mm.memmap import PhysMem
from sim.mm.pageflags import PG, PG_ANON_EXCLUSIVE
from sim.mm.pagetable import HugePmd
from sim.mm.pte import PTE_DIRTY, PTE_PRESENT, PTE_WRITE, PTE_YOUNG
from sim.mm.rmap import anon_vma_prepare
from sim.mm.shmem import ShmemFile
from sim.mm.syscall import NotModelled, Signal
from sim.mm.vma import VM_MAYSHARE, VM_MAYWRITE, VM_SHARED, VM_WRITE, Vma

if TYPE_CHECKING:
    from sim.mm.mm_struct import MmStruct

__all__ = [
    "HUGETLB_ANON_PATH",
    "Hstate",
    "HugetlbFile",
    "check_modelled_op",
    "copy_hugetlb_page_range",
    "hugetlb_fault",
    "hugetlb_reserve_pages",
    "hugetlb_vm_op_close",
    "unmap_hugepage_range",
]

#: d_path() of a MAP_HUGETLB mapping's inode (hugetlb_file_setup(HUGETLB_ANON_FILE)).
HUGETLB_ANON_PATH = "/anon_hugepage (deleted)"


@dataclass
class Hstate:
    """struct hstate of the default huge page size: the boot pool's counts.

    ``order``: huge_page_order() (base pages per huge page = 1 << order);
    ``nr_huge_pages``: the pool (``hugepages=N``); ``free_huge_pages``: pages
    in the pool's free lists; ``resv_huge_pages``: free pages promised to
    mappings (hugetlb_acct_memory()).  The pool never grows (no overcommit:
    nr_overcommit_hugepages 0) and never shrinks.
    """

    order: int
    nr_huge_pages: int
    free_huge_pages: int = field(init=False)
    resv_huge_pages: int = 0
    #: The pages freed back to the pool, most recent last, as PG_dirty of each:
    #: enqueue_hugetlb_folio() puts a freed page at the head of the free list
    #: and dequeue_hugetlb_folio_node_exact() takes the head (LIFO), and
    #: free_huge_folio() leaves PG_dirty set (an anonymous folio zapped through a
    #: dirty entry, __unmap_hugepage_range()).  Below them lie the pages never
    #: used since the pool was filled, clean (the harness refills the guest's
    #: pool before each scenario: harness/hugetlb_pool.py).
    recycled: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.free_huge_pages = self.nr_huge_pages

    @property
    def nr_pages(self) -> int:
        """pages_per_huge_page()."""
        return 1 << self.order

    def available(self) -> int:
        """Free pages nobody holds a reservation for."""
        return self.free_huge_pages - self.resv_huge_pages

    def acct_memory(self, delta: int) -> None:
        """hugetlb_acct_memory(): take ``delta`` reservations (give back if negative).

        The kernel answers ENOMEM when the pool cannot promise them
        (gather_surplus_pages() with no overcommit, then the cpuset check);
        the model does not predict that: NotModelled.
        """
        if delta > 0 and self.available() < delta:
            raise NotModelled(
                f"hugetlb pool exhausted: {delta} reservations wanted, "
                f"{self.available()} free unreserved of {self.nr_huge_pages}"
            )
        self.resv_huge_pages += delta


class HugetlbFile(ShmemFile):
    """The hugetlbfs inode of one MAP_HUGETLB mapping: page cache by huge page index.

    ``cache`` maps a huge page index (pgoff >> huge_page_order()) to the head
    PFN of its folio (shared mappings only: a private one keeps its pages
    anonymous).  ``resv``: indices still reserved for this inode (shared
    mappings, hugetlb_reserve_pages() on the inode's resv_map) or for the
    owner of a private mapping (the VMA's resv_map, HPAGE_RESV_OWNER);
    ``owner``: the mm that made the private mapping (its children's VMAs own
    no reservation: reset_vma_resv_huge_pages() in dup_mmap()).
    """

    def __init__(
        self, mem: PhysMem, hstate: Hstate, inode: int, nr_pages: int, shared: bool,
        owner: MmStruct,
    ) -> None:
        super().__init__(mem, inode, nr_pages, HUGETLB_ANON_PATH, anonymous=True)
        self.hstate = hstate
        self.shared = shared
        self.owner = owner
        self.resv: set[int] = set()

    def __repr__(self) -> str:
        return f"HugetlbFile({self.nr_pages} pages, {'shared' if self.shared else 'private'})"

    def truncate(self) -> None:
        """The inode dies (its last VMA is gone): remove_inode_hugepages() of all of it.

        Each cached folio leaves the page cache (hugetlb_delete_from_page_cache():
        its folio_nr_pages() references go; a folio nobody maps returns to
        the pool), and hugetlb_unreserve_pages() gives the reservations no
        fault consumed back.
        """
        mem = self.mem
        for head in self.cache.values():
            # hugetlb_delete_from_page_cache(): PG_dirty and PG_uptodate cleared.
            mem.clear(head, PG.dirty)
            mem.clear(head, PG.uptodate)
            mem.file_id[head] = 0
            hugetlb_folio_put(mem, self.hstate, head, self.hstate.nr_pages)
        self.cache.clear()
        self.hstate.acct_memory(-len(self.resv))
        self.resv.clear()

    def truncate_range(self, first: int, end: int) -> None:
        raise NotModelled("hole punching in a hugetlbfs inode (hugetlbfs_punch_hole())")


def _huge_size(mm: MmStruct) -> int:
    """huge_page_size() of the default hstate; NotModelled unless it is a PMD leaf."""
    hstate = mm.ctx.hstate
    if hstate is None:
        raise NotModelled("hugetlb pages on a machine without a hugetlb pool")
    size = mm.page_size << hstate.order
    if size != mm.pmd_size:
        raise NotModelled(f"hugetlb pages of {size >> 10} kB, not the PMD size")
    return size


def _file(vma: Vma) -> HugetlbFile:
    file = vma.file
    assert isinstance(file, HugetlbFile), f"{vma} is not a hugetlb mapping"
    return file


def hugetlb_index(vma: Vma, addr: int, hsize: int) -> int:
    """vma_hugecache_offset(): the huge page index of ``addr`` in the VMA's inode."""
    return ((addr - vma.start) // hsize) + (vma.pgoff * (1 << vma.page_shift)) // hsize


# ---------------------------------------------------------------------------
# mmap: the reservation (fs/hugetlbfs/inode.c hugetlbfs_file_mmap(), mm/hugetlb.c)
# ---------------------------------------------------------------------------


def hugetlb_reserve_pages(mm: MmStruct, file: HugetlbFile, vma: Vma) -> None:
    """hugetlb_reserve_pages() for a new VMA (no MAP_NORESERVE).

    Shared: the inode's resv_map takes every index not yet reserved or
    cached; private: the mapping's own resv_map (its owner) takes every
    index.  The pool promises that many pages (hugetlb_acct_memory()).
    """
    hsize = _huge_size(mm)
    hstate = file.hstate
    first = hugetlb_index(vma, vma.start, hsize)
    indices = set(range(first, first + (vma.end - vma.start) // hsize))
    if file.shared:
        indices -= file.resv | set(file.cache)
    hstate.acct_memory(len(indices))
    file.resv |= indices


def hugetlb_vm_op_close(mm: MmStruct, vma: Vma) -> None:
    """hugetlb_vm_op_close(): the owner's private VMA gives back what no fault consumed.

    ``reserve = (end - start) - region_count(resv, start, end)``: the indices
    of the closing range still reserved go (hugetlb_acct_memory(-reserve)).
    A shared mapping's reservations belong to the inode (released when it
    dies, :meth:`HugetlbFile.truncate`); a child's VMA owns none.
    """
    if not vma.hugetlb:
        return
    file = _file(vma)
    if file.shared or mm is not file.owner:
        return
    hsize = mm.page_size << file.hstate.order
    first = hugetlb_index(vma, vma.start, hsize)
    closing = {i for i in file.resv if first <= i < first + (vma.end - vma.start) // hsize}
    file.resv -= closing
    file.hstate.acct_memory(-len(closing))


# ---------------------------------------------------------------------------
# The pool (alloc_hugetlb_folio(), free_huge_folio())
# ---------------------------------------------------------------------------


def alloc_hugetlb_folio(mm: MmStruct, vma: Vma, index: int, avoid_reserve: bool) -> int:
    """alloc_hugetlb_folio(): a huge page off the free list, refcount 1, zeroed; its head PFN.

    It consumes the VMA's reservation for ``index`` when there is one
    (vma_needs_reservation(): the inode's for a shared mapping, the owner's
    for a private one) unless ``avoid_reserve`` (a COW by the owner);
    otherwise it needs a free page nobody reserved, else the kernel fails the
    fault (-ENOSPC: SIGBUS), which the model does not predict (NotModelled).
    """
    file = _file(vma)
    hstate = file.hstate
    reserved = not avoid_reserve and index in file.resv and (
        file.shared or mm is file.owner
    )
    if reserved:
        file.resv.discard(index)
        hstate.resv_huge_pages -= 1
    elif hstate.available() < 1:
        raise NotModelled("hugetlb pool exhausted: a fault without a reservation (SIGBUS)")
    hstate.free_huge_pages -= 1
    mem = mm.mem
    head = mem.alloc_folio(hstate.order)
    mem.hugetlb[head] = True
    if hstate.recycled and hstate.recycled.pop():
        mem.set(head, PG.dirty)  # what the page's last user left
    return head


def hugetlb_folio_put(mem: PhysMem, hstate: Hstate, head: int, nr: int = 1) -> None:
    """folio_put() of a hugetlb folio: the last reference returns it to the pool
    (free_huge_folio() -> enqueue_hugetlb_folio(); the model's frames are not
    reused, the guest's free list hands the page out again)."""
    last = mem.folio_ref_count(head) == nr
    dirty = mem.test(head, PG.dirty)
    mem.folio_put(head, nr)
    if last:
        hstate.free_huge_pages += 1
        hstate.recycled.append(dirty)


def _hugetlb_add_new_anon_rmap(mem: PhysMem, head: int) -> None:
    """hugetlb_add_new_anon_rmap(): entire and large mapcount 1, anon, PG_anon_exclusive."""
    mem.entire_mapcount[head] = 1
    mem.large_mapcount[head] = 1
    mem.anon[head] = True
    mem.set(head, PG_ANON_EXCLUSIVE)


def _hugetlb_add_file_rmap(mem: PhysMem, head: int) -> None:
    """hugetlb_add_file_rmap() (include/linux/rmap.h)."""
    mem.entire_mapcount[head] += 1
    mem.large_mapcount[head] += 1


def _hugetlb_remove_rmap(mem: PhysMem, head: int) -> None:
    """hugetlb_remove_rmap() (include/linux/rmap.h)."""
    mem.entire_mapcount[head] -= 1
    mem.large_mapcount[head] -= 1


def _copy_content(mem: PhysMem, dst: int, src: int, nr: int) -> None:
    """copy_user_large_folio(): every page's content."""
    mem.tag[dst : dst + nr] = mem.tag[src : src + nr]
    mem.tag_known[dst : dst + nr] = mem.tag_known[src : src + nr]


# ---------------------------------------------------------------------------
# Faults (hugetlb_fault(), hugetlb_no_page(), hugetlb_wp())
# ---------------------------------------------------------------------------


def _make_huge_pte(writable: bool) -> int:
    """make_huge_pte(): huge_pte_mkwrite(huge_pte_mkdirty()) if writable, else
    write-protected; pte_mkyoung() either way (the soft-dirty bit a hugetlb
    entry may carry is never read: pagemap_hugetlb_range() asks the VMA)."""
    bits = PTE_PRESENT | PTE_YOUNG
    return bits | PTE_WRITE | PTE_DIRTY if writable else bits


def hugetlb_fault(mm: MmStruct, vma: Vma, addr: int, write: bool) -> Signal | None:
    """hugetlb_fault(): hugetlb_no_page() for a none entry; hugetlb_wp() for a write to a
    write-protected one; else huge_ptep_set_access_flags() (young, dirty on a write)."""
    hsize = _huge_size(mm)
    haddr = addr - addr % hsize
    entry = mm.pt.get_pmd(haddr)
    if not isinstance(entry, HugePmd):
        return hugetlb_no_page(mm, vma, haddr, write)
    if write and not entry.bits & PTE_WRITE:
        hugetlb_wp(mm, vma, haddr, entry)
        return None
    entry.bits |= PTE_YOUNG | (PTE_DIRTY if write else 0)
    return None


def hugetlb_no_page(mm: MmStruct, vma: Vma, haddr: int, write: bool) -> Signal | None:
    """hugetlb_no_page(): map the inode's page, or a new zeroed huge page.

    A shared mapping (VM_MAYSHARE) looks the index up in the inode's page
    cache and adds a new page there (hugetlb_add_to_page_cache(): +nr
    references, PG_dirty); a private one gets a new anonymous exclusive folio
    (__vmf_anon_prepare() first).  The entry is writable only in a shared
    writable VMA; a write to a private one then runs hugetlb_wp() at once,
    which reuses the new exclusive folio.  Beyond i_size: SIGBUS.
    """
    hsize = _huge_size(mm)
    file = _file(vma)
    mem = mm.mem
    hstate = file.hstate
    index = hugetlb_index(vma, haddr, hsize)
    if index >= file.nr_pages >> hstate.order:
        return "SIGBUS"
    head = file.cache.get(index) if vma.flags & VM_MAYSHARE else None
    if head is not None:
        mem.folio_get(head)  # filemap_lock_hugetlb_folio()
    else:
        if not vma.flags & VM_MAYSHARE:
            anon_vma_prepare(mm.vmas, vma)
        head = alloc_hugetlb_folio(mm, vma, index, avoid_reserve=False)
        mem.set(head, PG.uptodate)  # folio_zero_user(), __folio_mark_uptodate()
        if vma.flags & VM_MAYSHARE:
            # hugetlb_add_to_page_cache(): __filemap_add_folio() takes nr
            # references; folio_mark_dirty() keeps the page in the cache.
            mem.folio_get(head, hstate.nr_pages)
            mem.file_id[head] = file.inode
            mem.index[head] = index << hstate.order
            mem.set(head, PG.dirty)
            file.cache[index] = head
    if vma.flags & VM_MAYSHARE:
        _hugetlb_add_file_rmap(mem, head)
    else:
        _hugetlb_add_new_anon_rmap(mem, head)
    writable = bool(vma.flags & VM_WRITE and vma.flags & VM_SHARED)
    entry = HugePmd(head, _make_huge_pte(writable))
    mm.pt.set_pmd(haddr, entry)
    if write and not vma.flags & VM_SHARED:
        hugetlb_wp(mm, vma, haddr, entry)
    return None


def hugetlb_wp(mm: MmStruct, vma: Vma, haddr: int, entry: HugePmd) -> None:
    """hugetlb_wp(): a write to a write-protected hugetlb entry.

    Shared: set_huge_ptep_writable().  Private: an anonymous folio mapped
    once is reused (PG_anon_exclusive set, writable); otherwise a new huge
    page takes a copy (alloc_hugetlb_folio(), the owner avoiding its
    reservation; __vmf_anon_prepare(); copy_user_large_folio()), the old
    folio loses this mapping and its reference (hugetlb_remove_rmap(),
    folio_put()), the new one is mapped exclusive, writable and dirty.
    """
    mem = mm.mem
    if vma.flags & VM_MAYSHARE:
        entry.bits |= PTE_WRITE | PTE_DIRTY | PTE_YOUNG
        return
    old = entry.pfn
    if mem.folio_mapcount(old) == 1 and mem.folio_test_anon(old):
        mem.set(old, PG_ANON_EXCLUSIVE)  # folio_move_anon_rmap() + SetPageAnonExclusive()
        entry.bits |= PTE_WRITE | PTE_DIRTY | PTE_YOUNG
        return
    file = _file(vma)
    hstate = file.hstate
    cow_from_owner = mm is file.owner and mem.folio_test_anon(old)
    if cow_from_owner and hstate.available() < 1:
        raise NotModelled("hugetlb COW by the owner with no free huge page (unmap_ref_private())")
    new = alloc_hugetlb_folio(mm, vma, hugetlb_index(vma, haddr, mm.page_size << hstate.order),
                              avoid_reserve=cow_from_owner)
    anon_vma_prepare(mm.vmas, vma)
    _copy_content(mem, new, old, hstate.nr_pages)
    mem.set(new, PG.uptodate)
    _hugetlb_remove_rmap(mem, old)
    _hugetlb_add_new_anon_rmap(mem, new)
    entry.pfn = new
    entry.bits = _make_huge_pte(True)
    hugetlb_folio_put(mem, hstate, old)


# ---------------------------------------------------------------------------
# fork (copy_hugetlb_page_range()) and zapping (__unmap_hugepage_range())
# ---------------------------------------------------------------------------


def copy_hugetlb_page_range(mm: MmStruct, child: MmStruct, vma: Vma) -> None:
    """copy_hugetlb_page_range(): every present entry is shared with the child.

    The folio gains a reference; a page-cache folio a file mapping
    (hugetlb_add_file_rmap()), an anonymous one a mapping and loses
    PG_anon_exclusive (hugetlb_try_dup_anon_rmap(): nothing is pinned).  In a
    COW mapping (private, may write) both entries are write-protected.
    """
    hsize = _huge_size(mm)
    mem = mm.mem
    cow = vma.flags & (VM_SHARED | VM_MAYWRITE) == VM_MAYWRITE  # is_cow_mapping()
    for addr in range(vma.start, vma.end, hsize):
        entry = mm.pt.get_pmd(addr)
        if not isinstance(entry, HugePmd):
            continue
        head = entry.pfn
        mem.folio_get(head)
        if not mem.folio_test_anon(head):
            _hugetlb_add_file_rmap(mem, head)
        else:
            # hugetlb_try_dup_anon_rmap(): PG_anon_exclusive cleared, then the
            # same two counters as a file mapping.
            mem.clear(head, PG_ANON_EXCLUSIVE)
            _hugetlb_add_file_rmap(mem, head)
        if cow:
            entry.bits &= ~PTE_WRITE  # huge_ptep_set_wrprotect()
        child.pt.set_pmd(addr, HugePmd(head, entry.bits))


def unmap_hugepage_range(mm: MmStruct, vma: Vma, start: int, end: int) -> None:
    """__unmap_hugepage_range() of [start, end) (huge-page aligned; bytes).

    Each present entry goes: a dirty entry dirties its folio
    (set_page_dirty()), the mapping and its reference go
    (hugetlb_remove_rmap(), tlb_remove_page_size()); a folio without
    references returns to the pool.  The owner of a private mapping who
    zaps an anonymous page gets its reservation back (the folio's
    restore_reserve flag and vma_add_reservation(): taken as applied at
    once, when the folio is freed the kernel's counts agree).
    """
    hsize = _huge_size(mm)
    mem = mm.mem
    file = _file(vma)
    hstate = file.hstate
    for addr in range(start - start % hsize, end, hsize):
        entry = mm.pt.get_pmd(addr)
        if not isinstance(entry, HugePmd):
            continue
        mm.pt.clear_pmd(addr)
        head = entry.pfn
        if entry.bits & PTE_DIRTY:
            # set_page_dirty() of any folio, anonymous ones too: a private
            # page a child unmaps stays PG_dirty in the parent.
            mem.set(head, PG.dirty)
        _hugetlb_remove_rmap(mem, head)
        if not file.shared and mm is file.owner and mem.folio_test_anon(head):
            index = hugetlb_index(vma, addr, hsize)
            if index not in file.resv:
                file.resv.add(index)
                hstate.resv_huge_pages += 1
        hugetlb_folio_put(mem, hstate, head)


# ---------------------------------------------------------------------------
# What else a hugetlb VMA meets
# ---------------------------------------------------------------------------


def check_modelled_op(mm: MmStruct, start: int, end: int, what: str) -> None:
    """NotModelled if [start, end) (bytes) meets a hugetlb VMA: for the ops the model does
    not follow on hugetlb mappings (mprotect: hugetlb_change_protection(); mremap;
    mlock; MAP_POPULATE/MAP_LOCKED; madvise other than DONTNEED; PAGEMAP_SCAN:
    pagemap_scan_hugetlb_entry())."""
    for vma in mm.vmas.overlapping(start, end):
        if vma.hugetlb:
            raise NotModelled(f"{what} on a hugetlb mapping")
