"""The scenario loader, the layout and the tags."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sim.arch as sim_arch
from harness.scenario import (
    LAYOUT_SPAN,
    STEP_TYPES,
    Check,
    Fork,
    Mmap,
    NrPages,
    PageRange,
    Read,
    ScenarioError,
    ScenarioNotApplicable,
    Target,
    Write,
    describe_tag,
    file_tag,
    layout_alignment,
    layout_base,
    layout_span,
    load_scenario,
    parse_scenario,
    plan_layout,
    step_keys,
    write_tag,
)
from sim.arch import ARCH_NAMES, get_arch

CATALOG = Path(__file__).resolve().parents[2] / "tests" / "scenarios"
ARCHES = [get_arch(name) for name in ARCH_NAMES]

MMAP_A = {"op": "mmap", "region": "a", "pages": 4, "kind": "anon", "share": "private",
          "prot": "rw"}


MMAP_B = {**MMAP_A, "region": "b"}


def scenario(*steps: object) -> dict[str, Any]:
    return {"name": "t", "steps": list(steps)}


def test_catalog_loads() -> None:
    paths = sorted(CATALOG.glob("*.json"))
    assert len(paths) >= 14
    for path in paths:
        loaded = load_scenario(path)
        assert loaded.name == path.stem, f"{path}: name differs from the file name"
        assert loaded.checks, f"{path}: a scenario without a check observes nothing"
        for arch in ARCHES:  # and its page ranges fit on every architecture it applies to
            on_arch = load_scenario(path, arch)
            assert on_arch == loaded
            applies = loaded.unsupported_reason(arch) is None
            assert on_arch.checked_on == ({arch.name} if applies else set())


#: An architecture with a 512 MiB THP (arm64 with 64K pages has one: PMD_SHIFT 29)
#: and 4 GiB of VA: its layout window is [1 GiB, 4 GiB), cut by the task size.
BIG_THP = dataclasses.replace(
    get_arch("x86_64"), name="big-thp", page_shift=16, levels=(6, 13, 13),
    level_names=("pgd", "pmd", "pte"), thp_level="pmd", task_size=1 << 32,
)


def test_range_checks_run_for_the_planned_arch_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``5*thp`` region is 2.5 GiB on BIG_THP: the next region is beyond the
    layout window there (its VA ends at 4 GiB), fine elsewhere (arm64-64k's window
    is 256 GiB).  Registering such an architecture must not make the file fail to
    load for the others: only the arch being planned is checked."""
    assert BIG_THP.thp_pages * BIG_THP.page_size == 512 << 20
    real_get_arch, known = sim_arch.get_arch, ARCH_NAMES
    # Registered wherever the registry is looked at (the loader must not look).
    for module in [sim_arch, *(m for n, m in sys.modules.items() if n.startswith("harness."))]:
        if getattr(module, "ARCH_NAMES", None) is ARCH_NAMES:
            monkeypatch.setattr(module, "ARCH_NAMES", (*ARCH_NAMES, BIG_THP.name))
        if getattr(module, "get_arch", None) is real_get_arch:
            monkeypatch.setattr(module, "get_arch", lambda name: (
                BIG_THP if name == BIG_THP.name else real_get_arch(name)))
    path = tmp_path / "two_thp.json"
    path.write_text(json.dumps(scenario(
        {**MMAP_A, "pages": "5*thp"}, {**MMAP_A, "region": "b", "pages": 1},
        {"op": "write", "region": "a", "pages": [0, "thp+1"]}, {"op": "check"},
    )))
    for name in known:
        arch = real_get_arch(name)
        loaded = load_scenario(path, arch)
        if arch.thp_pages:
            assert plan_layout(loaded, arch)["a"].pages == 5 * arch.thp_pages
    loaded = load_scenario(path)
    assert not loaded.checked_on
    with pytest.raises(ScenarioError, match=r"step 1 \(mmap\): region 'b' ends at .* on big-thp"):
        load_scenario(path, BIG_THP)
    with pytest.raises(ScenarioError, match="beyond the layout limit"):
        plan_layout(loaded, BIG_THP)
    # A page range is checked on the planned arch too: thp+1 is inside 2*thp.
    assert load_scenario(path, get_arch("ppc64")).checked_on == {"ppc64"}


