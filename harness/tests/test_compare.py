"""compare() on synthetic observations: agreement, the bijection, every field."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.compare import CompareError, Divergence, PfnBijection, compare
from harness.differences import (
    ConflictRule,
    EntryPair,
    FlagMismatch,
    FrameValues,
    Invalid,
    KpfFlags,
    PfnConflict,
    Place,
    Presence,
    RamTag,
)
from harness.observations import (
    CheckObservation,
    FrameRead,
    Observations,
    ReadResult,
    RegionRead,
    StepOutcome,
)
from harness.report import describe_value, detail, flag_delta
from harness.scenario import Scenario, parse_scenario, plan_layout, write_tag
from harness.tests import synth
from sim.arch import get_arch
from sim.flags import KPF, kpf_value
from sim.formats import PagemapEntry, build_kpagemap_entries, build_u64s

ARCH = get_arch("ppc64")  # big-endian, 64K pages: byte-order mistakes show
SCENARIO = parse_scenario(synth.FORK_MUNMAP_SCENARIO)
LAYOUT = plan_layout(SCENARIO, ARCH)
A, B = LAYOUT["a"].vaddr, LAYOUT["b"].vaddr
HOLE_SD = PagemapEntry(soft_dirty=True)
HOLE = PagemapEntry()


def page(pfn: int, exclusive: bool = True) -> PagemapEntry:
    return PagemapEntry.page(pfn, exclusive=exclusive, soft_dirty=True)


def model_observations() -> Observations:
    """What a correct model says for SCENARIO (model PFNs 100.., never reused)."""
    t1a, t1b, t4 = write_tag(1, 0, 0), write_tag(1, 0, 1), write_tag(4, 0, 1)
    t8a, t8b = write_tag(8, 1, 0), write_tag(8, 1, 1)
    c2 = synth.check(ARCH, 2, [
        synth.region(ARCH, "main", "a", A, [page(100), page(101), HOLE_SD, HOLE_SD],
                     [t1a, t1b, None, None]),
    ], [synth.frame(ARCH, 100), synth.frame(ARCH, 101)])
    c5 = synth.check(ARCH, 5, [
        synth.region(ARCH, "main", "a", A, [page(100, False), page(101), HOLE_SD, HOLE_SD],
                     [t1a, t1b, None, None]),
        synth.region(ARCH, "c", "a", A, [page(100, False), page(102), HOLE_SD, HOLE_SD],
                     [t1a, t4, None, None]),
    ], [synth.frame(ARCH, 100, count=2), synth.frame(ARCH, 101), synth.frame(ARCH, 102)])
    c9 = synth.check(ARCH, 9, [
        synth.region(ARCH, "main", "a", A, [HOLE] * 4, [None] * 4),
        synth.region(ARCH, "main", "b", B, [page(103), page(104)], [t8a, t8b]),
        synth.region(ARCH, "c", "a", A, [page(100), page(102), HOLE_SD, HOLE_SD],
                     [t1a, t4, None, None]),
    ], [synth.frame(ARCH, p) for p in (100, 102, 103, 104)])
    hidden = [PagemapEntry.page(0, exclusive=True, soft_dirty=True)] * 2
    c10 = synth.check(ARCH, 10, [
        synth.region(ARCH, "main", "a", A, [HOLE] * 4, [None] * 4),
        synth.region(ARCH, "main", "b", B, hidden, [None, None]),
        synth.region(ARCH, "c", "a", A, [*hidden, HOLE_SD, HOLE_SD], [None] * 4),
    ], [], uid=1000)
    return synth.observations(ARCH, "model", [c2, c5, c9, c10], len(SCENARIO.steps))


#: How the kernel numbers the same frames; 103 reuses the frame 101 had (freed by munmap).
REAL_PFNS = {100: 0x3F000, 101: 0x3F001, 102: 0x2A000, 103: 0x3F001, 104: 0x2A007}


def real_observations(pfns: dict[int, int] = REAL_PFNS) -> Observations:
    return synth.map_pfns(model_observations(), ARCH, lambda pfn: pfns[pfn])


def run(real: Observations, model: Observations | None = None) -> list[Divergence]:
    return compare(model or model_observations(), real, SCENARIO, ARCH)


def only(divergences: list[Divergence]) -> Divergence:
    assert len(divergences) == 1, "\n".join(map(str, divergences))
    return divergences[0]


def test_agree_with_itself_and_renumbered() -> None:
    model = model_observations()
    assert compare(model, model, SCENARIO, ARCH) == []
    bijection = PfnBijection()
    assert compare(model, real_observations(), SCENARIO, ARCH, bijection) == []
    # The reused frame is bound to the new model frame; the freed one is forgotten.
    assert bijection.model_of(0x3F001) == 103
    assert bijection.real_of(103) == 0x3F001 and bijection.real_of(101) is None
    assert bijection.bound_at[(101, 0x3F001)] == 2 and bijection.bound_at[(103, 0x3F001)] == 9


def test_frames_reused_in_another_order() -> None:
    """Two frames freed and reallocated: the model and the kernel hand them out differently."""
    model = model_observations()
    c9 = model.checks[2]
    # The model gives b's pages the frames a's pages had in the parent (101) and the child (102
    # is still mapped, so use 101 and a fresh one); the kernel hands them out the other way.
    b = synth.region(ARCH, "main", "b", B, [page(101), page(104)], c9.regions[1].ram_tags)
    frames = tuple(sorted((*[f for f in c9.frames if f.pfn != 103], synth.frame(ARCH, 101)),
                          key=lambda f: f.pfn))
    model = _replace_check(model, replace(c9, regions=(c9.regions[0], b, c9.regions[2]),
                                          frames=frames))
    # Before the munmap 101 was 0x3f001; now 0x3f001 backs 104 and 101 is a fresh 0x2a007.
    later = synth.map_pfns(model, ARCH, lambda p: {**REAL_PFNS, 101: 0x2A007, 104: 0x3F001}[p])
    real = _replace_check(real_observations(), later.checks[2])
    assert compare(model, real, SCENARIO, ARCH) == []
    # A model that promises never to reuse a PFN is held to it.
    found = compare(replace(model, stable_pfns=True), real, SCENARIO, ARCH)
    d = only(found)
    assert (d.kind, d.step, d.region, d.page, d.model_pfn, d.real_pfn) == (
        "identity", 9, "b", 0, 101, 0x2A007)
    assert d.context == PfnConflict(ConflictRule.MODEL_KEPT, 0x3F001, bound_at=2)
    assert "was real PFN 0x3f001 (bound at step 2), here real PFN 0x2a007" in detail(d)


def test_one_real_frame_for_two_model_frames() -> None:
    """The kernel shares a frame between parent and child where the model copied."""
    found = run(real_observations({**REAL_PFNS, 102: 0x3F000, 104: 0x2B000}))
    identity = [d for d in found if d.kind == "identity"]
    # At every check where both are mapped, and the unpaired model frame is named too.
    assert [(d.step, d.proc, d.region, d.page) for d in identity] == [
        (5, "c", "a", 1), (9, "c", "a", 1)]
    assert all("the kernel shares a frame the model does not" in detail(d) for d in identity)
    assert identity[0].context == PfnConflict(ConflictRule.KERNEL_SHARES, 100,
                                              first_seen=Place("main", "a", 0))
    assert (identity[0].model, identity[0].real) == (102, 0x3F000)
    assert "real PFN 0x3f000 is model PFN 0x64 at main:a+0 but model PFN 0x66 here" \
        in detail(identity[0])
    assert [(d.step, d.field, d.model_pfn, d.real) for d in found if d.kind == "missing"] == [
        (5, "frame", 102, Presence.UNPAIRED), (9, "frame", 102, Presence.UNPAIRED)]
    assert describe_value("frame", "real", Presence.UNPAIRED) == "no real frame paired"
    assert len(found) == 4


def test_model_frame_moved() -> None:
    """The kernel moved a page the model kept (as khugepaged or compaction would)."""
    real = real_observations()
    c9 = real.checks[2]
    moved = synth.region(ARCH, "c", "a", A, [page(0x3F100), page(0x2A000), HOLE_SD, HOLE_SD],
                         c9.regions[2].ram_tags)
    frames = [f if f.pfn != 0x3F000 else replace(f, pfn=0x3F100) for f in c9.frames]
    real = _replace_check(real, replace(c9, regions=(*c9.regions[:2], moved),
                                        frames=tuple(frames)))
    # Without a promise from the model, a frame freed and reused looks the same: no divergence.
    assert run(real) == []
    found = run(real, replace(model_observations(), stable_pfns=True))
    d = only(found)
    assert (d.kind, d.step, d.proc, d.page) == ("identity", 9, "c", 0)
    assert "model PFN 0x64 was real PFN 0x3f000 (bound at step 2), here real PFN 0x3f100" \
        in detail(d)


def _replace_check(obs: Observations, check: CheckObservation) -> Observations:
    return replace(obs, checks=tuple(check if c.step == check.step else c for c in obs.checks))


def _replace_region(obs: Observations, step: int, index: int, new: RegionRead) -> Observations:
    check = next(c for c in obs.checks if c.step == step)
    regions = list(check.regions)
    regions[index] = new
    return _replace_check(obs, replace(check, regions=tuple(regions)))


def _replace_frame(obs: Observations, step: int, new: FrameRead) -> Observations:
    check = next(c for c in obs.checks if c.step == step)
    frames = tuple(new if f.pfn == new.pfn else f for f in check.frames)
    return _replace_check(obs, replace(check, frames=frames))


@pytest.mark.parametrize("field,entry", [
    ("present", HOLE_SD),
    ("exclusive", page(0x3F001, exclusive=False)),
    ("soft_dirty", PagemapEntry.page(0x3F001, exclusive=True)),
    ("file_shared", PagemapEntry.page(0x3F001, exclusive=True, soft_dirty=True,
                                      file_shared=True)),
    ("uffd_wp", PagemapEntry.page(0x3F001, exclusive=True, soft_dirty=True, uffd_wp=True)),
    ("guard", PagemapEntry.page(0x3F001, exclusive=True, soft_dirty=True, guard=True)),
    ("swapped", PagemapEntry.swap(1, 0x20, soft_dirty=True)),
])
def test_each_pagemap_field(field: str, entry: PagemapEntry) -> None:
    real = real_observations()
    c2 = real.checks[0]
    tags = c2.regions[0].ram_tags
    real = _replace_region(real, 2, 0, synth.region(
        ARCH, "main", "a", A, [page(0x3F000), entry, HOLE_SD, HOLE_SD], tags))
    found = [d for d in run(real) if d.field == f"pagemap.{field}"]
    d = only(found)
    assert (d.step, d.op, d.proc, d.region, d.page, d.vaddr) == (
        2, "check", "main", "a", 1, A + ARCH.page_size)
    assert (d.model, d.real) == ((True, False) if field in ("present", "exclusive", "soft_dirty")
                                 else (False, True))
    assert isinstance(d.context, EntryPair) and d.context.real == entry
    assert d.context.model == page(101)
    assert "model: present pfn=0x65" in detail(d)


def test_invalid_pagemap_value_is_reported_not_raised() -> None:
    real = real_observations()
    region = real.checks[0].regions[0]
    assert region.pagemap.data is not None
    raws = [1 << 59, *([0] * 3)]
    real = _replace_region(real, 2, 0, replace(
        region, pagemap=ReadResult.ok(build_u64s(ARCH, raws))))
    d = next(d for d in run(real) if d.field == "pagemap")
    assert isinstance(d.real, Invalid) and d.real.raw == 1 << 59 and d.page == 0
    assert "reserved bits 59-60" in describe_value(d.field, "real", d.real)


def test_hidden_pfn_compared_as_value() -> None:
    real = real_observations()
    c10 = real.checks[3]
    leaked = synth.region(ARCH, "main", "b", B, [page(0x3F001), page(0)], [None, None])
    real = _replace_region(real, 10, 1, leaked)
    d = only(run(real))
    assert (d.kind, d.field, d.model, d.real, d.page) == ("value", "pagemap.pfn", 0,
                                                          0x3F001, 0)
    assert detail(d).startswith("PFN 0 names no frame")
    assert c10.reader_uid == 1000


def test_pagemap_errno_and_length() -> None:
    real = real_observations()
    region = real.checks[0].regions[0]
    assert region.pagemap.data is not None
    real2 = _replace_region(real, 2, 0, replace(region, pagemap=ReadResult.failed(13)))
    found = run(real2)
    d = next(d for d in found if d.field == "pagemap.read")
    assert d.real == ReadResult.failed(13)
    assert d.model == model_observations().checks[0].regions[0].pagemap
    assert describe_value(d.field, "real", d.real) == "error EACCES (13)"
    assert describe_value(d.field, "model", d.model).startswith("32 bytes")
    short = _replace_region(real, 2, 0, replace(
        region, pagemap=ReadResult.ok(region.pagemap.data[:16])))
    found = run(short)
    d = only([d for d in found if d.field == "pagemap.length"])
    assert (d.model, d.real) == (32, 16)
    assert describe_value(d.field, "real", d.real) == "16 bytes"


@pytest.mark.parametrize("what,field", [
    ("kpageflags", "kpageflags"),
    ("kpagecount", "kpagecount"),
    ("kpagemap.flags", "kpagemap.flags"),
    ("kpagemap.count", "kpagemap.count"),
])
def test_each_frame_field(what: str, field: str) -> None:
    real = real_observations()
    good = real.checks[1].frame(0x3F000)
    assert good is not None
    ksm = synth.ANON_FLAGS | kpf_value(KPF.KSM)
    if what == "kpageflags":
        bad = replace(good, kpageflags=ReadResult.ok(build_u64s(ARCH, [ksm])))
    elif what == "kpagecount":
        bad = replace(good, kpagecount=ReadResult.ok(build_u64s(ARCH, [1])))
    elif what == "kpagemap.flags":
        bad = replace(good, kpagemap=ReadResult.ok(build_kpagemap_entries(ARCH, [(ksm, 2)])))
    else:
        bad = replace(good, kpagemap=ReadResult.ok(
            build_kpagemap_entries(ARCH, [(synth.ANON_FLAGS, 7)])))
    found = run(_replace_frame(real, 5, bad))
    d = only([d for d in found if d.field == field and d.kind == "value"])
    assert (d.step, d.model_pfn, d.real_pfn) == (5, 100, 0x3F000)
    assert d.places == (Place("main", "a", 0), Place("c", "a", 0))
    if "flags" in field:
        assert (d.model, d.real) == (KpfFlags(synth.ANON_FLAGS), KpfFlags(ksm))
        assert isinstance(d.real, KpfFlags) and isinstance(d.model, KpfFlags)
        assert d.real.only_in_self(d.model) == ("KSM",) and "KSM" not in d.model.names
        assert detail(d) == "real only: KSM"
    elif field == "kpagecount":
        assert (d.model, d.real) == (2, 1)
    else:
        assert (d.model, d.real) == (2, 7)
    # kpagemap flags that differ from kpageflags are also a real-side inconsistency.
    consistency = [d for d in found if d.kind == "consistency"]
    if what in ("kpageflags", "kpagemap.flags"):
        c = only(consistency)
        assert c.side == "real" and c.real_pfn == 0x3F000 and c.model is None
        assert isinstance(c.real, FlagMismatch)
        assert c.real.kpagemap.value ^ c.real.kpageflags.value == 1 << KPF.KSM
        assert "KSM" in detail(c)
    else:
        assert consistency == []


def test_frame_read_errors() -> None:
    real = real_observations()
    good = real.checks[0].frame(0x3F000)
    assert good is not None
    found = run(_replace_frame(real, 2, replace(good, kpageflags=ReadResult.failed(5))))
    d = only([d for d in found if d.field == "kpageflags"])
    assert d.real == ReadResult.failed(5) and d.model == KpfFlags(synth.ANON_FLAGS)
    assert describe_value(d.field, "real", d.real) == "error EIO (5)"


def test_model_side_consistency() -> None:
    model = model_observations()
    good = model.checks[0].frame(100)
    assert good is not None
    bad = replace(good, kpagemap=ReadResult.ok(build_kpagemap_entries(ARCH, [(0, 1)])))
    model = _replace_frame(model, 2, bad)
    found = compare(model, model, SCENARIO, ARCH)
    assert len(found) == 2  # the same inconsistency, once per side (they are the same data)
    assert {d.side for d in found} == {"model", "real"}


def test_missing_frame_on_real_side() -> None:
    real = real_observations()
    c2 = real.checks[0]
    real = _replace_check(real, replace(c2, frames=c2.frames[:1]))
    d = only(run(real))
    assert (d.kind, d.field, d.model_pfn, d.real_pfn, d.real) == (
        "missing", "frame", 101, 0x3F001, Presence.NOT_READ)
    assert isinstance(d.model, FrameValues) and d.model.kpagecount == 1


def test_extra_frame_on_real_side() -> None:
    real = real_observations()
    c2 = real.checks[0]
    real = _replace_check(real, replace(c2, frames=(*c2.frames, synth.frame(ARCH, 0x99999))))
    d = only(run(real))
    assert (d.kind, d.field, d.real_pfn, d.model) == ("missing", "frame", 0x99999,
                                                      Presence.UNPAIRED)
    assert describe_value(d.field, "model", d.model) == "no model frame paired"


def test_ram_tag() -> None:
    real = real_observations()
    region = real.checks[1].regions[1]
    assert region.ram_tags is not None
    tags = list(region.ram_tags)
    tags[1] = write_tag(1, 0, 1)  # the child sees the parent's old data: COW went wrong
    real = _replace_region(real, 5, 1, replace(region, ram_tags=tuple(tags)))
    d = only(run(real))
    assert (d.field, d.proc, d.region, d.page) == ("ram_tag", "c", "a", 1)
    assert d.model == RamTag(write_tag(4, 0, 1), "write", 4, "a", 1)
    assert d.real == RamTag(write_tag(1, 0, 1), "write", 1, "a", 1)
    assert "write of step 4, region 'a' page 1" in describe_value(d.field, "model", d.model)
    assert "write of step 1, region 'a' page 1" in describe_value(d.field, "real", d.real)
    unobserved = _replace_region(real, 5, 1, replace(region, ram_tags=None))
    d = only(run(unobserved))
    assert (d.kind, d.field, d.real) == ("missing", "ram_tag", Presence.NOT_OBSERVED)


def test_header_and_probes() -> None:
    real = real_observations()
    c2 = real.checks[0]
    assert c2.kpagemap_header.data is not None
    header = bytearray(c2.kpagemap_header.data)
    header[0] = 1  # claims little-endian
    header[9] = 0xAA  # padding
    real = _replace_check(real, replace(
        c2, kpagemap_header=ReadResult.ok(bytes(header)),
        kpagecount_probe=ReadResult.failed(13)))
    found = run(real)
    fields = [d.field for d in found]
    assert "kpagemap.header" in fields  # padding makes the real header invalid
    assert "kpagemap.header.bytes" in fields
    probe = only([d for d in found if d.field == "kpagecount.probe"])
    assert (probe.model, probe.real) == (ReadResult.ok(b""), ReadResult.failed(13))
    assert describe_value(probe.field, "real", probe.real) == "error EACCES (13)"
    assert describe_value(probe.field, "model", probe.model) == "0 bytes"
    only_endian = bytearray(c2.kpagemap_header.data)
    only_endian[0] = 1
    real2 = _replace_check(real_observations(), replace(
        c2, kpagemap_header=ReadResult.ok(bytes(only_endian))))
    found = run(real2)
    assert [d.field for d in found] == ["kpagemap.header.little_endian", "kpagemap.header.bytes"]
    assert (found[0].model, found[0].real) == (False, True)
    assert found[1].real == bytes(only_endian)


def test_outcomes() -> None:
    real = real_observations()
    outcomes = list(real.outcomes)
    outcomes[4] = StepOutcome(4, "segv", vaddr=A + ARCH.page_size)
    d = only(run(replace(real, outcomes=tuple(outcomes))))
    assert (d.step, d.op, d.field, d.proc, d.region) == (4, "write", "outcome", "c", "a")
    assert (d.model, d.real) == (StepOutcome(4, "ok"), outcomes[4])
    assert describe_value(d.field, "real", d.real) == f"SIGSEGV at {A + ARCH.page_size:#x}"
    short = run(replace(real, outcomes=tuple(outcomes[:7])))
    assert [(d.step, d.kind, d.real) for d in short if d.field == "outcome"][-4:] == [
        (7, "missing", Presence.NOT_RUN), (8, "missing", Presence.NOT_RUN),
        (9, "missing", Presence.NOT_RUN), (10, "missing", Presence.NOT_RUN)]


def test_missing_check_and_region() -> None:
    real = real_observations()
    found = run(replace(real, checks=real.checks[:3]))
    d = only(found)
    assert (d.step, d.kind, d.field, d.real) == (10, "missing", "check", Presence.NOT_OBSERVED)
    c5 = real.checks[1]
    found = run(_replace_check(real, replace(c5, regions=c5.regions[:1])))
    d = next(d for d in found if d.field == "pagemap")
    assert (d.kind, d.proc, d.region, d.real) == ("missing", "c", "a", Presence.NOT_READ)


def test_wrong_scenario_or_arch() -> None:
    model = model_observations()
    with pytest.raises(CompareError, match="not 't' on x86_64"):
        compare(model, model, SCENARIO, get_arch("x86_64"))


def test_flag_delta() -> None:
    a = kpf_value(KPF.ANON, KPF.LRU)
    b = kpf_value(KPF.ANON, KPF.KSM, KPF.SOFTDIRTY)
    assert flag_delta(KpfFlags(a), KpfFlags(b)) == "model only: LRU; real only: KSM SOFTDIRTY"
    assert flag_delta(KpfFlags(a), KpfFlags(a)) == ""


@pytest.mark.parametrize("name", ["x86_64", "ppc64-4k", "i386"])
def test_other_layouts(name: str) -> None:
    """Same data on other byte orders and word sizes: agreement, and one perturbed field."""
    arch = get_arch(name)
    scenario = Scenario(SCENARIO.name, SCENARIO.path, SCENARIO.steps[:3],
                        {2: SCENARIO.targets[2]})
    vaddr = plan_layout(scenario, arch)["a"].vaddr
    flags = synth.ANON_FLAGS | kpf_value(KPF.SOFTDIRTY)  # bit 40: beyond a 32-bit word
    model = synth.observations(arch, "model", [synth.check(arch, 2, [
        synth.region(arch, "main", "a", vaddr, [page(7), page(8), HOLE_SD, HOLE_SD]),
    ], [synth.frame(arch, 7, flags), synth.frame(arch, 8, flags)])], 3)
    real = synth.map_pfns(model, arch, lambda p: p + 0x1000)
    assert compare(model, real, scenario, arch) == []
    bad = synth.frame(arch, 0x1008, flags, count=3)
    real = replace(real, checks=(replace(real.checks[0], frames=(real.checks[0].frames[0], bad)),))
    fields = sorted(d.field for d in compare(model, real, scenario, arch))
    assert fields == ["kpagecount", "kpagemap.count"]


def test_two_real_frames_for_one_model_frame() -> None:
    """The model shares a frame where the kernel copied: strict within one check."""
    real = real_observations()
    c5 = real.checks[1]
    child = c5.regions[1]
    copied = synth.region(ARCH, "c", "a", A, [page(0x2B000, False), page(0x2A000), HOLE_SD,
                                              HOLE_SD], child.ram_tags)
    frames = tuple(sorted((*c5.frames, synth.frame(ARCH, 0x2B000, count=2)), key=lambda f: f.pfn))
    real = _replace_check(real, replace(c5, regions=(c5.regions[0], copied), frames=frames))
    found = run(real)
    d = only([d for d in found if d.kind == "identity"])
    assert (d.step, d.proc, d.page, d.model_pfn, d.real_pfn) == (5, "c", 0, 100, 0x2B000)
    assert d.context == PfnConflict(ConflictRule.MODEL_SHARES, 0x3F000,
                                    first_seen=Place("main", "a", 0))
    assert "model PFN 0x64 is real PFN 0x3f000 at main:a+0 but real PFN 0x2b000 here" \
        in detail(d)
    assert [(d.kind, d.real_pfn) for d in found if d.kind == "missing"] == [("missing", 0x2B000)]


def test_bulk_observations() -> None:
    """Thousands of pages and frames (as benchmarks/bench_compare.py times them): every one seen."""
    scenario = parse_scenario(synth.bulk_scenario(4))
    model, real = synth.bulk_observations(ARCH, 8192)
    assert compare(model, real, scenario, ARCH) == []
    model, real = synth.bulk_observations(ARCH, 8192, diverge_every=16)
    found = compare(model, real, scenario, ARCH)
    per_field: dict[tuple[str, str], int] = {}
    for d in found:
        per_field[(d.kind, d.field)] = per_field.get((d.kind, d.field), 0) + 1
    assert per_field == {("value", "pagemap.exclusive"): 512, ("value", "kpageflags"): 512,
                         ("consistency", "kpagemap.flags"): 512}
    first = next(d for d in found if d.field == "kpageflags")
    # Page 15 of 2048: model PFN 0x10f; the real side numbers frames in reverse.
    assert (first.step, first.model_pfn, first.real_pfn) == (2, 0x10F, 0x80000 + 2047 - 15)
    assert first.places == (Place("main", "r0", 15),)


def _swapped(obs: Observations, offsets: tuple[int, int], soft_dirty: bool = True) -> Observations:
    """Check 2 of ``obs`` with pages 2 and 3 of region a swapped out at ``offsets``."""
    region = next(c for c in obs.checks if c.step == 2).regions[0]
    assert region.pagemap.data is not None
    first = [PagemapEntry.from_raw(raw) for raw in synth_raws(region.pagemap.data)[:2]]
    swaps = [PagemapEntry.swap(0, off, soft_dirty=soft_dirty) for off in offsets]
    return _replace_region(obs, 2, 0, synth.region(
        ARCH, "main", "a", A, [*first, *swaps], region.ram_tags))


def synth_raws(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 8], "big") for i in range(0, len(data), 8)]


def test_swap_entries_compared_through_a_bijection() -> None:
    """The kernel's slot numbers are not predicted: model slots 1, 2 against real 0x40, 0x7
    agree; one real slot for the model's two is an identity divergence; a flag still counts."""
    model = _swapped(model_observations(), (1, 2))
    assert run(_swapped(real_observations(), (0x40, 0x7)), model) == []
    d = only(run(_swapped(real_observations(), (0x40, 0x40)), model))
    assert (d.kind, d.field, d.page, d.model, d.real) == ("identity", "pagemap.swap", 3, 2 << 5,
                                                          0x40 << 5)
    found = run(_swapped(real_observations(), (0x40, 0x7), soft_dirty=False), model)
    assert {d.field for d in found} == {"pagemap.soft_dirty"}
