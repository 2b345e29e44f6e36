"""hugetlb regions in the scenario language: ``kind: "hugetlb"``, ``"huge"`` counts, the
loader's one-line errors, the architectures without a pool, the model's refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.arches import get_profile
from harness.model_executor import ModelError, run_model
from harness.scenario import (
    NrPages,
    ScenarioError,
    ScenarioNotApplicable,
    load_scenario,
    plan_layout,
)
from sim.arch import get_arch

X86, PPC64, PPC64_4K, I386 = (get_arch(n) for n in ("x86_64", "ppc64", "ppc64-4k", "i386"))
MMAP_H = {"op": "mmap", "region": "h", "pages": "2*huge", "kind": "hugetlb",
          "share": "private", "prot": "rw"}


def _write(tmp_path: Path, *steps: dict[str, Any]) -> Path:
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"name": "h", "steps": [*steps, {"op": "check"}]}))
    return path


def test_huge_counts() -> None:
    assert NrPages.parse("huge") == NrPages(0, 0, 1)
    assert NrPages.parse("3*huge+2") == NrPages(2, 0, 3)
    assert str(NrPages(-1, 0, 2)) == "2*huge-1" and str(NrPages(0, 0, 1)) == "huge"
    assert NrPages(1, 0, 2).resolve(X86) == 1025
    assert NrPages(0, 0, 1).resolve(PPC64) == 32  # 2 MiB of 64K pages
    assert NrPages(0, 0, 1).resolve(PPC64_4K) == 512
    with pytest.raises(ScenarioNotApplicable, match="i386 has no hugetlb pages"):
        NrPages(0, 0, 1).resolve(I386)
    for bad in ("huge*2", "2huge", "hugetlb", "thp+huge"):
        with pytest.raises(ValueError):
            NrPages.parse(bad)


def test_pool_on_the_command_line() -> None:
    for name in ("x86_64", "ppc64", "ppc64-4k"):
        profile = get_profile(name)
        assert f"hugepages={profile.arch.hugetlb_pages}" in profile.command_line_for_kernel()
        assert profile.arch.hugetlb_pages == 32
        assert profile.arch.hugetlb_page_pages * profile.arch.page_size == 2 << 20


def test_hugetlb_scenario_skips_without_a_pool(tmp_path: Path) -> None:
    path = _write(tmp_path, {**MMAP_H, "pages": 1024}, {"op": "write", "region": "h",
                                                        "pages": [0, 1]})
    scenario = load_scenario(path)
    reason = scenario.unsupported_reason(I386)
    assert reason is not None and "no hugetlb pool" in reason
    assert scenario.unsupported_reason(X86) is None
    with pytest.raises(ScenarioNotApplicable):
        plan_layout(scenario, I386)


@pytest.mark.parametrize(("steps", "message"), [
    ([{**MMAP_H, "pages": "huge+1"}],
     r"step 0 \(mmap\): pages huge\+1 = 513 of a hugetlb region is not a multiple of 'huge' "
     r"\(512 pages on x86_64\)"),
    ([MMAP_H, {**MMAP_H, "region": "g", "pages": "huge", "at": {"region": "h", "page": 3}}],
     r"step 1 \(mmap\): at.page 3 of a hugetlb region is not a multiple of 'huge'"),
    ([{**MMAP_H, "populate": True}], r"step 0 \(mmap\): populate/locked of a hugetlb region"),
    ([MMAP_H, {"op": "munmap", "region": "h", "pages": [0, 1]}],
     r"step 1 \(munmap\): pages \[0, 1\) = \[0, 1\) of hugetlb region 'h' are not whole "
     r"huge pages \('huge' = 512 pages\)"),
])
def test_loader_errors(tmp_path: Path, steps: list[dict[str, Any]], message: str) -> None:
    path = _write(tmp_path, *steps)
    with pytest.raises(ScenarioError, match=message) as info:
        load_scenario(path, X86)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("step", [
    {"op": "mprotect", "region": "h", "pages": [0, "huge"], "prot": "r"},
    {"op": "mlock", "region": "h", "pages": [0, "huge"]},
    {"op": "madvise", "region": "h", "pages": [0, "huge"], "advice": "cold"},
    {"op": "pagemap_scan", "region": "h", "pages": [0, "huge"]},
])
def test_model_refuses_what_it_does_not_follow(tmp_path: Path, step: dict[str, Any]) -> None:
    """Ops the model does not follow on hugetlb regions end in a model error, never a
    prediction."""
    scenario = load_scenario(_write(tmp_path, MMAP_H, {"op": "write", "region": "h",
                                                       "pages": [0, 1]}, step), X86)
    with pytest.raises(ModelError, match=r"step 2 .*not modelled: .*hugetlb"):
        run_model(scenario, X86)
