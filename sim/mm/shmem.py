"""tmpfs files and shared anonymous memory: shmem page caches (mm/shmem.c).

Every "file" of a scenario lives on tmpfs (the guest's rootfs), and shared
anonymous memory is an unlinked shmem file (shmem_zero_setup()); both keep
their pages in a page cache indexed by page offset.  The page cache maps each
index to its page, so a large folio (a huge shmem folio, :mod:`sim.mm.shmem_thp`)
fills one entry per page; with the boot knobs (shmem_enabled never) every
shmem folio is order 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from sim.mm.memmap import PhysMem
from sim.mm.pageflags import PG

__all__ = ["SHMEM_SETUP_MODE", "ShmemFile", "ShmemSigbus"]


class ShmemSigbus(Exception):
    """A fault beyond i_size: shmem_get_folio_gfp() returns -EINVAL -> VM_FAULT_SIGBUS."""


#: i_mode permission bits of an inode __shmem_file_setup() makes (memfd_create(),
#: shared anonymous memory): S_IRWXUGO, no umask.
SHMEM_SETUP_MODE = 0o777


class ShmemFile:
    """One shmem inode: its size, owner and mode, and page cache (index -> PFN).

    ``uid``/``gid`` are i_uid/i_gid (the creator's fsuid/fsgid,
    inode_init_owner()); ``mode`` the permission bits of i_mode.
    """

    def __init__(
        self, mem: PhysMem, inode: int, nr_pages: int, name: str, anonymous: bool,
        unlinked: bool = False, *, uid: int = 0, gid: int = 0, mode: int = SHMEM_SETUP_MODE,
    ) -> None:
        self.mem = mem
        self.uid = uid
        self.gid = gid
        self.mode = mode
        self.inode = inode
        self.nr_pages = nr_pages  # i_size in pages
        self.name = name
        self.anonymous = anonymous
        #: No name and no descriptor keeps it once its VMAs are gone (a memfd
        #: closed after mmap()): it dies with its last VMA, as anonymous ones do.
        self.unlinked = unlinked or anonymous
        self.cache: dict[int, int] = {}
        #: File references held by VMAs (get_file() per VMA, in any process);
        #: an unlinked anonymous object dies with the last one (fput() ->
        #: shmem_evict_inode()).  Not a mapcount: it counts VMAs, not pages.
        self.vma_refs = 0

    def __repr__(self) -> str:
        return f"ShmemFile({self.name!r}, {self.nr_pages} pages)"

    def _alloc_and_add(self, index: int, order: int = 0) -> int:
        """shmem_alloc_and_add_folio(): a new folio of ``order`` in the page cache at
        ``index`` rounded down to the order; the page at ``index`` is returned.

        The folio comes back with the allocation reference (the caller's) plus
        the page cache's, one per page (shmem_add_to_page_cache():
        folio_ref_add(nr)), with PG_swapbacked set and queued for the LRU
        (folio_add_lru(); a large folio drains the batch at once).  A large one
        is rmappable (page_rmappable_folio() in shmem_alloc_folio()).
        """
        mem = self.mem
        nr = 1 << order
        first = index - index % nr
        head = mem.alloc_folio(order)
        mem.set(head, PG.swapbacked)
        if order:
            mem.set(head, PG.large_rmappable)
        mem.file_id[head : head + nr] = self.inode
        mem.index[head : head + nr] = range(first, first + nr)
        mem.folio_get(head, nr)  # the page cache references
        mem.folio_add_lru(head)
        for i in range(nr):
            self.cache[first + i] = head + i
        return head + index - first

    def write_initial(self, tags: Sequence[int | None]) -> None:
        """The agent creates the file with one write() per page.

        shmem_write_begin() -> shmem_get_folio(SGP_WRITE) allocates each page
        and sets PG_referenced on it (shmem_get_folio_gfp(): ``if (sgp ==
        SGP_WRITE) folio_set_referenced()``); shmem_write_end() marks it
        uptodate and dirty and drops the caller's reference, leaving the page
        cache's.  A second write() to a page would find it referenced and
        activate it (folio_mark_accessed()), so each page is written once.
        The agent then drains the LRU batches (sim/MODEL.md), so every page is
        on the LRU before it is mapped: lru_add_drain() here too.
        """
        mem = self.mem
        for index, tag in enumerate(tags):
            pfn = self._alloc_and_add(index)
            mem.set(pfn, PG.referenced)
            mem.set(pfn, PG.uptodate)
            mem.folio_mark_dirty(pfn)
            mem.write_tag(pfn, tag)
            mem.folio_put(pfn)
        mem.lru_add_drain()
        self.nr_pages = max(self.nr_pages, len(tags))

    def check_index(self, index: int) -> None:
        """shmem_get_folio_gfp(SGP_CACHE): -EINVAL (SIGBUS) for a page at or beyond i_size."""
        if index >= self.nr_pages:
            raise ShmemSigbus(f"{self.name}: page {index} is beyond the end of the file")

    def get_folio_for_fault(self, index: int, order: int = 0) -> int:
        """shmem_fault() -> shmem_get_folio_gfp(SGP_CACHE): the page at ``index``, with a
        reference on its folio for the caller.

        A cached page is returned as is (no folio_mark_accessed() for
        SGP_CACHE); a hole is filled with a new zeroed, uptodate, clean folio
        of ``order`` (the caller's choice: :func:`sim.mm.shmem_thp.shmem_fault_order`).
        Beyond i_size the fault is SIGBUS.
        """
        self.check_index(index)
        pfn = self.cache.get(index)
        if pfn is not None:
            self.mem.folio_get(self.mem.page_folio(pfn))
            return pfn
        pfn = self._alloc_and_add(index, order)
        self.mem.set(self.mem.page_folio(pfn), PG.uptodate)  # cleared and folio_mark_uptodate()
        return pfn

    def cached_uptodate(self, index: int) -> int | None:
        """The page next_uptodate_folio() (fault-around) would map, or None."""
        if index >= self.nr_pages:
            return None
        pfn = self.cache.get(index)
        if pfn is None or not self.mem.test(self.mem.page_folio(pfn), PG.uptodate):
            return None
        return pfn

    def cached_in(self, first: int, end: int) -> bool:
        """xa_find() over indices [first, end): is any page cached there?"""
        return any(i in self.cache for i in range(first, end))

    def remove_clean_folio(self, pfn: int) -> None:
        """__remove_mapping() in reclaim: a clean, unmapped folio leaves the page cache and
        its reference goes (the folio is freed)."""
        index = int(self.mem.index[pfn])
        assert self.cache.get(index) == pfn and not self.mem.folio_test_large(pfn)
        del self.cache[index]
        self.mem.file_id[pfn] = 0
        self.mem.folio_put(pfn)

    def delete_from_page_cache(self, head: int) -> None:
        """truncate_inode_folio() -> filemap_remove_folio(): the folio's pages leave the
        page cache and its references there go (one per page)."""
        mem = self.mem
        nr = mem.folio_nr_pages(head)
        first = int(mem.index[head])
        for i in range(nr):
            del self.cache[first + i]
        mem.file_id[head : head + nr] = 0
        mem.folio_put(head, nr)

    def truncate_range(self, first: int, end: int) -> None:
        """shmem_truncate_range() of pages [first, end): each folio wholly inside leaves
        the page cache; i_size stays (FALLOC_FL_KEEP_SIZE).  A large folio only
        partly inside must have been split before (shmem_undo_range() ->
        truncate_inode_partial_folio(): :func:`sim.mm.shmem_thp.split_partial_folios`)."""
        mem = self.mem
        heads = sorted({mem.page_folio(pfn) for i, pfn in self.cache.items() if first <= i < end})
        for head in heads:
            index = int(mem.index[head])
            assert first <= index and index + mem.folio_nr_pages(head) <= end, "split first"
            self.delete_from_page_cache(head)

    def truncate(self) -> None:
        """shmem_truncate_range() of everything: each folio leaves the page cache."""
        mem = self.mem
        for head in sorted({mem.page_folio(pfn) for pfn in self.cache.values()}):
            self.delete_from_page_cache(head)
