"""mlock in the model: each expected value follows from the 6.12 function named in the test.

mm/mlock.c (do_mlock(), apply_vma_lock_flags(), mlock_fixup(),
mlock_pte_range(), __mlock_folio(), __munlock_folio()), mm/gup.c
(populate_vma_page_range()), the rmap and LRU hooks (folio_add_lru_vma(),
mlock_vma_folio(), munlock_vma_folio()).  Flags are exact sets of KPF names.
"""

from __future__ import annotations

import errno

import pytest

from sim.arch import get_arch
from sim.flags import kpf_names
from sim.mm import Machine, MmError, Process
from sim.mm.mlock import mlock_future_ok
from sim.mm.vma import VM_LOCKED, VM_LOCKONFAULT
from sim.procfs import kpage_values, pagemap_entries
from sim.smaps import smap_blocks

X86 = get_arch("x86_64")
BASE = 1 << 40
ANON = {"UPTODATE", "LRU", "MMAP", "ANON", "SWAPBACKED", "OWNER_2"}
LOCKED = {"MLOCKED", "UNEVICTABLE"}


@pytest.fixture
def m() -> Machine:
    return Machine(X86, ram_bytes=256 << 20)


def page_flags(m: Machine, p: Process, page: int) -> set[str]:
    """The KPF names of the frame mapped at ``page`` of BASE (after a drain)."""
    m.lru_add_drain()
    entry = pagemap_entries(m, p, BASE + page * m.arch.page_size, 1)[0]
    assert entry.present and entry.pfn is not None
    return set(kpf_names(kpage_values(m, "/proc/kpageflags", entry.pfn)))


def present(m: Machine, p: Process, page: int) -> bool:
    return pagemap_entries(m, p, BASE + page * m.arch.page_size, 1)[0].present


def test_mlock_moves_mapped_folios_to_the_unevictable_lru(m: Machine) -> None:
    """mlock_folio() -> __mlock_folio(): PG_mlocked, PG_unevictable, PG_active cleared, still
    PG_lru; the populate pass (FOLL_TOUCH) marks each page accessed once: REFERENCED."""
    p = m.spawn("main")
    p.mmap(BASE, 2)
    p.touch(BASE, 2, write=True)
    p.mlock(BASE, 2)
    assert page_flags(m, p, 0) == ANON | LOCKED | {"REFERENCED"}
    assert [v.flags & VM_LOCKED for v in p.vmas] == [VM_LOCKED]
    assert p.mm.locked_vm == 2


def test_onfault_populates_nothing_and_faults_mlock_new_folios(m: Machine) -> None:
    """mlock2(MLOCK_ONFAULT): populate_vma_page_range() returns at once; a write fault's
    folio_add_lru_vma() is mlock_new_folio(): MLOCKED, UNEVICTABLE, not REFERENCED."""
    p = m.spawn("main")
    p.mmap(BASE, 3)
    p.mlock(BASE, 3, onfault=True)
    assert not any(present(m, p, i) for i in range(3))
    assert p.vmas[0].flags & (VM_LOCKED | VM_LOCKONFAULT) == VM_LOCKED | VM_LOCKONFAULT
    p.touch(BASE + m.arch.page_size, 1, write=True)
    assert page_flags(m, p, 1) == ANON | LOCKED
    assert smap_blocks(p.mm, m.facts)[0].vm_flags == (
        "rd", "wr", "mr", "mw", "me", "lo", "lf", "ac", "sd"
    )


def test_munlock_returns_folios_to_an_evictable_lru(m: Machine) -> None:
    """__munlock_folio(): mlock_count 1 -> 0, PG_mlocked and PG_unevictable cleared."""
    p = m.spawn("main")
    p.mmap(BASE, 2)
    p.mlock(BASE, 2)
    p.munlock(BASE, 2)
    assert page_flags(m, p, 0) == ANON | {"REFERENCED"}
    assert p.mm.locked_vm == 0


