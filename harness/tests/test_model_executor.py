"""Every catalog scenario through the model on every architecture, then compared.

Against itself the model must agree exactly; against a copy with renumbered
PFNs (as a kernel would number them) too; and against a copy with one field
perturbed, the comparison must point at that field and only there.  One test
per scenario and arch does all of it on one model run: the run is the cost.
The perturbations exercise the comparison, whose only arch inputs are the
byte order and the word size, so they run on one arch of each kind
(:data:`FORMAT_ARCHES`); the determinism re-run is the model's own property,
checked on x86_64.  On an arch with THP the run also counts the THPs it holds at
once, which must fit the guest's free blocks (test_model_ram.PeakThps).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.compare import compare
from harness.differences import KpfFlags
from harness.model_executor import ModelError, ModelRun, run_model
from harness.observations import Observations, ReadResult
from harness.report import ScenarioResult, render_text
from harness.scenario import Scenario, load_scenario
from harness.tests import synth
from harness.tests.test_model_ram import PeakThps
from sim.arch import ARCH_NAMES, Arch, get_arch
from sim.flags import KPF, PM
from sim.formats import build_u64s, parse_u64s

CATALOG = Path(__file__).resolve().parents[2] / "tests" / "scenarios"
PATHS = sorted(CATALOG.glob("*.json"))
CASES = [(path, name) for path in PATHS for name in ARCH_NAMES]
#: One arch per pagemap/kpage* format: little-endian 64-bit, big-endian 64-bit,
#: 32-bit words (kpagemap's unsigned longs).
FORMAT_ARCHES = ("x86_64", "ppc64", "i386")


@pytest.mark.parametrize("path,arch_name", CASES,
                         ids=[f"{p.stem}-{a}" for p, a in CASES])
def test_model_run(path: Path, arch_name: str) -> None:
    """One model run of the scenario: consistent, and every perturbation of it reported."""
    scenario = load_scenario(path)
    arch = get_arch(arch_name)
    reason = scenario.unsupported_reason(arch)
    if reason:
        pytest.skip(reason)
    peaks = PeakThps(arch) if arch.thp_pages else None
    obs = ModelRun(scenario, arch).run(peaks.after_step if peaks else None)
    if peaks:
        peaks.check(scenario.name, arch)
    _agrees_with_itself(scenario, arch, obs)
    if arch_name == "x86_64":
        assert run_model(scenario, arch) == obs, "the model is deterministic"
    if arch_name in FORMAT_ARCHES:
        _perturbed_kpageflags_is_reported(scenario, arch, obs)
        _perturbed_pagemap_bit_is_reported(scenario, arch, obs)


def _agrees_with_itself(scenario: Scenario, arch: Arch, obs: Observations) -> None:
    assert obs.side == "model" and obs.scenario == scenario.name and obs.arch == arch.name
    assert [o.step for o in obs.outcomes] == list(range(len(scenario.steps)))
    assert [c.step for c in obs.checks] == [c.index for c in scenario.checks]
    assert compare(obs, obs, scenario, arch) == []
    assert Observations.from_json(json.loads(json.dumps(obs.to_json()))) == obs
    # As a kernel would number the frames: another bijection, the same answer.
    real = replace(synth.map_pfns(obs, arch, lambda pfn: pfn * 3 + 0x1234), stable_pfns=False)
    assert compare(obs, real, scenario, arch) == []


def _first_frame(obs: Observations) -> tuple[int, int] | None:
    for i, check in enumerate(obs.checks):
        if check.frames:
            return i, 0
    return None


def _perturbed_kpageflags_is_reported(scenario: Scenario, arch: Arch, obs: Observations) -> None:
    first = _first_frame(obs)
    if first is None:
        return  # no check of this scenario names a frame: nothing to perturb
    ci, fi = first
    check = obs.checks[ci]
    frame = check.frames[fi]
    assert frame.kpageflags.data is not None
    flags = parse_u64s(arch, frame.kpageflags.data)[0] ^ (1 << KPF.IDLE)
    bad = replace(frame, kpageflags=ReadResult.ok(build_u64s(arch, [flags])))
    frames = tuple(bad if f.pfn == frame.pfn else f for f in check.frames)
    real = replace(obs, side="real",
                   checks=tuple(replace(c, frames=frames) if i == ci else c
                                for i, c in enumerate(obs.checks)))
    found = compare(obs, real, scenario, arch)
    fields = sorted({(d.kind, d.field) for d in found})
    assert fields == [("consistency", "kpagemap.flags"), ("value", "kpageflags")]
    value = next(d for d in found if d.kind == "value")
    assert (value.step, value.model_pfn, value.real_pfn) == (check.step, frame.pfn, frame.pfn)
    assert isinstance(value.model, KpfFlags) and isinstance(value.real, KpfFlags)
    assert value.model.value ^ value.real.value == 1 << KPF.IDLE
    text = render_text([ScenarioResult.from_divergences(scenario.name, arch.name, found)])
    assert f"step {check.step} (check)" in text and "kpageflags:" in text


def _perturbed_pagemap_bit_is_reported(scenario: Scenario, arch: Arch, obs: Observations) -> None:
    # The last check that read pagemap bytes (an unprivileged one may have read none).
    ci, ri = next((ci, ri) for ci in reversed(range(len(obs.checks)))
                  for ri, r in enumerate(obs.checks[ci].regions) if r.pagemap.data)
    check = obs.checks[ci]
    region = check.regions[ri]
    assert region.pagemap.data is not None
    raws = parse_u64s(arch, region.pagemap.data)
    raws[-1] ^= 1 << PM.SOFT_DIRTY
    bad = replace(region, pagemap=ReadResult.ok(build_u64s(arch, raws)))
    regions = tuple(bad if i == ri else r for i, r in enumerate(check.regions))
    real = replace(obs, side="real", checks=tuple(
        replace(c, regions=regions) if i == ci else c for i, c in enumerate(obs.checks)))
    found = compare(obs, real, scenario, arch)
    assert len(found) == 1, found
    d = found[0]
    assert (d.step, d.field, d.proc, d.region, d.page) == (
        check.step, "pagemap.soft_dirty", region.proc, region.region, len(raws) - 1)
    assert d.vaddr == region.vaddr + (len(raws) - 1) * arch.page_size


def test_more_memory_than_the_guest_is_a_model_error_not_a_crash(tmp_path: Path) -> None:
    """A parent and a COW child writing 200,000 pages each need more than 1 GiB of frames."""
    steps = [
        {"op": "mmap", "region": "a", "pages": 200_000, "kind": "anon", "share": "private",
         "prot": "rw"},
        {"op": "write", "region": "a", "pages": [0, 200_000]},
        {"op": "fork", "child": "c"},
        {"op": "write", "proc": "c", "region": "a", "pages": [0, 200_000]},
        {"op": "check"},
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"name": "big", "steps": steps}))
    arch = get_arch("x86_64")
    with pytest.raises(ModelError, match=r"^step 3 \(write\): the scenario needs more memory"):
        run_model(load_scenario(path, arch), arch)
