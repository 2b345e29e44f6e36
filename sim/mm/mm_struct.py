"""The mm_struct model: one address space's VMAs and page tables, and its entry points.

:class:`MmStruct` holds state only; each entry point hands over to the module
that follows the kernel file doing the work:

* :mod:`sim.mm.memory` (mm/memory.c): user accesses, faults, zapping;
* :mod:`sim.mm.huge_memory` (mm/huge_memory.c): huge PMD faults, the huge
  zero folio, splitting;
* :mod:`sim.mm.mmap` (mm/mmap.c, mm/vma.c): mmap, munmap, exit_mmap;
* :mod:`sim.mm.mprotect` (mm/mprotect.c), :mod:`sim.mm.madvise` (mm/madvise.c);
* :mod:`sim.mm.mremap` (mm/mremap.c);
* :mod:`sim.mm.fork` (kernel/fork.c dup_mmap(), copy_page_range());
* :mod:`sim.mm.clear_refs` (fs/proc/task_mmu.c clear_refs_write()).

State is what the harness samples once the per-CPU LRU batches are drained:
batch references are not counted and queued LRU moves are taken as done
(see sim/MODEL.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.arch import Arch
from sim.mm import (
    clear_refs,
    fork,
    huge_memory,
    madvise,
    memory,
    mlock,
    mmap,
    mprotect,
    userfaultfd,
)
from sim.mm import mremap as mremap_
from sim.mm.facts import KernelFacts
from sim.mm.hugetlb import Hstate
from sim.mm.ksm import Ksm
from sim.mm.memmap import PhysMem
from sim.mm.pagetable import PageTables
from sim.mm.settings import ThpSettings
from sim.mm.shmem import ShmemFile
from sim.mm.swapfile import SwapInfo
from sim.mm.syscall import Signal
from sim.mm.vma import Vma, VmaList

__all__ = ["MachineContext", "MmStruct"]


@dataclass
class MachineContext:
    """What every mm_struct of a machine shares."""

    arch: Arch
    facts: KernelFacts
    mem: PhysMem
    #: huge_zero_refcount (mm/huge_memory.c): mm_structs using the huge zero
    #: folio (MMF_HUGE_ZERO_PAGE set); > 0 while the folio exists.
    huge_zero_refcount: int = 0
    #: pte_mkdirty() also sets the soft-dirty bit and VM_SOFTDIRTY exists
    #: (CONFIG_MEM_SOFT_DIRTY on an architecture with HAVE_ARCH_SOFT_DIRTY).
    soft_dirty: bool = field(init=False)
    #: PMD-sized THP can be mapped (CONFIG_TRANSPARENT_HUGEPAGE and a PMD leaf level).
    thp: bool = field(init=False)
    #: The THP sysfs knobs (/sys/kernel/mm/transparent_hugepage/) the fault paths read.
    settings: ThpSettings = field(default_factory=ThpSettings)
    #: Every live mm_struct (what an rmap walk of a shared file reaches:
    #: unmap_mapping_range() of a hole punched by MADV_REMOVE).
    mms: list[MmStruct] = field(default_factory=list)
    #: The swap device (sim/mm/swapfile.py), None when the machine has none.
    swap: SwapInfo | None = None
    #: The default hstate's pool (``hugepages=N`` at boot, sim/mm/hugetlb.py); None without one.
    hstate: Hstate | None = field(init=False)
    #: ksmd's state (mm/ksm.c): the mm list, rmap_items, the stable tree.
    ksm: Ksm = field(default_factory=Ksm)

    def __post_init__(self) -> None:
        # Both are read on every fault; arch and facts are frozen.
        self.soft_dirty = self.facts.mem_soft_dirty and self.arch.soft_dirty
        self.thp = self.facts.transparent_hugepage and self.arch.thp_level is not None
        huge = self.arch.hugetlb_page_pages
        self.hstate = Hstate(huge.bit_length() - 1, self.arch.hugetlb_pages) if huge else None


class MmStruct:
    """struct mm_struct: VMAs (mm->mm_mt), page tables (mm->pgd) and mm flags.

    Sizes are bytes unless named otherwise; ``hpage_pmd_nr`` is pages.
    """

    def __init__(self, ctx: MachineContext) -> None:
        self.ctx = ctx
        self.arch = ctx.arch
        self.mem = ctx.mem
        self.vmas = VmaList(ctx.arch.page_shift)
        self.pt = PageTables(ctx.arch)
        self.page_size = ctx.arch.page_size
        self.task_size = ctx.arch.task_size
        self.pmd_size = self.pt.pmd_size
        #: HPAGE_PMD_NR: pages in a PMD-sized folio.
        self.hpage_pmd_nr = ctx.arch.thp_pages
        #: test_bit(MMF_HUGE_ZERO_PAGE, &mm->flags): this mm holds a huge zero reference.
        self.mmf_huge_zero_page = False
        #: mm_users > 0: exit_mmap() has not run.
        self.alive = True
        #: mm->locked_vm: pages in VM_LOCKED VMAs (mlock_fixup(), munmap; 0 after fork).
        self.locked_vm = 0
        #: The process's userfaultfd context (one at most: the agent opens one per
        #: process at its first UFFD_REGISTER; sim/mm/userfaultfd.py).
        self.uffd: userfaultfd.UffdCtx | None = None
        ctx.mms.append(self)

    # -- user access ------------------------------------------------------

    def access(
        self, addr: int, write: bool, tag: int | None, fill: int | None = None
    ) -> Signal | None:
        """One load or store (``tag``: the u64 stored; ``fill``: every byte) at ``addr``:
        see memory.user_access()."""
        return memory.user_access(self, addr, write, tag, fill)

    # -- syscalls (addresses in bytes, lengths in pages) ------------------

    def mmap(
        self, addr: int, nr_pages: int, prot: int, shared: bool, file: ShmemFile | None,
        pgoff: int, *, fixed: bool = False, locked: bool = False, populate: bool = False,
        cap_ipc_lock: bool = True,
    ) -> Vma:
        """mmap() with MAP_FIXED_NOREPLACE (or MAP_FIXED), MAP_LOCKED, MAP_POPULATE:
        see mmap.do_mmap()."""
        return mmap.do_mmap(self, addr, nr_pages, prot, shared, file, pgoff,
                            fixed=fixed, locked=locked, populate=populate,
                            cap_ipc_lock=cap_ipc_lock)

    def munmap(self, addr: int, nr_pages: int) -> None:
        """munmap(): see mmap.do_munmap()."""
        mmap.do_munmap(self, addr, nr_pages)

    def mprotect(self, addr: int, nr_pages: int, prot: int) -> None:
        """mprotect(): see mprotect.do_mprotect_pkey()."""
        mprotect.do_mprotect_pkey(self, addr, nr_pages, prot)

    def madvise(
        self, addr: int, nr_pages: int, advice: str | int,
        *, can_do_file_pageout: madvise.FilePageoutCheck = madvise.root_can_do_file_pageout,
    ) -> None:
        """madvise(): see madvise.do_madvise()."""
        madvise.do_madvise(self, addr, nr_pages, advice, can_do_file_pageout=can_do_file_pageout)

    def mlock(self, addr: int, nr_pages: int, onfault: bool, cap_ipc_lock: bool) -> None:
        """mlock() / mlock2(MLOCK_ONFAULT): see mlock.do_mlock()."""
        mlock.do_mlock(self, addr, nr_pages, onfault, cap_ipc_lock)

    def munlock(self, addr: int, nr_pages: int) -> None:
        """munlock(): see mlock.do_munlock()."""
        mlock.do_munlock(self, addr, nr_pages)

    def mremap(
        self, addr: int, old_pages: int, new_pages: int, flags: int, new_addr: int = 0,
        *, cap_ipc_lock: bool = True,
    ) -> int:
        """mremap(): see mremap.do_mremap(); the range's address afterwards."""
        return mremap_.do_mremap(self, addr, old_pages, new_pages, flags, new_addr,
                                 cap_ipc_lock=cap_ipc_lock)

    def uffd_register(self, addr: int, nr_pages: int) -> None:
        """UFFDIO_REGISTER_MODE_WP: see userfaultfd.userfaultfd_register()."""
        userfaultfd.userfaultfd_register(self, addr, addr + nr_pages * self.page_size)

    def uffd_wp(self, addr: int, nr_pages: int, enable: bool) -> None:
        """UFFDIO_WRITEPROTECT: see userfaultfd.mwriteprotect_range()."""
        userfaultfd.mwriteprotect_range(self, addr, addr + nr_pages * self.page_size, enable)

    def clear_refs(self, value: int) -> None:
        """echo VALUE > /proc/PID/clear_refs: see clear_refs.clear_refs_write()."""
        clear_refs.clear_refs_write(self, value)

    def dup_mmap(self, child: MmStruct) -> None:
        """fork(): copy this mm into ``child``'s empty one; see fork.dup_mmap()."""
        fork.dup_mmap(self, child)

    def exit_mmap(self) -> None:
        """The last user is gone: see mmap.exit_mmap()."""
        mmap.exit_mmap(self)
        if self in self.ctx.mms:
            self.ctx.mms.remove(self)

    # -- for walkers and the proc files -----------------------------------

    def split_huge_pmd(self, vma: Vma, haddr: int) -> None:
        """Replace the huge PMD at ``haddr`` by a PTE table: see huge_memory.split_huge_pmd()."""
        huge_memory.split_huge_pmd(self, vma, haddr)

    def each_vma(self) -> list[Vma]:
        """for_each_vma(): the VMAs in address order."""
        return list(self.vmas)

    def find_vma(self, addr: int) -> Vma | None:
        """find_vma(): the first VMA ending above ``addr``."""
        return self.vmas.find_vma(addr)
