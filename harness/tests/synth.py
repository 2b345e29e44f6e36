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
from sim.bulk import bulk_build_kpagemap_entries, bulk_build_u64s
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


def bulk_scenario(checks: int) -> dict[str, object]:
    """A scenario with ``checks`` check steps (steps 2 ..), for :func:`bulk_observations`."""
    return {
        "name": "bulk",
        "steps": [
            {"op": "mmap", "region": "a", "pages": 1, "kind": "anon", "share": "private",
             "prot": "rw"},
            {"op": "write", "region": "a", "pages": [0, 1]},
            *({"op": "check"} for _ in range(checks)),
        ],
    }


def bulk_observations(
    arch: Arch,
    observations: int,
    *,
    checks: int = 4,
    region_pages: int = 64,
    diverge_every: int = 0,
) -> tuple[Observations, Observations]:
    """(model, real) observations of :func:`bulk_scenario` with ``observations`` pages in all.

    Each of ``checks`` checks reads the same ``observations // checks`` pages,
    in regions ``r0``, ``r1``, .. of ``region_pages`` pages, each page with its
    own anonymous frame and RAM tag; the real side numbers the frames in
    reverse order.  With ``diverge_every`` k, every k-th page of the real side
    loses its exclusive bit and its frame gains KPF_KSM in kpageflags.
    Built with sim.bulk (numpy), so 65,536 observations take well under a second.
    """
    pages = observations // checks
    if pages % region_pages:
        raise ValueError(f"{pages} pages per check are not whole regions of {region_pages}")
    model_pfns = [0x100 + j for j in range(pages)]
    real_pfns = [0x80000 + pages - 1 - j for j in range(pages)]
    excl = PagemapEntry.page(1, exclusive=True, soft_dirty=True).to_raw() - 1
    shared = PagemapEntry.page(1, exclusive=False, soft_dirty=True).to_raw() - 1
    odd = {j for j in range(pages) if diverge_every and j % diverge_every == diverge_every - 1}
    mask = (1 << 8 * arch.word_size) - 1
    ksm = ANON_FLAGS | kpf_value(KPF.KSM)
    slot = bulk_build_kpagemap_entries(arch, [ANON_FLAGS & mask], [1])
    flags, count = bulk_build_u64s(arch, [ANON_FLAGS]), bulk_build_u64s(arch, [1])
    flags_ksm = bulk_build_u64s(arch, [ksm])
    tags = [0x5754_0001_0000_0000 + j for j in range(pages)]

    def side(name: Side, pfns: list[int]) -> Observations:
        real = name == "real"
        raws = [(shared if real and j in odd else excl) | pfn for j, pfn in enumerate(pfns)]
        data = bulk_build_u64s(arch, raws)
        regions = tuple(
            RegionRead(
                "main", f"r{i}", 0x1000_0000 + i * region_pages * arch.page_size, region_pages,
                ReadResult.ok(data[i * region_pages * 8 : (i + 1) * region_pages * 8]),
                tuple(tags[i * region_pages : (i + 1) * region_pages]),
            )
            for i in range(pages // region_pages)
        )
        frames = tuple(sorted(
            (FrameRead(pfn, ReadResult.ok(slot),
                       ReadResult.ok(flags_ksm if real and j in odd else flags),
                       ReadResult.ok(count))
             for j, pfn in enumerate(pfns)),
            key=lambda f: f.pfn,
        ))
        header = ReadResult.ok(KpagemapHeader.for_arch(arch).slot_bytes())
        probe = ReadResult.ok(b"")
        check_list = tuple(
            CheckObservation(2 + c, 0, header, probe, probe, regions, frames)
            for c in range(checks)
        )
        outcomes = tuple(StepOutcome(i, "ok") for i in range(2 + checks))
        return Observations("bulk", arch.name, name, outcomes, check_list)

    return side("model", model_pfns), side("real", real_pfns)
