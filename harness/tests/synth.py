"""Synthetic observations for the unit tests: built with sim.formats, like an executor's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from harness.observations import (
    CheckObservation,
    FrameRead,
    Observations,
    ReadResult,
    RegionRead,
    Side,
    StepOutcome,
)
from sim.arch import Arch
from sim.flags import KPF, kpf_value
from sim.formats import KpagemapHeader, PagemapEntry, build_kpagemap_entries, build_u64s

#: The scenario the compare and report tests observe: a fork with a COW break,
#: a munmap and a new region, then a root and an unprivileged check.
FORK_MUNMAP_SCENARIO: dict[str, object] = {
    "name": "t",
    "steps": [
        {"op": "mmap", "region": "a", "pages": 4, "kind": "anon", "share": "private",
         "prot": "rw"},
        {"op": "write", "region": "a", "pages": [0, 2]},
        {"op": "check"},
        {"op": "fork", "child": "c"},
        {"op": "write", "proc": "c", "region": "a", "pages": [1, 2]},
        {"op": "check"},
        {"op": "munmap", "region": "a", "pages": [0, 4]},
        {"op": "mmap", "region": "b", "pages": 2, "kind": "anon", "share": "private",
         "prot": "rw"},
        {"op": "write", "region": "b", "pages": [0, 2]},
        {"op": "check"},
        {"op": "check", "as_uid": 1000},
    ],
}

ANON_FLAGS = kpf_value(KPF.UPTODATE, KPF.LRU, KPF.MMAP, KPF.ANON, KPF.SWAPBACKED)


def region(
    arch: Arch,
    proc: str,
    name: str,
    vaddr: int,
    entries: Sequence[PagemapEntry],
    tags: Sequence[int | None] | None = None,
) -> RegionRead:
    data = build_u64s(arch, [e.to_raw() for e in entries])
    return RegionRead(
        proc, name, vaddr, len(entries), ReadResult.ok(data),
        None if tags is None else tuple(tags),
    )


def frame(arch: Arch, pfn: int, flags: int = ANON_FLAGS, count: int = 1) -> FrameRead:
    mask = (1 << 8 * arch.word_size) - 1
    return FrameRead(
        pfn,
        kpagemap=ReadResult.ok(build_kpagemap_entries(arch, [(flags & mask, count)])),
        kpageflags=ReadResult.ok(build_u64s(arch, [flags])),
        kpagecount=ReadResult.ok(build_u64s(arch, [count])),
    )


def check(
    arch: Arch,
    step: int,
    regions: Sequence[RegionRead],
    frames: Sequence[FrameRead],
    uid: int = 0,
) -> CheckObservation:
    if uid:
        denied = ReadResult.failed(13)
        header, probe = denied, denied
    else:
        header = ReadResult.ok(KpagemapHeader.for_arch(arch).slot_bytes())
        probe = ReadResult.ok(b"")
    return CheckObservation(step, uid, header, probe, probe, tuple(regions), tuple(frames))


def observations(
    arch: Arch,
    side: Side,
    checks: Sequence[CheckObservation],
    steps: int,
    scenario: str = "t",
    outcomes: dict[int, StepOutcome] | None = None,
) -> Observations:
    outs = tuple((outcomes or {}).get(i, StepOutcome(i, "ok")) for i in range(steps))
    return Observations(scenario, arch.name, side, outs, tuple(checks))


def map_pfns(obs: Observations, arch: Arch, to_real: Callable[[int], int]) -> Observations:
    """The same observations with every named PFN renamed, as a real kernel would number them."""
    from sim.formats import parse_u64s

    def region_map(r: RegionRead) -> RegionRead:
        if r.pagemap.data is None:
            return r
        raws = []
        for raw in parse_u64s(arch, r.pagemap.data):
            entry = PagemapEntry.from_raw(raw)
            if entry.pfn:
                entry = replace(entry, pfn=to_real(entry.pfn))
            raws.append(entry.to_raw())
        return replace(r, pagemap=ReadResult.ok(build_u64s(arch, raws)))

    def frames_map(frames: Sequence[FrameRead]) -> tuple[FrameRead, ...]:
        renamed: dict[int, FrameRead] = {}
        for f in frames:  # two model frames on one real frame: the kernel reads it once
            renamed.setdefault(to_real(f.pfn), replace(f, pfn=to_real(f.pfn)))
        return tuple(renamed[pfn] for pfn in sorted(renamed))

    checks = tuple(
        replace(c, regions=tuple(region_map(r) for r in c.regions), frames=frames_map(c.frames))
        for c in obs.checks
    )
    return replace(obs, side="real", checks=checks)
