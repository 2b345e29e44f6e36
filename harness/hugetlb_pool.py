"""The guest's hugetlb pool: what the model assumes of it, checked in the guest.

The kernel reserves ``hugepages=N`` huge pages of the default size at boot
(:attr:`sim.arch.Arch.hugetlb_pages`, put on the kernel command line by
:meth:`harness.arches.ArchProfile.command_line_for_kernel`;
hugetlb_nrpages_setup() and hugetlb_init() in mm/hugetlb.c).  The model
starts every scenario with that whole pool free (sim/mm/hugetlb.py), so the
guest must have it: :func:`check_hugetlb_pool` reads
``/sys/kernel/mm/hugepages/hugepages-<size>kB/{nr,free}_hugepages`` of the
arch's default size and fails with one line saying what is wrong.

A freed huge page keeps some of its page flags in the pool: free_huge_folio()
clears PG_anon_exclusive but not PG_dirty, which __unmap_hugepage_range() sets
on an anonymous folio zapped through a dirty entry (only a page-cache folio is
cleaned, hugetlb_delete_from_page_cache()), and the pool's free list is LIFO.
So what a fault finds depends on every earlier user of the pool.
:func:`refill_hugetlb_pool` gives each scenario a clean pool: it shrinks the
pool to 0 (update_and_free_hugetlb_folio(): the pages go back to the buddy
allocator, which clears their flags) and grows it back to N from the buddy
allocator (alloc_pool_huge_folio()), then checks it.
"""

from __future__ import annotations

from typing import Protocol

from sim.arch import Arch

__all__ = ["HugetlbPoolError", "check_hugetlb_pool", "hugetlb_sysfs_dir", "refill_hugetlb_pool"]


class HugetlbPoolError(RuntimeError):
    """The guest's hugetlb pool is not what the model assumes (one line)."""


class _Reader(Protocol):
    def __call__(self, path: str) -> str | None: ...


class _Writer(Protocol):
    def __call__(self, path: str, text: str) -> object: ...


def hugetlb_sysfs_dir(arch: Arch) -> str:
    """The sysfs directory of ``arch``'s default huge page size (hugetlb_sysfs_add_hstate())."""
    kb = (arch.hugetlb_page_pages * arch.page_size) >> 10
    return f"/sys/kernel/mm/hugepages/hugepages-{kb}kB"


def check_hugetlb_pool(arch: Arch, read_text: _Reader) -> None:
    """HugetlbPoolError unless the guest has ``arch.hugetlb_pages`` huge pages of the
    default size, all free.  ``read_text(path)``: a sysfs file's text, None if absent."""
    if not arch.hugetlb_page_pages:
        return
    base = hugetlb_sysfs_dir(arch)
    total, free = read_text(f"{base}/nr_hugepages"), read_text(f"{base}/free_hugepages")
    if total is None or free is None:
        raise HugetlbPoolError(
            f"{base} is missing: the kernel has no hugetlb pages of the size the model "
            f"assumes for {arch.name} (CONFIG_HUGETLBFS, default size)"
        )
    if int(total) != arch.hugetlb_pages:
        raise HugetlbPoolError(
            f"{base}/nr_hugepages is {total}, not the {arch.hugetlb_pages} the kernel "
            f"command line reserves (hugepages={arch.hugetlb_pages}); was the pool "
            "resized (a selftest's vm.nr_hugepages?) or the boot allocation short?"
        )
    if int(free) != arch.hugetlb_pages:
        raise HugetlbPoolError(
            f"{base}/free_hugepages is {free} of {total}: huge pages are in use before "
            "the scenario starts (the model starts with the whole pool free)"
        )


def refill_hugetlb_pool(arch: Arch, read_text: _Reader, write_text: _Writer) -> None:
    """Free the whole pool to the buddy allocator and allocate it anew (nr_hugepages 0,
    then ``arch.hugetlb_pages``), so every huge page starts with clean flags; then
    :func:`check_hugetlb_pool` (HugetlbPoolError if the guest could not allocate them
    all again, e.g. when its memory is fragmented)."""
    if not arch.hugetlb_page_pages:
        return
    path = f"{hugetlb_sysfs_dir(arch)}/nr_hugepages"
    write_text(path, "0\n")
    write_text(path, f"{arch.hugetlb_pages}\n")
    check_hugetlb_pool(arch, read_text)
