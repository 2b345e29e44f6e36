"""The fuzzer's scenario generator: valid by construction, the whole language, no waste.

The rejection rate (examples the loader refuses, of all drawn) is measured
over generated scenarios on every architecture and must be zero: the
generator offers only steps valid for the state reached.  Coverage: every op
of :data:`STEP_TYPES`, every value of every enumerated key, uid forks,
``as_uid`` checks and THP-sized regions all appear.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness.fuzz.generate import (
    PENDING_KEYS,
    RAW_ADVICE,
    GeneratorGap,
    GeneratorState,
    key_drawers,
    large_folios_unadvised,
    rejection_rate,
    scenario_from_data,
    scenarios,
)
from harness.model_executor import ModelError, run_model
from harness.scenario import ADVICES, STEP_TYPES, Check, Madvise, ScenarioError, Step, step_keys
from sim.arch import ARCH_NAMES, get_arch

EXAMPLES = 300
#: Ops drawn only with scenarios(swap=True).
SWAP_OPS = {"swapon", "swapoff"}


def _draw_many(arch_name: str, examples: int = EXAMPLES, **kwargs: Any) -> list[dict[str, Any]]:
    arch = get_arch(arch_name)
    drawn: list[dict[str, Any]] = []

    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(scenarios(arch, **kwargs))
    def collect(data: dict[str, Any]) -> None:
        drawn.append(data)

    collect()
    return drawn


@pytest.mark.parametrize("arch_name", [a for a in ARCH_NAMES if get_arch(a).thp_pages])
def test_rejection_rate_is_zero(arch_name: str) -> None:
    drawn = _draw_many(arch_name)
    refused, total = rejection_rate(drawn, get_arch(arch_name))
    assert total == len(drawn) >= EXAMPLES // 2
    assert refused == 0, f"{refused} of {total} generated scenarios refused by the loader"


@pytest.mark.parametrize(("knobs", "expected"), [
    ({}, False),
    ({"thp": "always"}, True),
    ({"thp": "always", "mthp": {"2048kB": "never"}}, False),
    ({"mthp": {"16kB": "madvise", "64kB": "inherit"}}, False),
    ({"mthp": {"32kB": "always"}}, True),
    ({"thp": "always", "mthp": {"64kB": "inherit", "2048kB": "madvise"}}, True),
])
def test_large_folios_unadvised(knobs: dict[str, Any], expected: bool) -> None:
    assert large_folios_unadvised(knobs, get_arch("x86_64")) is expected
    assert large_folios_unadvised(knobs, get_arch("i386")) is False  # no THP at all


def test_no_ksm_over_unadvised_large_folios() -> None:
    """Where the settings let any anonymous fault allocate a large folio, no ksm step
    follows a mergeable advice (KSM of large folios is not modelled: the arm64 fuzz
    smoke drew mTHP 32kB always, a THP-sized mergeable region and ksm)."""
    arch = get_arch("x86_64")
    drawn = _draw_many("x86_64", EXAMPLES)
    unadvised = [d for d in drawn if large_folios_unadvised(d.get("settings", {}), arch)]
    assert unadvised, "no example's settings allow unadvised large folios"
    for data in unadvised:
        ops = [(s["op"], s.get("advice")) for s in data["steps"]]
        if ("madvise", "mergeable") in ops:
            assert "ksm" not in [op for op, _ in ops[ops.index(("madvise", "mergeable")):]], data
    assert any(s["op"] == "ksm" for d in drawn for s in d["steps"]), "ksm never drawn"


@pytest.mark.parametrize("swap", [False, True])
def test_shmem_thp_is_drawn_and_the_model_follows_it(swap: bool) -> None:
    """shmem_thp always / within_size / advise (never force) is drawn, and no example
    with it holds a step the model refuses there (model_settings()): running the drawn
    examples on the model ends in no "not modelled" error of shmem THP."""
    arch = get_arch("x86_64")
    drawn = _draw_many("x86_64", EXAMPLES // 2, swap=swap)
    with_shmem_thp = [d for d in drawn if "shmem_thp" in d.get("settings", {})]
    assert {d["settings"]["shmem_thp"] for d in with_shmem_thp} == {
        "always", "within_size", "advise"}
    for data in with_shmem_thp:
        scenario = scenario_from_data(data, arch)
        try:
            run_model(scenario, arch)
        except ModelError as e:
            assert "shmem THP" not in str(e) and "shmem folio" not in str(e), (e, data)


def test_swap_scenarios_are_generated() -> None:
    """With swap: every scenario says so, the loader takes them all, and swapon, swapoff
    and MADV_PAGEOUT (which then swaps) are drawn."""
    drawn = _draw_many("x86_64", EXAMPLES, swap=True)
    assert all(data.get("swap") is True for data in drawn)
    refused, total = rejection_rate(drawn, get_arch("x86_64"))
    assert refused == 0, f"{refused} of {total} generated swap scenarios refused by the loader"
    steps = [step for data in drawn for step in data["steps"]]
    ops = Counter(step["op"] for step in steps)
    assert SWAP_OPS <= set(ops), f"never generated: {SWAP_OPS - set(ops)}"
    assert any(s.get("advice") == "pageout" for s in steps), "no pageout"


def test_whole_language_is_generated() -> None:
    drawn = _draw_many("x86_64", 800)  # 14 ops: pagemap_scan has 12 keys to show in ~150 steps
    steps = [step for data in drawn for step in data["steps"]]
    ops = Counter(step["op"] for step in steps)
    wanted = set(STEP_TYPES) - SWAP_OPS  # only in scenarios with swap
    assert set(ops) == wanted, f"ops never generated: {wanted - set(ops)}"
    for op, step_type in STEP_TYPES.items():
        if op in SWAP_OPS:
            continue
        keys = {key for step in steps if step["op"] == op for key in step} - {"op"}
        pending = {key for o, key in PENDING_KEYS if o == op}
        # madvise's holes needs a partial munmap first: test_every_advice_is_generated.
        assert set(step_keys(step_type)) - pending - {"holes"} <= keys, (op, keys)
        assert keys <= set(step_keys(step_type)) - pending, (op, keys)
    values = {(k, str(v)) for step in steps for k, v in step.items()}
    for key, choices in [("kind", ("anon", "file", "memfd", "hugetlb")),
                         ("share", ("private", "shared")),
                         ("prot", ("none", "r", "rw")), ("advice", ("dontneed", "free")),
                         ("holes", ("True",)),
                         ("value", ("1", "2", "3", "4", "5")),
                         ("onfault", ("False", "True"))]:
        for choice in choices:
            assert (key, choice) in values, f"{key} {choice} never generated"
    assert any(k == "uid" and v not in ("0", "None") for k, v in values), "no uid fork"
    assert any(k == "as_uid" and v != "0" for k, v in values), "no unprivileged check"
    assert any(k == "pages" and "thp" in v for k, v in values), "no THP-sized range"
    forks = [s for s in steps if s["op"] == "fork" and "proc" in s]
    assert forks, "no fork by a child (no process trees)"


def test_every_advice_is_generated() -> None:
    """Every advice name and every raw number the advice drawer offers on a plain private
    anonymous region (where nothing is left out), and ``holes`` in whole scenarios.

    The drawer is drawn from directly: across whole scenarios the rare names (``collapse``
    is left out on every shmem-backed, uffd-wp and huge shmem region) came 2 to 6 times in
    1,500 examples, and hypothesis' draws moved between runs of the same seed."""
    state = GeneratorState(get_arch("x86_64"))
    state.apply({"op": "mmap", "region": "r0", "pages": 8, "kind": "anon", "share": "private",
                 "prot": "rw"})
    advice = dict(key_drawers(Madvise))["advice"]
    seen: set[Any] = set()

    @settings(max_examples=600, database=None, deadline=None, phases=[Phase.generate],
              derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        seen.add(advice(state, {"op": "madvise", "region": "r0", "pages": [0, 8]}, data.draw))

    collect()
    assert seen == {*ADVICES, *RAW_ADVICE}, f"never generated: {({*ADVICES, *RAW_ADVICE}) - seen}"
    drawn = _draw_many("x86_64", 1500)
    steps = [step for data in drawn for step in data["steps"] if step["op"] == "madvise"]
    assert any(step.get("holes") for step in steps), "no madvise over a hole"


def test_every_op_has_a_drawer() -> None:
    for step_type in STEP_TYPES.values():
        assert key_drawers(step_type) is not None


def test_an_op_with_an_unknown_key_is_a_gap() -> None:
    from pydantic.dataclasses import dataclass

    @dataclass(frozen=True)
    class Strange(Step):
        op = "strange"
        proc: str
        weight: float

    with pytest.raises(GeneratorGap, match="weight"):
        key_drawers(Strange)


def test_benchmark_unit_shape() -> None:
    """20 steps with checks exactly where asked: the throughput benchmark's unit."""
    for data in _draw_many("x86_64", 50, max_steps=20, check_positions=(6, 13, 19)):
        ops = [s["op"] for s in data["steps"]]
        assert len(ops) == 20
        assert [i for i, op in enumerate(ops) if op == Check.op] == [6, 13, 19]
        scenario_from_data(data, get_arch("x86_64"))


def test_loader_refusal_is_counted() -> None:
    arch = get_arch("x86_64")
    bad = {"name": "x", "steps": [{"op": "write", "region": "nowhere", "pages": [0, 1]}]}
    good = {"name": "y", "steps": [{"op": "check"}]}
    assert rejection_rate([bad, good], arch) == (1, 2)
    with pytest.raises(ScenarioError):
        scenario_from_data(bad, arch)
