"""pagemap_scan steps end to end without a guest: loader, model executor, JSON, compare, report."""

from __future__ import annotations

import dataclasses

import pytest

from harness.compare import compare
from harness.differences import ScanRecord
from harness.model_executor import run_model
from harness.observations import Observations, ScanObservation, StepOutcome
from harness.report import describe_value
from harness.scenario import ScenarioError, parse_scenario
from sim.arch import get_arch
from sim.formats_scan import PageRegion, build_page_regions, parse_page_regions

ARCH = get_arch("ppc64")  # big-endian: the records' byte order is the guest's

SCENARIO = {
    "name": "scan_unit",
    "steps": [
        {"op": "mmap", "region": "a", "pages": 8, "kind": "anon", "share": "private",
         "prot": "rw"},
        {"op": "write", "region": "a", "pages": [0, 2]},
        {"op": "read", "region": "a", "pages": [2, 3]},
        {"op": "pagemap_scan", "region": "a", "pages": [0, 8], "vec_len": 4,
         "return_mask": ["PRESENT", "PFNZERO"]},
        {"op": "pagemap_scan", "region": "a", "pages": [0, 8], "categories": [256]},
    ],
}  # fmt: skip


def _model() -> Observations:
    return run_model(parse_scenario(SCENARIO, "unit"), ARCH)


def test_the_model_records_ret_walk_end_and_the_whole_buffer() -> None:
    obs = _model()
    scan = obs.outcomes[3].scan
    assert scan is not None and obs.outcomes[3].status == "ok"
    base = 1 << 40
    page = ARCH.page_size
    assert scan.ret == 3 and scan.walk_end == base + 8 * page
    assert len(scan.vec) == 4 * 24
    assert parse_page_regions(ARCH, scan.vec[:72]) == [
        PageRegion(base, base + 2 * page, 8),
        PageRegion(base + 2 * page, base + 3 * page, 8 | 32),
        PageRegion(base + 3 * page, base + 8 * page, 0),
    ]
    assert scan.vec[72:] == b"\xa5" * 24
    bad = obs.outcomes[4]
    assert (bad.status, bad.errno) == ("error", 22)
    assert bad.scan is not None and bad.scan.walk_end == 0
    # JSON round trip keeps the scan.
    assert Observations.from_json(obs.to_json()) == obs


def test_compare_reports_each_part_of_a_scan() -> None:
    scenario = parse_scenario(SCENARIO, "unit")
    model = _model()
    assert compare(model, model, scenario, ARCH) == []
    good = model.outcomes[3]
    assert good.scan is not None
    records = parse_page_regions(ARCH, good.scan.vec[:72])
    changed = build_page_regions(ARCH, [records[0], dataclasses.replace(records[1], categories=8),
                                        records[2]]) + good.scan.vec[72:]
    real_scan = ScanObservation(ret=good.scan.ret, walk_end=good.scan.walk_end + 1, vec=changed)
    real = dataclasses.replace(model, side="real", outcomes=(
        *model.outcomes[:3], dataclasses.replace(good, scan=real_scan), *model.outcomes[4:]))
    found = compare(model, real, scenario, ARCH)
    assert [d.field for d in found] == ["scan.walk_end", "scan.region"]
    region = found[1]
    assert isinstance(region.model, ScanRecord) and region.model.index == 1
    assert describe_value("scan.region", "model", region.model).endswith("PRESENT|PFNZERO")
    assert describe_value("scan.region", "real", region.real).endswith("PRESENT")
    assert describe_value("scan.walk_end", "real", found[0].real) == hex(good.scan.walk_end + 1)
    # A different errno or status is the outcome's own divergence.
    failed = StepOutcome(3, "error", errno=1, scan=ScanObservation(-1, 0, b""))
    real = dataclasses.replace(model, side="real", outcomes=(
        *model.outcomes[:3], failed, *model.outcomes[4:]))
    assert [d.field for d in compare(model, real, scenario, ARCH)] == ["outcome"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"categories": ["PRESENTS"]}, "categories: 'PRESENTS' is not one of WPALLOWED"),
        ({"vec_len": 0}, "vec_len 0 is not an integer 1..65536"),
        ({"flags": "WP_MATCHING"}, "flags 'WP_MATCHING' is not a list"),
        ({"pages": [0, 9]}, "pages [0, 9) is not a non-empty range inside region"),
        ({"max_pages": -1}, "max_pages -1 is negative"),
        ({"max_pages": "thp-100000"}, "max_pages thp-100000 is negative"),
    ],
)
def test_bad_scan_steps_are_one_line_errors(change: dict[str, object], message: str) -> None:
    step = {"op": "pagemap_scan", "region": "a", "pages": [0, 8], **change}
    data = {**SCENARIO, "steps": [*SCENARIO["steps"][:3], step]}
    with pytest.raises(ScenarioError) as e:
        scenario = parse_scenario(data, "unit")
        run_model(scenario, ARCH)
    assert message in str(e.value) and "\n" not in str(e.value)
