"""The footprint tool on recorded guest reads (harness/tests/data/recorded/x86_64), no guest.

The tool reads a recorded check through its PageSource interface and must
agree with the kernel's smaps blocks recorded in the same check and with the
model's exact fixed-point sums; a count planted in the recording must show.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.footprint_oracle import footprint_mismatches, process_footprints
from harness.observations import ReadResult
from harness.tests.test_replay import SMAPS_IDS, SMAPS_RECORDINGS, replay
from sim.formats import build_u64s, parse_u64s


@pytest.mark.parametrize("arch_name,name", SMAPS_RECORDINGS, ids=SMAPS_IDS)
def test_footprint_agrees_with_kernel_smaps_and_model(arch_name: str, name: str) -> None:
    r = replay(arch_name, name)
    root = 0
    for m, real in zip(r.model.checks, r.real.checks, strict=True):
        assert footprint_mismatches(real, r.arch, m) == []
        root += real.reader_uid == 0
    assert root


def test_footprint_numbers_of_three_sharers() -> None:
    """nested, first check: a 4-page anon region COW-shared by three processes.

    Each process's PSS is 4 * ((4096 << 12) // 3) in fixed point: the kernel's
    integer division per page, not 4 * 4096 / 3 rounded once."""
    r = replay("x86_64", "nested")
    tools = process_footprints(r.real.checks[0], r.arch)
    assert tools["c1"].pss_fixed == tools["c2"].pss_fixed == 4 * ((4096 << 12) // 3)
    assert tools["c1"].rss == 4 * 4096 and tools["c1"].uss == 0


def test_planted_mapcount_is_caught() -> None:
    """One shared frame's kpagecount lowered by one in the recording: the tool's Pss for
    the VMAs mapping it no longer matches the kernel's smaps nor the model."""
    r = replay("x86_64", "nested")
    check, model = r.real.checks[0], r.model.checks[0]
    frame = next(f for f in check.frames
                 if f.kpagecount.data and parse_u64s(r.arch, f.kpagecount.data)[0] == 3)
    assert frame.kpagecount.data is not None
    count = parse_u64s(r.arch, frame.kpagecount.data)[0]
    bad = replace(frame, kpagecount=ReadResult.ok(build_u64s(r.arch, [count - 1])))
    planted = replace(check, frames=tuple(bad if f.pfn == frame.pfn else f for f in check.frames))
    found = footprint_mismatches(planted, r.arch, model)
    assert {(m.quantity, m.oracle) for m in found} >= {("pss_fixed", "model")}
    assert all(m.step == check.step for m in found)
    assert {m.proc for m in found} == {"main", "c1", "c2"}
