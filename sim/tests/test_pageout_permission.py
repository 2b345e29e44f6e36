"""MADV_PAGEOUT and who may page out a file's pages: can_do_file_pageout() (mm/madvise.c).

Each expected value follows from 6.12's madvise_pageout() and
madvise_cold_or_pageout_pte_range() (pageout_anon_only_filter), or 6.1's
can_do_pageout(); the guest side is tests/scenarios/madv_pageout_foreign_file.json
and madv_pageout_file_not_owner.json.
"""

from __future__ import annotations

import pytest

from sim.arch import get_arch
from sim.flags import kpf_names
from sim.mm import Credentials, Machine
from sim.mm.facts import FACTS_6_1, PINNED, KernelFacts
from sim.procfs import kpage_values, pagemap_entries

X86 = get_arch("x86_64")
BASE = 1 << 40
PAGE = X86.page_size


def _flags(m: Machine, pfn: int | None) -> set[str]:
    assert pfn is not None
    return set(kpf_names(kpage_values(m, "/proc/kpageflags", pfn)))


def test_foreign_private_file_page_stays_mapped() -> None:
    """The fuzz finding: root's 0600 file, a uid-1000 child reads it and pages it out.

    Not the owner, no CAP_FOWNER, no write bit for others: the page-cache
    folio is skipped (still mapped, PG_referenced kept).
    """
    m = Machine(X86, ram_bytes=256 << 20)
    main = m.spawn("main")
    f = m.create_file(1, tags=[7])
    main.mmap(BASE, 1, kind="file", share="private", file=f)
    child = main.fork("child", uid=1000)
    child.touch(BASE, 1, write=False)
    child.madvise(BASE, 1, "pageout")
    entry = pagemap_entries(m, child, BASE, 1)[0]
    assert entry.present and entry.file_shared and entry.exclusive
    assert "REFERENCED" in _flags(m, entry.pfn)


def test_owner_pages_out_its_file() -> None:
    """The same file owned by the child's uid: try_to_unmap() unmaps it (dirty: stays cached)."""
    m = Machine(X86, ram_bytes=256 << 20)
    main = m.spawn("main")
    f = m.create_file(1, tags=[7], owner=Credentials.user(1000))
    main.mmap(BASE, 1, kind="file", share="private", file=f)
    child = main.fork("child", uid=1000)
    child.touch(BASE, 1, write=False)
    child.madvise(BASE, 1, "pageout")
    assert not pagemap_entries(m, child, BASE, 1)[0].present


def test_memfd_is_anyones_to_page_out() -> None:
    """memfd_create() makes a 0777 inode (__shmem_file_setup()): write permission suffices."""
    m = Machine(X86, ram_bytes=256 << 20)
    main = m.spawn("main")
    f = m.create_memfd(1, "/memfd:pmh (deleted)")
    main.mmap(BASE, 1, kind="memfd", share="shared", file=f)
    child = main.fork("child", uid=1000)
    child.touch(BASE, 1, write=True, tags=[3])
    child.madvise(BASE, 1, "pageout")
    assert not pagemap_entries(m, child, BASE, 1)[0].present


@pytest.mark.parametrize(("facts", "cow_active"), [(PINNED, True), (FACTS_6_1, False)])
def test_foreign_private_file_cow_page(facts: KernelFacts, cow_active: bool) -> None:
    """6.12 pages out the COW (anonymous) page of the foreign private file VMA: no swap, so
    it is activated; 6.1's can_do_pageout() leaves the whole VMA alone."""
    m = Machine(X86, ram_bytes=256 << 20, facts=facts)
    main = m.spawn("main")
    f = m.create_file(2, tags=[7, 8])
    main.mmap(BASE, 2, kind="file", share="private", file=f)
    child = main.fork("child", uid=1000)
    child.touch(BASE, 1, write=False)
    child.touch(BASE + PAGE, 1, write=True, tags=[9])
    child.madvise(BASE, 2, "pageout")
    file_page, cow_page = pagemap_entries(m, child, BASE, 2)
    assert file_page.present and file_page.file_shared
    assert cow_page.present and not cow_page.file_shared
    assert ("ACTIVE" in _flags(m, cow_page.pfn)) is cow_active


def test_foreign_shared_file_left_alone() -> None:
    """madvise_pageout() returns at once for a VM_MAYSHARE VMA the caller may not page out."""
    m = Machine(X86, ram_bytes=256 << 20)
    main = m.spawn("main")
    f = m.create_file(1, tags=[7])
    main.mmap(BASE, 1, kind="file", share="shared", file=f)
    child = main.fork("child", uid=1000)
    child.touch(BASE, 1, write=False)
    child.madvise(BASE, 1, "pageout")
    assert pagemap_entries(m, child, BASE, 1)[0].present
