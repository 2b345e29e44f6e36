r"""compare() and the report on real guest observations, replayed without a guest.

harness/tests/data/recorded/ARCH/ holds, per scenario, what the pinned kernel
showed (``NAME.real.json``) and the scenario as it was recorded
(``NAME.scenario.json``), like KUnit's checked-in test logs.  To record them
again (the images must be built)::

    python -m harness run --arch ARCH --record harness/tests/data/recorded/ARCH \
        tests/scenarios/{fork_cow,thp_zero,shm_mix,unprivileged_child,nested}.json

which writes only the scenarios that agree (nested: x86_64 only, for the smaps
tests; the x86_64 recordings hold smaps and smaps_rollup, the ppc64 ones predate
them and compare without).  The model side is recomputed
here from the scenario, so these tests hold today's model and today's
compare to yesterday's kernel:

* the model agrees with the recording;
* a change planted in the recorded bytes (one pagemap bit, one kpageflags
  bit, one PFN, one errno) gives exactly the expected typed differences, and
  the text report names the field, the step and the address or PFN.
"""

from __future__ import annotations

import errno
import json
from collections import Counter
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import pytest

from harness.compare import compare
from harness.differences import ConflictRule, Divergence, KpfFlags, PfnConflict, Place, Presence
from harness.model_executor import run_model
from harness.observations import (
    CheckObservation,
    FrameRead,
    Observations,
    ReadResult,
    RegionRead,
    StepOutcome,
)
from harness.report import ScenarioResult, render_json, render_text
from harness.scenario import Scenario, load_scenario
from sim.arch import Arch, get_arch
from sim.flags import KPF, PM
from sim.formats import build_u64s, parse_u64s

#: The recordings the tree must hold (arch, scenario): a missing one fails, not skips.
EXPECTED = [
    (arch, name)
    for arch in ("x86_64", "ppc64", "ppc64-4k")
    for name in ("fork_cow", "thp_zero", "shm_mix", "unprivileged_child")
]
RECORDED_DIR = Path(__file__).parent / "data" / "recorded"
#: Checked-in recordings stay small.
MAX_TOTAL_BYTES = 1 << 20

RECORDINGS = sorted(
    (path.parent.name, path.name.removesuffix(".real.json"))
    for path in RECORDED_DIR.glob("*/*.real.json")
)
IDS = [f"{name}-{arch}" for arch, name in RECORDINGS]


@dataclass(frozen=True)
class Replay:
    scenario: Scenario
    arch: Arch
    model: Observations
    real: Observations


@cache
def replay(arch_name: str, name: str) -> Replay:
    directory = RECORDED_DIR / arch_name
    scenario = load_scenario(directory / f"{name}.scenario.json")
    arch = get_arch(arch_name)
    return Replay(scenario, arch, run_model(scenario, arch),
                  Observations.load(directory / f"{name}.real.json"))


def report(r: Replay, found: list[Divergence]) -> str:
    return render_text([ScenarioResult.from_divergences(r.scenario.name, r.arch.name, found)])


def with_check(obs: Observations, check: CheckObservation) -> Observations:
    return replace(obs, checks=tuple(check if c.step == check.step else c for c in obs.checks))


def test_recordings_present_and_small() -> None:
    assert sorted(EXPECTED) == sorted(set(RECORDINGS) & set(EXPECTED)), (
        f"missing under {RECORDED_DIR}: {sorted(set(EXPECTED) - set(RECORDINGS))} "
        "(record them with python -m harness run --record, see the module doc)")
    total = sum(p.stat().st_size for p in RECORDED_DIR.glob("*/*.json"))
    assert total <= MAX_TOTAL_BYTES, f"recordings take {total} bytes"


@pytest.mark.parametrize("arch_name,name", RECORDINGS, ids=IDS)
def test_model_agrees_with_recording(arch_name: str, name: str) -> None:
    r = replay(arch_name, name)
    assert (r.real.side, r.real.scenario, r.real.arch) == ("real", name, arch_name)
    assert not r.real.stable_pfns, "a kernel reuses PFNs"
    found = compare(r.model, r.real, r.scenario, r.arch)
    assert found == [], report(r, found)


