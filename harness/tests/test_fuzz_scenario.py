"""Fuzzing the scenario loader: random JSON, mutated catalog files, odd files.

The contract under test: :func:`load_scenario` returns a Scenario or raises
exactly ScenarioError, whose message is one line starting with the file's
path and, for a problem in a step, naming the step's index and op; never
another exception, never a hang.  ``python -m harness run`` refuses such a
file before anything boots: exit status 2, one line, no QEMU started.
``benchmarks/fuzz_campaign.py`` runs the same checks for longer.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.scenario import (
    MAX_OBSERVATIONS,
    MAX_PROCS,
    STEP_TYPES,
    Scenario,
    ScenarioError,
    load_scenario,
    step_keys,
)
from sim.arch import ARCH_NAMES, Arch, get_arch

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "tests" / "scenarios"
CATALOG_DATA: tuple[tuple[str, Any], ...] = tuple(
    (path.name, json.loads(path.read_text())) for path in sorted(CATALOG.glob("*.json"))
)
OPS = tuple(STEP_TYPES)
STEP_KEYS = ("op", *sorted(set().union(*map(step_keys, STEP_TYPES.values()))), "note")
#: Range checks run for the architecture a scenario is planned for: this one
#: by default; mutated catalog files are loaded for any of ARCHES.
ARCH = get_arch("x86_64")
ARCHES = tuple(get_arch(name) for name in ARCH_NAMES)
_STEP_PLACE = re.compile(r"step (\d+) \((.*?)\): ")


# --- the contract ------------------------------------------------------------


def check_load(path: Path, data: object = None, arch: Arch = ARCH) -> Scenario | None:
    """Load ``path``; AssertionError unless the contract holds.

    ``data`` is the decoded JSON written there (None if unknown), used to
    check that a step named in the message is that step.
    """
    try:
        return load_scenario(path, arch)
    except ScenarioError as e:
        message = str(e)
    assert "\n" not in message and message.strip() == message, repr(message)
    assert message.startswith(f"{path}: "), message
    place = _STEP_PLACE.search(message, len(str(path)))
    if place is not None and isinstance(data, dict) and isinstance(data.get("steps"), list):
        index = int(place.group(1))
        steps = data["steps"]
        assert 0 <= index < len(steps), message
        op = steps[index].get("op") if isinstance(steps[index], dict) else None
        if isinstance(op, str) and "\n" not in op:
            assert place.group(2) == op, message
    return None


def write_json(directory: Path, data: object) -> Path:
    path = directory / "scenario.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8", errors="surrogatepass")
    return path


def check_data(directory: Path, data: object, arch: Arch = ARCH) -> Scenario | None:
    return check_load(write_json(directory, data), data, arch)


# --- JSON values -------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["thp", "2*thp", "thp+1", "thp-1", "a", "main", "anon", "rw", *OPS,
                      "free", "collapse", "wipeonfork", 102])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
#: A step-shaped object: an op, then known keys with any values.
steps_strategy = st.builds(
    lambda op, rest: {"op": op, **rest},
    st.sampled_from(OPS) | json_scalars,
    st.dictionaries(st.sampled_from(STEP_KEYS[1:]), json_values | json_scalars, max_size=5),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scenario-fuzz")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values)
def test_random_json(scratch: Path, data: object) -> None:
    check_data(scratch, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["t", "x.y-1"]) | json_scalars,
    steps=st.lists(steps_strategy, max_size=8),
    extra=st.dictionaries(st.sampled_from(["description", "notes", "name2"]), json_scalars,
                          max_size=1),
)
def test_random_scenario_shapes(
    scratch: Path, name: object, steps: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    check_data(scratch, {"name": name, "steps": steps, **extra})


# --- mutated catalog files ---------------------------------------------------

#: Values that break something: wrong types, huge and negative numbers,
#: unicode, deep nesting.
BAD_VALUES: tuple[object, ...] = (
    None, True, 0, -1, 1 << 64, 10**4000, -(10**30), 1.5, 1e308, "", "é", "\u202e", "a" * 300,
    "9999999999*thp", "thp-99999999", "٣*thp", [], [5, 1], [-3, -1], [0, 1 << 40], {}, {"op": "x"},
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
)


def _steps(data: dict[str, Any]) -> list[Any]:
    steps = data.get("steps")
    return steps if isinstance(steps, list) else []


def _pick_step(data: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    steps = [s for s in _steps(data) if isinstance(s, dict)]
    return rng.choice(steps) if steps else None


def _drop_key(data: dict[str, Any], rng: random.Random) -> None:
    target = _pick_step(data, rng) if rng.random() < 0.8 else data
    if target:
        del target[rng.choice(sorted(target))]


def _rename_key(data: dict[str, Any], rng: random.Random) -> None:
    target = _pick_step(data, rng) if rng.random() < 0.8 else data
    if target:
        key = rng.choice(sorted(target))
        target[rng.choice([key.upper(), key + "s", rng.choice(STEP_KEYS), " " + key])] = (
            target.pop(key)
        )


def _bad_value(data: dict[str, Any], rng: random.Random) -> None:
    target = _pick_step(data, rng) if rng.random() < 0.8 else data
    if target:
        target[rng.choice(sorted(target))] = copy.deepcopy(rng.choice(BAD_VALUES))


def _swap_range(data: dict[str, Any], rng: random.Random) -> None:
    step = _pick_step(data, rng)
    if step and isinstance(step.get("pages"), list) and len(step["pages"]) == 2:
        first, end = step["pages"]
        far = rng.randrange(-5, 1 << 20)
        step["pages"] = rng.choice([[end, first], [first, first], [first, far]])


def _shuffle_steps(data: dict[str, Any], rng: random.Random) -> None:
    rng.shuffle(_steps(data))


def _duplicate_step(data: dict[str, Any], rng: random.Random) -> None:
    steps = _steps(data)
    if steps:
        steps.insert(rng.randrange(len(steps) + 1), copy.deepcopy(rng.choice(steps)))


def _delete_step(data: dict[str, Any], rng: random.Random) -> None:
    steps = _steps(data)
    if steps:
        del steps[rng.randrange(len(steps))]


def _change_op(data: dict[str, Any], rng: random.Random) -> None:
    step = _pick_step(data, rng)
    if step is not None:
        step["op"] = rng.choice(OPS)


JSON_MUTATIONS: tuple[Callable[[dict[str, Any], random.Random], None], ...] = (
    _drop_key, _rename_key, _bad_value, _swap_range, _shuffle_steps, _duplicate_step,
    _delete_step, _change_op,
)


def mutate_scenario(data: Any, rng: random.Random) -> Any:
    """A deep copy of a catalog scenario with one to three mutations."""
    mutated = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        rng.choice(JSON_MUTATIONS)(mutated, rng)
    return mutated


def mutate_text(text: bytes, rng: random.Random) -> bytes:
    """Byte-level damage to a file's text: flips, cuts, invalid UTF-8, nesting."""
    buf = bytearray(text)
    choice = rng.randrange(5)
    if choice == 0 and buf:
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif choice == 1:
        del buf[rng.randrange(len(buf) + 1) :]
    elif choice == 2:
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf"])
    elif choice == 3:
        depth = rng.choice([10, 1000, 100_000])
        buf = bytearray(b"[" * depth + b"]" * depth)
    else:
        buf = bytearray(b'{"name": "t", "steps": [' + b"9" * rng.choice([10, 5000]) + b"]}")
    return bytes(buf)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalog=st.sampled_from(CATALOG_DATA), seed=st.integers(0, 1 << 32))
