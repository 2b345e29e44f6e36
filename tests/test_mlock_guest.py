"""mlock in a real guest: what outlives a run, and a planted model error.

A read populate (mlock() of a read-only private range) toggles the zero
page's PG_referenced, a state of the VM that outlives the run: the guest
executor resets it before every run (``clear_zero_page_referenced``), so the same
scenario twice in one VM, and then any zero-page scenario, still agree with
a fresh model.  And a model whose munlock leaves PG_mlocked set is reported
at the field, step and addresses it gets wrong.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.compare import compare
from harness.differences import Divergence
from harness.guest_executor import run_guest
from harness.model_executor import run_model
from harness.scenario import load_scenario
from harness.vm import VM
from sim.flags import KPF
from sim.mm import memmap
from sim.mm.facts import PINNED
from sim.mm.pageflags import PG

SCENARIOS = Path(__file__).parent / "scenarios"


def _divergences(name: str, vm: VM) -> list[Divergence]:
    scenario = load_scenario(SCENARIOS / f"{name}.json")
    arch = vm.profile.arch
    model = run_model(scenario, arch, facts=vm.facts or PINNED)
    return list(compare(model, run_guest(scenario, vm), scenario, arch))


def test_zero_page_referenced_does_not_outlive_a_run(vm: VM) -> None:
    """mlock_readonly leaves the zero page REFERENCED (3 toggles); run twice, then zero_page."""
    for name in ("mlock_readonly", "mlock_readonly", "zero_page"):
        assert _divergences(name, vm) == [], name


def test_munlock_keeping_pg_mlocked_is_caught(vm: VM, monkeypatch: pytest.MonkeyPatch) -> None:
    """A planted model error (__munlock_folio() forgetting PG_mlocked) makes munlock diverge
    at its second check, on kpageflags MLOCKED, for the region's pages (and in kpagemap's
    flags word where KPF_MLOCKED, bit 33, fits: not in i386's 4-byte word)."""
    drained = memmap.PhysMem._munlock_folio_drained

    def forgetful(self: memmap.PhysMem, head: int) -> None:
        mlocked = self.test(head, PG.mlocked)
        drained(self, head)
        if mlocked:
            self.set(head, PG.mlocked)

    monkeypatch.setattr(memmap.PhysMem, "_munlock_folio_drained", forgetful)
    found = _divergences("munlock", vm)
    assert found, "the planted error was not caught"
    fields = {"kpageflags"} | ({"kpagemap.flags"} if KPF.MLOCKED < 8 * vm.profile.arch.word_size
                               else set())
    assert {(d.step, d.field) for d in found} == {(5, field) for field in fields}, found
    kpageflags = [d for d in found if d.field == "kpageflags"]
    assert all(
        set(p.region for p in d.places) == {"a"} for d in kpageflags
    ), kpageflags