def _last_present_page(r: Replay, *, unique: bool = False) -> tuple[CheckObservation, int, int]:
    """(check, region index, page) of the last present page with a PFN in a root check.

    ``unique``: the last whose frame no other page of the check maps.
    """
    for check in reversed(r.real.checks):
        pages = [
            (ri, page, raw & PM.PFN_MASK)
            for ri, region in enumerate(check.regions) if region.pagemap.data
            for page, raw in enumerate(parse_u64s(r.arch, region.pagemap.data))
            if raw >> PM.PRESENT & 1 and raw & PM.PFN_MASK
        ]
        mappings = Counter(pfn for _, _, pfn in pages)
        for ri, page, pfn in reversed(pages):
            if not unique or mappings[pfn] == 1:
                return check, ri, page
    pytest.fail("the recording has no present page with a PFN")


def _with_raw(r: Replay, check: CheckObservation, ri: int, page: int,
              change: int) -> CheckObservation:
    region = check.regions[ri]
    assert region.pagemap.data is not None
    raws = parse_u64s(r.arch, region.pagemap.data)
    raws[page] = change
    bad = replace(region, pagemap=ReadResult.ok(build_u64s(r.arch, raws)))
    return replace(check, regions=tuple(bad if i == ri else x for i, x in enumerate(check.regions)))


@pytest.mark.parametrize("arch_name,name", RECORDINGS, ids=IDS)
def test_planted_pagemap_bit(arch_name: str, name: str) -> None:
    """The soft-dirty bit of one recorded pagemap u64 flipped: one difference, at that page."""
    r = replay(arch_name, name)
    check, ri, page = _last_present_page(r)
    region = check.regions[ri]
    assert region.pagemap.data is not None
    raw = parse_u64s(r.arch, region.pagemap.data)[page]
    real = with_check(r.real, _with_raw(r, check, ri, page, raw ^ 1 << PM.SOFT_DIRTY))
    found = compare(r.model, real, r.scenario, r.arch)
    vaddr = region.vaddr + page * r.arch.page_size
    assert [(d.kind, d.field, d.step, d.proc, d.region, d.page, d.vaddr) for d in found] == [
        ("value", "pagemap.soft_dirty", check.step, region.proc, region.region, page, vaddr)]
    d = found[0]
    assert d.real == bool(raw >> PM.SOFT_DIRTY & 1 ^ 1) and d.model == (not d.real)
    text = report(r, found)
    for part in (f"step {check.step} (", "pagemap.soft_dirty: model ",
                 f"at {region.proc} {region.region}+{page} @{vaddr:#x}"):
        assert part in text, f"{part!r} not in:\n{text}"


def _first_frame(r: Replay) -> tuple[CheckObservation, FrameRead]:
    for check in r.real.checks:
        for frame in check.frames:
            if frame.kpageflags.data is not None:
                return check, frame
    pytest.fail("the recording reads no frame")


@pytest.mark.parametrize("arch_name,name", RECORDINGS, ids=IDS)
def test_planted_kpageflags_bit(arch_name: str, name: str) -> None:
    """KPF_IDLE flipped in one recorded kpageflags u64: the value and the consistency check."""
    r = replay(arch_name, name)
    check, frame = _first_frame(r)
    assert frame.kpageflags.data is not None
    flags = parse_u64s(r.arch, frame.kpageflags.data)[0]
    bad = replace(frame, kpageflags=ReadResult.ok(build_u64s(r.arch, [flags ^ 1 << KPF.IDLE])))
    real = with_check(r.real, replace(
        check, frames=tuple(bad if f.pfn == frame.pfn else f for f in check.frames)))
    found = compare(r.model, real, r.scenario, r.arch)
    assert sorted((d.kind, d.field, d.step, d.real_pfn) for d in found) == [
        ("consistency", "kpagemap.flags", check.step, frame.pfn),
        ("value", "kpageflags", check.step, frame.pfn)]
    value = next(d for d in found if d.kind == "value")
    assert value.real == KpfFlags(flags ^ 1 << KPF.IDLE) and value.model == KpfFlags(flags)
    assert value.places and all(isinstance(p, Place) for p in value.places)
    text = report(r, found)
    idle = f"{'real' if not flags >> KPF.IDLE & 1 else 'model'} only: IDLE"
    for part in (f"step {check.step} (check)", f"kpageflags: {idle}",
                 f"/ real {frame.pfn:#x} ({value.places[0]}"):
        assert part in text, f"{part!r} not in:\n{text}"
    divergence = json.loads(render_json([ScenarioResult.from_divergences(
        name, arch_name, found)]))["results"][0]["divergences"]
    value_json = next(d for d in divergence if d["kind"] == "value")
    assert value_json["real_pfn"] == frame.pfn
    assert ("IDLE" in value_json["real"]["flags"]) != ("IDLE" in value_json["model"]["flags"])


