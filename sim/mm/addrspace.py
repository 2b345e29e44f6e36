"""One mm_struct: its VMAs and page tables, the fault paths and the mm syscalls.

Each method imitates the kernel function named in its docstring (mm/memory.c,
mm/huge_memory.c, mm/mmap.c, mm/vma.c, mm/mprotect.c, mm/madvise.c,
kernel/fork.c, fs/proc/task_mmu.c).  State is what the harness samples once
the per-CPU LRU batches are drained: batch references are not counted and
queued LRU moves are taken as done (see sim/MODEL.md).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Literal

from sim.arch import Arch
from sim.mm.facts import KernelFacts
from sim.mm.memmap import OutOfMemory, PhysMem
from sim.mm.pageflags import PG, PG_ANON_EXCLUSIVE
from sim.mm.pagetable import (
    PTE_DIRTY,
    PTE_PRESENT,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    PageTables,
    PteTable,
)
from sim.mm.shmem import ShmemFile, ShmemSigbus
from sim.mm.vma import (
    VM_ACCOUNT,
    VM_EXEC,
    VM_HUGEPAGE,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NOHUGEPAGE,
    VM_NORESERVE,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WRITE,
    AnonVma,
    Vma,
    VmaList,
)

__all__ = ["AddressSpace", "MmError", "Signal"]

Signal = Literal["SIGSEGV", "SIGBUS"]

_FALLBACK = "fallback"


class MmError(OSError):
    """A syscall the kernel would fail: carries the errno and a one-line reason."""

    errno: int

    def __init__(self, err: int, reason: str) -> None:
        super().__init__(err, f"{errno.errorcode.get(err, err)}: {reason}")
        self.reason = reason


@dataclass
class MachineContext:
    """What every address space of a machine shares."""

    arch: Arch
    facts: KernelFacts
    mem: PhysMem
    #: huge_zero_refcount > 0: the huge zero folio exists (get_huge_zero_page()).
    huge_zero_users: int = 0

    @property
    def soft_dirty(self) -> bool:
        """pte_mkdirty() also sets the soft-dirty bit and VM_SOFTDIRTY exists."""
        return self.facts.mem_soft_dirty and self.arch.soft_dirty

    @property
    def thp(self) -> bool:
        return self.facts.transparent_hugepage and self.arch.thp_level is not None


class AddressSpace:
    """An mm_struct."""

    def __init__(self, ctx: MachineContext) -> None:
        self.ctx = ctx
        self.arch = ctx.arch
        self.mem = ctx.mem
        self.vmas = VmaList(ctx.arch.page_shift)
        self.pt = PageTables(ctx.arch)
        self.page_size = ctx.arch.page_size
        self.task_size = ctx.arch.task_size
        self.pmd_size = self.pt.pmd_size
        self.thp_nr = ctx.arch.thp_pages
        self.huge_zero = False  # MMF_HUGE_ZERO_PAGE
        self.alive = True

    # ------------------------------------------------------------------
    # PTE constructors
    # ------------------------------------------------------------------

    def _mkdirty(self) -> int:
        """pte_mkdirty(): x86 and powerpc book3s set _PAGE_SOFT_DIRTY with the dirty bit."""
        return PTE_DIRTY | (PTE_SOFT_DIRTY if self.ctx.soft_dirty else 0)

    def _mk_pte(self, vma: Vma) -> int:
        """mk_pte(page, vma->vm_page_prot): present and young (the base protections
        carry the accessed bit on x86 and powerpc), writable only for shared
        writable mappings without write-notify."""
        bits = PTE_PRESENT | PTE_YOUNG
        if vma.page_prot_writable(self.ctx.soft_dirty):
            bits |= PTE_WRITE
        return bits

    def _mkwrite_dirty(self, vma: Vma, bits: int) -> int:
        """maybe_mkwrite(pte_mkdirty(entry), vma)."""
        bits |= self._mkdirty()
        if vma.flags & VM_WRITE:
            bits |= PTE_WRITE
        return bits

    # ------------------------------------------------------------------
    # User access: what the CPU does, and the fault when it cannot
    # ------------------------------------------------------------------

    def access(self, addr: int, write: bool, tag: int | None) -> Signal | None:
        """One load or store at ``addr``; the signal it raises, if any.

        The arch fault handler sends SIGSEGV without a VMA or when the VMA
        forbids the access (access_error()); otherwise handle_mm_fault()
        runs and the access is retried.  A present, permitting entry needs
        no fault: the MMU sets accessed (and dirty on a store).
        """
        vma = self.vmas.vma_at(addr)
        if vma is None:
            return "SIGSEGV"
        if write and not vma.flags & VM_WRITE:
            return "SIGSEGV"
        if not write and not vma.flags & (VM_READ | VM_WRITE | VM_EXEC):
            return "SIGSEGV"
        for _ in range(4):
            pfn = self._hardware_access(addr, write)
            if pfn is not None:
                if write:
                    self.mem.write_tag(pfn, tag)
                return None
            signal = self.handle_mm_fault(vma, addr, write)
            if signal is not None:
                return signal
        raise AssertionError(f"{addr:#x}: fault did not resolve the access")

    def _hardware_access(self, addr: int, write: bool) -> int | None:
        """The MMU's walk: the frame accessed, or None when it faults."""
        entry = self.pt.get_pmd(addr)
        if isinstance(entry, HugePmd):
            if write and not entry.write:
                return None
            entry.young = True
            if write:
                entry.dirty = True
            return entry.pfn + ((addr % self.pmd_size) >> self.arch.page_shift)
        if entry is None:
            return None
        i = self.pt.pte_index(addr)
        bits = int(entry.bits[i])
        if not bits & PTE_PRESENT or (write and not bits & PTE_WRITE):
            return None
        bits |= PTE_YOUNG | (PTE_DIRTY if write else 0)
        entry.bits[i] = bits
        return int(entry.pfn[i])

    def handle_mm_fault(self, vma: Vma, addr: int, write: bool) -> Signal | None:
        """__handle_mm_fault(): a huge PMD first where allowed, else handle_pte_fault()."""
        entry = self.pt.get_pmd(addr)
        if entry is None and self._thp_allowed(vma, addr):
            result = self.do_huge_pmd_anonymous_page(vma, addr, write)
            if result != _FALLBACK:
                return None
        elif isinstance(entry, HugePmd):
            if write and not entry.write:
                if self.wp_huge_pmd(vma, addr, entry) != _FALLBACK:
                    return None
            else:
                entry.young = True
                return None
        return self.handle_pte_fault(vma, addr, write)

    def handle_pte_fault(self, vma: Vma, addr: int, write: bool) -> Signal | None:
        """handle_pte_fault(): missing PTE -> do_pte_missing(); read-only -> do_wp_page()."""
        table = self.pt.get_pmd(addr)
        i = self.pt.pte_index(addr)
        if not isinstance(table, PteTable) or not table.present(i):
            if vma.anonymous:
                self.do_anonymous_page(vma, addr, write)
                return None
            return self.do_fault(vma, addr, write)
        if write and not table.bits[i] & PTE_WRITE:
            self.do_wp_page(vma, addr, table, i)
            return None
        bits = int(table.bits[i]) | PTE_YOUNG
        if write:
            bits |= self._mkdirty()
        table.bits[i] = bits
        return None

    # -- anonymous memory -------------------------------------------------

    def anon_vma_prepare(self, vma: Vma) -> None:
        """__anon_vma_prepare(): reuse a compatible neighbour's anon_vma or make one.

        find_mergeable_anon_vma() tries the next VMA, then the previous one;
        reusable_anon_vma() takes a neighbour's anon_vma only if its chain is
        singular and anon_vma_compatible() holds (adjacent, same file, flags
        equal but for VM_ACCESS_FLAGS and VM_SOFTDIRTY, contiguous pgoff).
        """
        if vma.anon_vma is not None:
            return
        prev, nxt = self.vmas.prev_next(vma.start, vma.end)
        ignore = VM_READ | VM_WRITE | VM_EXEC | VM_SOFTDIRTY

        def compatible(a: Vma, b: Vma) -> bool:
            return (
                a.end == b.start
                and a.file is b.file
                and not ((a.flags ^ b.flags) & ~ignore)
                and b.pgoff == a.pgoff + ((b.start - a.start) >> self.arch.page_shift)
            )

        for old, a, b in ((nxt, vma, nxt), (prev, prev, vma)):
            if old is None or a is None or b is None:
                continue
            if compatible(a, b) and old.anon_vma is not None and old.chain_len == 1:
                vma.anon_vma = old.anon_vma
                vma.chain_len = 1
                return
        vma.anon_vma = AnonVma()
        vma.chain_len = 1

    def do_anonymous_page(self, vma: Vma, addr: int, write: bool) -> None:
        """do_anonymous_page(): the zero page for a read, a new exclusive folio for a write.

        No anon_vma is made for a read (vmf_anon_prepare() comes after the
        zero-page branch); multi-size THP orders are all disabled by default,
        so alloc_anon_folio() gives order 0.
        """
        table = self.pt.pte_alloc(addr)
        i = self.pt.pte_index(addr)
        if not write:
            # pte_mkspecial(pfn_pte(my_zero_pfn(addr), vma->vm_page_prot))
            table.set(i, self.mem.zero_pfn, (self._mk_pte(vma) & ~PTE_WRITE) | PTE_SPECIAL)
            return
        self.anon_vma_prepare(vma)
        pfn = self.mem.alloc_folio(0)
        self.mem.set(pfn, PG.uptodate)
        bits = PTE_PRESENT | PTE_YOUNG
        if vma.flags & VM_WRITE:
            bits |= self._mkdirty() | PTE_WRITE  # pte_mkwrite(pte_mkdirty(entry))
        self.mem.folio_add_new_anon_rmap(pfn, exclusive=True)
        self.mem.folio_add_lru(pfn)
        table.set(i, pfn, bits)

    def do_wp_page(self, vma: Vma, addr: int, table: PteTable, i: int) -> None:
        """do_wp_page(): write to a present read-only PTE.

        Shared mapping: reuse (wp_page_shared()).  Private: reuse an anonymous
        page that is PageAnonExclusive or that wp_can_reuse_anon_folio()
        accepts (order 0, only our reference); otherwise copy (wp_page_copy()).
        """
        bits = int(table.bits[i])
        page = None if bits & PTE_SPECIAL else int(table.pfn[i])  # vm_normal_page()
        mem = self.mem
        if vma.flags & (VM_SHARED | VM_MAYSHARE):
            assert page is not None
            self.wp_page_reuse(vma, table, i)
            mem.folio_mark_dirty(mem.page_folio(page))  # fault_dirty_shared_page()
            return
        if page is not None:
            head = mem.page_folio(page)
            if mem.folio_test_anon(head) and (
                mem.test(page, PG_ANON_EXCLUSIVE) or self.wp_can_reuse_anon_folio(head)
            ):
                mem.set(page, PG_ANON_EXCLUSIVE)
                self.wp_page_reuse(vma, table, i)
                return
        self.wp_page_copy(vma, addr, table, i)

    def wp_can_reuse_anon_folio(self, head: int) -> bool:
        """wp_can_reuse_anon_folio(): only if refcount is 1; never a large folio since 6.9."""
        mem = self.mem
        if mem.folio_test_large(head) and not self.ctx.facts.cow_reuses_large_anon_folio:
            return False
        return mem.folio_ref_count(head) == 1

    def wp_page_reuse(self, vma: Vma, table: PteTable, i: int) -> None:
        """wp_page_reuse(): pte_mkyoung(), maybe_mkwrite(pte_mkdirty())."""
        table.bits[i] = self._mkwrite_dirty(vma, int(table.bits[i]) | PTE_YOUNG)

    def wp_page_copy(self, vma: Vma, addr: int, table: PteTable, i: int) -> None:
        """wp_page_copy(): a new exclusive anonymous copy (zeroed when COWing the zero page)."""
        mem = self.mem
        self.anon_vma_prepare(vma)
        bits = int(table.bits[i])
        old = None if bits & PTE_SPECIAL else int(table.pfn[i])
        new = mem.alloc_folio(0)
        if old is not None:
            mem.copy_content(new, old)
        mem.set(new, PG.uptodate)
        mem.folio_add_new_anon_rmap(new, exclusive=True)
        mem.folio_add_lru(new)
        table.set(i, new, self._mkwrite_dirty(vma, PTE_PRESENT | PTE_YOUNG))
        if old is not None:
            head = mem.page_folio(old)
            mem.folio_remove_rmap_ptes(head, old, 1)
            mem.folio_put(head)  # the reference the old PTE held

    # -- file and shmem ---------------------------------------------------

    def _file(self, vma: Vma) -> ShmemFile:
        assert vma.file is not None
        return vma.file

    def do_fault(self, vma: Vma, addr: int, write: bool) -> Signal | None:
        """do_fault(): read, copy-on-write or shared fault on a file (shmem) mapping."""
        try:
            if not write:
                self.do_read_fault(vma, addr)
            elif not vma.shared:
                self.do_cow_fault(vma, addr)
            else:
                self.do_shared_fault(vma, addr)
        except ShmemSigbus:
            return "SIGBUS"
        return None

    def do_read_fault(self, vma: Vma, addr: int) -> None:
        """do_read_fault(): fault-around first, ->fault() for the page if still missing."""
        if self.ctx.facts.fault_around_pages(self.arch.page_shift) > 1:
            if self.do_fault_around(vma, addr):
                return
        file = self._file(vma)
        pfn = file.get_folio_for_fault(vma.linear_page_index(addr))
        table = self.pt.pte_alloc(addr)
        self._set_pte_file(vma, table, self.pt.pte_index(addr), pfn, write=False)

    def do_fault_around(self, vma: Vma, addr: int) -> bool:
        """do_fault_around() + filemap_map_pages(); True if ``addr`` got mapped.

        The window is fault_around_pages aligned, clamped to the VMA and to
        one PTE table; each cached, uptodate page inside i_size whose PTE is
        none is mapped read-only (set_pte_range() without write), taking a
        reference and a file mapcount.
        """
        nr = self.ctx.facts.fault_around_pages(self.arch.page_shift)
        ptrs = self.pt.ptrs_per_pte
        pte_off = self.pt.pte_index(addr)
        vma_off = (addr - vma.start) >> self.arch.page_shift
        from_pte = max(pte_off // nr * nr, pte_off - min(pte_off, vma_off))
        to_pte = min(from_pte + nr, ptrs, pte_off + vma.pages() - vma_off) - 1
        file = self._file(vma)
        index0 = vma.linear_page_index(addr) - pte_off
        pages = {
            pte: pfn
            for pte in range(from_pte, to_pte + 1)
            if (pfn := file.cached_uptodate(index0 + pte)) is not None
        }
        if not pages:
            return False
        table = self.pt.pte_alloc(addr)
        for pte, pfn in pages.items():
            if table.bits[pte]:
                continue
            self.mem.folio_get(pfn)
            self._set_pte_file(vma, table, pte, pfn, write=False)
        return bool(table.bits[pte_off] & PTE_PRESENT)

    def _set_pte_file(self, vma: Vma, table: PteTable, i: int, pfn: int, write: bool) -> None:
        """set_pte_range() for a page-cache page (the caller's reference goes to the PTE)."""
        bits = self._mk_pte(vma)
        if write:
            bits = self._mkwrite_dirty(vma, bits)
        self.mem.folio_add_file_rmap_ptes(pfn, pfn, 1)
        table.set(i, pfn, bits)

    def do_cow_fault(self, vma: Vma, addr: int) -> None:
        """do_cow_fault(): copy the file page into a new anonymous folio."""
        mem = self.mem
        self.anon_vma_prepare(vma)
        file = self._file(vma)
        source = file.get_folio_for_fault(vma.linear_page_index(addr))
        new = mem.alloc_folio(0)
        mem.copy_content(new, source)
        mem.set(new, PG.uptodate)
        table = self.pt.pte_alloc(addr)
        # finish_fault() -> set_pte_range() with write on a private mapping.
        mem.folio_add_new_anon_rmap(new, exclusive=True)
        mem.folio_add_lru(new)
        table.set(self.pt.pte_index(addr), new, self._mkwrite_dirty(vma, self._mk_pte(vma)))
        mem.folio_put(source)

    def do_shared_fault(self, vma: Vma, addr: int) -> None:
        """do_shared_fault(): map the page cache page writable; fault_dirty_shared_page()."""
        file = self._file(vma)
        pfn = file.get_folio_for_fault(vma.linear_page_index(addr))
        table = self.pt.pte_alloc(addr)
        self._set_pte_file(vma, table, self.pt.pte_index(addr), pfn, write=True)
        self.mem.folio_mark_dirty(pfn)

    # -- transparent huge pages -------------------------------------------

    def _thp_allowed(self, vma: Vma, addr: int) -> bool:
        """thp_vma_allowable_order(PMD_ORDER) + thp_vma_suitable_order() in a fault.

        enabled=madvise: only VM_HUGEPAGE anonymous VMAs (shmem stays order 0
        and file VMAs have no ->huge_fault), and the aligned PMD range must
        lie inside the VMA.
        """
        if not self.ctx.thp or not vma.anonymous:
            return False
        if not vma.flags & VM_HUGEPAGE or vma.flags & VM_NOHUGEPAGE:
            return False
        haddr = addr - addr % self.pmd_size
        return vma.start <= haddr and haddr + self.pmd_size <= vma.end

    def _get_huge_zero(self) -> int:
        """mm_get_huge_zero_folio(): allocated on first use, PG_large_rmappable cleared."""
        mem = self.mem
        if mem.huge_zero_pfn is None:
            mem.huge_zero_pfn = mem.alloc_folio(self.pt.pmd_shift - self.arch.page_shift)
        if not self.huge_zero:
            self.huge_zero = True
            self.ctx.huge_zero_users += 1
        return mem.huge_zero_pfn

    def do_huge_pmd_anonymous_page(self, vma: Vma, addr: int, write: bool) -> str | None:
        """do_huge_pmd_anonymous_page(): the huge zero folio for a read, a THP for a write.

        vmf_anon_prepare() runs first, so even the read gives the VMA an
        anon_vma.  The new PMD is maybe_pmd_mkwrite(pmd_mkdirty()).
        """
        mem = self.mem
        haddr = addr - addr % self.pmd_size
        self.anon_vma_prepare(vma)
        if not write and self.ctx.facts.thp_use_zero_page:
            try:
                pfn = self._get_huge_zero()
            except OutOfMemory:
                return _FALLBACK
            self.pt.set_pmd(haddr, HugePmd(pfn, write=False, dirty=False, young=True,
                                           soft_dirty=False))
            return None
        try:
            head = mem.alloc_folio(self.pt.pmd_shift - self.arch.page_shift)
        except OutOfMemory:
            return _FALLBACK
        mem.set(head, PG.large_rmappable)  # folio_prep_large_rmappable()
        mem.set(head, PG.uptodate)
        mem.folio_add_new_anon_rmap(head, exclusive=True)
        mem.folio_add_lru(head)
        self.pt.set_pmd(haddr, HugePmd(head, write=bool(vma.flags & VM_WRITE), dirty=True,
                                       young=True, soft_dirty=self.ctx.soft_dirty))
        return None

    def wp_huge_pmd(self, vma: Vma, addr: int, pmd: HugePmd) -> str | None:
        """wp_huge_pmd() -> do_huge_pmd_wp_page(): reuse an exclusive THP, else split."""
        mem = self.mem
        haddr = addr - addr % self.pmd_size
        if not vma.anonymous or mem.is_huge_zero_folio(pmd.pfn):
            self.split_huge_pmd(vma, haddr)
            return _FALLBACK
        head = pmd.pfn
        if not mem.test(head, PG_ANON_EXCLUSIVE):
            if mem.folio_ref_count(head) != 1:
                self.split_huge_pmd(vma, haddr)
                return _FALLBACK
            mem.set(head, PG_ANON_EXCLUSIVE)
        pmd.young = True
        pmd.dirty = True
        pmd.soft_dirty = pmd.soft_dirty or self.ctx.soft_dirty
        if vma.flags & VM_WRITE:
            pmd.write = True
        return None

    def split_huge_pmd(self, vma: Vma, haddr: int) -> None:
        """__split_huge_pmd_locked(): replace a huge leaf by a table of PTEs.

        Huge zero: every PTE maps the small zero page.  THP: a dirty PMD
        dirties the folio (folio_set_dirty()), the folio gains nr-1
        references and nr PTE mappings (PageAnonExclusive carried to every
        subpage), and loses the PMD mapping; each PTE inherits write, young,
        dirty and soft-dirty from the PMD.
        """
        mem = self.mem
        pmd = self.pt.get_pmd(haddr)
        assert isinstance(pmd, HugePmd)
        table = PteTable(self.pt.ptrs_per_pte)
        nr = self.thp_nr
        if mem.is_huge_zero_folio(pmd.pfn):
            table.pfn[:] = mem.zero_pfn
            table.bits[:] = (self._mk_pte(vma) & ~PTE_WRITE) | PTE_SPECIAL
        else:
            head = pmd.pfn
            if pmd.dirty:
                mem.folio_mark_dirty(head)
            exclusive = mem.test(head, PG_ANON_EXCLUSIVE)
            mem.folio_get(head, nr - 1)
            mem.folio_add_anon_rmap_ptes(head, head, nr, exclusive)
            bits = PTE_PRESENT
            if pmd.write:
                bits |= PTE_WRITE
            if pmd.young:
                bits |= PTE_YOUNG
            if pmd.dirty:
                bits |= self._mkdirty()
            if pmd.soft_dirty:
                bits |= PTE_SOFT_DIRTY
            table.pfn[:] = range(head, head + nr)
            table.bits[:] = bits
            mem.folio_remove_rmap_pmd(head)
        self.pt.set_pmd(haddr, table)

    # ------------------------------------------------------------------
    # Unmapping pages (zap_page_range_single(), unmap_vmas())
    # ------------------------------------------------------------------

    def zap_range(self, vma: Vma, start: int, end: int) -> None:
        """zap_pmd_range()/zap_pte_range() over [start, end) of ``vma``.

        A huge leaf fully inside the range goes whole (zap_huge_pmd()); one
        partly inside is split first.  A page-cache page's PTE passes its
        dirty bit to the folio (folio_mark_dirty()) and its young bit as
        folio_mark_accessed() (zap_present_folio_ptes()).
        """
        mem = self.mem
        for base, entry in list(self.pt.pmd_entries(start, end)):
            lo, hi = max(start, base), min(end, base + self.pmd_size)
            if isinstance(entry, HugePmd):
                if lo == base and hi == base + self.pmd_size:
                    self.pt.clear_pmd(base)
                    if not mem.is_huge_zero_folio(entry.pfn):
                        mem.folio_remove_rmap_pmd(entry.pfn)
                        mem.folio_put(entry.pfn)
                    continue
                self.split_huge_pmd(vma, base)
                entry = self._table(base)
            first = (lo - base) >> self.arch.page_shift
            last = (hi - base) >> self.arch.page_shift
            for i in range(first, last):
                self._zap_pte(entry, i)

    def _zap_pte(self, table: PteTable, i: int) -> None:
        bits = int(table.bits[i])
        if not bits & PTE_PRESENT:
            return
        pfn = int(table.pfn[i])
        table.clear(i)
        if bits & PTE_SPECIAL:
            return
        mem = self.mem
        head = mem.page_folio(pfn)
        if not mem.folio_test_anon(head):
            if bits & PTE_DIRTY:
                mem.folio_mark_dirty(head)
            if bits & PTE_YOUNG:
                mem.folio_mark_accessed(head)
        mem.folio_remove_rmap_ptes(head, pfn, 1)
        mem.folio_put(head)

    def _release_vma(self, vma: Vma) -> None:
        """remove_vma(): drop the file reference; the last one ends an unlinked object."""
        file = vma.file
        if file is None:
            return
        file.map_count -= 1
        if file.anonymous and file.map_count == 0:
            file.truncate()  # shmem_evict_inode()

    # ------------------------------------------------------------------
    # Syscalls
    # ------------------------------------------------------------------

    def _table(self, addr: int) -> PteTable:
        entry = self.pt.get_pmd(addr)
        assert isinstance(entry, PteTable)
        return entry

    def _check_range(self, addr: int, npages: int, what: str, beyond: int = errno.ENOMEM) -> int:
        """The end of [addr, addr + npages pages), or the syscall's error.

        Callers pass the errno their syscall gives for a range past TASK_SIZE
        (mmap and mprotect: ENOMEM; munmap: EINVAL).
        """
        if addr % self.page_size:
            raise MmError(errno.EINVAL, f"{what}: address {addr:#x} is not page aligned")
        if npages <= 0:
            raise MmError(errno.EINVAL, f"{what}: {npages} pages is not a positive length")
        end = addr + npages * self.page_size
        if end > self.task_size:
            raise MmError(beyond, f"{what}: [{addr:#x}, {end:#x}) passes the task size")
        return end

    def mmap(
        self,
        addr: int,
        npages: int,
        prot: int,
        shared: bool,
        file: ShmemFile | None,
        pgoff: int,
    ) -> Vma:
        """mmap(addr, MAP_FIXED_NOREPLACE | MAP_PRIVATE or MAP_SHARED): do_mmap() + __mmap_region().

        ``prot`` is VM_READ/VM_WRITE bits.  Private writable mappings are
        accounted (VM_ACCOUNT, accountable_mapping()); anonymous private
        mappings take pgoff = addr >> PAGE_SHIFT.  The new range merges into
        a compatible neighbour (vma_merge_new_range()) and the resulting VMA
        is VM_SOFTDIRTY as a whole.
        """
        end = self._check_range(addr, npages, "mmap")
        if self.vmas.any_overlap(addr, end):
            raise MmError(errno.EEXIST, f"mmap: [{addr:#x}, {end:#x}) overlaps a mapping")
        flags = prot | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        if shared:
            flags |= VM_SHARED | VM_MAYSHARE
        elif flags & VM_WRITE:
            flags |= VM_ACCOUNT
        if file is None and not shared:
            pgoff = addr >> self.arch.page_shift
        merged = self.vmas.merge_new(addr, end, flags, pgoff, file)
        if merged is not None:
            vma = merged
        else:
            vma = Vma(start=addr, end=end, flags=flags, pgoff=pgoff, file=file)
            if file is not None:
                file.map_count += 1
            self.vmas.insert(vma)
        if self.ctx.soft_dirty:
            vma.flags |= VM_SOFTDIRTY
        return vma

    def munmap(self, addr: int, npages: int) -> None:
        """munmap(): split at the edges, zap, free page tables, remove the VMAs."""
        end = self._check_range(addr, npages, "munmap", errno.EINVAL)
        victims = self._isolate(addr, end)
        for vma in victims:
            self.zap_range(vma, vma.start, vma.end)
        for vma in victims:
            self.vmas.remove(vma)
            self._release_vma(vma)
        self.pt.free_pgtables(addr, end, self.vmas.any_overlap)

    def _isolate(self, start: int, end: int) -> list[Vma]:
        """The VMAs of [start, end), split so that they lie exactly inside it."""
        result = []
        for vma in self.vmas.overlapping(start, end):
            if vma.start < start:
                vma = self.vmas.split(vma, start)
            if vma.end > end:
                self.vmas.split(vma, end)
            result.append(vma)
        return result

    def _vmas_for(self, start: int, end: int) -> tuple[list[tuple[Vma, int, int]], bool]:
        """The (vma, lo, hi) pieces of [start, end) and whether a gap was found."""
        pieces = []
        addr = start
        gap = False
        for vma in self.vmas.overlapping(start, end):
            if vma.start > addr:
                gap = True
            lo, hi = max(addr, vma.start), min(end, vma.end)
            pieces.append((vma, lo, hi))
            addr = hi
        if addr < end:
            gap = True
        return pieces, gap

    def mprotect(self, addr: int, npages: int, prot: int) -> None:
        """do_mprotect_pkey(): mprotect_fixup() on each VMA; ENOMEM at the first hole.

        VMAs before a hole are changed before the error, as in the kernel.
        """
        end = self._check_range(addr, npages, "mprotect")
        first = self.vmas.find_vma(addr)
        if first is None or first.start > addr:
            raise MmError(errno.ENOMEM, f"mprotect: {addr:#x} is not mapped")
        position = addr
        while position < end:
            vma = self.vmas.vma_at(position)
            if vma is None:
                raise MmError(errno.ENOMEM, f"mprotect: {position:#x} is not mapped")
            hi = min(end, vma.end)
            newflags = (vma.flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | prot
            self.mprotect_fixup(vma, position, hi, newflags)
            position = hi

    def mprotect_fixup(self, vma: Vma, start: int, end: int, newflags: int) -> None:
        """mprotect_fixup(): VM_ACCOUNT rules, vma_modify_flags(), change_protection()."""
        oldflags = vma.flags
        if newflags == oldflags:
            return
        if newflags & VM_WRITE:
            if not oldflags & (VM_ACCOUNT | VM_WRITE | VM_SHARED | VM_NORESERVE):
                newflags |= VM_ACCOUNT
        elif oldflags & VM_ACCOUNT and vma.anonymous and vma.anon_vma is None:
            newflags &= ~VM_ACCOUNT
        vma = self.vmas.modify(vma, start, end, newflags)
        vma.flags = newflags
        sd = self.ctx.soft_dirty
        if vma.shared:
            try_writable = vma.wants_writenotify(sd)
        else:
            try_writable = bool(vma.flags & VM_WRITE)
        self.change_protection(vma, start, end, try_writable)

    def change_protection(self, vma: Vma, start: int, end: int, try_writable: bool) -> None:
        """change_pte_range()/change_huge_pmd(): new protections on present entries.

        pte_modify() keeps pfn, dirty, young, soft-dirty; write follows the
        new vm_page_prot, and with MM_CP_TRY_CHANGE_WRITABLE an entry
        can_change_pte_writable() accepts becomes writable at once.
        """
        mem = self.mem
        prot_write = vma.page_prot_writable(self.ctx.soft_dirty)
        tracking = vma.soft_dirty_enabled(self.ctx.soft_dirty)
        for base, entry in list(self.pt.pmd_entries(start, end)):
            lo, hi = max(start, base), min(end, base + self.pmd_size)
            if isinstance(entry, HugePmd):
                if lo != base or hi != base + self.pmd_size:
                    self.split_huge_pmd(vma, base)
                    entry = self._table(base)
                else:
                    write = prot_write
                    if try_writable and not write and vma.flags & VM_WRITE:
                        # can_change_pmd_writable(): private exclusive anon only.
                        write = (not (tracking and not entry.soft_dirty)
                                 and not mem.is_huge_zero_folio(entry.pfn)
                                 and not vma.shared
                                 and mem.test(entry.pfn, PG_ANON_EXCLUSIVE))
                    entry.write = write
                    continue
            assert isinstance(entry, PteTable)
            shift = self.arch.page_shift
            for i in range((lo - base) >> shift, (hi - base) >> shift):
                bits = int(entry.bits[i])
                if not bits & PTE_PRESENT:
                    continue
                write = prot_write
                if try_writable and not write and vma.flags & VM_WRITE:
                    write = self._can_change_pte_writable(vma, entry, i, tracking)
                entry.bits[i] = (bits & ~PTE_WRITE) | (PTE_WRITE if write else 0)

    def _can_change_pte_writable(self, vma: Vma, table: PteTable, i: int, tracking: bool) -> bool:
        """can_change_pte_writable() (mm/mprotect.c)."""
        bits = int(table.bits[i])
        if tracking and not bits & PTE_SOFT_DIRTY:
            return False
        if not vma.shared:
            if bits & PTE_SPECIAL:
                return False
            pfn = int(table.pfn[i])
            return self.mem.folio_test_anon(self.mem.page_folio(pfn)) and self.mem.test(
                pfn, PG_ANON_EXCLUSIVE
            )
        return bool(bits & PTE_DIRTY)

    def madvise(self, addr: int, npages: int, advice: str) -> None:
        """madvise(): MADV_DONTNEED zaps (keeping page tables); MADV_HUGEPAGE sets VM_HUGEPAGE.

        madvise_walk_vmas() applies the advice to every mapped piece and then
        fails with ENOMEM if the range had a hole.
        """
        if advice not in ("dontneed", "hugepage"):
            raise MmError(errno.EINVAL, f"madvise: unknown advice {advice!r}")
        if advice == "hugepage" and not self.ctx.thp:
            raise MmError(errno.EINVAL, "madvise: MADV_HUGEPAGE needs transparent hugepages")
        end = self._check_range(addr, npages, "madvise")
        pieces, gap = self._vmas_for(addr, end)
        for vma, lo, hi in pieces:
            if advice == "dontneed":
                self.zap_range(vma, lo, hi)
            else:
                newflags = (vma.flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
                if newflags != vma.flags:
                    vma = self.vmas.modify(vma, lo, hi, newflags)
                    vma.flags = newflags
        if gap:
            raise MmError(errno.ENOMEM, f"madvise: [{addr:#x}, {end:#x}) has unmapped pages")

    def clear_refs(self, value: int) -> None:
        """clear_refs_write(): 1-3 clear referenced/young bits, 4 clears soft-dirty, 5 no-op."""
        if value not in (1, 2, 3, 4, 5):
            raise MmError(errno.EINVAL, f"clear_refs: {value} is not 1..5")
        if value == 5:
            return
        mem = self.mem
        if value == 4:
            if not self.ctx.soft_dirty:
                return
            for vma in self.vmas:
                vma.flags &= ~VM_SOFTDIRTY
        for vma in self.vmas:
            if value == 2 and vma.file is not None:
                continue
            if value == 3 and vma.file is None:
                continue
            for base, entry in list(self.pt.pmd_entries(vma.start, vma.end)):
                if isinstance(entry, HugePmd):
                    if value == 4:
                        entry.write = False  # clear_soft_dirty_pmd()
                        entry.soft_dirty = False
                    else:
                        entry.young = False
                        mem.clear(entry.pfn, PG.referenced)
                    continue
                lo, hi = max(vma.start, base), min(vma.end, base + self.pmd_size)
                sl = slice((lo - base) >> self.arch.page_shift, (hi - base) >> self.arch.page_shift)
                bits = entry.bits[sl]
                present = (bits & PTE_PRESENT) != 0
                if value == 4:
                    # clear_soft_dirty(): pte_wrprotect() and pte_clear_soft_dirty().
                    bits[present] &= ~(PTE_WRITE | PTE_SOFT_DIRTY) & 0xFF
                    continue
                normal = present & ((bits & PTE_SPECIAL) == 0)
                bits[present] &= ~PTE_YOUNG & 0xFF
                for pfn in entry.pfn[sl][normal].tolist():
                    mem.clear(mem.page_folio(pfn), PG.referenced)

    def fork_into(self, child: AddressSpace) -> None:
        """dup_mmap(): copy every VMA; copy_page_range() only where vma_needs_copy().

        vma_needs_copy() copies page tables only for VMAs with an anon_vma;
        the child refaults the rest.  anon_vma_fork() gives the child VMA an
        anon_vma of its own chained to the parent's.
        """
        for vma in self.vmas:
            copy = Vma(
                start=vma.start,
                end=vma.end,
                flags=vma.flags,
                pgoff=vma.pgoff,
                file=vma.file,
            )
            if vma.file is not None:
                vma.file.map_count += 1
            if vma.anon_vma is not None:
                copy.anon_vma = AnonVma()
                copy.chain_len = vma.chain_len + 1
            child.vmas.insert(copy)
            if vma.anon_vma is not None:
                self.copy_page_range(child, copy, vma)
        if self.huge_zero:
            child.huge_zero = True
            self.ctx.huge_zero_users += 1

    def copy_page_range(self, child: AddressSpace, dst: Vma, src: Vma) -> None:
        """copy_page_range(): copy_huge_pmd() and copy_present_ptes().

        COW mappings write-protect the entry in both processes; the child's
        entries are old (pte_mkold()), and clean in shared mappings.  Every
        mapped anonymous page becomes shared: PG_anon_exclusive cleared.
        """
        mem = self.mem
        cow = src.is_cow_mapping()
        for base, entry in list(self.pt.pmd_entries(src.start, src.end)):
            if isinstance(entry, HugePmd):
                if not dst.anonymous:
                    continue  # "Skip if can be re-fill on fault"
                if not mem.is_huge_zero_folio(entry.pfn):
                    mem.folio_get(entry.pfn)
                    mem.folio_try_dup_anon_rmap_pmd(entry.pfn)
                entry.write = False
                child.pt.set_pmd(base, HugePmd(entry.pfn, write=False, dirty=entry.dirty,
                                               young=False, soft_dirty=entry.soft_dirty))
                continue
            lo, hi = max(src.start, base), min(src.end, base + self.pmd_size)
            target = child.pt.pte_alloc(base)
            shift = self.arch.page_shift
            for i in range((lo - base) >> shift, (hi - base) >> shift):
                bits = int(entry.bits[i])
                if not bits & PTE_PRESENT:
                    continue
                pfn = int(entry.pfn[i])
                if not bits & PTE_SPECIAL:
                    head = mem.page_folio(pfn)
                    mem.folio_get(head)
                    if mem.folio_test_anon(head):
                        mem.folio_try_dup_anon_rmap_pte(head, pfn)
                    else:
                        mem.folio_add_file_rmap_ptes(head, pfn, 1)
                if cow and bits & PTE_WRITE:
                    bits &= ~PTE_WRITE
                    entry.bits[i] = bits
                if src.shared:
                    bits &= ~PTE_DIRTY
                target.set(i, pfn, bits & ~PTE_YOUNG)

    def exit_mmap(self) -> None:
        """exit_mmap(): unmap every VMA, free all page tables, drop file references."""
        for vma in self.vmas:
            self.zap_range(vma, vma.start, vma.end)
        for vma in self.vmas:
            self.vmas.remove(vma)
            self._release_vma(vma)
        self.pt.clear_all()
        if self.huge_zero:
            self.huge_zero = False
            self.ctx.huge_zero_users -= 1
        self.alive = False

    # ------------------------------------------------------------------
    # Lookups for the proc files
    # ------------------------------------------------------------------

    def each_vma(self) -> list[Vma]:
        return list(self.vmas)

    def find_vma(self, addr: int) -> Vma | None:
        return self.vmas.find_vma(addr)