def test_mutated_catalog_files(scratch: Path, catalog: tuple[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    check_data(scratch, mutate_scenario(catalog[1], rng), rng.choice(ARCHES))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalog=st.sampled_from(CATALOG_DATA), seed=st.integers(0, 1 << 32))
def test_damaged_catalog_text(scratch: Path, catalog: tuple[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    path = scratch / "damaged.json"
    path.write_bytes(mutate_text((CATALOG / catalog[0]).read_bytes(), rng))
    check_load(path)


def test_odd_files(tmp_path: Path) -> None:
    cases: dict[str, bytes] = {
        "empty": b"",
        "space": b"  \n",
        "bom": b"\xef\xbb\xbf" + (CATALOG / "thp.json").read_bytes(),
        "nul": b"\x00" * 10,
        "latin1": '{"name": "caf\xe9"}'.encode("latin-1"),
        "surrogate": b'{"name": "\\ud800", "steps": [{"op": "check"}]}',
        "list": b"[]",
        "string": b'"name"',
        "nan": b'{"name": "t", "steps": [{"op": "mmap", "region": "a", "pages": NaN}]}',
        "deep": b"[" * 200_000,
        "deep-object": b'{"a":' * 200_000,
        "long-int": b"1" + b"0" * 4400,
    }
    messages = {}
    for name, text in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(text)
        assert check_load(path) is None, name
        with pytest.raises(ScenarioError) as info:
            load_scenario(path)
        messages[name] = str(info.value)
    assert "nested too deeply" in messages["deep"]
    assert "more than 4300 digits" in messages["long-int"]
    assert check_load(tmp_path / "missing.json") is None
    assert check_load(tmp_path) is None  # a directory


# --- regressions found by fuzzing -------------------------------------------

MMAP = {"op": "mmap", "region": "a", "pages": 4, "kind": "anon", "share": "private",
        "prot": "rw"}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        # An op that is a list or an object was looked up in a dict: TypeError.
        ([{"op": []}], "step 0: unknown op []"),
        ([{"op": {"a": 1}}], "step 0: unknown op {'a': 1}"),
        # A float equal to a valid value was accepted as the value.
        ([MMAP, {"op": "clear_refs", "value": 1.0}], "step 1 (clear_refs): value 1.0 is not"),
        # K*thp with K near 4300 digits resolved to a number too long to print.
        ([{**MMAP, "pages": "9" * 4299 + "*thp"}], "step 0 (mmap): pages: '999"),
        ([{**MMAP, "pages": 1 << 40}], "out of range"),
    ],
)
def test_fuzz_regressions(steps: list[object], message: str, tmp_path: Path) -> None:
    path = write_json(tmp_path, {"name": "t", "steps": steps})
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, ARCH)
    assert message in str(info.value)
    assert check_load(path, {"steps": steps}) is None