@pytest.mark.parametrize("arch_name,name", RECORDINGS, ids=IDS)
def test_planted_pfn(arch_name: str, name: str) -> None:
    """One page's PFN moved to a frame nobody read, at the last check.

    The page's model frame is bound to the new PFN, which the kernel side did
    not read, and the frame the page had is left with no model partner: two
    missing frames.  If an earlier check had bound the model frame to the old
    PFN, the model (which never reuses a PFN) also reports that the kernel
    moved the page: an identity difference at the page.
    """
    r = replay(arch_name, name)
    check, ri, page = _last_present_page(r, unique=True)
    region = check.regions[ri]
    assert region.pagemap.data is not None
    raw = parse_u64s(r.arch, region.pagemap.data)[page]
    old_pfn = raw & PM.PFN_MASK
    new_pfn = max(f.pfn for f in check.frames) + 0x1000
    real = with_check(r.real, _with_raw(r, check, ri, page, raw & ~PM.PFN_MASK | new_pfn))
    found = compare(r.model, real, r.scenario, r.arch)
    place = Place(region.proc, region.region, page)
    vaddr = region.vaddr + page * r.arch.page_size
    missing = [d for d in found if d.kind == "missing"]
    assert [(d.field, d.step, d.real_pfn, d.real if d.model_pfn else d.model, d.places)
            for d in missing] == [
        ("frame", check.step, new_pfn, Presence.NOT_READ, (place,)),
        ("frame", check.step, old_pfn, Presence.UNPAIRED, ())]  # no real page maps it now
    model_pfn = missing[0].model_pfn
    identity = [d for d in found if d.kind == "identity"]
    assert len(found) == len(missing) + len(identity) and len(identity) <= 1
    for d in identity:
        assert (d.step, d.proc, d.region, d.page, d.vaddr) == (
            check.step, region.proc, region.region, page, vaddr)
        assert (d.model_pfn, d.real_pfn) == (model_pfn, new_pfn) and r.model.stable_pfns
        assert isinstance(d.context, PfnConflict) and d.context.partner == old_pfn
        assert d.context.rule is ConflictRule.MODEL_KEPT
    text = report(r, found)
    for part in (f"step {check.step} (check)", "frame missing: model kpageflags 0x",
                 f"real {new_pfn:#x} ({place})", "frame missing: model no model frame paired"):
        assert part in text, f"{part!r} not in:\n{text}"
    if identity:
        assert f"at {region.proc} {region.region}+{page} @{vaddr:#x}" in text


def _errno_read(check: CheckObservation) -> tuple[str, ReadResult] | None:
    for name in ("kpagemap_header", "kpageflags_probe", "kpagecount_probe"):
        read: ReadResult = getattr(check, name)
        if read.errno is not None:
            return name, read
    return None


@pytest.mark.parametrize("arch_name,name", RECORDINGS, ids=IDS)
def test_planted_errno(arch_name: str, name: str) -> None:
    """A recorded errno changed (or, without one, a step that failed with ENOMEM)."""
    r = replay(arch_name, name)
    found_read = next(((c, *x) for c in r.real.checks if (x := _errno_read(c)) is not None),
                      None)
    if found_read is not None:
        check, attr, read = found_read
        eperm = ReadResult.failed(errno.EPERM)
        if attr == "kpagemap_header":
            changed = replace(check, kpagemap_header=eperm)
        elif attr == "kpageflags_probe":
            changed = replace(check, kpageflags_probe=eperm)
        else:
            changed = replace(check, kpagecount_probe=eperm)
        real = with_check(r.real, changed)
        found = compare(r.model, real, r.scenario, r.arch)
        field = {"kpagemap_header": "kpagemap.header"}.get(attr, attr.replace("_", "."))
        assert [(d.kind, d.field, d.step, d.model, d.real) for d in found] == [
            ("value", field, check.step, read, ReadResult.failed(errno.EPERM))]
        expected = f"{field}: model error EACCES (13), real error EPERM (1)"
        step = check.step
    else:
        outcomes = list(r.real.outcomes)
        outcomes[0] = StepOutcome(0, "error", errno=errno.ENOMEM)
        found = compare(r.model, replace(r.real, outcomes=tuple(outcomes)), r.scenario, r.arch)
        assert [(d.kind, d.field, d.step, d.model, d.real) for d in found] == [
            ("value", "outcome", 0, StepOutcome(0, "ok"), outcomes[0])]
        expected = "outcome: model ok, real error ENOMEM (12)"
        step = 0
    assert read_errnos(found) and f"step {step} (" in report(r, found)
    assert expected in report(r, found)