def test_every_op_has_a_handler_everywhere() -> None:
    """One declaration per op, one handler per op in each layer (none silently missing)."""
    from harness.guest_executor import GUEST
    from harness.model_executor import MODEL
    from harness.scenario.flow import FLOW
    from harness.scenario.layout import RANGES

    for table in (MODEL, GUEST, FLOW, RANGES):
        assert table.missing(STEP_TYPES.values()) == [], table.name
    assert set(STEP_TYPES) == {t.op for t in STEP_TYPES.values()}
    for op, step_type in STEP_TYPES.items():
        # check names its process optionally; swapon and swapoff are the machine's.
        machine_wide = op in ("check", "swapon", "swapoff")
        assert step_keys(step_type) >= (set() if machine_wide else {"proc"}), op


def test_steps_parse_into_dataclasses() -> None:
    s = parse_scenario(scenario(
        MMAP_A,
        {"op": "write", "region": "a", "pages": [0, 2]},
        {"op": "fork", "child": "c", "uid": 1000},
        {"op": "read", "proc": "c", "region": "a", "pages": [1, 3]},
        {"op": "check", "as_uid": 1000},
        {"op": "check", "proc": "c"},
    ))
    assert s.steps[0] == Mmap(0, "main", "a", NrPages(4), "anon", "private", "rw")
    assert s.steps[1] == Write(1, "main", "a", PageRange(NrPages(0), NrPages(2)))
    assert s.steps[2] == Fork(2, "main", "c", 1000)
    assert isinstance(s.steps[3], Read) and not s.steps[3].write
    assert s.steps[4] == Check(4, None, 1000) and s.steps[4].reader_uid == 1000
    assert s.procs == ("main", "c")
    assert s.targets[4] == (Target("main", "a"), Target("c", "a"))
    assert s.targets[5] == (Target("c", "a"),)
    with pytest.raises(AttributeError):
        s.steps[0].region = "b"  # type: ignore[misc]


def test_unprivileged_processes_fork_keeping_their_uid() -> None:
    """A uid-1000 tree: children inherit the uid or name it again; root may pick any."""
    s = parse_scenario(scenario(
        MMAP_A,
        {"op": "fork", "child": "u", "uid": 1000},
        {"op": "fork", "proc": "u", "child": "g"},
        {"op": "fork", "proc": "g", "child": "h", "uid": 1000},
        {"op": "fork", "child": "v", "uid": 2000},
        {"op": "fork", "proc": "v", "child": "w", "uid": 2000},
        {"op": "check", "proc": "h", "as_uid": 1000},
    ))
    assert s.procs == ("main", "u", "g", "h", "v", "w")
    assert s.targets[6] == (Target("h", "a"),)


def test_targets_follow_fork_and_exit() -> None:
    s = parse_scenario(scenario(
        MMAP_A,
        {"op": "fork", "child": "c"},
        {"op": "mmap", "proc": "c", "region": "b", "pages": 1, "kind": "file",
         "share": "shared", "prot": "r"},
        {"op": "check"},
        {"op": "munmap", "region": "a", "pages": [0, 4]},
        {"op": "exit", "proc": "c"},
        {"op": "check"},
    ))
    assert s.targets[3] == (Target("main", "a"), Target("c", "a"), Target("c", "b"))
    # Unmapped regions stay observed (their range reads as holes); exited processes do not.
    assert s.targets[6] == (Target("main", "a"),)


