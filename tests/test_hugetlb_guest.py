"""hugetlb in a real guest: the boot pool, and planted model errors the comparison catches.

The catalog's hugetlb_* scenarios agree (tests/test_scenarios.py); here the
model is made wrong in one place at a time, the way a plausible bug would
make it wrong, and the same scenario run against the same guest must
diverge exactly there:

* KPF_HUGE missing on tail pages (stable_page_flags() testing the page, not
  the folio): kpageflags and kpagemap flags of every tail page, never a head;
* a page-cache huge page counted with one page-cache reference instead of
  folio_nr_pages() (__filemap_add_folio()): the kpagemap count of the shared
  mapping's pages;
* PG_dirty cleared when a huge page returns to the pool (free_huge_folio()
  does not): the reused page of hugetlb_munmap.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.compare import compare
from harness.guest_executor import prepare_guest, run_guest
from harness.hugetlb_pool import check_hugetlb_pool, hugetlb_sysfs_dir
from harness.model_executor import run_model
from harness.scenario import Scenario, load_scenario
from harness.vm import VM
from sim.flags import KPF
from sim.mm import hugetlb
from sim.mm.facts import PINNED
from sim.mm.memmap import PhysMem

SCENARIO_DIR = Path(__file__).parent / "scenarios"


def _scenario(name: str, vm: VM) -> Scenario:
    scenario = load_scenario(SCENARIO_DIR / f"{name}.json")
    reason = scenario.unsupported_reason(vm.profile.arch)
    if reason is not None:
        pytest.skip(reason)
    series = (vm.facts or PINNED).series
    if series != "6.12":
        pytest.skip(f"the hugetlb rules were checked on 6.12 guests only, not on {series}")
    return scenario


def _read_text(vm: VM, path: str) -> str | None:
    result = vm.agent.read_file(path, 4096)
    return result.data.decode().strip() if result.ok else None


def test_boot_pool(vm: VM) -> None:
    """The command line's hugepages=N gave the guest N free huge pages of the default size."""
    arch = vm.profile.arch
    if not arch.hugetlb_page_pages:
        pytest.skip(f"{arch.name} has no hugetlb pool")
    prepare_guest(vm)
    check_hugetlb_pool(arch, lambda path: _read_text(vm, path))
    meminfo = _read_text(vm, "/proc/meminfo")
    assert meminfo is not None
    fields = dict(line.split(":", 1) for line in meminfo.splitlines())
    huge_kb = (arch.hugetlb_page_pages * arch.page_size) >> 10
    # The default size is the one the model maps (default_hstate: Hugepagesize).
    assert fields["Hugepagesize"].split() == [str(huge_kb), "kB"], hugetlb_sysfs_dir(arch)
    assert int(fields["HugePages_Total"]) == arch.hugetlb_pages


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    yield monkeypatch


def _divergent_fields(scenario: Scenario, vm: VM) -> set[tuple[int, str]]:
    arch = vm.profile.arch
    model = run_model(scenario, arch, facts=vm.facts or PINNED)
    real = run_guest(scenario, vm)
    return {(d.step, d.field) for d in compare(model, real, scenario, arch)}


def test_planted_huge_missing_on_tails(vm: VM, planted: pytest.MonkeyPatch) -> None:
    """KPF_HUGE only on head pages: every check of hugetlb_private_fault diverges in the
    kpageflags and kpagemap flags of the tail pages."""
    scenario = _scenario("hugetlb_private_fault", vm)
    assert _divergent_fields(scenario, vm) == set(), "the unperturbed run must agree"
    real_flags = PhysMem.stable_page_flags

    def tails_without_huge(self: PhysMem, pfns: np.ndarray) -> np.ndarray:
        flags = real_flags(self, pfns)
        tails = self.head[np.asarray(pfns, dtype=np.int64)] != np.asarray(pfns)
        flags[tails] &= ~np.uint64(1 << KPF.HUGE)
        return flags

    planted.setattr(PhysMem, "stable_page_flags", tails_without_huge)
    found = _divergent_fields(scenario, vm)
    checks_with_pages = {4, 8}
    assert found == {(step, field) for step in checks_with_pages
                     for field in ("kpageflags", "kpagemap.flags")}, found


def test_planted_page_cache_refcount(vm: VM, planted: pytest.MonkeyPatch) -> None:
    """One page-cache reference per shared huge page instead of folio_nr_pages(): the
    kpagemap count (page_count()) of hugetlb_shared_fault's pages diverges."""
    scenario = _scenario("hugetlb_shared_fault", vm)
    real_get = PhysMem.folio_get

    def one_cache_ref(self: PhysMem, head: int, nr: int = 1) -> None:
        real_get(self, head, 1 if nr > 1 and self.hugetlb[head] else nr)

    planted.setattr(PhysMem, "folio_get", one_cache_ref)
    found = _divergent_fields(scenario, vm)
    assert found == {(3, "kpagemap.count"), (5, "kpagemap.count")}, found


def test_planted_pool_clears_dirty(vm: VM, planted: pytest.MonkeyPatch) -> None:
    """A pool that hands out clean pages (PG_dirty dropped at free_huge_folio()): the
    reused page in hugetlb_munmap's last check diverges in DIRTY."""
    scenario = _scenario("hugetlb_munmap", vm)

    class CleanPool(list[bool]):
        def append(self, dirty: bool) -> None:
            super().append(False)

    real_post_init = hugetlb.Hstate.__post_init__

    def clean_pool(self: hugetlb.Hstate) -> None:
        real_post_init(self)
        self.recycled = CleanPool()

    planted.setattr(hugetlb.Hstate, "__post_init__", clean_pool)
    found = _divergent_fields(scenario, vm)
    assert found == {(13, "kpageflags"), (13, "kpagemap.flags")}, found