def read_errnos(found: list[Divergence]) -> list[int]:
    """Errno numbers the JSON report carries (as numbers, not words)."""
    obj = json.loads(render_json([ScenarioResult.from_divergences("s", "a", found)]))
    numbers = []
    for d in obj["results"][0]["divergences"]:
        for side in ("model", "real"):
            if isinstance(d[side], dict) and "errno" in d[side]:
                assert isinstance(d[side]["errno"], int) and d[side]["errno_name"].startswith("E")
                numbers.append(d[side]["errno"])
    return numbers


def test_recorded_file_round_trips(tmp_path: Path) -> None:
    """A recording read back and saved again is the same observations."""
    if not RECORDINGS:
        pytest.fail(f"no recordings under {RECORDED_DIR}")
    arch_name, name = RECORDINGS[0]
    real = replay(arch_name, name).real
    real.save(tmp_path / "again.json")
    assert Observations.load(tmp_path / "again.json") == real
    assert isinstance(real.checks[0].regions[0], RegionRead)


# ---------------------------------------------------------------------------
# smaps and smaps_rollup
# ---------------------------------------------------------------------------

SMAPS_RECORDINGS = [
    (arch, name) for arch, name in RECORDINGS
    if any(c.smaps for c in replay(arch, name).real.checks)
]
SMAPS_IDS = [f"{name}-{arch}" for arch, name in SMAPS_RECORDINGS]


def test_some_recordings_hold_smaps() -> None:
    assert ("x86_64", "nested") in SMAPS_RECORDINGS


def _our_smaps_line(r: Replay, field: str) -> tuple[CheckObservation, int, str, int]:
    """(check, smaps index, region, line start) of ``field`` in the last block of one of
    our regions with a nonzero value, in the last root check that read smaps."""
    from sim.smaps_format import parse_smaps

    for check in reversed(r.real.checks):
        if check.reader_uid != 0:
            continue
        for si, read in enumerate(check.smaps or ()):
            if read.smaps.data is None:
                continue
            text = read.smaps.data.decode()
            ours = {(x.vaddr, x.region) for x in check.regions if x.proc == read.proc}
            for block in reversed(parse_smaps(text)):
                region = next((n for v, n in ours if v == block.header.start), None)
                if region is None or not block.values.get(field):
                    continue
                header = text.index(f"{block.header.start:08x}-")
                return check, si, region, text.index(f"\n{field}:", header) + 1
    pytest.fail(f"no block of ours with a nonzero {field}")


def _with_text(check: CheckObservation, si: int, *, smaps: bytes | None = None,
               rollup: bytes | None = None) -> CheckObservation:
    assert check.smaps is not None
    read = check.smaps[si]
    new = replace(
        read,
        smaps=read.smaps if smaps is None else ReadResult.ok(smaps),
        rollup=read.rollup if rollup is None else ReadResult.ok(rollup),
    )
    return replace(check, smaps=tuple(new if i == si else x for i, x in enumerate(check.smaps)))


def _bump(text: bytes, start: int, by: int) -> bytes:
    """The ``Name:   N kB`` line at ``start`` with N + ``by``, same width."""
    end = text.index(b"\n", start)
    name, value = text[start:end].split(b":")
    number = int(value.split()[0]) + by
    return text[:start] + name + b":" + f"{number:>{len(value) - 3}} kB".encode() + text[end:]


