"""What compare says it compared, on the recorded guest runs (harness/tests/data/recorded/).

Each count is worked out here a second way, from the recorded bytes alone
(pages read, frames read, errnos seen, smaps blocks and rollup lines), and
must equal what :func:`harness.compare.compare_counted` reports; a planted
change that makes compare skip something (a region read at another range, a
pagemap read that failed) must lower exactly the counts it skipped.
"""

from __future__ import annotations

import errno
import json
from dataclasses import replace

import pytest

from harness.compare import compare_counted
from harness.compared import Compared, describe_compared
from harness.observations import CheckObservation, Observations, ReadResult
from harness.report import ScenarioResult, render_json, render_text
from harness.tests.test_replay import IDS, RECORDINGS, Replay, replay, with_check
from sim.arch import Arch
from sim.flags import PM
from sim.formats import parse_u64s
from sim.smaps_format import parse_smaps


def _failed(result: ReadResult) -> int:
    return int(result.errno is not None)


def expected(r: Replay) -> Compared:
    """The counts of an agreeing recording, from its bytes (both sides read the same)."""
    real, arch = r.real, r.arch
    entries = pfns = frames = tags = errnos = vmas = fields = rollup = 0
    errnos += sum(o.status == "error" for o in real.outcomes)
    for check in real.checks:
        errnos += sum(map(_failed, (check.kpagemap_header, check.kpageflags_probe,
                                    check.kpagecount_probe)))
        for region in check.regions:
            errnos += _failed(region.pagemap)
            data = region.pagemap.data or b""
            raws = parse_u64s(arch, data[: len(data) - len(data) % 8])
            entries += len(raws)
            pfns += sum(raw >> PM.PRESENT & 1 and not raw >> PM.SWAP & 1
                        and bool(raw & PM.PFN_MASK) for raw in raws)
            tags += sum(t is not None for t in region.ram_tags or ())
        frames += len(check.frames)
        vmas_, fields_, rollup_, errnos_ = _smaps_counts(r, check)
        vmas, fields, rollup, errnos = vmas + vmas_, fields + fields_, rollup + rollup_, \
            errnos + errnos_
    return Compared(
        checks=len(real.checks), steps=len(real.outcomes), errnos=errnos,
        pagemap_entries=entries, pfns=pfns, frames=frames, flag_consistency=2 * frames,
        ram_tags=tags, vmas=vmas, smaps_fields=fields, rollup_fields=rollup,
    )


def _smaps_counts(r: Replay, check: CheckObservation) -> tuple[int, int, int, int]:
    """(VMAs, smaps fields, rollup fields, errnos) of one check: the model's blocks are ours."""
    model = next(c for c in r.model.checks if c.step == check.step)
    if model.smaps is None or check.smaps is None:
        return 0, 0, 0, 0
    vmas = fields = rollup = errnos = 0
    for read in model.smaps:
        if read.smaps.data is None:
            errnos += 1
            continue
        for block in parse_smaps(read.smaps.data.decode()):
            vmas += 1
            # perms offset name VmFlags (+ device inode: anonymous) + value lines + THPeligible
            # + ProtectionKey where printed.
            fields += 4 + (0 if block.header.name else 2) + len(block.values)
            fields += (block.thp_eligible is not None) + (block.protection_key is not None)
        assert read.rollup.data is not None
        rollup += len(parse_smaps(read.rollup.data.decode())[0].values)
    return vmas, fields, rollup, errnos


@pytest.mark.parametrize("arch_name,name", RECORDINGS, ids=IDS)
def test_counts_of_agreeing_recordings(arch_name: str, name: str) -> None:
    r = replay(arch_name, name)
    comparison = compare_counted(r.model, r.real, r.scenario, r.arch)
    assert comparison.divergences == []
    assert comparison.compared == expected(r)
    # Every step has its counts; a check's own are under its step.
    assert sorted(comparison.by_step) == [o.step for o in r.real.outcomes]
    for check in r.real.checks:
        assert comparison.by_step[check.step].checks == 1
        assert comparison.by_step[check.step].frames == len(check.frames)


def test_unprivileged_reader_counts_its_errnos() -> None:
    """uid 1000 is refused the kpage* files: those errnos are compared and counted."""
    r = replay("x86_64", "unprivileged_child")
    compared = compare_counted(r.model, r.real, r.scenario, r.arch).compared
    refused = [c for c in r.real.checks if c.kpageflags_probe.errno is not None]
    assert refused, "the recording has no refused read"
    assert compared.errnos >= 3 * len(refused)


