"""The loader and the layout for ``mremap`` steps (harness/scenario: schema, flow, layout)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.scenario import Mremap, ScenarioError, Target, parse_scenario, plan_layout
from sim.arch import get_arch

X86 = get_arch("x86_64")
PAGE = X86.page_size
MMAP = {"op": "mmap", "region": "a", "pages": 4, "kind": "anon", "share": "private",
        "prot": "rw"}


def load(*steps: dict[str, Any]) -> Any:
    return parse_scenario({"name": "t", "steps": list(steps)}, "t.json", X86)


def move(**keys: Any) -> dict[str, Any]:
    return {"op": "mremap", "region": "a", "pages": [0, 4], "new_pages": 4,
            "to": {"region": "a", "page": 8}, "new_region": "b", **keys}


def test_a_move_defines_its_region_in_the_target_range() -> None:
    s = load(MMAP, move(), {"op": "write", "region": "b", "pages": [0, 4]}, {"op": "check"})
    assert isinstance(s.steps[1], Mremap) and s.steps[1].moves
    assert s.region_names == ("a", "b") and s.region_numbers == {"a": 0, "b": 1}
    assert s.targets[3] == (Target("main", "a"), Target("main", "b"))
    layout = plan_layout(s, X86)
    a, b = layout["a"], layout["b"]
    assert b.vaddr == a.vaddr + 8 * PAGE and b.pages == 4 and b.mmap is a.mmap
    assert a.reserved_pages == 12 and a.observed_pages == 4


def test_next_region_is_placed_after_the_room() -> None:
    s = load(MMAP, move(to={"region": "a", "page": 600}), {**MMAP, "region": "c"})
    layout = plan_layout(s, X86)
    assert layout["c"].vaddr >= layout["a"].page_vaddr(604) + (2 << 20)


def test_moved_pages_leave_the_source() -> None:
    with pytest.raises(ScenarioError, match=r"step 2 \(read\): pages \[0, 1\): page 0 of region "
                       r"'a' is not mapped in 'main' \(unmapped at step 1\)"):
        load(MMAP, move(), {"op": "read", "region": "a", "pages": [0, 1]})
    # With dontunmap the old range stays mapped.
    load(MMAP, move(dontunmap=True), {"op": "read", "region": "a", "pages": [0, 4]})


def test_grow_in_place_maps_the_new_pages_unless_blocked() -> None:
    grow = {"op": "mremap", "region": "a", "pages": [0, 4], "new_pages": 6}
    s = load(MMAP, grow, {"op": "write", "region": "a", "pages": [4, 6]})
    assert plan_layout(s, X86)["a"].observed_pages == 6
    # Page 4 is taken by b (c moved there): the kernel's ENOMEM, nothing grows.
    with pytest.raises(ScenarioError, match=r"step 4 \(write\): pages \[4, 6\) is not a non-empty "
                       r"range inside region 'a' of 4 pages"):
        load(MMAP, {**MMAP, "region": "c"},
             move(region="c", pages=[0, 1], new_pages=1, to={"region": "a", "page": 4}), grow,
             {"op": "write", "region": "a", "pages": [4, 6]})
    # Shrinking unmaps the tail.
    with pytest.raises(ScenarioError, match="unmapped at step 1"):
        load(MMAP, {**grow, "new_pages": 2}, {"op": "read", "region": "a", "pages": [2, 3]})


def test_a_move_unmaps_what_the_target_covers() -> None:
    with pytest.raises(ScenarioError, match=r"step 3 \(read\).*page 1 of region 'c'.*step 2"):
        load(MMAP, {**MMAP, "region": "c"}, move(to={"region": "c", "page": 1}),
             {"op": "read", "region": "c", "pages": [0, 2]})


@pytest.mark.parametrize(("keys", "message"), [
    ({"new_region": None}, "'to' and 'new_region' go together"),
    ({"to": None}, "'to' and 'new_region' go together"),
    ({"dontunmap": 1}, "dontunmap 1 is not true or false"),
    ({"to": {"region": "a"}}, "is not an object"),
    ({"to": {"region": "a", "page": -1}}, "to.page -1 is negative"),
    ({"to": {"region": "zz", "page": 8}}, "to: region 'zz' is not defined before this step"),
    ({"to": {"region": "a", "page": 2}}, "overlaps the moved pages"),
    ({"dontunmap": True, "new_pages": 5}, r"dontunmap needs new_pages \(5\)"),
    ({"new_region": "a"}, "region 'a' is already defined"),
])
def test_bad_moves_are_one_line_errors(keys: dict[str, Any], message: str) -> None:
    step = {k: v for k, v in move(**keys).items() if v is not None}
    with pytest.raises(ScenarioError, match=r"t.json: step 1 \(mremap\): .*" + message) as info:
        load(MMAP, step)
    assert "\n" not in str(info.value)


def test_dontunmap_needs_to() -> None:
    with pytest.raises(ScenarioError, match="dontunmap needs 'to'"):
        load(MMAP, {"op": "mremap", "region": "a", "pages": [0, 4], "new_pages": 4,
                    "dontunmap": True})
