"""Virtual memory areas: flags, the sorted VMA list, split and merge (mm/vma.c).

VMA flags keep the kernel's VM_* values (include/linux/mm.h) so merge rules
read as they do in the kernel.  Merging matters to the proc files through
VM_SOFTDIRTY (a VMA a new mapping merges into becomes soft-dirty as a whole,
__mmap_region()) and through THP eligibility (a huge leaf needs one VMA
covering the aligned range).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntFlag

from sim.mm.shmem import ShmemFile

__all__ = [
    "VM",
    "VM_ACCESS_FLAGS",
    "VM_ACCOUNT",
    "VM_DONTCOPY",
    "VM_DONTDUMP",
    "VM_DONTEXPAND",
    "VM_EXEC",
    "VM_HUGEPAGE",
    "VM_HUGETLB",
    "VM_LOCKED",
    "VM_LOCKED_MASK",
    "VM_LOCKONFAULT",
    "VM_MAYEXEC",
    "VM_MAYREAD",
    "VM_MAYSHARE",
    "VM_MAYWRITE",
    "VM_MERGEABLE",
    "VM_NOHUGEPAGE",
    "VM_NORESERVE",
    "VM_RAND_READ",
    "VM_READ",
    "VM_SEQ_READ",
    "VM_SHARED",
    "VM_SOFTDIRTY",
    "VM_UFFD_WP",
    "VM_WIPEONFORK",
    "VM_WRITE",
    "AnonVma",
    "Vma",
    "VmaList",
]


class VM(IntFlag):
    READ = 0x00000001
    WRITE = 0x00000002
    EXEC = 0x00000004
    SHARED = 0x00000008
    MAYREAD = 0x00000010
    MAYWRITE = 0x00000020
    MAYEXEC = 0x00000040
    MAYSHARE = 0x00000080
    UFFD_WP = 0x00001000
    LOCKED = 0x00002000
    LOCKONFAULT = 0x00080000
    SEQ_READ = 0x00008000
    RAND_READ = 0x00010000
    DONTCOPY = 0x00020000
    DONTEXPAND = 0x00040000
    ACCOUNT = 0x00100000
    NORESERVE = 0x00200000
    HUGETLB = 0x00400000
    WIPEONFORK = 0x02000000
    DONTDUMP = 0x04000000
    SOFTDIRTY = 0x08000000
    HUGEPAGE = 0x20000000
    NOHUGEPAGE = 0x40000000
    MERGEABLE = 0x80000000


# Plain ints for the fault path (IntFlag arithmetic is slow).
VM_READ = int(VM.READ)
VM_WRITE = int(VM.WRITE)
VM_EXEC = int(VM.EXEC)
VM_SHARED = int(VM.SHARED)
VM_MAYREAD = int(VM.MAYREAD)
VM_MAYWRITE = int(VM.MAYWRITE)
VM_MAYEXEC = int(VM.MAYEXEC)
VM_MAYSHARE = int(VM.MAYSHARE)
VM_ACCOUNT = int(VM.ACCOUNT)
VM_NORESERVE = int(VM.NORESERVE)
#: hugetlbfs_file_mmap(): every hugetlb VMA is VM_HUGETLB | VM_DONTEXPAND.
VM_HUGETLB = int(VM.HUGETLB)
VM_DONTEXPAND = int(VM.DONTEXPAND)
VM_SOFTDIRTY = int(VM.SOFTDIRTY)
VM_HUGEPAGE = int(VM.HUGEPAGE)
VM_NOHUGEPAGE = int(VM.NOHUGEPAGE)
VM_LOCKED = int(VM.LOCKED)
#: VM_UFFD_WP: registered with a userfaultfd in write-protect mode (sim/mm/userfaultfd.py).
VM_UFFD_WP = int(VM.UFFD_WP)
VM_LOCKONFAULT = int(VM.LOCKONFAULT)
#: VM_LOCKED_MASK (include/linux/mm.h): what mlock()/munlock() set and clear, and
#: what dup_mmap() clears in the child.
VM_LOCKED_MASK = VM_LOCKED | VM_LOCKONFAULT
VM_SEQ_READ = int(VM.SEQ_READ)
VM_RAND_READ = int(VM.RAND_READ)
VM_DONTCOPY = int(VM.DONTCOPY)
VM_WIPEONFORK = int(VM.WIPEONFORK)
VM_DONTDUMP = int(VM.DONTDUMP)
VM_MERGEABLE = int(VM.MERGEABLE)
VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC

_anon_vma_ids = itertools.count(1)


@dataclass(eq=False)
class AnonVma:
    """An anon_vma; identity is all the model needs (merge compatibility)."""

    id: int = field(default_factory=lambda: next(_anon_vma_ids))


@dataclass(eq=False)
class Vma:
    """One vm_area_struct."""

    start: int
    end: int
    flags: int
    pgoff: int
    file: ShmemFile | None = None
    anon_vma: AnonVma | None = None
    #: Length of vma->anon_vma_chain: 0 without anon_vma, 1 for an anon_vma
    #: of its own, one more per generation of fork (anon_vma_fork()).
    chain_len: int = 0
    page_shift: int = 12

    def __repr__(self) -> str:
        return f"Vma({self.start:#x}-{self.end:#x} {VM(self.flags)!r})"

    @property
    def anonymous(self) -> bool:
        """vma_is_anonymous(): no vm_ops (shared anonymous memory is a shmem file)."""
        return self.file is None

    @property
    def hugetlb(self) -> bool:
        """is_vm_hugetlb_page(): a MAP_HUGETLB mapping (sim/mm/hugetlb.py)."""
        return bool(self.flags & VM_HUGETLB)

    @property
    def shared(self) -> bool:
        return bool(self.flags & VM_SHARED)

    @property
    def softdirty(self) -> bool:
        return bool(self.flags & VM_SOFTDIRTY)

    def nr_pages(self) -> int:
        """vma_pages(): the VMA's length in pages."""
        return (self.end - self.start) >> self.page_shift

    def linear_page_index(self, addr: int) -> int:
        """linear_page_index(): the file page offset of ``addr``."""
        return ((addr - self.start) >> self.page_shift) + self.pgoff

    def has_recency(self, rand_read_has_recency: bool = False) -> bool:
        """vma_has_recency() (include/linux/mm_inline.h): no VM_SEQ_READ / VM_RAND_READ
        (MADV_SEQUENTIAL / MADV_RANDOM); the agent's files are never FMODE_NOREUSE.
        ``rand_read_has_recency``: 6.1's zap_pte_range() tests VM_SEQ_READ only
        (KernelFacts.rand_read_has_recency)."""
        ignored = VM_SEQ_READ if rand_read_has_recency else VM_SEQ_READ | VM_RAND_READ
        return not self.flags & ignored

    def is_cow_mapping(self) -> bool:
        return (self.flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE

    def soft_dirty_enabled(self, soft_dirty: bool) -> bool:
        """vma_soft_dirty_enabled() (mm/internal.h): tracking is on once VM_SOFTDIRTY is clear.

        ``soft_dirty``: CONFIG_MEM_SOFT_DIRTY on an architecture that has it;
        without it VM_SOFTDIRTY is 0 and tracking is never on.
        """
        return soft_dirty and not self.softdirty

    def wants_writenotify(self, soft_dirty: bool) -> bool:
        """vma_wants_writenotify() for shmem: only soft-dirty and uffd-wp tracking ask for it.

        shmem has no page_mkwrite and its mapping cannot write back
        (mapping_can_writeback() is false), so a shared writable shmem VMA maps
        pages writable unless soft-dirty tracking needs write faults.
        """
        shared_write = VM_SHARED | VM_WRITE
        if self.flags & shared_write != shared_write:
            return False
        # "Do we need write faults for uffd-wp tracking?" (userfaultfd_wp()).
        return self.soft_dirty_enabled(soft_dirty) or bool(self.flags & VM_UFFD_WP)

    def page_prot_writable(self, soft_dirty: bool) -> bool:
        """Whether vma->vm_page_prot (vma_set_page_prot()) grants write.

        Private mappings use the copy-on-write protections (never writable);
        shared writable ones are writable unless write-notify is wanted.
        """
        if not (self.flags & VM_SHARED and self.flags & VM_WRITE):
            return False
        return not self.wants_writenotify(soft_dirty)


def _mergeable_anon_vma(a1: AnonVma | None, a2: AnonVma | None, vma: Vma | None) -> bool:
    """is_mergeable_anon_vma() (mm/vma.c)."""
    if (a1 is None or a2 is None) and (vma is None or vma.chain_len == 1):
        return True
    return a1 is a2


def _same_kind(
    flags_a: int, flags_b: int, file_a: ShmemFile | None, file_b: ShmemFile | None
) -> bool:
    """is_mergeable_vma(): flags equal but for VM_SOFTDIRTY, same file."""
    return not ((flags_a ^ flags_b) & ~VM_SOFTDIRTY) and file_a is file_b


class VmaList:
    """mm->mm_mt: the VMAs of one mm, sorted by address."""

    def __init__(self, page_shift: int) -> None:
        self.page_shift = page_shift
        self._vmas: list[Vma] = []
        self._ends: list[int] = []

    def __iter__(self) -> Iterator[Vma]:
        return iter(list(self._vmas))

    def __len__(self) -> int:
        return len(self._vmas)

    def _reindex(self) -> None:
        self._vmas.sort(key=lambda v: v.start)
        self._ends = [v.end for v in self._vmas]

    def insert(self, vma: Vma) -> None:
        vma.page_shift = self.page_shift
        self._vmas.append(vma)
        self._reindex()

    def remove(self, vma: Vma) -> None:
        self._vmas.remove(vma)
        self._reindex()

    def find_vma(self, addr: int) -> Vma | None:
        """find_vma(): the first VMA ending above ``addr``."""
        i = bisect.bisect_right(self._ends, addr)
        return self._vmas[i] if i < len(self._vmas) else None

    def vma_at(self, addr: int) -> Vma | None:
        """The VMA containing ``addr``."""
        vma = self.find_vma(addr)
        if vma is not None and vma.start <= addr:
            return vma
        return None

    def prev_next(self, start: int, end: int) -> tuple[Vma | None, Vma | None]:
        """The VMAs just before ``start`` and from ``end`` on."""
        i = bisect.bisect_right(self._ends, start)
        prev = self._vmas[i - 1] if i > 0 and self._vmas[i - 1].end <= start else None
        j = bisect.bisect_right(self._ends, end)
        nxt = self._vmas[j] if j < len(self._vmas) and self._vmas[j].start >= end else None
        return prev, nxt

    def overlapping(self, start: int, end: int) -> list[Vma]:
        return [v for v in self._vmas if v.start < end and v.end > start]

    def any_overlap(self, start: int, end: int) -> bool:
        vma = self.find_vma(start)
        return vma is not None and vma.start < end

    def refresh(self) -> None:
        self._reindex()

    # ------------------------------------------------------------------
    # Split and merge
    # ------------------------------------------------------------------

    def split(self, vma: Vma, addr: int) -> Vma:
        """__split_vma(): cut ``vma`` at ``addr``; return the new upper part."""
        upper = Vma(
            start=addr,
            end=vma.end,
            flags=vma.flags,
            pgoff=vma.linear_page_index(addr),
            file=vma.file,
            anon_vma=vma.anon_vma,
            chain_len=vma.chain_len,
            page_shift=vma.page_shift,
        )
        vma.end = addr
        if vma.file is not None:
            vma.file.vma_refs += 1  # get_file() for the new VMA
        self.insert(upper)
        return upper

    def merge_new(
        self, start: int, end: int, flags: int, pgoff: int, file: ShmemFile | None,
        next_first: bool = False,
    ) -> Vma | None:
        """vma_merge_new_range(): extend a neighbour over a new mapping, if compatible.

        When both neighbours could take the range but their anon_vmas are not
        compatible with each other, 6.12 (can_vma_merge_left() first) extends
        prev; with ``next_first`` (KernelFacts ``mmap_merge_checks_next_first``,
        6.1's mmap_region()) next is checked first and prev must then be
        compatible with next's anon_vma (can_vma_merge_after(prev, ...,
        next->anon_vma)), so next is extended.
        """
        prev, nxt = self.prev_next(start, end)
        left, right = self._merge_sides(prev, nxt, start, end, flags, file, None, pgoff)
        if next_first and left and not right and prev is not None and nxt is not None:
            # right was only refused for prev/next incompatibility (6.12's rule).
            alone = self._merge_sides(None, nxt, start, end, flags, file, None, pgoff)[1]
            if alone:
                right = True
                left = _mergeable_anon_vma(nxt.anon_vma, prev.anon_vma, prev)
        return self._extend(prev if left else None, nxt if right else None, start, end, pgoff)

    def _extend(
        self, prev: Vma | None, nxt: Vma | None, start: int, end: int, pgoff: int
    ) -> Vma | None:
        """vma_expand() of the merge partners over [start, end) (bytes): ``prev`` grows
        (through ``nxt``, which it absorbs, when both are given), else ``nxt`` grows down
        to ``start`` with ``pgoff``.  None when neither is given."""
        if prev is not None:
            prev.end = end
            if nxt is not None:
                prev.end = nxt.end
                if prev.anon_vma is None:
                    prev.anon_vma, prev.chain_len = nxt.anon_vma, nxt.chain_len
                self._drop(nxt)
            self._reindex()
            return prev
        if nxt is not None:
            nxt.start = start
            nxt.pgoff = pgoff
            self._reindex()
            return nxt
        return None

    def _merge_sides(
        self,
        prev: Vma | None,
        nxt: Vma | None,
        start: int,
        end: int,
        flags: int,
        file: ShmemFile | None,
        anon_vma: AnonVma | None,
        pgoff: int,
    ) -> tuple[bool, bool]:
        """Whether [start, end) with ``flags``, ``file``, ``anon_vma`` and page offset
        ``pgoff`` may merge into ``prev`` (can_vma_merge_after()) and into ``nxt``
        (can_vma_merge_before()); merging into both also needs their anon_vmas to be
        compatible (vma_merge_new_range(), vma_merge_existing_range())."""
        left = (
            prev is not None
            and prev.end == start
            and _same_kind(prev.flags, flags, prev.file, file)
            and _mergeable_anon_vma(anon_vma, prev.anon_vma, prev)
            and prev.pgoff + prev.nr_pages() == pgoff
        )
        right = (
            nxt is not None
            and nxt.start == end
            and _same_kind(nxt.flags, flags, nxt.file, file)
            and _mergeable_anon_vma(anon_vma, nxt.anon_vma, nxt)
            and nxt.pgoff == pgoff + ((end - start) >> self.page_shift)
        )
        if left and right:
            assert prev is not None and nxt is not None
            right = _mergeable_anon_vma(prev.anon_vma, nxt.anon_vma, None)
        return left, right

    def modify(self, vma: Vma, start: int, end: int, newflags: int) -> Vma:
        """vma_modify(): the VMA covering exactly [start, end) of ``vma``, merged or split.

        vma_merge_existing_range() merges the range into prev and/or next when
        it touches their side and is compatible; otherwise the range is split
        out.  The caller then sets ``newflags`` on the result (vm_flags_reset()
        in mprotect_fixup() and madvise_update_vma()).
        """
        prev, nxt = self.prev_next(vma.start, vma.end)
        # Only a range reaching the VMA's start can join prev, its end next.
        merge_left, merge_right = self._merge_sides(
            prev if start == vma.start else None,
            nxt if end == vma.end else None,
            start, end, newflags, vma.file, vma.anon_vma, vma.linear_page_index(start),
        )
        if merge_left or merge_right:
            return self._merge_existing(vma, start, end, prev if merge_left else None,
                                        nxt if merge_right else None)
        if vma.start < start:
            vma = self.split(vma, start)
        if vma.end > end:
            self.split(vma, end)
        return vma

    def modify_flags(
        self, vma: Vma, start: int, end: int, newflags: int, propagate_softdirty: bool
    ) -> Vma:
        """vma_modify_flags() + vm_flags_reset(): the VMA of [start, end) with ``newflags``.

        ``newflags`` is computed by the caller from ``vma`` alone
        (mprotect_fixup() in mm/mprotect.c), so when the range merges with a
        neighbour the merged VMA takes the flags of the modified side: a
        VM_SOFTDIRTY neighbour merged into a clean range loses VM_SOFTDIRTY
        (6.12 and 6.1).  ``propagate_softdirty`` (KernelFacts
        ``vma_merge_propagates_softdirty``) keeps VM_SOFTDIRTY of any VMA the
        result absorbed, as upstream 6707915e030a (6.19) does.
        """
        before = [
            (v.start, v.end) for v in self.prev_next(vma.start, vma.end)
            if v is not None and v.flags & VM_SOFTDIRTY
        ]
        result = self.modify(vma, start, end, newflags)
        if propagate_softdirty and any(result.start <= s and e <= result.end for s, e in before):
            newflags |= VM_SOFTDIRTY
        result.flags = newflags
        return result

    def _merge_existing(
        self, vma: Vma, start: int, end: int, prev: Vma | None, nxt: Vma | None
    ) -> Vma:
        whole = start == vma.start and end == vma.end
        if prev is not None:
            target = prev
            if target.anon_vma is None and vma.anon_vma is not None:
                target.anon_vma, target.chain_len = vma.anon_vma, vma.chain_len  # dup_anon_vma()
            target.end = nxt.end if nxt is not None else end
            if nxt is not None:
                if target.anon_vma is None:
                    target.anon_vma, target.chain_len = nxt.anon_vma, nxt.chain_len
                self._drop(nxt)
            if whole:
                self._drop(vma)
            else:
                vma.pgoff = vma.linear_page_index(end)
                vma.start = end
        else:
            assert nxt is not None
            target = nxt
            if target.anon_vma is None and vma.anon_vma is not None:
                target.anon_vma, target.chain_len = vma.anon_vma, vma.chain_len
            target.start = start
            target.pgoff = vma.linear_page_index(start)
            if whole:
                self._drop(vma)
            else:
                vma.end = start
        self._reindex()
        return target

    def _drop(self, vma: Vma) -> None:
        """A VMA absorbed by a merge: remove_vma() drops its file reference."""
        if vma.file is not None:
            vma.file.vma_refs -= 1
        self._vmas.remove(vma)

    def merge_new_range(
        self,
        start: int,
        end: int,
        flags: int,
        pgoff: int,
        file: ShmemFile | None,
        anon_vma: AnonVma | None,
        prev: Vma | None,
        nxt: Vma | None,
    ) -> Vma | None:
        """vma_merge_new_range() with the caller's ``prev``/``nxt`` and ``anon_vma``.

        mremap's copy_vma() and vma_merge_extend() (mm/vma.c) pass the moved
        VMA's anon_vma and may leave out a neighbour (None): the new range
        [start, end) (bytes) extends ``prev`` and/or ``nxt`` when
        compatible; the VMA that grows keeps its own flags (VM_SOFTDIRTY
        included) and anon_vma.  None: no merge.
        """
        left, right = self._merge_sides(prev, nxt, start, end, flags, file, anon_vma, pgoff)
        return self._extend(prev if left else None, nxt if right else None, start, end, pgoff)