_PAGE_VALUES: st.SearchStrategy[Any] = st.one_of(st.integers(-3, 1 << 33), st.sampled_from(
    ["thp", "thp+1", "2*thp-1", "thp-600", "x", "", None, True, 1.5, [], {}]))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    at=st.one_of(
        st.none(),
        st.fixed_dictionaries({"region": st.sampled_from(["a", "b", "zz", "1x", 3]),
                               "page": _PAGE_VALUES}),
        st.dictionaries(st.sampled_from(["region", "page", "pages"]), _PAGE_VALUES),
        _PAGE_VALUES,
    ),
    fixed=st.sampled_from([None, True, False, 1, "yes"]),
    populate=st.sampled_from([None, True, False, 0]),
    kind=st.sampled_from(["anon", "file", "memfd", "fd"]),
    then=st.sampled_from(["a", "b"]),
)
def test_mmap_placement_keys_keep_the_contract(
    at: object, fixed: object, populate: object, kind: str, then: str, tmp_path: Path
) -> None:
    """``at``, ``fixed``, ``populate`` and ``kind`` of any shape: a Scenario or one line."""
    step: dict[str, object] = {**MMAP, "region": "b", "kind": kind}
    for key, value in (("at", at), ("fixed", fixed), ("populate", populate)):
        if value is not None:
            step[key] = value
    data = {"name": "t", "steps": [MMAP, step, {"op": "write", "region": then, "pages": [0, 4]},
                                   {"op": "check"}]}
    for arch in ARCHES:
        check_load(write_json(tmp_path, data), data, arch)