BAD: list[tuple[str, object, str]] = [
    ("top level list", [], "the top level is not an object"),
    ("no steps", {"name": "t", "steps": []}, "'steps' is not a non-empty list"),
    ("bad name", {"name": "a b", "steps": [MMAP_A]}, "name 'a b' is not a scenario name"),
    ("unknown top key", {"name": "t", "steps": [MMAP_A], "stpes": 1}, "unknown top-level key"),
    ("step not object", scenario(MMAP_A, 3), "step 1: not an object"),
    ("unknown op", scenario(MMAP_A, {"op": "frobnicate"}), "step 1: unknown op 'frobnicate'"),
    ("missing op", scenario({"region": "a"}), "step 0: unknown op None"),
    ("unknown key", scenario(MMAP_A, {"op": "write", "region": "a", "pages": [0, 1],
                                      "pagez": 1}), "step 1 (write): unknown key 'pagez'"),
    ("missing key", scenario({"op": "mmap", "region": "a", "pages": 1, "kind": "anon",
                              "share": "private"}), "step 0 (mmap): missing 'prot'"),
    ("bad kind", scenario({**MMAP_A, "kind": "heap"}), "step 0 (mmap): kind 'heap' is not one"),
    ("bad share", scenario({**MMAP_A, "share": 1}), "step 0 (mmap): share 1 is not one"),
    ("bad prot", scenario({**MMAP_A, "prot": "rwx"}),
     "step 0 (mmap): prot 'rwx' is not one of 'none', 'r', 'rw'"),
    ("bool pages", scenario({**MMAP_A, "pages": True}), "step 0 (mmap): pages: True is not"),
    ("zero pages", scenario({**MMAP_A, "pages": 0}), "step 0 (mmap): pages 0 = 0; a region has"),
    ("bad thp expr", scenario({**MMAP_A, "pages": "thp*2"}), "step 0 (mmap): pages: 'thp*2'"),
    ("bad region name", scenario({**MMAP_A, "region": "1a"}), "step 0 (mmap): region '1a' is not"),
    ("region twice", scenario(MMAP_A, MMAP_A), "step 1 (mmap): region 'a' is already defined"),
    ("undefined region", scenario({"op": "read", "region": "a", "pages": [0, 1]}),
     "step 0 (read): region 'a' is not defined"),
    ("range not list", scenario(MMAP_A, {"op": "read", "region": "a", "pages": 2}),
     "step 1 (read): pages 2 is not a range"),
    ("range beyond", scenario(MMAP_A, {"op": "write", "region": "a", "pages": [2, 5]}),
     "step 1 (write): pages [2, 5) is not a non-empty range inside region 'a' of 4 pages"),
    ("range empty", scenario(MMAP_A, {"op": "write", "region": "a", "pages": [2, 2]}),
     "step 1 (write): pages [2, 2) is not a non-empty range"),
    ("range negative", scenario(MMAP_A, {"op": "read", "region": "a", "pages": [-1, 2]}),
     "step 1 (read): pages [-1, 2)"),
    ("thp beyond", scenario({**MMAP_A, "pages": "thp"},
                            {"op": "write", "region": "a", "pages": [0, "thp+1"]}),
     "step 1 (write): pages [0, thp+1) = [0, 513) is not a non-empty range inside region 'a' "
     "of 512 pages on x86_64"),
    ("touch after munmap", scenario(MMAP_A, {"op": "munmap", "region": "a", "pages": [1, 3]},
                                    {"op": "write", "region": "a", "pages": [0, 4]}),
     "step 2 (write): pages [0, 4): page 1 of region 'a' is not mapped in 'main' "
     "(unmapped at step 1)"),
    ("munmap twice", scenario(MMAP_A, {"op": "munmap", "region": "a", "pages": [1, 3]},
                              {"op": "munmap", "region": "a", "pages": [2, 3]}),
     "step 2 (munmap): pages [2, 3): page 2 of region 'a' is not mapped"),
    ("child after parent munmap", scenario(
        MMAP_A, {"op": "munmap", "region": "a", "pages": [0, 1]}, {"op": "fork", "child": "c"},
        {"op": "read", "proc": "c", "region": "a", "pages": [0, 1]}),
     "step 3 (read): pages [0, 1): page 0 of region 'a' is not mapped in 'c' (unmapped at step 1)"),
    ("undefined proc", scenario(MMAP_A, {"op": "read", "proc": "c", "region": "a",
                                         "pages": [0, 1]}),
     "step 1 (read): process 'c' is not defined"),
    ("use after exit", scenario(MMAP_A, {"op": "fork", "child": "c"}, {"op": "exit", "proc": "c"},
                                {"op": "read", "proc": "c", "region": "a", "pages": [0, 1]}),
     "step 3 (read): process 'c' exited at step 2"),
    ("exit twice", scenario(MMAP_A, {"op": "exit"}, {"op": "exit"}),
     "step 2 (exit): process 'main' exited at step 1"),
    ("check exited proc", scenario(MMAP_A, {"op": "exit"}, {"op": "check", "proc": "main"}),
     "step 2 (check): process 'main' exited at step 1"),
    ("fork name reused", scenario(MMAP_A, {"op": "fork", "child": "c"}, {"op": "exit",
                                  "proc": "c"}, {"op": "fork", "child": "c"}),
     "step 3 (fork): process name 'c' is already used"),
    ("fork main", scenario(MMAP_A, {"op": "fork", "child": "main"}),
     "step 1 (fork): process name 'main' is already used"),
    ("region of another process", scenario(
        {"op": "fork", "child": "c"}, MMAP_A,
        {"op": "read", "proc": "c", "region": "a", "pages": [0, 1]}),
     "step 2 (read): region 'a' belongs to 'main', not to 'c'"),
    ("bad uid", scenario(MMAP_A, {"op": "check", "as_uid": -1}),
     "step 1 (check): as_uid -1 is not a uid"),
    ("bool uid", scenario(MMAP_A, {"op": "fork", "child": "c", "uid": False}),
     "step 1 (fork): uid False is not a uid"),
    ("uid (uid_t)-1", scenario(MMAP_A, {"op": "fork", "child": "c", "uid": 4294967295}),
     "step 1 (fork): uid 4294967295 is not a uid"),
    ("as_uid (uid_t)-1", scenario(MMAP_A, {"op": "check", "as_uid": 4294967295}),
     "step 1 (check): as_uid 4294967295 is not a uid"),
    ("unprivileged uid change", scenario(
        MMAP_A, {"op": "fork", "child": "u", "uid": 1000},
        {"op": "fork", "proc": "u", "child": "g"},
        {"op": "fork", "proc": "g", "child": "r", "uid": 0}),
     "step 3 (fork): process 'g' has uid 1000: its child cannot become uid 0 "
     "(only uid 0 may change uid)"),
    ("clear_refs 6", scenario(MMAP_A, {"op": "clear_refs", "value": 6}),
     "step 1 (clear_refs): value 6 is not one of 1, 2, 3, 4, 5"),
    ("clear_refs true", scenario(MMAP_A, {"op": "clear_refs", "value": True}),
     "step 1 (clear_refs): value True"),
    ("bad advice", scenario(MMAP_A, {"op": "madvise", "region": "a", "pages": [0, 1],
                                     "advice": "frees"}),
     "step 1 (madvise): advice 'frees' is not one of 'dontneed', 'hugepage', 'nohugepage', "),
    ("bad advice number", scenario(MMAP_A, {"op": "madvise", "region": "a", "pages": [0, 1],
                                            "advice": 1 << 31}),
     "step 1 (madvise): advice 2147483648 is not one of"),
    ("holes false", scenario(MMAP_A, {"op": "madvise", "region": "a", "pages": [0, 1],
                                      "advice": "free", "holes": False}),
     "step 1 (madvise): holes False is not true (leave it out for false)"),
    ("bad mprotect", scenario(MMAP_A, {"op": "mprotect", "region": "a", "pages": [0, 1]}),
     "step 1 (mprotect): missing 'prot'"),
    ("too big", scenario({**MMAP_A, "pages": 1 << 20}),
     "step 0 (mmap): region 'a' ends at"),
    ("fixed without at", scenario({**MMAP_A, "fixed": True}),
     "step 0 (mmap): 'fixed' needs 'at'"),
    ("at undefined", scenario({**MMAP_A, "at": {"region": "z", "page": 0}}),
     "step 0 (mmap): at.region 'z' is not defined (mmap) before this step"),
    ("at not object", scenario(MMAP_A, {**MMAP_B, "at": ["a", 1]}),
     "step 1 (mmap): at ['a', 1] is not an object"),
    ("at bad page", scenario(MMAP_A, {**MMAP_B, "at": {"region": "a", "page": "x"}}),
     "step 1 (mmap): at.page: 'x' is not a page number"),
    ("at negative", scenario(MMAP_A, {**MMAP_B, "at": {"region": "a", "page": -1}}),
     "step 1 (mmap): at.page -1 is negative"),
    ("populate not bool", scenario({**MMAP_A, "populate": 1}),
     "step 0 (mmap): populate 1 is not true or false"),
    ("after eexist", scenario(MMAP_A, {**MMAP_B, "at": {"region": "a", "page": 2}},
                              {"op": "read", "region": "b", "pages": [0, 1]}),
     "step 2 (read): pages [0, 1): page 0 of region 'b' is not mapped in 'main' "
     "(unmapped at step 1)"),
    ("covered by map_fixed", scenario(
        MMAP_A, {**MMAP_B, "at": {"region": "a", "page": 2}, "fixed": True},
        {"op": "read", "region": "a", "pages": [0, 4]}),
     "step 2 (read): pages [0, 4): page 2 of region 'a' is not mapped in 'main' "
     "(unmapped at step 1)"),
]