def _region_moved(r: Replay) -> tuple[Observations, int]:
    """The real side's first region read of the last check at another address; its pages."""
    check = r.real.checks[-1]
    region = check.regions[0]
    moved = replace(region, vaddr=region.vaddr + r.arch.page_size)
    regions = (moved, *check.regions[1:])
    return with_check(r.real, replace(check, regions=regions)), region.pages


@pytest.mark.parametrize("arch_name", ["x86_64", "ppc64", "ppc64-4k"])
def test_skipped_region_is_not_counted(arch_name: str) -> None:
    """A region read at another range: its entries, PFNs and tags are not compared."""
    r = replay(arch_name, "fork_cow")
    before = compare_counted(r.model, r.real, r.scenario, r.arch)
    real, pages = _region_moved(r)
    after = compare_counted(r.model, real, r.scenario, r.arch)
    assert any(d.field == "pagemap.range" for d in after.divergences)
    step = r.real.checks[-1].step
    assert after.by_step[step].pagemap_entries == before.by_step[step].pagemap_entries - pages
    assert after.by_step[step].ram_tags < before.by_step[step].ram_tags
    assert after.by_step[step].checks == 1


def test_failed_read_is_an_errno_not_entries() -> None:
    """The guest's pagemap read refused (EIO): an errno compared, none of its entries."""
    r = replay("x86_64", "fork_cow")
    check = r.real.checks[-1]
    region = check.regions[0]
    failed = replace(region, pagemap=ReadResult.failed(errno.EIO), ram_tags=None)
    real = with_check(r.real, replace(check, regions=(failed, *check.regions[1:])))
    before = compare_counted(r.model, r.real, r.scenario, r.arch).by_step[check.step]
    after = compare_counted(r.model, real, r.scenario, r.arch).by_step[check.step]
    assert after.errnos == before.errnos + 1
    assert after.pagemap_entries == before.pagemap_entries - region.pages


def _result(arch: Arch, r: Replay) -> ScenarioResult:
    return ScenarioResult.from_comparison(
        r.scenario.name, arch.name, compare_counted(r.model, r.real, r.scenario, arch))


def test_text_and_json_name_the_counts() -> None:
    """An agreeing run says what it compared, per scenario and in total (text and JSON)."""
    runs = [replay("x86_64", "fork_cow"), replay("x86_64", "thp_zero")]
    results = [_result(r.arch, r) for r in runs]
    text = render_text(results)
    lines = text.splitlines()
    assert lines[0] == "ok   fork_cow on x86_64"
    fork_cow = expected(runs[0])
    assert fork_cow.checks == 4 and fork_cow.pagemap_entries == 28 and fork_cow.frames == 19
    assert lines[1].startswith("     compared 4 checks: 28 pagemap entries (28 PFNs paired), "
                               "19 frames (kpageflags,")
    assert "smaps fields of" in text and "rollup field" in text
    total = Compared.total([expected(r) for r in runs])
    assert "\n  in total: compared 6 checks: " in text
    flat = " ".join(text.split())
    assert f"in total: {' '.join(('compared ' + describe_compared(total)).split())}" in flat
    obj = json.loads(render_json(results))
    assert obj["summary"]["compared"] == total.to_json()
    assert obj["results"][0]["compared"] == fork_cow.to_json()
    by_step = obj["results"][1]["compared_by_step"]
    assert [s["step"] for s in by_step] == [o.step for o in runs[1].real.outcomes]
    assert sum(s["pagemap_entries"] for s in by_step) == expected(runs[1]).pagemap_entries


def test_describe_compared_words() -> None:
    assert describe_compared(Compared()) == "0 checks: 0 pagemap entries, 0 step outcomes"
    one = Compared(checks=1, steps=1, pagemap_entries=1, pfns=1, frames=1, vmas=1,
                   smaps_fields=1, rollup_fields=1, errnos=1)
    assert describe_compared(one) == (
        "1 check: 1 pagemap entry (1 PFN paired), 1 frame (kpageflags, kpagecount, kpagemap), "
        "1 smaps field of 1 VMA, 1 rollup field, 1 step outcome, 1 errno")
    with pytest.raises(ValueError, match="no such count: bogus"):
        Compared.of({"bogus": 1})