def test_partial_mlock_splits_and_munlock_merges(m: Machine) -> None:
    """vma_modify_flags(): the middle becomes its own VM_LOCKED VMA; munlock merges back."""
    p = m.spawn("main")
    p.mmap(BASE, 6)
    p.touch(BASE, 6, write=True)
    ps = m.arch.page_size
    p.mlock(BASE + 2 * ps, 2)
    assert [(v.start - BASE) // ps for v in p.vmas] == [0, 2, 4]
    assert page_flags(m, p, 1) == ANON and page_flags(m, p, 2) == ANON | LOCKED | {"REFERENCED"}
    p.munlock(BASE + 2 * ps, 2)
    assert len(p.vmas) == 1


def test_fork_child_loses_vm_locked_and_its_cow_copy_is_not_mlocked(m: Machine) -> None:
    """dup_mmap() clears VM_LOCKED_MASK; the child's COW copy goes to the ordinary LRU; the
    parent's copy is mlocked and the old folio munlocked (folio_remove_rmap_pte())."""
    p = m.spawn("main")
    p.mmap(BASE, 2)
    p.touch(BASE, 2, write=True)
    p.mlock(BASE, 2)
    c = p.fork("child")
    assert not c.vmas[0].flags & VM_LOCKED and c.mm.locked_vm == 0
    c.touch(BASE, 1, write=True)
    assert page_flags(m, c, 0) == ANON
    # Mapped by the parent alone now, mlocked still, not exclusive until written.
    assert page_flags(m, p, 0) == (ANON - {"OWNER_2"}) | LOCKED | {"REFERENCED"}
    ps = m.arch.page_size
    p.touch(BASE + ps, 1, write=True)
    assert page_flags(m, p, 1) == ANON | LOCKED
    # The old folio, still mapped by the child: munlocked, shared, no longer exclusive.
    assert page_flags(m, c, 1) == (ANON - {"OWNER_2"}) | {"REFERENCED"}


def test_a_hole_is_enomem_after_the_vmas_before_it(m: Machine) -> None:
    """apply_vma_lock_flags(): the VMA before the hole is locked, then ENOMEM, no populate."""
    p = m.spawn("main")
    p.mmap(BASE, 4)
    ps = m.arch.page_size
    p.munmap(BASE + 2 * ps, 1)
    with pytest.raises(MmError) as e:
        p.mlock(BASE, 4)
    assert e.value.errno == errno.ENOMEM
    assert p.vmas[0].flags & VM_LOCKED and not p.vmas[1].flags & VM_LOCKED
    assert not present(m, p, 0)


def test_rlimit_memlock_binds_without_cap_ipc_lock(m: Machine) -> None:
    """do_mlock(): pages + locked_vm past RLIMIT_MEMLOCK (8 MiB) is ENOMEM without
    CAP_IPC_LOCK; pages already locked in the range are not counted twice."""
    p = m.spawn("main")
    pages = (8 << 20) // m.arch.page_size
    p.mmap(BASE, pages + 1)
    user = p.fork("user", uid=1000)
    with pytest.raises(MmError) as e:
        user.mlock(BASE, pages + 1, onfault=True)
    assert e.value.errno == errno.ENOMEM and user.mm.locked_vm == 0
    user.mlock(BASE, pages, onfault=True)
    user.mlock(BASE, pages, onfault=True)  # the same pages again: still within the limit
    p.mlock(BASE, pages + 1, onfault=True)  # root has CAP_IPC_LOCK


def test_prot_none_is_locked_but_enomem(m: Machine) -> None:
    """populate_vma_page_range() returns -EFAULT for a PROT_NONE VMA, which
    __mlock_posix_error_return() turns into ENOMEM; the VMA is VM_LOCKED already."""
    p = m.spawn("main")
    p.mmap(BASE, 2, prot="none")
    with pytest.raises(MmError) as e:
        p.mlock(BASE, 2)
    assert e.value.errno == errno.ENOMEM and p.vmas[0].flags & VM_LOCKED


def test_dontneed_on_a_locked_vma_is_einval(m: Machine) -> None:
    """madvise_dontneed_free_valid_vma(): VM_LOCKED is forbidden for MADV_DONTNEED."""
    p = m.spawn("main")
    p.mmap(BASE, 2)
    p.mlock(BASE, 2)
    with pytest.raises(MmError) as e:
        p.madvise(BASE, 2, "dontneed")
    assert e.value.errno == errno.EINVAL and present(m, p, 0)


def test_mprotect_writable_populates_a_locked_private_vma(m: Machine) -> None:
    """mprotect_fixup(): a private VM_LOCKED VMA becoming writable is populated with
    write faults (COW broken: the zero pages are replaced by mlocked folios)."""
    p = m.spawn("main")
    p.mmap(BASE, 2, prot="r")
    p.mlock(BASE, 2)
    zero = pagemap_entries(m, p, BASE, 1)[0].pfn
    assert zero == m.zero_pfn
    p.mprotect(BASE, 2, "rw")
    assert page_flags(m, p, 0) == ANON | LOCKED | {"REFERENCED"}


def test_pte_mapped_thp_is_mlocked_only_whole(m: Machine) -> None:
    """mlock_pte_range(): a PTE-mapped large folio is mlocked when one folio_pte_batch()
    maps all of it inside the range (allow_mlock_munlock()), not when only part is."""
    p = m.spawn("main")
    nr = m.arch.thp_pages
    p.mmap(BASE, nr)
    p.madvise(BASE, nr, "hugepage")
    p.touch(BASE, 1, write=True)
    # Split the PMD without changing the mapping: mprotect a part, then back.
    p.mprotect(BASE, 1, "r")
    p.mprotect(BASE, 1, "rw")
    assert len(p.vmas) == 1
    p.mlock(BASE, 4, onfault=True)
    assert "MLOCKED" not in page_flags(m, p, 0)  # only 4 of nr pages in the range
    p.munlock(BASE, 4)
    p.mlock(BASE, nr, onfault=True)
    assert LOCKED <= page_flags(m, p, nr - 1)


def test_zero_page_referenced_toggles_on_each_follow(m: Machine) -> None:
    """follow_page_pte() with FOLL_TOUCH on the zero page: folio_mark_accessed() sets
    PG_referenced, and the next call clears it (off the LRU: no activation)."""
    p = m.spawn("main")
    p.mmap(BASE, 3, prot="r")
    p.mlock(BASE, 1)
    zero = m.zero_pfn
    assert "REFERENCED" in set(kpf_names(kpage_values(m, "/proc/kpageflags", zero)))
    p.mlock(BASE + m.arch.page_size, 1)
    assert "REFERENCED" not in set(kpf_names(kpage_values(m, "/proc/kpageflags", zero)))
    assert "ACTIVE" not in set(kpf_names(kpage_values(m, "/proc/kpageflags", zero)))


def test_mlock_future_ok_is_the_mmap_side_of_the_limit(m: Machine) -> None:
    """mlock_future_ok(): VM_LOCKED pages past RLIMIT_MEMLOCK only with CAP_IPC_LOCK."""
    p = m.spawn("main")
    pages = (8 << 20) // m.arch.page_size
    assert mlock_future_ok(p.mm, VM_LOCKED, pages, cap_ipc_lock=False)
    assert not mlock_future_ok(p.mm, VM_LOCKED, pages + 1, cap_ipc_lock=False)
    assert mlock_future_ok(p.mm, VM_LOCKED, pages + 1, cap_ipc_lock=True)
    assert mlock_future_ok(p.mm, 0, pages + 1, cap_ipc_lock=False)


def test_shmem_folio_mlocked_in_the_lru_add_batch_is_undercounted(m: Machine) -> None:
    """The mlock batch overtaking the lru_add batch (found by harness fuzz on ppc64, seed 4).

    A child's mlock() populates 64 shared anonymous (shmem) pages, 0-15 already in the page
    cache (the parent wrote them), 16-63 new: each new one is folio_add_lru()ed before
    mlock_folio(), but the first 16 gave the mlock batch a head start, so it drains
    (mlock_folio_batch(), 31 slots) while 16-30 and later 47-61 still wait in the lru_add
    batch: __mlock_folio() skips them (folio_test_clear_lru() fails) and lru_add() culls them
    with mlock_count 0.  The parent's mlock() of all 64 adds one to every count; its
    munlock() of 0-59 then takes those folios to 0 and clears PG_mlocked, though the child
    still has them locked.  The rest keep a count of 1 and stay mlocked.
    """
    p = m.spawn("main")
    p.mmap(BASE, 64, share="shared")
    p.touch(BASE, 16, write=True)
    c = p.fork("child")
    c.mlock(BASE, 64)
    p.mlock(BASE, 64)
    p.munlock(BASE, 60)
    undercounted = set(range(16, 31)) | set(range(47, 60))
    for page in range(64):
        flags = page_flags(m, c, page)
        assert (flags & LOCKED == LOCKED) == (page not in undercounted), page
        assert flags & LOCKED in (set(), LOCKED), page
