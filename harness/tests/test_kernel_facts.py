"""Model facts chosen by kernel release, and a fact that changes what the files say."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from harness.compare import compare
from harness.model_executor import run_model
from harness.observations import Observations
from harness.scenario import load_scenario
from sim.arch import Arch, get_arch
from sim.formats import PagemapEntry, parse_pagemap_entries
from sim.mm.facts import (
    FACTS_6_1,
    FACTS_BY_SERIES,
    PINNED,
    SCENARIO_OF_FACT,
    SCENARIO_OF_SHARED_FACT,
    PmdExclusive,
    UnknownKernelError,
    facts_for_release,
    kernel_series,
)

CATALOG = Path(__file__).resolve().parents[2] / "tests" / "scenarios"


@pytest.mark.parametrize(
    ("release", "series"),
    [("6.12.117", "6.12"), ("6.12.0-rc1+", "6.12"), ("6.1.192-amd64", "6.1"), ("10.3", "10.3")],
)
def test_series_of_a_release(release: str, series: str) -> None:
    assert kernel_series(release) == series


@pytest.mark.parametrize("release", ["", "linux", "6", "6.x.1"])
def test_not_a_release_is_one_line(release: str) -> None:
    with pytest.raises(UnknownKernelError, match="is not a kernel release"):
        kernel_series(release)


def test_every_6_12_release_gets_the_pinned_facts() -> None:
    assert FACTS_BY_SERIES["6.12"] is PINNED
    for release in ("6.12.117", "6.12.115", "6.12.107", "6.12.117-pagemap"):
        assert facts_for_release(release) is PINNED


def test_every_6_1_release_gets_the_6_1_facts() -> None:
    assert FACTS_BY_SERIES["6.1"] is FACTS_6_1
    for release in ("6.1.192", "6.1.176", "6.1.192-pagemap"):
        assert facts_for_release(release) is FACTS_6_1


def test_series_below_every_known_one_names_the_known_ones() -> None:
    with pytest.raises(UnknownKernelError) as info:
        facts_for_release("5.15.1")
    assert str(info.value) == (
        "the model has no facts for kernel 5.15.1 (series 5.15) or any older series; "
        "known: 6.1 (verified on 6.1.192), 6.12 (verified on 6.12.117)"
    )


def test_unknown_newer_series_gets_the_nearest_older_facts() -> None:
    """A user's 6.15 tree is judged by the newest facts at or below it, a 6.6 one by 6.1's."""
    chosen = facts_for_release("6.15.2")
    assert chosen is PINNED
    assert chosen.series != kernel_series("6.15.2")
    assert facts_for_release("6.6.60") is FACTS_6_1


def test_every_6_1_fact_has_a_scenario() -> None:
    differing = {
        f.name
        for f in fields(PINNED)
        if f.name not in ("series", "release")
        and getattr(PINNED, f.name) != getattr(FACTS_6_1, f.name)
    }
    assert differing == set(SCENARIO_OF_FACT)


@pytest.mark.parametrize("arch_name", ["x86_64", "ppc64", "ppc64-4k"])
@pytest.mark.parametrize("fact", sorted(SCENARIO_OF_FACT))
def test_switching_a_6_1_fact_to_6_12_makes_its_scenario_diverge(
    fact: str, arch_name: str
) -> None:
    """The scenario of each 6.1 fact fails when that one fact takes its 6.12 value."""
    scenario = load_scenario(CATALOG / f"{SCENARIO_OF_FACT[fact]}.json")
    arch = get_arch(arch_name)
    as_6_1 = run_model(scenario, arch, facts=FACTS_6_1)
    switched = replace(FACTS_6_1, **{fact: getattr(PINNED, fact)})
    differences = compare(as_6_1, run_model(scenario, arch, facts=switched), scenario, arch)
    assert differences, f"{fact} switched to its 6.12 value must make {scenario.name} diverge"


@pytest.mark.parametrize("arch_name", ["x86_64", "ppc64", "ppc64-4k"])
@pytest.mark.parametrize("fact", sorted(SCENARIO_OF_SHARED_FACT))
def test_switching_a_shared_fact_makes_its_scenario_diverge(fact: str, arch_name: str) -> None:
    """A fact every known series shares (a later kernel changes it) is seen by its scenario:
    the other value makes it diverge, for the facts of each series."""
    scenario = load_scenario(CATALOG / f"{SCENARIO_OF_SHARED_FACT[fact]}.json")
    arch = get_arch(arch_name)
    for facts in FACTS_BY_SERIES.values():
        value = getattr(facts, fact)
        assert isinstance(value, bool)
        other: dict[str, Any] = {fact: not value}
        switched = replace(facts, **other)
        differences = compare(run_model(scenario, arch, facts=facts),
                              run_model(scenario, arch, facts=switched), scenario, arch)
        assert differences, f"{fact}={not value} must make {scenario.name} diverge"


def test_every_shared_fact_is_shared() -> None:
    for fact in SCENARIO_OF_SHARED_FACT:
        assert len({getattr(f, fact) for f in FACTS_BY_SERIES.values()}) == 1, fact


@pytest.mark.parametrize("arch_name", ["x86_64", "ppc64", "ppc64-4k"])
def test_pmd_exclusive_rule_changes_thp_fork(arch_name: str) -> None:
    """thp_fork tells the two PM_MMAP_EXCLUSIVE rules apart, on the page the child copied.

    After the child's write to page 1, the parent's PMD still maps the whole
    folio: page 1 is mapped once (the child has its own copy), page 0 twice.
    Per page, page 1 is exclusive; by the head page's mapcount, nothing is.
    """
    scenario = load_scenario(CATALOG / "thp_fork.json")
    arch = get_arch(arch_name)
    per_page = run_model(scenario, arch)
    head_rule = replace(PINNED, pmd_exclusive=PmdExclusive.HEAD_PAGE)
    head_page = run_model(scenario, arch, facts=head_rule)
    differences = compare(per_page, head_page, scenario, arch)
    assert differences, "switching the rule must make thp_fork diverge"
    assert [e.exclusive for e in _parent_entries(per_page, arch)[:2]] == [False, True]
    assert not any(e.exclusive for e in _parent_entries(head_page, arch))


def _parent_entries(obs: Observations, arch: Arch) -> list[PagemapEntry]:
    """The main process's pagemap entries at the third check of thp_fork."""
    parent = next(r for r in obs.checks[2].regions if r.proc == "main")
    assert parent.pagemap.data is not None
    return parse_pagemap_entries(arch, parent.pagemap.data)
