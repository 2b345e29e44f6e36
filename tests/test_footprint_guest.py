"""The footprint tool on a guest's real reads, against the kernel's smaps and the model.

For every scenario of the catalog, in the worker's shared VM: the tool
(:mod:`sim.footprint`) reads each root check's recorded observations through
its PageSource interface (:func:`harness.footprint_oracle.check_source`) and
must match, per VMA of ours, the kernel's smaps ``Rss``/``Pss``/``Swap`` and,
per process, the model's exact fixed-point PSS (split by kind) and RSS.  The
two scenarios built for it (cow_family, group_outsider) also compare whole
groups: the tool's group numbers from the real reads equal those from the
model's reads of the same check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.footprint_oracle import check_source, footprint_mismatches
from harness.guest_executor import run_guest
from harness.model_executor import run_model
from harness.observations import CheckObservation
from harness.scenario import load_scenario
from harness.vm import VM, VMSource
from sim.arch import Arch
from sim.footprint.scan import scan
from sim.mm.facts import PINNED

SCENARIO_DIR = Path(__file__).parent / "scenarios"
SCENARIO_FILES = sorted(SCENARIO_DIR.glob("*.json"))
#: Groups of the scenarios built for the footprint: name -> (group name -> processes).
GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "cow_family": {"family": ("main", "c1", "c2", "c3")},
    "group_outsider": {"group": ("main", "member"), "outsider": ("outsider",)},
}
_GROUP_FIELDS = ("rss", "exclusive", "private", "shared_inside", "shared_outside", "pss_fixed")


def _groups(check: CheckObservation, arch: Arch,
            groups: dict[str, tuple[str, ...]]) -> dict[str, tuple[int | None, ...]]:
    source, names = check_source(check, arch)
    wanted = {g: [names[p] for p in procs if p in names] for g, procs in groups.items()}
    found = scan(source, wanted)
    return {g.name: tuple(getattr(g, f) for f in _GROUP_FIELDS) for g in found.groups}


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
def test_footprint_matches_smaps_and_model(path: Path, shared_vm: VMSource) -> None:
    scenario = load_scenario(path)
    vm = shared_vm.get(swap=scenario.swap)
    arch = vm.profile.arch
    reason = scenario.unsupported_reason(arch)
    if reason is not None:
        pytest.skip(reason)
    model = run_model(scenario, arch, facts=vm.facts or PINNED)
    real = run_guest(scenario, vm)
    compared = 0
    for m, r in zip(model.checks, real.checks, strict=True):
        problems = footprint_mismatches(r, arch, m)
        assert not problems, "\n".join(map(str, problems))
        compared += r.reader_uid == 0 and bool(r.smaps)
        groups = GROUPS.get(scenario.name)
        if groups is not None and r.reader_uid == 0:
            real_groups, model_groups = _groups(r, arch, groups), _groups(m, arch, groups)
            assert real_groups == model_groups, f"step {r.step}: {real_groups} != {model_groups}"
            if scenario.name == "group_outsider":
                rss, exclusive, *_, shared_outside, _ = real_groups["group"]
                assert shared_outside and exclusive and rss == exclusive + shared_outside
    if scenario.name in GROUPS:
        assert compared == len(real.checks)


def test_exit_oracle_frees_exactly_the_group_exclusive_anon(vm: VM) -> None:
    """group_outsider, then the whole group exits: of the anonymous frames the group
    mapped, those whose refcount (kpagemap) reads 0 afterwards are exactly as many as
    the tool called group-exclusive anonymous memory; the rest (shared with the
    outsider, still alive) keep a reference."""
    from harness.guest_executor import GuestRun, prepare_guest
    from sim.flags import KPF, PM
    from sim.formats import parse_kpagemap_entries, parse_u64s

    scenario = load_scenario(SCENARIO_DIR / "group_outsider.json")
    arch = vm.profile.arch
    run = GuestRun(scenario, vm)
    prepare_guest(vm)
    try:
        run._spawn("main")
        for step in scenario.steps:
            run.outcomes.append(run.step(step))
        last = run.checks[-1]
        source, names = check_source(last, arch)
        group = scan(source, {"group": [names["main"], names["member"]]}).groups[0]
        assert group.categories is not None
        anon = group.categories["anon"]
        exclusive_anon = anon["private"] + anon["shared_inside"]
        frames = {f.pfn: f for f in last.frames}
        group_anon = set()
        for read in last.regions:
            if read.proc in ("main", "member") and read.pagemap.data:
                for raw in parse_u64s(arch, read.pagemap.data):
                    pfn = raw & PM.PFN_MASK
                    frame = frames.get(pfn)
                    present = raw >> PM.PRESENT & 1
                    if present and pfn and frame is not None and frame.kpageflags.data:
                        if parse_u64s(arch, frame.kpageflags.data)[0] >> KPF.ANON & 1:
                            group_anon.add(pfn)
        assert exclusive_anon and len(group_anon) * arch.page_size > exclusive_anon
        for proc in ("member", "main"):
            run.agent.exit(run.names.pop(proc))
        run.agent.settle()
        size = arch.kpagemap_entry_size
        freed = 0
        for pfn in sorted(group_anon):
            got = run.agent.read_file("/proc/kpagemap", size, offset=(pfn + 1) * size)
            assert got.ok, got.describe()
            (_, refcount), = parse_kpagemap_entries(arch, got.data)
            freed += refcount == 0
        assert freed * arch.page_size == exclusive_anon, (
            f"{freed} frames freed, the tool said {exclusive_anon // arch.page_size} "
            f"of {len(group_anon)} are group-exclusive anonymous")
    finally:
        run._kill_all()
