"""Observations: invariants, the frame rule, and the JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.observations import (
    FORMAT_VERSION,
    ObservationError,
    Observations,
    ReadResult,
    RegionRead,
    StepOutcome,
    errno_name,
    frames_seen,
    ram_tag_pages,
)
from harness.tests import synth
from harness.tests.test_compare import ARCH, model_observations
from sim.formats import PagemapEntry, build_u64s


def test_json_round_trip(tmp_path: Path) -> None:
    obs = model_observations()
    assert Observations.from_json(json.loads(json.dumps(obs.to_json()))) == obs
    path = tmp_path / "run.json"
    obs.save(path)
    assert Observations.load(path) == obs
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary left behind
    text = path.read_text()
    assert '"hex": "' in text and '"ram_tags"' in text


@given(st.binary(max_size=64), st.integers(1, 200))
def test_read_result_round_trip(data: bytes, errno: int) -> None:
    for result in (ReadResult.ok(data), ReadResult.failed(errno)):
        assert ReadResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_invariants() -> None:
    with pytest.raises(ValueError):
        ReadResult(b"x", 5)
    with pytest.raises(ValueError):
        ReadResult()
    with pytest.raises(ValueError):
        StepOutcome(1, "segv")
    with pytest.raises(ValueError):
        StepOutcome(1, "ok", errno=3)
    with pytest.raises(ValueError):
        RegionRead("main", "a", 0, 2, ReadResult.ok(b""), (None,))
    check = model_observations().checks[1]
    from dataclasses import replace
    with pytest.raises(ValueError, match="a PFN is read twice"):
        replace(check, frames=check.frames + check.frames[:1])
    with pytest.raises(ValueError, match="read twice"):
        replace(check, regions=check.regions + check.regions[:1])


@pytest.mark.parametrize("obj,message", [
    ([], "observations '[]' is not an object"),
    ({"format": 99}, "format 99; this version reads format 1"),
    ({"format": FORMAT_VERSION, "side": "guest"}, "side 'guest'"),
    ({"format": FORMAT_VERSION, "side": "real", "scenario": "t", "arch": "x86_64",
      "outcomes": [{"step": 0, "status": "boom"}], "checks": []}, "status 'boom'"),
    ({"format": FORMAT_VERSION, "side": "real", "scenario": "t", "arch": "x86_64",
      "outcomes": [], "checks": [{"step": 1, "reader_uid": 0, "kpagemap_header": {"hex": "zz"}}]},
     "hex 'zz' is not hex bytes"),
    ({"format": FORMAT_VERSION, "side": "real", "scenario": "t", "arch": "x86_64",
      "outcomes": [], "checks": [{"step": 1, "reader_uid": 0, "kpagemap_header": {"errno": 0}}]},
     "errno 0 is not a positive integer"),
])
def test_bad_json(obj: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ObservationError) as info:
        Observations.load(path)
    assert message in str(info.value) and str(info.value).startswith(str(path))
    with pytest.raises(ObservationError, match="cannot read"):
        Observations.load(tmp_path / "none.json")
    path.write_text("{")
    with pytest.raises(ObservationError, match="not a JSON file"):
        Observations.load(path)


def test_frame_rule() -> None:
    entries = [
        PagemapEntry.page(0x10, exclusive=True),
        PagemapEntry.page(0),  # PFN hidden from an unprivileged reader: no frame
        PagemapEntry.swap(1, 5),
        PagemapEntry(soft_dirty=True),
        PagemapEntry.page(0x10),
        PagemapEntry.page(0x7, file_shared=True),
    ]
    read = ReadResult.ok(build_u64s(ARCH, [e.to_raw() for e in entries]))
    assert ram_tag_pages(ARCH, read) == [(0, 0x10), (4, 0x10), (5, 0x7)]
    region = synth.region(ARCH, "main", "a", 0, entries)
    assert frames_seen(ARCH, [region.pagemap, read]) == [0x7, 0x10]
    assert ram_tag_pages(ARCH, ReadResult.failed(13)) == []
    # A short read names the frames of its whole entries only.
    assert ram_tag_pages(ARCH, ReadResult.ok(read.data[:12] if read.data else b"")) == [(0, 0x10)]


def test_errno_name() -> None:
    assert errno_name(13) == "EACCES (13)"
    assert errno_name(4095) == "E? (4095)"


def test_observe_check_reads_in_two_batches() -> None:
    """The read plan both executors share, run over in-memory file contents."""
    from harness.observations import FileRead, observe_check
    from harness.scenario import Check, plan_layout
    from harness.tests.test_compare import SCENARIO
    from sim.formats import KpagemapHeader, build_kpagemap_entries

    layout = plan_layout(SCENARIO, ARCH)
    a = layout["a"]
    entries = [PagemapEntry.page(5, exclusive=True), PagemapEntry(), PagemapEntry.page(3),
               PagemapEntry.page(5)]
    kpmsize = ARCH.kpagemap_entry_size
    pagemap_base = (a.vaddr >> ARCH.page_shift) * 8
    files = {  # path -> (file offset of the bytes, bytes)
        "/proc/42/pagemap": (pagemap_base, build_u64s(ARCH, [e.to_raw() for e in entries])),
        "/proc/kpagemap": (0, KpagemapHeader.for_arch(ARCH).slot_bytes()
                           + build_kpagemap_entries(ARCH, [(p, 100 + p) for p in range(8)])),
        "/proc/kpageflags": (0, build_u64s(ARCH, [1 << p for p in range(8)])),
        "/proc/kpagecount": (0, build_u64s(ARCH, list(range(8)))),
        "/proc/42/smaps": (0, b"smaps text"),
        "/proc/42/smaps_rollup": (0, b"rollup text"),
    }
    batches: list[list[FileRead]] = []

    def read(reads: object) -> list[ReadResult]:
        assert isinstance(reads, list)
        batches.append(reads)
        results = []
        for r in reads:
            base, data = files[r.path]
            results.append(ReadResult.ok(data[r.offset - base: r.offset - base + r.count]))
        return results

    check = Check(2)
    obs = observe_check(check, [("main", "a", 42)], layout, ARCH, read,
                        lambda pfns: [0x1000 + p for p in pfns])
    assert [len(b) for b in batches] == [7, 6]
    assert batches[0][3] == FileRead("/proc/42/pagemap", (a.vaddr >> 16) * 8, 32)
    assert [(r.path, r.whole) for r in batches[0][4:]] == [
        ("/proc/42/smaps_rollup", True), ("/proc/42/smaps", True),
        ("/proc/42/smaps_rollup", True),
    ]
    assert obs.smaps is not None
    assert obs.smaps[0].proc == "main"
    assert obs.smaps[0].smaps.data == b"smaps text"
    assert obs.smaps[0].rollup.data == b"rollup text"
    assert batches[1][:3] == [FileRead("/proc/kpagemap", 4 * kpmsize, kpmsize),
                              FileRead("/proc/kpageflags", 24, 8),
                              FileRead("/proc/kpagecount", 24, 8)]
    assert obs.kpagemap_header.data == KpagemapHeader.for_arch(ARCH).slot_bytes()
    assert obs.kpageflags_probe == ReadResult.ok(b"")
    assert [f.pfn for f in obs.frames] == [3, 5]
    assert obs.frames[1].kpagecount == ReadResult.ok(build_u64s(ARCH, [5]))
    assert obs.regions[0].ram_tags == (0x1005, None, 0x1003, 0x1005)
    untagged = observe_check(check, [("main", "a", 42)], layout, ARCH, read, None)
    assert untagged.regions[0].ram_tags is None


def test_smaps_are_read_again_while_the_rollup_moves() -> None:
    """A rollup that differs before and after the smaps read makes the check read the
    triple again; the last triple is kept, and a settled one ends the retries."""
    from harness.observations import FileRead, observe_check
    from harness.scenario import Check, plan_layout
    from harness.tests.test_compare import SCENARIO

    layout = plan_layout(SCENARIO, ARCH)
    rollups = iter([b"r0", b"r1", b"r2", b"r2"])
    batches: list[list[FileRead]] = []

    def read(reads: object) -> list[ReadResult]:
        assert isinstance(reads, list)
        batches.append(reads)
        out = []
        for r in reads:
            if r.path.endswith("smaps_rollup"):
                out.append(ReadResult.ok(next(rollups)))
            elif r.path.endswith("smaps"):
                out.append(ReadResult.ok(f"smaps{len(batches)}".encode()))
            else:
                out.append(ReadResult.failed(13))
        return out

    obs = observe_check(Check(2), [("main", "a", 42)], layout, ARCH, read, None)
    assert [len(b) for b in batches] == [7, 3]  # no frames: no second batch
    assert obs.smaps is not None
    assert obs.smaps[0].rollup.data == b"r2"
    assert obs.smaps[0].smaps.data == b"smaps2"


def test_frame_reads_cover_runs_of_pfns() -> None:
    """Consecutive PFNs (a THP) are read with one read per file; each frame gets its slice."""
    from harness.observations import FileRead, observe_check
    from harness.scenario import Check, plan_layout
    from harness.tests.test_compare import SCENARIO

    layout = plan_layout(SCENARIO, ARCH)
    entries = [PagemapEntry.page(p) for p in (7, 8, 9, 20)]
    pagemap = build_u64s(ARCH, [e.to_raw() for e in entries])
    batches: list[list[FileRead]] = []

    def read(reads: object) -> list[ReadResult]:
        assert isinstance(reads, list)
        batches.append(reads)
        results = []
        for r in reads:
            if r.path.endswith("pagemap") and r.path != "/proc/kpagemap":
                results.append(ReadResult.ok(pagemap))
            elif r.path == "/proc/kpagecount":
                results.append(ReadResult.failed(5))
            elif r.count == 3 * 8:  # kpageflags run 7..9 comes back short: 7 and 8 only
                results.append(ReadResult.ok(build_u64s(ARCH, [70, 80])))
            else:
                results.append(ReadResult.ok(bytes(r.count)))
        return results

    obs = observe_check(Check(2), [("main", "a", 42)], layout, ARCH, read, None)
    kpm = ARCH.kpagemap_entry_size
    assert batches[1] == [
        FileRead("/proc/kpagemap", 8 * kpm, 3 * kpm), FileRead("/proc/kpageflags", 56, 24),
        FileRead("/proc/kpagecount", 56, 24),
        FileRead("/proc/kpagemap", 21 * kpm, kpm), FileRead("/proc/kpageflags", 160, 8),
        FileRead("/proc/kpagecount", 160, 8),
    ]
    assert [f.pfn for f in obs.frames] == [7, 8, 9, 20]
    assert obs.frames[1].kpageflags == ReadResult.ok(build_u64s(ARCH, [80]))
    assert obs.frames[2].kpageflags == ReadResult.ok(b"")  # beyond the short read
    assert all(f.kpagecount == ReadResult.failed(5) for f in obs.frames)
    assert obs.frames[3].kpagemap == ReadResult.ok(bytes(kpm))