@pytest.mark.parametrize("arch_name,name", SMAPS_RECORDINGS, ids=SMAPS_IDS)
def test_planted_smaps_pss(arch_name: str, name: str) -> None:
    """One of our blocks' Pss line moved by 1 kB: one difference naming field, step, region."""
    r = replay(arch_name, name)
    check, si, region, line = _our_smaps_line(r, "Pss")
    assert check.smaps is not None
    read = check.smaps[si]
    assert read.smaps.data is not None
    real = with_check(r.real, _with_text(check, si, smaps=_bump(read.smaps.data, line, 1)))
    found = compare(r.model, real, r.scenario, r.arch)
    assert [(d.kind, d.field, d.step, d.proc, d.region) for d in found] == [
        ("value", "smaps.Pss", check.step, read.proc, region)]
    assert found[0].real == found[0].model + 1  # type: ignore[operator]
    text = report(r, found)
    for part in (f"step {check.step} (check)", "smaps.Pss: model ", f"at {read.proc} {region}"):
        assert part in text, f"{part!r} not in:\n{text}"


@pytest.mark.parametrize("arch_name,name", SMAPS_RECORDINGS, ids=SMAPS_IDS)
def test_planted_rollup_rss(arch_name: str, name: str) -> None:
    """The rollup's Rss one page larger: our share differs by exactly that (an exact field)."""
    r = replay(arch_name, name)
    check, si, _, _ = _our_smaps_line(r, "Rss")
    assert check.smaps is not None
    read = check.smaps[si]
    assert read.rollup.data is not None
    start = read.rollup.data.index(b"\nRss:") + 1
    page_kb = r.arch.page_size >> 10
    real = with_check(r.real, _with_text(
        check, si, rollup=_bump(read.rollup.data, start, page_kb)))
    found = compare(r.model, real, r.scenario, r.arch)
    assert [(d.field, d.step, d.proc) for d in found] == [
        ("smaps_rollup.Rss", check.step, read.proc)]
    assert found[0].real == found[0].model + page_kb  # type: ignore[operator]


@pytest.mark.parametrize("arch_name,name", SMAPS_RECORDINGS, ids=SMAPS_IDS)
def test_planted_rollup_pss_outside_bounds(arch_name: str, name: str) -> None:
    """The rollup's Pss far above what the other VMAs leave room for: an interval difference."""
    from harness.differences import PssBounds, PssShare

    r = replay(arch_name, name)
    check, si, _, _ = _our_smaps_line(r, "Pss")
    assert check.smaps is not None
    read = check.smaps[si]
    assert read.rollup.data is not None
    start = read.rollup.data.index(b"\nPss:") + 1
    real = with_check(r.real, _with_text(check, si, rollup=_bump(read.rollup.data, start, 4096)))
    found = compare(r.model, real, r.scenario, r.arch)
    assert [(d.field, d.proc) for d in found] == [("smaps_rollup.Pss", read.proc)]
    assert isinstance(found[0].model, PssShare) and isinstance(found[0].real, PssBounds)
    assert found[0].real.low > found[0].model.fixed


def test_planted_model_error_pss_floor_per_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that floors each page's Pss share to whole kB (as procrank does) is caught
    on nested (three processes share pages: 4 KiB / 3 is not whole kB): the report names
    the field, the step, the processes and the region."""
    import sim.smaps as model_smaps

    r = replay("x86_64", "nested")
    real_accumulate = model_smaps._page_accumulate

    def floored(mss: model_smaps.MemSizeStats, mem: object, head: int, size: int, pss: int,
                *rest: bool) -> None:
        real_accumulate(mss, mem, head, size, pss >> 22 << 22, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(model_smaps, "_page_accumulate", floored)
    found = compare(run_model(r.scenario, r.arch), r.real, r.scenario, r.arch)
    fields = {d.field for d in found}
    assert "smaps.Pss" in fields, report(r, found)
    pss = next(d for d in found if d.field == "smaps.Pss")
    assert pss.region is not None and pss.proc is not None
    assert isinstance(pss.model, int) and isinstance(pss.real, int) and pss.model < pss.real
    text = report(r, found)
    assert f"step {pss.step} (check)" in text and f"at {pss.proc} {pss.region}" in text