def _load_seconds(path: Path) -> float:
    started = time.monotonic()
    check_load(path)
    return time.monotonic() - started


def test_large_scenarios_load_without_per_page_work(tmp_path: Path) -> None:
    """Page ranges were checked page by page with a set of every mapped page
    per process: a 16000-page region read whole 20000 times took minutes.
    The bound is a hang guard, far above the ~1 s this takes."""
    steps: list[object] = [{**MMAP, "pages": 16000}]
    steps += [{"op": "read", "region": "a", "pages": [0, 16000]}] * 20_000
    steps += [{"op": "munmap", "region": "a", "pages": [p, p + 1]} for p in range(0, 16000, 2)]
    steps += [{"op": "read", "region": "a", "pages": [p, p + 1]} for p in range(1, 16000, 2)]
    steps.append({"op": "check"})
    path = write_json(tmp_path, {"name": "big", "steps": steps})
    assert load_scenario(path, ARCH).checks
    assert _load_seconds(path) < 60
    # A region past the layout fails at its mmap, before its pages are built.
    path = write_json(tmp_path, {"name": "big", "steps": [{**MMAP, "pages": 1 << 24}]})
    assert _load_seconds(path) < 10


def test_process_and_observation_limits(tmp_path: Path) -> None:
    forks = [{"op": "fork", "child": f"c{i}"} for i in range(MAX_PROCS)]
    path = write_json(tmp_path, {"name": "t", "steps": [MMAP, *forks]})
    with pytest.raises(ScenarioError, match=f"step {MAX_PROCS} \\(fork\\): more than "
                       f"{MAX_PROCS} processes alive"):
        load_scenario(path)
    # Exited processes make room.
    steps: list[object] = [MMAP]
    for i in range(2 * MAX_PROCS):
        steps += [{"op": "fork", "child": f"c{i}"}, {"op": "exit", "proc": f"c{i}"}]
    load_scenario(write_json(tmp_path, {"name": "t", "steps": steps}))
    # Every check observes 64 (process, region) pairs here.
    steps = [MMAP, *forks[: MAX_PROCS - 1]]
    steps += [{"op": "check"}] * (MAX_OBSERVATIONS // MAX_PROCS + 1)
    with pytest.raises(ScenarioError, match="observe more than"):
        load_scenario(write_json(tmp_path, {"name": "t", "steps": steps}))


# --- through python -m harness run -------------------------------------------


def test_harness_run_refuses_before_booting(tmp_path: Path) -> None:
    """Bad files through the real CLI: status 2, one line naming the file, and
    the QEMU binary (a tripwire first on PATH) never runs."""
    tripwire = tmp_path / "bin"
    tripwire.mkdir()
    marker = tmp_path / "qemu-started"
    for name in ("qemu-system-x86_64", "qemu-system-ppc64", "qemu-img"):
        script = tripwire / name
        script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{tripwire}{os.pathsep}{os.environ['PATH']}"}
    rng = random.Random("harness-run")
    bad: list[bytes] = [
        b"",
        b"\xff\xfe",
        b"[" * 100_000,
        json.dumps({"name": "t", "steps": [{"op": []}]}).encode(),
        json.dumps(mutate_scenario(dict(CATALOG_DATA)["nested.json"], rng)).encode(),
    ]
    for i, text in enumerate(bad):
        path = tmp_path / f"bad{i}.json"
        path.write_bytes(text)
        try:
            load_scenario(path, ARCH)
        except ScenarioError:
            pass
        else:  # the random mutation happened to keep the file valid
            continue
        good = CATALOG / "anon_private.json"
        result = subprocess.run(
            [sys.executable, "-m", "harness", "run", "--arch", "x86_64", str(good), str(path)],
            cwd=REPO, env=env, capture_output=True, timeout=60, check=False,
        )
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert err.count("\n") == 1 and err.startswith("harness run: error: "), err
        assert str(path) in err and "Traceback" not in err
        assert result.stdout == b""
        assert not marker.exists(), f"QEMU started for {path}"
