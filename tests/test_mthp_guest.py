"""Scenario settings and anonymous mTHP in a real guest.

* the ``hugepages-<size>kB`` directories the kernel offers are exactly
  :func:`harness.scenario.settings.mthp_sizes` of the architecture;
* a run with settings leaves every knob as it found it (and khugepaged
  quiescent: the run itself checks ``pages_collapsed``);
* planted model errors are caught: mTHP pages that are not anon-exclusive,
  and a model that ignores the scenario's settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.compare import compare
from harness.guest_executor import run_guest
from harness.guest_settings import apply_settings, restore_settings
from harness.model_executor import ModelRun, run_model
from harness.scenario import SYSFS_THP, load_scenario, mthp_sizes
from harness.vm import VM
from sim.mm.facts import PINNED
from sim.mm.memmap import PhysMem
from sim.mm.settings import ThpSettings

SCENARIO_DIR = Path(__file__).parent / "scenarios"
_KNOBS = ("enabled", "shmem_enabled", *(f"hugepages-{kb}kB/enabled"
                                        for kb in (16, 32, 64, 128, 256, 512, 1024, 2048)))


def _need_thp(vm: VM) -> None:
    if not vm.profile.arch.thp_pages:
        pytest.skip(f"{vm.profile.arch.name} has no THP")


def _knobs(vm: VM) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for knob in _KNOBS:
        got = vm.agent.read_file(f"{SYSFS_THP}/{knob}", 4096)
        out[knob] = got.data.decode().strip() if got.ok else None
    return out


def test_mthp_sizes_are_the_kernels(vm: VM) -> None:
    """Every power-of-two size from one page to twice the PMD size has an
    ``enabled`` file exactly when mthp_sizes() lists it (THP_ORDERS_ALL_ANON)."""
    _need_thp(vm)
    arch = vm.profile.arch
    expected = mthp_sizes(arch)
    seen = {}
    for order in range(arch.thp_pages.bit_length() + 1):
        name = f"{(arch.page_size << order) >> 10}kB"
        got = vm.agent.read_file(f"{SYSFS_THP}/hugepages-{name}/enabled", 4096)
        if got.ok:
            seen[name] = order
    assert seen == expected


def test_settings_are_restored(vm: VM) -> None:
    """Runs that set thp never / always and mTHP sizes leave the knobs as they were."""
    _need_thp(vm)
    before = _knobs(vm)
    arch = vm.profile.arch
    for name in ("settings_thp_never", "settings_thp_always", "mthp_fallback"):
        scenario = load_scenario(SCENARIO_DIR / f"{name}.json", arch)
        real = run_guest(scenario, vm)
        assert compare(run_model(scenario, arch, facts=vm.facts or PINNED), real,
                       scenario, arch) == []
        assert _knobs(vm) == before, name


def test_shmem_and_ksm_knobs_take_and_are_restored(vm: VM, tmp_path: Path) -> None:
    """shmem_thp and ksm_use_zero_pages are written (read back inside the run by the
    applier) and restored; a run with them and no shmem region agrees."""
    _need_thp(vm)
    arch = vm.profile.arch
    path = tmp_path / "knobs.json"
    path.write_text(json.dumps({
        "name": "knobs", "settings": {"shmem_thp": "advise", "ksm_use_zero_pages": True},
        "steps": [{"op": "mmap", "region": "a", "pages": 4, "kind": "anon",
                   "share": "private", "prot": "rw"},
                  {"op": "write", "region": "a", "pages": [0, 4]}, {"op": "check"}]}))
    ksm = "/sys/kernel/mm/ksm/use_zero_pages"
    before = _knobs(vm), vm.agent.read_file(ksm, 64).data
    scenario = load_scenario(path, arch)
    seen = apply_settings(vm, scenario.settings)
    try:
        assert "[advise]" in vm.agent.read_file(f"{SYSFS_THP}/shmem_enabled", 4096).data.decode()
        assert vm.agent.read_file(ksm, 64).data.strip() == b"1"
    finally:
        restore_settings(vm, seen)
    assert (_knobs(vm), vm.agent.read_file(ksm, 64).data) == before
    real = run_guest(scenario, vm)
    assert compare(run_model(scenario, arch, facts=vm.facts or PINNED), real, scenario, arch) == []
    assert (_knobs(vm), vm.agent.read_file(ksm, 64).data) == before


def test_planted_not_exclusive_is_caught(vm: VM, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose new mTHP folios are not PageAnonExclusive diverges in kpageflags
    (OWNER_2) of every page of those folios, and nowhere else."""
    _need_thp(vm)
    arch = vm.profile.arch
    scenario = load_scenario(SCENARIO_DIR / "mthp_fallback.json", arch)
    real = run_guest(scenario, vm)
    original = PhysMem.folio_add_new_anon_rmap_ptes

    def not_exclusive(self: PhysMem, head: int, exclusive: bool) -> None:
        original(self, head, exclusive=False)

    monkeypatch.setattr(PhysMem, "folio_add_new_anon_rmap_ptes", not_exclusive)
    model = run_model(scenario, arch, facts=vm.facts or PINNED)
    divergences = compare(model, real, scenario, arch)
    fields = {d.field for d in divergences}
    assert divergences and all(f.startswith("kpage") for f in fields), divergences
    # Four large folios: 16 + 4 + 4 + 8 pages (the same orders on every arch).
    assert len({d.model_pfn for d in divergences}) == 32, divergences


def test_planted_settings_ignored_is_caught(vm: VM) -> None:
    """A model that runs mthp_pages_fork_cow with the boot knobs (no mTHP) diverges."""
    _need_thp(vm)
    arch = vm.profile.arch
    scenario = load_scenario(SCENARIO_DIR / "mthp_pages_fork_cow.json", arch)
    real = run_guest(scenario, vm)
    run = ModelRun(scenario, arch, facts=vm.facts or PINNED)
    run.machine.ctx.settings = ThpSettings()
    divergences = compare(run.run(), real, scenario, arch)
    assert any(d.field.startswith("kpageflags") for d in divergences), divergences
