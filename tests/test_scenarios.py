"""The scenario catalog, in a real guest kernel and in the model, compared.

One test per file of tests/scenarios/ on the ``--arch`` given: it runs in
the worker's shared VM (tests/conftest.py) and fails with the rendered
report when the kernel and the model disagree.  A scenario that does not
apply to the architecture skips, saying why.

And a test that the comparison bites on real observations: the model's
observations with one pagemap field and one frame's count changed must be
reported at that field, step, address and PFN, and nowhere else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from harness.compare import compare
from harness.guest_executor import run_guest
from harness.model_executor import run_model
from harness.observations import CheckObservation, FrameRead, Observations, ReadResult
from harness.report import ScenarioResult, render_text
from harness.scenario import Scenario, load_scenario, plan_layout
from harness.vm import VM, VMSource
from sim.arch import Arch
from sim.flags import PM
from sim.formats import build_u64s, parse_u64s
from sim.mm.facts import (
    FACTS_BY_SERIES,
    PINNED,
    SCENARIO_OF_FACT,
    SCENARIO_OF_SHARED_FACT,
    KernelFacts,
)

SCENARIO_DIR = Path(__file__).parent / "scenarios"
#: Facts seen only in soft-dirty bits: without HAVE_ARCH_SOFT_DIRTY (arm64, i386)
#: VM_SOFTDIRTY is 0 and either value of the fact gives the same bytes.
SOFT_DIRTY_FACTS = frozenset({"vma_merge_propagates_softdirty"})
SCENARIO_FILES = sorted(SCENARIO_DIR.glob("*.json"))
#: Kernel series whose hugetlb rules (sim/MODEL.md, hugetlb) were checked in a guest.
HUGETLB_SERIES = frozenset({"6.12"})


def _run(scenario: Scenario, vm: VM) -> tuple[Observations, Observations]:
    arch = vm.profile.arch
    reason = scenario.unsupported_reason(arch)
    if reason is None and scenario.uses_hugetlb and _facts(vm).series not in HUGETLB_SERIES:
        reason = (f"the hugetlb rules were checked on {', '.join(sorted(HUGETLB_SERIES))} "
                  f"guests only, not on {_facts(vm).series} (sim/MODEL.md)")
    if reason is not None:
        pytest.skip(reason)
    return run_model(scenario, arch, facts=_facts(vm)), run_guest(scenario, vm)


def _facts(vm: VM) -> KernelFacts:
    """The model facts of the booted kernel (chosen by its release when it said hello)."""
    return vm.facts or PINNED


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
def test_scenario_agrees(path: Path, shared_vm: VMSource) -> None:
    scenario = load_scenario(path)
    vm = shared_vm.get(swap=scenario.swap)
    arch = vm.profile.arch
    model, real = _run(scenario, vm)
    divergences = compare(model, real, scenario, arch)
    if divergences:
        report = render_text([ScenarioResult.from_divergences(scenario.name, arch.name,
                                                              divergences)])
        pytest.fail(f"kernel and model diverge:\n{report}", pytrace=False)


def _other_values(facts: KernelFacts, name: str) -> list[object]:
    """The values fact ``name`` has in the other known kernel series, where they differ."""
    mine = getattr(facts, name)
    return [getattr(other, name) for other in FACTS_BY_SERIES.values()
            if other.series != facts.series and getattr(other, name) != mine]


@pytest.mark.parametrize("fact", sorted(SCENARIO_OF_FACT))
def test_other_versions_fact_fails_on_this_kernel(fact: str, vm: VM) -> None:
    """The booted kernel refutes every other series' value of each version fact.

    The fact's scenario, modelled with the booted series' facts except that one
    taken from another series, must diverge from the guest: the fact is a
    property of the kernel version, seen in a guest, not a choice of the model.
    """
    facts = _facts(vm)
    others = _other_values(facts, fact)
    if not others:
        pytest.skip(f"no other kernel series differs from {facts.series} in {fact}")
    scenario = load_scenario(SCENARIO_DIR / f"{SCENARIO_OF_FACT[fact]}.json")
    arch = vm.profile.arch
    if (reason := scenario.unsupported_reason(arch)) is not None:
        pytest.skip(reason)
    real = run_guest(scenario, vm)
    assert compare(run_model(scenario, arch, facts=facts), real, scenario, arch) == []
    for value in others:
        changes: dict[str, Any] = {fact: value}
        wrong = dataclasses.replace(facts, **changes)
        divergences = compare(run_model(scenario, arch, facts=wrong), real, scenario, arch)
        assert divergences, (f"{scenario.name} on {facts.series} does not refute "
                             f"{fact}={value!r}")


@pytest.mark.parametrize("fact", sorted(SCENARIO_OF_SHARED_FACT))
def test_later_kernels_fact_fails_on_this_kernel(fact: str, vm: VM) -> None:
    """The booted kernel refutes the value a later kernel has of a fact the known series share
    (e.g. 6.19's VM_SOFTDIRTY kept on mprotect merges): the model keeps the kernel's behaviour."""
    facts = _facts(vm)
    scenario = load_scenario(SCENARIO_DIR / f"{SCENARIO_OF_SHARED_FACT[fact]}.json")
    arch = vm.profile.arch
    if (reason := scenario.unsupported_reason(arch)) is not None:
        pytest.skip(reason)
    if fact in SOFT_DIRTY_FACTS and not arch.soft_dirty:
        pytest.skip(f"{fact} is about soft-dirty, which {arch.name} does not track")
    real = run_guest(scenario, vm)
    assert compare(run_model(scenario, arch, facts=facts), real, scenario, arch) == []
    flipped: dict[str, Any] = {fact: not getattr(facts, fact)}
    wrong = dataclasses.replace(facts, **flipped)
    assert compare(run_model(scenario, arch, facts=wrong), real, scenario, arch), (
        f"{scenario.name} on {facts.series} does not refute {fact}={not getattr(facts, fact)!r}")


def test_catalog_is_not_empty() -> None:
    assert len(SCENARIO_FILES) >= 14, f"scenario files under {SCENARIO_DIR}"


# ---------------------------------------------------------------------------
# The comparison bites on a real guest's observations
# ---------------------------------------------------------------------------


def _with_check(obs: Observations, check: CheckObservation) -> Observations:
    checks = tuple(check if c.step == check.step else c for c in obs.checks)
    return dataclasses.replace(obs, checks=checks)


def _flip_pagemap_bit(arch: Arch, check: CheckObservation, proc: str, region: str, page: int,
                      bit: int) -> CheckObservation:
    read = check.region(proc, region)
    assert read is not None and read.pagemap.data is not None
    values = parse_u64s(arch, read.pagemap.data)
    values[page] ^= 1 << bit
    changed = dataclasses.replace(read, pagemap=ReadResult.ok(build_u64s(arch, values)))
    regions = tuple(changed if r is read else r for r in check.regions)
    return dataclasses.replace(check, regions=regions)


def _bump_kpagecount(arch: Arch, check: CheckObservation, pfn: int) -> CheckObservation:
    frame = check.frame(pfn)
    assert frame is not None and frame.kpagecount.data is not None
    count = parse_u64s(arch, frame.kpagecount.data)[0]
    changed: FrameRead = dataclasses.replace(
        frame, kpagecount=ReadResult.ok(build_u64s(arch, [count + 1]))
    )
    frames = tuple(changed if f is frame else f for f in check.frames)
    return dataclasses.replace(check, frames=frames)


def _pfn_at(arch: Arch, check: CheckObservation, proc: str, region: str, page: int) -> int:
    read = check.region(proc, region)
    assert read is not None and read.pagemap.data is not None
    raw = parse_u64s(arch, read.pagemap.data)[page]
    assert raw >> PM.PRESENT & 1, f"{proc}:{region}+{page} is not present"
    return raw & PM.PFN_MASK


def test_wrong_model_value_is_reported(vm: VM) -> None:
    """fork_cow after the child's COW break: two planted errors, each located exactly."""
    scenario = load_scenario(SCENARIO_DIR / "fork_cow.json")
    arch = vm.profile.arch
    model, real = _run(scenario, vm)
    assert compare(model, real, scenario, arch) == [], "the unperturbed run must agree"

    step = 5  # the check after the child wrote page 1
    page_size = arch.page_size
    vaddr = plan_layout(scenario, arch)["a"].vaddr + 1 * page_size
    check = next(c for c in model.checks if c.step == step)
    real_check = next(c for c in real.checks if c.step == step)
    # The child's own copy of page 1 is exclusive; plant "not exclusive".
    check = _flip_pagemap_bit(arch, check, "child", "a", 1, PM.MMAP_EXCLUSIVE)
    # Page 0 is still shared by parent and child (mapcount 2); plant 3.
    model_pfn = _pfn_at(arch, check, "main", "a", 0)
    real_pfn = _pfn_at(arch, real_check, "main", "a", 0)
    check = _bump_kpagecount(arch, check, model_pfn)
    perturbed = _with_check(model, check)

    divergences = compare(perturbed, real, scenario, arch)
    found = {(d.step, d.field) for d in divergences}
    assert found == {(step, "pagemap.exclusive"), (step, "kpagecount")}, divergences

    exclusive = next(d for d in divergences if d.field == "pagemap.exclusive")
    assert (exclusive.proc, exclusive.region, exclusive.page, exclusive.vaddr) == (
        "child", "a", 1, vaddr)
    assert (exclusive.model, exclusive.real) == (False, True)
    count = next(d for d in divergences if d.field == "kpagecount")
    assert (count.model_pfn, count.real_pfn) == (model_pfn, real_pfn)
    assert (count.model, count.real) == (3, 2)

    report = render_text([ScenarioResult.from_divergences(scenario.name, arch.name,
                                                          divergences)])
    for text in ("FAIL fork_cow", f"step {step} (check)", "pagemap.exclusive", f"{vaddr:#x}",
                 "kpagecount: model 3, real 2", f"{model_pfn:#x}", f"{real_pfn:#x}"):
        assert text in report, f"{text!r} not in the report:\n{report}"