@pytest.mark.parametrize("data,message", [(d, m) for _, d, m in BAD],
                         ids=[name for name, _, _ in BAD])
def test_bad_scenarios_name_the_step(data: object, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, get_arch("x86_64"))
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: "), text
    assert message in text, text


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing\.json: cannot read: No such file"):
        load_scenario(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "t",\n "steps": [}')
    with pytest.raises(ScenarioError, match=r"bad\.json: not valid JSON: .* at line 2 column 12"):
        load_scenario(bad)
    twice = tmp_path / "twice.json"
    twice.write_text('{"steps": [{"op": "write", "pages": [0, 1], "pages": [0, 2]}]}')
    with pytest.raises(ScenarioError, match=r"twice\.json: .*key 'pages' appears twice"):
        load_scenario(twice)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe{")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(binary)


def test_page_counts() -> None:
    x86, ppc64, i386 = get_arch("x86_64"), get_arch("ppc64"), get_arch("i386")
    assert NrPages.parse(3) == NrPages(3)
    assert NrPages.parse("thp") == NrPages(0, 1)
    assert NrPages.parse("2*thp-1") == NrPages(-1, 2)
    assert NrPages.parse(" thp + 4 ") == NrPages(4, 1)
    assert str(NrPages(-1, 2)) == "2*thp-1" and str(NrPages(4, 1)) == "thp+4"
    assert NrPages(1, 1).resolve(x86) == 513 and NrPages(1, 1).resolve(ppc64) == 33
    with pytest.raises(ScenarioNotApplicable, match="i386 has no THP"):
        NrPages(0, 1).resolve(i386)
    for bad in ("thp*2", "2thp", "", "x", 1.5, None, [1]):
        with pytest.raises(ValueError):
            NrPages.parse(bad)


def test_thp_scenario_is_skipped_without_thp() -> None:
    thp = load_scenario(CATALOG / "thp.json")
    assert thp.unsupported_reason(get_arch("x86_64")) is None
    reason = thp.unsupported_reason(get_arch("i386"))
    assert reason is not None and "i386 has no THP" in reason
    with pytest.raises(ScenarioNotApplicable):
        plan_layout(thp, get_arch("i386"))
    placement = plan_layout(thp, get_arch("ppc64"))["h"]
    assert placement.pages == 32 and placement.vaddr % (32 << 16) == 0


@pytest.mark.parametrize("arch", ARCHES, ids=ARCH_NAMES)
def test_layout(arch: Any) -> None:
    align = layout_alignment(arch)
    base = layout_base(arch)
    span = layout_span(arch)
    assert base % align == 0 and base + span <= arch.task_size
    assert span >= LAYOUT_SPAN and span >= 512 * arch.thp_pages * arch.page_size
    if arch.thp_pages:
        assert align == arch.thp_pages * arch.page_size
    for path in sorted(CATALOG.glob("*.json")):
        s = load_scenario(path)
        if s.unsupported_reason(arch):
            continue
        layout = plan_layout(s, arch)
        assert plan_layout(s, arch) == layout or dict(plan_layout(s, arch)) == dict(layout)
        for m in s.regions:  # a region placed "at" another lies where it says
            if m.at is not None:
                assert layout[m.region].vaddr == layout[m.at.region].page_vaddr(
                    m.at.page.resolve(arch))
        # Anchors (regions without "at") keep the rules of separate ranges.
        placements = sorted((layout[m.region] for m in s.regions if m.at is None),
                            key=lambda p: p.vaddr)
        assert [p.region for p in placements] == [m.region for m in s.regions if m.at is None]
        assert placements[0].vaddr == base
        for p in placements:
            assert p.vaddr % align == 0
            assert layout.region_at(p.vaddr) == (p, 0)
            assert layout.region_at(p.end - 1) == (p, p.pages - 1)
        ends = {p.region: max(q.end for q in layout.values()
                              if q.vaddr >= p.vaddr and q.vaddr < p.end + align)
                for p in placements}
        for before, after in itertools.pairwise(placements):
            assert after.vaddr >= ends[before.region] + align, "a whole table between anchors"
        assert layout.region_at(ends[placements[0].region]) is None


@pytest.mark.parametrize("arch", [a for a in ARCHES if a.thp_pages], ids=lambda a: a.name)
def test_layout_at(arch: Any) -> None:
    """A region with ``at`` lies in its target's anchor range, which grows to hold it;
    the next anchor starts a gap after that whole extent; a freed range takes a new region."""
    data = scenario(
        MMAP_A,
        {**MMAP_B, "at": {"region": "a", "page": 4}},
        {**MMAP_A, "region": "c", "pages": 2, "at": {"region": "b", "page": 6}},
        {**MMAP_A, "region": "d"},
        {"op": "munmap", "region": "d", "pages": [0, 4]},
        {**MMAP_A, "region": "e", "pages": 2, "at": {"region": "d", "page": 1}},
        {"op": "write", "region": "e", "pages": [0, 2]},
        {**MMAP_A, "region": "f", "pages": 1, "at": {"region": "b", "page": 0}, "fixed": True},
        {"op": "write", "region": "b", "pages": [1, 4]},
    )
    layout = plan_layout(parse_scenario(data, "t.json", arch), arch)
    page, align = arch.page_size, layout_alignment(arch)
    a, b, c, d, e, f = (layout[r] for r in "abcdef")
    assert b.vaddr == a.end and c.vaddr == b.vaddr + 6 * page and f.vaddr == b.vaddr
    assert d.vaddr % align == 0 and d.vaddr >= c.end + align
    assert d.vaddr < c.end + 2 * align
    assert e.vaddr == d.vaddr + page


def test_span_and_tags() -> None:
    s = parse_scenario(scenario(
        MMAP_A,
        {**MMAP_A, "region": "b", "kind": "file"},
        {"op": "write", "region": "b", "pages": [1, 3]},
    ))
    layout = plan_layout(s, get_arch("ppc64"))
    step = s.steps[2]
    assert isinstance(step, Write)
    span = layout.span(step)
    assert (span.first, span.end, span.pages) == (1, 3, 2)
    assert span.vaddr == layout["b"].vaddr + (1 << 16)
    assert layout.write_tags(step) == [write_tag(2, 1, 1), write_tag(2, 1, 2)]
    # An agent is given the first tag and stores tag + k in the k-th page.
    base = layout.write_tag_base(step)
    assert [base + k for k in range(span.pages)] == layout.write_tags(step)
    assert [layout.file_tag_base("b") + i for i in range(4)] == layout.file_tags("b")
    assert layout.file_tags("b") == [file_tag(1, p) for p in range(4)]
    assert describe_tag(write_tag(2, 1, 3), s) == f"{write_tag(2, 1, 3):#x} (write of step 2, " \
        "region 'b' page 3)"
    assert "file contents, region 'a' page 0" in describe_tag(file_tag(0, 0), s)
    assert describe_tag(0) == "0x0 (zero: never written)"
    assert "not a tag" in describe_tag(0x1234)


@given(
    st.integers(0, (1 << 16) - 1), st.integers(0, 255), st.integers(0, (1 << 24) - 1),
    st.integers(0, (1 << 16) - 1), st.integers(0, 255), st.integers(0, (1 << 24) - 1),
)
def test_tags_are_unique(s1: int, r1: int, p1: int, s2: int, r2: int, p2: int) -> None:
    if (s1, r1, p1) != (s2, r2, p2):
        assert write_tag(s1, r1, p1) != write_tag(s2, r2, p2)
    if (r1, p1) != (r2, p2):
        assert file_tag(r1, p1) != file_tag(r2, p2)
    assert write_tag(s1, r1, p1) not in (0, file_tag(r2, p2))
    assert write_tag(s1, r1, p1) < 1 << 64


def test_tag_limits() -> None:
    with pytest.raises(ValueError):
        write_tag(1 << 16, 0, 0)
    with pytest.raises(ValueError):
        file_tag(0, 1 << 24)


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_a_scenario_path_that_is_no_regular_file_is_one_line(tmp_path: Path, kind: str) -> None:
    """/dev/zero would be read until memory runs out, a FIFO without writer would hang."""
    path = {"device": Path("/dev/zero"), "fifo": tmp_path / "s.json", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read: ") and "\n" not in message


def test_swap_key_and_ops() -> None:
    base = {"name": "s", "steps": [{"op": "swapoff"}, {"op": "swapon"}, {"op": "check"}]}
    scenario = parse_scenario({**base, "swap": True}, "f.json")
    assert scenario.swap and [s.op for s in scenario.steps] == ["swapoff", "swapon", "check"]
    assert not parse_scenario({"name": "s", "steps": [{"op": "check"}]}, "f.json").swap
    with pytest.raises(ScenarioError, match=r'^f\.json: step 0 \(swapoff\): needs "swap": true'):
        parse_scenario(base, "f.json")
    with pytest.raises(ScenarioError, match=r"^f\.json: swap is 'yes', not true or false$"):
        parse_scenario({**base, "swap": "yes"}, "f.json")
    with pytest.raises(ScenarioError, match=r"unknown key 'proc'"):
        parse_scenario({**base, "swap": True,
                        "steps": [{"op": "swapon", "proc": "main"}]}, "f.json")
