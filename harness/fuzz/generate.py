"""Scenarios that are valid by construction: a hypothesis strategy over the whole language.

:func:`scenarios` draws a scenario one step at a time.  Before each step it
knows what the steps so far left (the same state the loader's flow and range
checks track: ``harness/scenario/flow.py``, ``layout.py``): which processes
are alive and of which uid, which regions each owns, which of their pages are
still mapped.  It offers only the ops that can be valid there and draws each
key from the values valid there, so every scenario it makes loads (the
rejection rate is measured by :func:`rejection_rate`, and asserted zero by the
tests).  Because validity comes from construction and not from a filter,
every scenario hypothesis' shrinker derives from a drawn one is valid too.

The ops, their keys and the values of enumerated keys come from the
declarations (:data:`harness.scenario.STEP_TYPES`): a key is drawn by its
*name* where the name has a meaning in the flow (``proc``, ``region``,
``pages``, ``child``, ``uid``, ``as_uid``, ``value``, ``advice``, ``holes``) and by
its *type* where the type lists its values (a ``Literal`` such as ``prot``,
``kind``).  A new range op with such keys joins the generator without a change
here; an op with a key of another meaning raises :class:`GeneratorGap` (a
unit test asserts there is none).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from harness.model_executor import ADVICE_NOT_ON_SHMEM_THP, NOT_ON_SHMEM_THP
from harness.model_executor import NOT_ON_HUGETLB as MODEL_NOT_ON_HUGETLB
from harness.scenario import (
    ADVICES,
    CLEAR_REFS_VALUES,
    MAX_PROCS,
    SCAN_CATEGORIES,
    STEP_TYPES,
    Check,
    Exit,
    Fork,
    Ksm,
    Madvise,
    Mmap,
    Mremap,
    Munmap,
    NrPages,
    PagemapScan,
    PageRange,
    RangeStep,
    RangeStepWithHoles,
    Scenario,
    ScenarioError,
    Step,
    Swapoff,
    Swapon,
    UffdRegister,
    UffdWp,
    Write,
    mthp_sizes,
    parse_scenario,
)
from harness.scenario.settings import parse_settings
from sim.arch import Arch
from sim.mm.settings import anon_order_mask

__all__ = [
    "PENDING_KEYS",
    "RAW_ADVICE",
    "GeneratorGap",
    "GeneratorState",
    "ScenarioData",
    "key_drawers",
    "large_folios_unadvised",
    "rejection_rate",
    "scenario_from_data",
    "scenarios",
    "settings_data",
]

#: A scenario as its JSON data: ``{"name": ..., "steps": [{...}, ...]}``, and
#: ``"settings"`` when :func:`settings_data` drew knobs.
ScenarioData = dict[str, Any]

#: Live processes at once (the loader allows MAX_PROCS; a handful already
#: makes every fork/exit/uid tree shape, and keeps each check small).
LIVE_PROCS = min(5, MAX_PROCS)
#: Regions per scenario: each costs a 2 MiB-aligned slot of the layout.
MAX_REGIONS = 6
#: Small region sizes in pages, then THP-sized ones (symbolic, resolved per arch).
SMALL_SIZES = (1, 2, 3, 4, 5, 8)
THP_SIZES = ("thp", "thp+1", "2*thp", "thp-1")
#: Uids a root process gives its children, and readers of checks.
UIDS = (1000, 1001, 0)
#: How often each op is offered, relative to the others (an op not named here: 1).
#: Memory ops outweigh process ops so that scenarios do things to pages
#: before their processes exit; about one step in eight is a check.
#: clear_refs is as frequent as fork: soft-dirty is only observable after
#: ``clear_refs 4`` cleared it (a planted soft-dirty error in wp_page_copy()
#: is found about 3x sooner than with weight 1).
OP_WEIGHTS = {"mmap": 2, "write": 4, "read": 3, "munmap": 1, "mprotect": 2, "madvise": 4,
              "fork": 2, "exit": 1, "clear_refs": 2, "check": 2, "mlock": 2, "munlock": 1}
#: Values drawn more often than the others of their key (the rest: 1): a
#: writable mapping lets touches reach the fault paths instead of SIGSEGV,
#: and clear_refs 4 (soft-dirty) makes the pagemap bit observable at all.
VALUE_WEIGHTS: dict[str, dict[object, int]] = {"prot": {"rw": 3}, "value": {4: 6}}
#: The order ops are offered in: hypothesis shrinks a choice towards the
#: first of its values, so an op can only be replaced by one listed before it.
#: A read comes before a write (it maps the zero page or a cache page
#: read-only, so a write after it still takes a write fault: a zero-page read
#: can stand in for a fork before a COW write), memory ops before process ops
#: (one process fewer), a check last (it changes nothing).  Ops not named
#: here come after these, before the check, in STEP_TYPES order.
SHRINK_ORDER = ("mmap", "read", "write", "clear_refs", "mprotect", "madvise", "munmap",
                "fork", "exit")
#: A boolean key is set with odds 1 : N (the rest: 3).
FLAG_ODDS = {"locked": 8}
#: Keys the generator leaves out for now, and why (each needs a model not yet
#: there): empty since the mlock model arrived for MAP_LOCKED.
PENDING_KEYS: dict[tuple[str, str], str] = {}
#: hugetlb regions per scenario, and their sizes: with at most 5 processes each
#: copying every private huge page on a write (hugetlb_wp()), at most
#: 2 * 2 * 5 = 20 of the guests' 32 huge pages are ever in use, so the pool
#: never runs short (the model does not predict that: sim/mm/hugetlb.py).
MAX_HUGETLB_REGIONS = 2
HUGETLB_SIZES = ("huge", "2*huge")
#: An anonymous mmap is a hugetlb one with odds 1 : HUGETLB_ODDS - 1.
HUGETLB_ODDS = 8
#: Range ops never drawn on a hugetlb region: those the model does not follow there
#: (harness/model_executor.py NOT_ON_HUGETLB), and the userfaultfd ones (an aligned
#: UFFDIO_REGISTER of a hugetlb VMA is not modelled: sim/mm/userfaultfd.py).
NOT_ON_HUGETLB = frozenset(
    {t.op for t in MODEL_NOT_ON_HUGETLB} | {UffdRegister.op, UffdWp.op}
)
#: madvise advice on a hugetlb region: what madvise_dontneed_free_valid_vma() decides
#: (the other advice the model does not follow there), and numbers 6.12 refuses first.
HUGETLB_ADVICE = ("dontneed", "free", 102, -1)
#: A scenario goes on after each step with odds _GO_ON : 1 (about 12 steps on average).
_GO_ON = 11
#: THP-relative bounds are written symbolically when within this many pages of a multiple.
_SYMBOLIC_SLACK = 8


class GeneratorGap(LookupError):
    """An op has a key the generator does not know how to draw (name and type given)."""


@dataclass
class GeneratorState:
    """What the steps so far left: processes, their uids, regions and mapped pages.

    ``mapped[proc][region]`` is a sorted list of mapped runs ``(first, end)``
    in pages (end exclusive); ``sizes`` the resolved size of each region.
    """

    arch: Arch
    #: The scenario has swap: swapon and swapoff may be drawn.
    swap: bool = False
    #: The settings let shmem faults allocate huge folios (``shmem_thp`` always,
    #: within_size or advise): the ops and advice the model does not follow on such
    #: regions (harness/model_executor.py NOT_ON_SHMEM_THP, ADVICE_NOT_ON_SHMEM_THP),
    #: MAP_LOCKED and MAP_POPULATE are not drawn at all; the advice not on the
    #: regions that may hold huge shmem folios (:attr:`huge_shmem_regions`).
    shmem_thp: bool = False
    #: memfd and shared anonymous regions: shmem faults there may allocate huge folios
    #: when :attr:`shmem_thp` (a tmpfs file only under ``force``, never drawn).
    huge_shmem_regions: set[str] = field(default_factory=set)
    uids: dict[str, int] = field(default_factory=lambda: {"main": 0})
    mapped: dict[str, dict[str, list[tuple[int, int]]]] = field(
        default_factory=lambda: {"main": {}}
    )
    sizes: dict[str, int] = field(default_factory=dict)
    #: Per region: the region whose reserved range it lies in, and its page
    #: offset there (harness/scenario/layout.py plans the same).
    anchors: dict[str, tuple[str, int]] = field(default_factory=dict)
    procs_made: int = 0
    regions_made: int = 0
    #: Extra value weights for this example (over :data:`VALUE_WEIGHTS`): set when
    #: the example's settings enable mTHP sizes (:data:`MTHP_FAVOUR`).
    favour: dict[str, dict[object, int]] = field(default_factory=dict)
    #: region -> (the mmap region whose reserved range holds it, page offset there): a
    #: move's region lies in its target's range, so overlaps are found without a layout.
    origin: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Regions of private anonymous memory (only they may grow: a file or shmem
    #: page past the end of its file is SIGBUS, which a scenario cannot expect).
    growable: set[str] = field(default_factory=set)
    #: Regions backed by shmem (a file, memfd or shared anonymous memory): MADV_COLLAPSE
    #: there takes hpage_collapse_scan_file(), which the model does not follow.
    shmem_regions: set[str] = field(default_factory=set)
    #: MAP_HUGETLB regions: their ranges are whole huge pages for munmap, nothing is
    #: placed in their address range (``at``, mremap ``to``) and they are placed
    #: nowhere else, and the ops in NOT_ON_HUGETLB leave them alone.
    hugetlb_regions: set[str] = field(default_factory=set)
    #: (process, region) of the step just applied when it mapped a private anonymous
    #: region of a THP or more at its own range (THP-aligned): the next step may be
    #: MADV_HUGEPAGE on all of it (:func:`_next_step`).
    fresh_thp: tuple[str, str] | None = None
    #: (process, region) when the step just applied was that MADV_HUGEPAGE: the next
    #: step may touch the region's first page (the huge-PMD fault itself).
    fresh_hugepage: tuple[str, str] | None = None
    #: (process, region) registered for uffd-wp (a forked child does not inherit it,
    #: dup_userfaultfd()): mremap and MADV_COLLAPSE / PAGEOUT / FREE / REMOVE of such a
    #: VMA are not modelled (sim/mm/userfaultfd.py), so they are not drawn there.
    uffd_wp: set[tuple[str, str]] = field(default_factory=set)
    #: Regions advised hugepage or collapse (they may hold THPs) and regions advised
    #: mergeable (ksmd scans them), by name, carried to a moved region's new name: a ksm
    #: step would split a THP in a scanned region (try_to_merge_one_page()), a path the
    #: model does not follow, so it is drawn only while no region is in both.
    huge_regions: set[str] = field(default_factory=set)
    mergeable_regions: set[str] = field(default_factory=set)
    #: The example's settings let an anonymous fault allocate a large folio with no
    #: advice (an mTHP size ``always``, or ``inherit`` under ``thp`` always): then any
    #: mergeable region may hold one, and no ksm step is drawn once a region is.
    large_folios_unadvised: bool = False
    #: The write step the generator may offer next: a fill of the range just advised
    #: mergeable (so that its pages are equal), and then whether a ksm step may follow it
    #: (drawn among all ops, a ksm step merged nothing in 300 generated scenarios).
    fresh_mergeable: dict[str, Any] | None = None
    fresh_filled: bool = False

    @property
    def alive(self) -> list[str]:
        return list(self.uids)

    @property
    def ksm_allowed(self) -> bool:
        """No region that may hold a THP or an mTHP folio is scanned by ksmd."""
        if self.large_folios_unadvised and self.mergeable_regions:
            return False
        return not self.huge_regions & self.mergeable_regions

    def procs_with_pages(self, op: str | None = None) -> list[str]:
        """Processes with a mapped page in a region ``op`` may work on."""
        return [p for p in self.alive if self.regions_for(p, op)]

    def regions_for(self, proc: str, op: str | None = None) -> list[str]:
        """``proc``'s regions with mapped pages that ``op`` may work on: no hugetlb
        region for the ops in NOT_ON_HUGETLB, and for mremap none registered for uffd-wp."""
        return [r for r, runs in self.mapped[proc].items() if runs and not (
            op in NOT_ON_HUGETLB and r in self.hugetlb_regions) and not (
            op == Mremap.op and (proc, r) in self.uffd_wp)]

    def anchors_with_hugetlb(self) -> set[str]:
        """Anchor regions whose reserved range holds a hugetlb region."""
        return {self.origin[r][0] for r in self.hugetlb_regions}

    # -- effects of the ops that change the flow (flow.py and layout.py say why) --

    def apply(self, step: dict[str, Any]) -> None:
        """Update the state for ``step`` (JSON data of a step valid here)."""
        op, proc = step["op"], step.get("proc", "main")
        fresh, self.fresh_thp, self.fresh_hugepage = self.fresh_thp, None, None
        if fresh is not None and step == _hugepage_step(self, *fresh):
            self.fresh_hugepage = fresh
        fill_write, self.fresh_mergeable, self.fresh_filled = self.fresh_mergeable, None, False
        if fill_write is not None and step == fill_write:
            self.fresh_filled = self.ksm_allowed
        if (op == Madvise.op and step["advice"] == "mergeable" and not step.get("holes")
                and step["region"] in self.growable):
            self.fresh_mergeable = {
                "op": Write.op, **({} if proc == "main" else {"proc": proc}),
                "region": step["region"], "pages": step["pages"], "fill": FILL_VALUES[1],
            }
        if op == Mmap.op:
            self._mmap(proc, step)
        elif op == Mremap.op:
            self._apply_mremap(proc, step)
        elif op == Munmap.op:
            first, end = (self.resolve(b) for b in step["pages"])
            self.mapped[proc][step["region"]] = _cut(self.mapped[proc][step["region"]], first, end)
        elif op == Fork.op:
            child = step["child"]
            uid = step.get("uid")
            self.uids[child] = self.uids[proc] if uid is None else uid
            self.mapped[child] = {r: list(runs) for r, runs in self.mapped[proc].items()}
            self.procs_made += 1
        elif op == Exit.op:
            del self.uids[proc]
            del self.mapped[proc]
        elif op == UffdRegister.op:
            self.uffd_wp.add((proc, step["region"]))
        elif op == Madvise.op and step["advice"] in ("hugepage", "collapse"):
            self.huge_regions.add(step["region"])
        elif op == Madvise.op and step["advice"] == "mergeable":
            self.mergeable_regions.add(step["region"])

    def _apply_mremap(self, proc: str, step: dict[str, Any]) -> None:
        """What layout.py's range check concludes of an mremap (see its ``_mremap``)."""
        region = step["region"]
        first, end = (self.resolve(b) for b in step["pages"])
        new = self.resolve(step["new_pages"])
        runs = self.mapped[proc]
        if "to" not in step:
            if new <= end - first:
                runs[region] = _cut(runs[region], first + new, end)
            elif not self.occupied(proc, region, end, first + new):
                runs[region] = _join(runs[region], end, first + new)
            return
        name, anchor = step["new_region"], step["to"]["region"]
        root, offset = self.origin[anchor]
        offset += self.resolve(step["to"]["page"])
        for other, other_runs in runs.items():
            other_root, other_offset = self.origin[other]
            if other_root == root:
                runs[other] = _cut(other_runs, offset - other_offset,
                                   offset + new - other_offset)
        if not step.get("dontunmap"):
            runs[region] = _cut(runs[region], first, end)
        runs[name] = [(0, new)]
        self.sizes[name] = new
        self.origin[name] = (root, offset)
        if region in self.growable:
            self.growable.add(name)
        for kind in (self.huge_regions, self.mergeable_regions):
            if region in kind:
                kind.add(name)
        self.regions_made += 1

    def occupied(self, proc: str, region: str, first: int, end: int) -> bool:
        """Whether ``proc`` maps a page at pages [first, end) of ``region``'s range."""
        root, offset = self.origin[region]
        for other, other_runs in self.mapped[proc].items():
            other_root, other_offset = self.origin[other]
            shift = offset - other_offset
            if other_root == root and any(
                a < end + shift and first + shift < b for a, b in other_runs
            ):
                return True
        return False
    def _mmap(self, proc: str, step: dict[str, Any]) -> None:
        """A new region; with ``at`` it may land on mapped pages of ``proc``: MAP_FIXED
        takes them from their regions, MAP_FIXED_NOREPLACE fails (EEXIST) and maps nothing."""
        region, n = step["region"], self.resolve(step["pages"])
        at = step.get("at")
        if at is None:
            anchor, offset = region, 0
        else:
            anchor, base = self.origin[at["region"]]
            anchor, offset = anchor, base + self.resolve(at["page"])
        self.sizes[region] = n
        self.origin[region] = (anchor, offset)
        self.regions_made += 1
        if step["kind"] == "anon" and step["share"] == "private":
            self.growable.add(region)
        if step.get("kind") != "anon" or step.get("share") == "shared":
            self.shmem_regions.add(region)
        if step["kind"] == "memfd" or (step["kind"] == "anon" and step["share"] == "shared"):
            self.huge_shmem_regions.add(region)
        if step["kind"] == "hugetlb":
            self.hugetlb_regions.add(region)
        mine = self.mapped[proc]
        covered = [
            (other, offset - off, offset - off + n)
            for other, runs in mine.items()
            for other_anchor, off in [self.origin[other]]
            if other_anchor == anchor and _cut(runs, offset - off, offset - off + n) != runs
        ]
        if covered and not step.get("fixed"):
            mine[region] = []
            return
        for other, first, end in covered:
            mine[other] = _cut(mine[other], first, end)
        mine[region] = [(0, n)]
        thp = self.arch.thp_pages
        if thp and n >= thp and at is None and region in self.growable:
            self.fresh_thp = (proc, region)

    def resolve(self, value: int | str) -> int:
        return NrPages.parse(value).resolve(self.arch)

    def symbolic_huge(self, pages: int) -> int | str:
        """``pages`` of a hugetlb region as ``"K*huge"`` (they are whole huge pages
        except a madvise range's), else the number."""
        huge = self.arch.hugetlb_page_pages
        k, rest = divmod(pages, huge)
        if rest or not k:
            return pages
        return "huge" if k == 1 else f"{k}*huge"

    def symbolic(self, pages: int) -> int | str:
        """``pages`` as ``"K*thp+N"`` when near a THP multiple (so the file runs on every arch)."""
        thp = self.arch.thp_pages
        if not thp or pages < thp - _SYMBOLIC_SLACK:
            return pages
        k, rest = divmod(pages, thp)
        if rest > thp - _SYMBOLIC_SLACK:
            k, rest = k + 1, rest - thp
        if abs(rest) > _SYMBOLIC_SLACK:
            return pages
        text = "thp" if k == 1 else f"{k}*thp"
        return text if rest == 0 else f"{text}{'+' if rest > 0 else '-'}{abs(rest)}"


def _cut(runs: list[tuple[int, int]], first: int, end: int) -> list[tuple[int, int]]:
    """``runs`` without [first, end)."""
    out = []
    for a, b in runs:
        if b <= first or a >= end:
            out.append((a, b))
            continue
        if a < first:
            out.append((a, first))
        if end < b:
            out.append((end, b))
    return out


def _join(runs: list[tuple[int, int]], first: int, end: int) -> list[tuple[int, int]]:
    """``runs`` with [first, end) added (touching runs merged)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted([*_cut(runs, first, end), (first, end)]):
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


# ---------------------------------------------------------------------------
# One key: (can it be drawn here?, draw it)
# ---------------------------------------------------------------------------

Draw = Callable[[st.SearchStrategy[Any]], Any]
#: ``(state, step so far, draw) -> value`` (``_ABSENT`` leaves the key out).
KeyDrawer = Callable[[GeneratorState, dict[str, Any], Draw], Any]
_ABSENT = object()


def _literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal`` (possibly inside ``Annotated``); None if not one."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return None


def _is_optional(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return type(None) in typing.get_args(annotation)


def _base_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    return annotation


def _draw_proc(step_type: type[Step], optional: bool) -> KeyDrawer:
    def draw_proc(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
        if issubclass(step_type, RangeStep):
            candidates = state.procs_with_pages(step_type.op)
        else:
            candidates = state.alive
        if optional:
            choice = draw(st.sampled_from([None, *candidates]))
            return _ABSENT if choice is None else choice
        return draw(st.sampled_from(candidates))

    return draw_proc


def _draw_region(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    if step["op"] == Mmap.op:
        return f"r{state.regions_made}"
    return draw(st.sampled_from(state.regions_for(step.get("proc", "main"), step["op"])))


def _draw_size(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    # Mostly small regions (index 0 first: shrinking makes regions 1 page).
    choices: list[int | str] = list(SMALL_SIZES)
    if state.arch.thp_pages:
        choices += THP_SIZES
    return draw(st.sampled_from(choices))


def _draw_range(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    runs = state.mapped[step.get("proc", "main")][step["region"]]
    first, end = draw(st.sampled_from(runs))
    if step["region"] in state.hugetlb_regions:
        return _draw_huge_range(state, step, draw, first, end)
    # A whole run first (what shrinking prefers, and what THP faults need),
    # else any non-empty sub-range of it.
    if draw(st.booleans()):
        a = draw(st.integers(first, end - 1))
        b = draw(st.integers(a + 1, end))
        first, end = a, b
    return [state.symbolic(first), state.symbolic(end)]


def _draw_huge_range(
    state: GeneratorState, step: dict[str, Any], draw: Draw, first: int, end: int
) -> Any:
    """A range of a mapped run of a hugetlb region (runs are whole huge pages): whole
    huge pages for munmap (an unaligned one is EINVAL, hugetlb_vm_op_split()), any
    pages otherwise (madvise: an unaligned start is EINVAL, an unaligned end rounds
    down), written in ``huge`` units."""
    huge = state.arch.hugetlb_page_pages
    if step["op"] == Munmap.op or not draw(st.booleans()):
        a = draw(st.integers(first // huge, end // huge - 1))
        b = draw(st.integers(a + 1, end // huge))
        return [state.symbolic_huge(a * huge), state.symbolic_huge(b * huge)]
    a = draw(st.integers(first, end - 1))
    b = draw(st.integers(a + 1, end))
    return [state.symbolic_huge(a), state.symbolic_huge(b)]


def _draw_kind(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    """A backing, as the ``Literal`` lists them but ``hugetlb``; then an anonymous one
    becomes ``hugetlb`` one time in HUGETLB_ODDS (where the arch has a pool, up to
    MAX_HUGETLB_REGIONS), ``huge`` or ``2*huge`` pages.  Drawing it second keeps the
    choices of every other scenario where they were (and "not hugetlb", the 0, is
    what shrinking prefers)."""
    kind = draw(st.sampled_from(("anon", "file", "memfd")))
    if (kind == "anon" and state.arch.hugetlb_page_pages
            and len(state.hugetlb_regions) < MAX_HUGETLB_REGIONS
            and draw(st.integers(0, HUGETLB_ODDS - 1)) == HUGETLB_ODDS - 1):
        step["pages"] = draw(st.sampled_from(HUGETLB_SIZES))
        return "hugetlb"
    return kind


def _draw_range_with_holes(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    """Mostly a mapped range; sometimes any range of the region, holes included (the
    kernel's answer to them, ENOMEM, is then the step's outcome)."""
    if draw(st.integers(0, 3)):
        return _draw_range(state, step, draw)
    size = state.sizes[step["region"]]
    a = draw(st.integers(0, size - 1))
    b = draw(st.integers(a + 1, size))
    return [state.symbolic(a), state.symbolic(b)]
def _draw_at(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    """Mostly absent (a range of its own); else a page of any earlier region's range,
    up to just past its end (touching it: VMAs may merge), mapped there or not."""
    if not state.sizes or step.get("kind") == "hugetlb" or not draw(st.integers(0, 2)) == 2:
        return _ABSENT
    near_hugetlb = state.anchors_with_hugetlb()
    targets = sorted(r for r in state.sizes if state.origin[r][0] not in near_hugetlb)
    if not targets:
        return _ABSENT
    target = draw(st.sampled_from(targets))
    page = draw(st.integers(0, state.sizes[target]))
    return {"region": target, "page": state.symbolic(page)}


def _draw_flag(name: str) -> KeyDrawer:
    """A boolean key: absent (false, as a person writes it) or true; ``fixed`` only with ``at``."""

    def draw_flag(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
        if (name == "fixed" and "at" not in step) or (step["op"], name) in PENDING_KEYS:
            return _ABSENT
        if name in ("populate", "locked") and (step.get("kind") == "hugetlb" or state.shmem_thp):
            return _ABSENT  # not followed by the model (hugetlb GUP, huge shmem folios)
        return True if draw(st.integers(0, FLAG_ODDS.get(name, 3))) == 1 else _ABSENT

    return draw_flag


def _draw_child(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    return f"p{state.procs_made + 1}"


def _draw_fork_uid(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    parent = state.uids[step.get("proc", "main")]
    # A root parent may give any uid; any other may only keep its own (flow.py).
    choices: list[int | None] = [None, *UIDS] if parent == 0 else [None, parent]
    choice = draw(st.sampled_from(choices))
    return _ABSENT if choice is None else choice


def _draw_reader_uid(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    choices = sorted({*UIDS, *state.uids.values()})
    choice = draw(st.sampled_from([None, *choices]))
    return _ABSENT if choice is None else choice


def _step_range(state: GeneratorState, step: dict[str, Any]) -> tuple[int, int]:
    first, end = (state.resolve(b) for b in step["pages"])
    return first, end


def _draw_new_pages(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    """mremap's new size: the same first (what shrinking prefers), smaller, or (private
    anonymous regions only) up to 4 pages larger."""
    first, end = _step_range(state, step)
    length = end - first
    most = length + 4 if step["region"] in state.growable else length
    return state.symbolic(draw(st.sampled_from([length, *range(1, most + 1)])))


def _draw_to(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    """A move's target: page P of any region defined so far, never overlapping the source
    (the kernel's EINVAL), sometimes THP-aligned."""
    if state.regions_made >= MAX_REGIONS or not draw(st.booleans()):
        return _ABSENT
    near_hugetlb = state.anchors_with_hugetlb()
    anchors = sorted(r for r in state.origin if state.origin[r][0] not in near_hugetlb)
    if not anchors:
        return _ABSENT
    anchor = draw(st.sampled_from(anchors))
    pages = [*range(state.sizes[anchor] + 4)]
    if state.arch.thp_pages:
        pages += [state.arch.thp_pages, 2 * state.arch.thp_pages, 2 * state.arch.thp_pages + 1]
    page = draw(st.sampled_from(pages))
    first, end = _step_range(state, step)
    new = state.resolve(step["new_pages"])
    root, source = state.origin[step["region"]]
    anchor_root, offset = state.origin[anchor]
    target = offset + page
    if root == anchor_root and target < source + end and source + first < target + new:
        page = source + end - offset  # just after the source
    return {"region": anchor, "page": state.symbolic(page)}


def _draw_new_region(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    return f"r{state.regions_made}" if "to" in step else _ABSENT


def _draw_dontunmap(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    first, end = _step_range(state, step)
    if "to" not in step or state.resolve(step["new_pages"]) != end - first:
        return _ABSENT
    return True if draw(st.booleans()) else _ABSENT
#: Raw MADV_* numbers the generator offers beside the names: MADV_NORMAL,
#: MADV_RANDOM, MADV_DONTDUMP (valid, not named in the language), 102 =
#: MADV_GUARD_INSTALL and -1 (EINVAL on 6.12).
RAW_ADVICE = (0, 1, 16, 102, -1)


def _draw_advice(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    """A name of the language (the first, ``dontneed``, is what shrinking prefers), or one
    time in four a raw number; ``mergeable`` one time in three first.  No ``collapse`` of a
    shmem-backed region (file collapse is not modelled: sim/MODEL.md).

    On a region of a THP or more, ``hugepage`` one time in three before that
    choice: drawn among twenty names it came once in seventy scenarios, and
    a campaign of 1,000 model runs never reached a huge-PMD fault
    (do_huge_pmd_anonymous_page) that only MADV_HUGEPAGE enables (the
    guests' THP setting is ``madvise``)."""
    if step["region"] in state.hugetlb_regions:
        return draw(st.sampled_from(HUGETLB_ADVICE))
    thp = state.arch.thp_pages
    if thp and state.sizes[step["region"]] >= thp and draw(st.integers(0, 2)) == 2:
        return "hugepage"
    huge_shmem = state.shmem_thp and step["region"] in state.huge_shmem_regions
    if state.swap and not huge_shmem and (
        step.get("proc", "main"), step["region"]) not in state.uffd_wp and draw(
        st.integers(0, 3)
    ) == 3:
        # With swap, MADV_PAGEOUT is what swaps pages out: drawn among the rest it came
        # too rarely to reach a swap entry once the language grew (session 5).
        return "pageout"
    if draw(st.integers(0, 2)) == 2:
        # KSM scans only VM_MERGEABLE VMAs: drawn among the names alone, a ksm step
        # met a merge (cmp_and_merge_page) in none of 757 examples.
        return "mergeable"
    if draw(st.integers(0, 3)):
        left_out = set()
        if step["region"] in state.shmem_regions:  # not modelled: see shmem_regions
            left_out.add("collapse")
        if (step.get("proc", "main"), step["region"]) in state.uffd_wp:  # see uffd_wp
            left_out |= {"collapse", "pageout", "free", "remove"}
        if state.shmem_thp and step["region"] in state.huge_shmem_regions:  # see shmem_thp
            left_out |= ADVICE_NOT_ON_SHMEM_THP
        return draw(st.sampled_from([a for a in ADVICES if a not in left_out]))
    return draw(st.sampled_from(RAW_ADVICE))


def _draw_holes(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    """Left out, or (three times in four) ``true`` with the range widened to the whole
    region when this process has unmapped some of it (the kernel's ENOMEM is then the
    step's outcome)."""
    proc = step.get("proc", "main")
    size = state.sizes[step["region"]]
    if state.mapped[proc][step["region"]] == [(0, size)] or not draw(st.integers(0, 3)):
        return _ABSENT
    step["pages"] = [0, state.symbolic(size)]
    return True


def _choices_drawer(key: str, choices: Sequence[Any]) -> KeyDrawer:
    """One of ``choices``, by :data:`VALUE_WEIGHTS`; shrinking prefers the favoured value.

    The favoured values come first (then the rest in declaration order):
    hypothesis shrinks towards the first, and a minimal scenario should use
    the common case (an ``rw`` mapping, not a ``none`` one that a later
    mprotect must open, which the shrinker cannot fold into the mmap).
    """
    weights = VALUE_WEIGHTS.get(key, {})
    ordered = sorted(choices, key=lambda c: -weights.get(c, 1))
    weighted = [c for c in ordered for _ in range(weights.get(c, 1))]

    def draw_choice(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
        extra = state.favour.get(key)
        if not extra:
            return draw(st.sampled_from(weighted))
        both = {**weights, **extra}
        return draw(st.sampled_from([c for c in sorted(choices, key=lambda c: -both.get(c, 1))
                                     for _ in range(both.get(c, 1))]))

    return draw_choice


# -- pagemap_scan: masks of category names, small limits (valid input only) -----------------


def _draw_scan_mask(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    """Absent (the default), or a few PAGE_IS_* names."""
    names = draw(st.lists(st.sampled_from(sorted(SCAN_CATEGORIES)), max_size=3, unique=True))
    return names if names else _ABSENT


def _draw_scan_count(limit: int) -> KeyDrawer:
    def draw_count(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
        n = draw(st.integers(0, limit))
        return n if n else _ABSENT

    return draw_count


def _draw_scan_flags(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    flags = draw(st.sampled_from([(), (), (), ("WP_MATCHING",), ("CHECK_WPASYNC",)]))
    return list(flags) if flags else _ABSENT


#: Fill bytes a write draws from: few, so that pages of equal contents (KSM) are common;
#: the second is also the nudged write's (:attr:`GeneratorState.fresh_mergeable`).
FILL_VALUES = (0, 0x5A, 0xA5)


def _draw_fill(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    """Left out (the unique tag) one time in two, else one of :data:`FILL_VALUES`,
    mostly the nudged write's."""
    if draw(st.integers(0, 1)):
        return _ABSENT
    return draw(st.sampled_from([FILL_VALUES[1], *FILL_VALUES]))


def _draw_use_zero_pages(state: GeneratorState, step: dict[str, Any], draw: Draw) -> Any:
    return True if draw(st.integers(0, 2)) == 1 else _ABSENT


#: Keys of one step type with a meaning of their own (the rest are drawn by name or type).
_STEP_KEY_DRAWERS: dict[tuple[type[Step], str], KeyDrawer] = {
    (Mmap, "at"): _draw_at,
    (Mmap, "kind"): _draw_kind,
    (Madvise, "advice"): _draw_advice,
    (Madvise, "holes"): _draw_holes,
    (Mremap, "new_pages"): _draw_new_pages,
    (Mremap, "to"): _draw_to,
    (Mremap, "new_region"): _draw_new_region,
    (Mremap, "dontunmap"): _draw_dontunmap,
    (PagemapScan, "categories"): _draw_scan_mask,
    (PagemapScan, "inverted"): _draw_scan_mask,
    (PagemapScan, "anyof"): _draw_scan_mask,
    (PagemapScan, "return_mask"): _draw_scan_mask,
    (PagemapScan, "max_pages"): _draw_scan_count(8),
    (PagemapScan, "vec_len"): _draw_scan_count(4),
    (PagemapScan, "flags"): _draw_scan_flags,
    (Write, "fill"): _draw_fill,
    (Ksm, "use_zero_pages"): _draw_use_zero_pages,
}


def key_drawers(step_type: type[Step]) -> list[tuple[str, KeyDrawer]]:
    """How to draw each key of ``step_type``, in declaration order.

    GeneratorGap names a key that has neither a known name nor a ``Literal`` type.
    """
    hints = typing.get_type_hints(step_type, include_extras=True)
    drawers: list[tuple[str, KeyDrawer]] = []
    for f in dataclasses.fields(step_type):
        if f.name == "index":
            continue
        annotation = hints[f.name]
        base = _base_type(annotation)
        choices = _literal_choices(annotation)
        drawer: KeyDrawer
        if f.name == "proc":
            drawer = _draw_proc(step_type, _is_optional(annotation))
        elif f.name == "region":
            drawer = _draw_region
        elif f.name == "pages" and base is PageRange and issubclass(
            step_type, RangeStepWithHoles
        ):
            drawer = _draw_range_with_holes
        elif f.name == "pages" and base is PageRange:
            drawer = _draw_range
        elif f.name == "pages" and base is NrPages:
            drawer = _draw_size
        elif f.name == "child":
            drawer = _draw_child
        elif f.name == "uid":
            drawer = _draw_fork_uid
        elif f.name == "as_uid":
            drawer = _draw_reader_uid
        elif (step_type, f.name) in _STEP_KEY_DRAWERS:
            drawer = _STEP_KEY_DRAWERS[step_type, f.name]
        elif base is bool:
            drawer = _draw_flag(f.name)
        elif f.name == "value" and step_type.op == "clear_refs":
            drawer = _choices_drawer(f.name, CLEAR_REFS_VALUES)
        elif choices is not None:
            drawer = _choices_drawer(f.name, choices)
        else:
            raise GeneratorGap(
                f"op {step_type.op!r}: the generator cannot draw key {f.name!r} ({annotation})"
            )
        drawers.append((f.name, drawer))
    return drawers


# ---------------------------------------------------------------------------
# Which ops can be valid now
# ---------------------------------------------------------------------------


def _applicable(step_type: type[Step], state: GeneratorState) -> bool:
    """Whether some step of ``step_type`` is valid in ``state``."""
    if step_type is Check:
        return True
    if state.shmem_thp and issubclass(step_type, NOT_ON_SHMEM_THP):
        return False
    if step_type in (Swapon, Swapoff):
        # Only in scenarios with swap; either may fail (EBUSY, EINVAL): an outcome.
        return state.swap
    if not state.alive:
        return False
    if issubclass(step_type, RangeStep) or step_type.op == "clear_refs":
        # clear_refs too: before any page is mapped it has nothing to clear.
        return bool(state.procs_with_pages(step_type.op))
    if step_type is Mmap:
        return state.regions_made < MAX_REGIONS
    if step_type is Fork:
        return len(state.alive) < LIVE_PROCS
    if step_type is Exit:
        # The last process may exit too, but then only checks could follow.
        return len(state.alive) > 1
    if step_type is Ksm:
        return state.ksm_allowed
    return True


def _shrink_rank(step_type: type[Step]) -> int:
    """Where ``step_type`` stands in :data:`SHRINK_ORDER` (unnamed ops next to last, check last)."""
    if step_type is Check:
        return len(SHRINK_ORDER) + 1
    if step_type.op in SHRINK_ORDER:
        return SHRINK_ORDER.index(step_type.op)
    return len(SHRINK_ORDER)


def _weighted(step_types: Iterable[type[Step]]) -> list[type[Step]]:
    """Each op repeated by its weight (sampled_from then draws them by weight)."""
    return [t for t in step_types for _ in range(OP_WEIGHTS.get(t.op, 1))]


def _draw_step(state: GeneratorState, step_type: type[Step], draw: Draw) -> dict[str, Any]:
    step: dict[str, Any] = {"op": step_type.op}
    for key, drawer in key_drawers(step_type):
        value = drawer(state, step, draw)
        if value is not _ABSENT:
            step[key] = value
    if step.get("proc") == "main" and "proc" in step_type.defaults:
        del step["proc"]  # the default, as a person writes it
    return step


def _hugepage_step(state: GeneratorState, proc: str, region: str) -> dict[str, Any]:
    """MADV_HUGEPAGE on all of a region just mapped: its THP-aligned PMD ranges then take
    huge-PMD faults (do_huge_pmd_anonymous_page, the guests' THP setting being
    ``madvise``), which a hugepage advice drawn among all the others, on any range
    and at any time, reached in none of 1,000 generated scenarios."""
    step: dict[str, Any] = {
        "op": Madvise.op, "region": region,
        "pages": [0, state.symbolic(state.sizes[region])], "advice": "hugepage",
    }
    if proc != "main":
        step["proc"] = proc
    return step


@st.composite
def _next_step(draw: Draw, state: GeneratorState, check: bool | None) -> dict[str, Any] | None:
    """One step valid in ``state`` (None: the scenario ends here).

    One composite per step, "go on" choice included (as st.lists draws its
    elements), so that a step is one span of choices for the shrinker:
    deleting a step deletes the span, and a zero "go on" ends the scenario.
    Every step, the first too, has the same shape ("go on", op, keys):
    deleting the first step's span leaves the second's choices read as a
    step (with a first step without "go on", they were misread: a useless
    first fork could not be deleted).
    ``check``: True for a check, False for anything else, None for any op.
    """
    # Sorted is stable: ops SHRINK_ORDER does not name keep STEP_TYPES order.
    ops = sorted(STEP_TYPES.values(), key=_shrink_rank)
    if check is None:
        if not draw(st.integers(0, _GO_ON)):
            return None
        if state.fresh_thp is not None and draw(st.integers(0, 1)):
            return _hugepage_step(state, *state.fresh_thp)
        if state.fresh_mergeable is not None and draw(st.integers(0, 1)):
            return dict(state.fresh_mergeable)
        if state.fresh_filled and draw(st.integers(0, 1)):
            return {"op": Ksm.op}
        if state.fresh_hugepage is not None and draw(st.integers(0, 1)):
            proc, region = state.fresh_hugepage
            op = draw(st.sampled_from(["write", "read"]))
            return {"op": op, **({} if proc == "main" else {"proc": proc}),
                    "region": region, "pages": [0, 1]}
        candidates = [t for t in ops if _applicable(t, state)]
    elif check:
        candidates = [Check]
    else:
        candidates = [t for t in ops if t is not Check and _applicable(t, state)] or [Check]
    step_type = draw(st.sampled_from(_weighted(candidates)))
    return _draw_step(state, step_type, draw)


@st.composite
def scenarios(
    draw: Draw,
    arch: Arch,
    max_steps: int = 20,
    name: str = "fuzz",
    check_positions: Sequence[int] | None = None,
    swap: bool = False,
) -> ScenarioData:
    """A valid scenario of 0..``max_steps`` drawn steps and a final ``check``.

    Before each step a choice says whether to go on; then the op, then its
    keys in declaration order.

    With ``check_positions`` the scenario has exactly ``max_steps`` steps,
    checks at those indexes and no other (the benchmark's unit: 20 steps, 3
    checks).  Ops follow :data:`~harness.scenario.STEP_TYPES`; the JSON data
    is returned (:func:`scenario_from_data` loads it).  ``swap``: the scenario
    has ``"swap": true`` (MADV_PAGEOUT swaps anonymous pages out) and swapon and
    swapoff may be drawn; it needs a VM with swap.
    """
    state = GeneratorState(arch, swap=swap)
    knobs = draw(settings_data(arch))
    state.shmem_thp = knobs.get("shmem_thp", "never") in SHMEM_THP_MODES[1:]
    if knobs.get("mthp"):
        state.favour = MTHP_FAVOUR
    state.large_folios_unadvised = large_folios_unadvised(knobs, arch)
    steps: list[dict[str, Any]] = []
    for index in range(max_steps):
        forced = None
        if check_positions is not None:
            forced = index in check_positions
        step = draw(_next_step(state, check=forced))
        if step is None:
            break
        state.apply(step)
        steps.append(step)
    if check_positions is None:
        steps.append({"op": Check.op})
    scenario: dict[str, Any] = {"name": name, "steps": steps}
    if swap:
        scenario["swap"] = True
    if knobs:
        scenario["settings"] = knobs
    return scenario


#: Values of the THP knobs the generator draws (``shmem_thp`` not ``force``, which the
#: model refuses: huge folios on tmpfs files; ``ksm_use_zero_pages`` changes nothing
#: without KSM merging).  The first of each is what a shrunk example falls back to.
THP_MODES = ("madvise", "always", "never")
SHMEM_THP_MODES = ("never", "always", "within_size", "advise")
MTHP_MODES = ("never", "always", "madvise", "inherit")
#: With mTHP sizes set, private anonymous regions (the only ones whose write faults
#: take alloc_anon_folio()) and writes are drawn more often.
MTHP_FAVOUR: dict[str, dict[object, int]] = {"kind": {"anon": 4}, "share": {"private": 3}}
#: mTHP sizes set per example, at most.
MAX_MTHP_SIZES = 3


@st.composite
def settings_data(draw: Draw, arch: Arch) -> dict[str, Any]:
    """A scenario's ``settings`` (SCENARIOS.md): empty (no key) in about half the
    examples and on architectures without THP; else ``thp``, ``shmem_thp`` (one of
    :data:`SHMEM_THP_MODES`) and up to :data:`MAX_MTHP_SIZES` of the architecture's
    mTHP sizes, by their kB names.  Empty shrinks first, so a divergence that needs
    no knob is shown without."""
    sizes = list(mthp_sizes(arch))
    if not sizes or not draw(st.booleans()):
        return {}
    knobs: dict[str, Any] = {}
    thp = draw(st.sampled_from(THP_MODES))
    if thp != THP_MODES[0]:
        knobs["thp"] = thp
    shmem_thp = draw(st.sampled_from(SHMEM_THP_MODES))
    if shmem_thp != SHMEM_THP_MODES[0]:
        knobs["shmem_thp"] = shmem_thp
    # The two smallest sizes (4 and 8 pages) fit the small regions too: drawn
    # three times as often as the others; "always" likewise, so that writes
    # reach alloc_anon_folio()'s large orders in a fair share of examples.
    weighted_sizes = [*sizes[:2], *sizes[:2], *sizes]
    chosen = draw(st.lists(st.sampled_from(weighted_sizes), max_size=MAX_MTHP_SIZES,
                           unique=True))
    modes = [*MTHP_MODES, "always", "always"]
    if chosen:
        knobs["mthp"] = {size: draw(st.sampled_from(modes)) for size in chosen}
    return knobs


def large_folios_unadvised(knobs: dict[str, Any], arch: Arch) -> bool:
    """Whether the ``settings`` data ``knobs`` let a fault in an anonymous VMA with no
    MADV_HUGEPAGE allocate a large folio on ``arch`` (the model's
    :func:`~sim.mm.settings.anon_order_mask` with no VM flags is not empty)."""
    if not arch.thp_pages:
        return False
    settings = parse_settings(knobs).resolve(arch)
    return bool(anon_order_mask(settings, 0, arch.thp_pages.bit_length() - 1))


def scenario_from_data(data: ScenarioData, arch: Arch, path: str = "<fuzz>") -> Scenario:
    """Load the data as ``harness run`` loads a file (ScenarioError if the loader refuses)."""
    return parse_scenario(data, path, arch)


def rejection_rate(examples: Iterable[ScenarioData], arch: Arch) -> tuple[int, int]:
    """(refused by the loader, total) over ``examples``: the generator's waste."""
    refused = total = 0
    for data in examples:
        total += 1
        try:
            scenario_from_data(data, arch)
        except ScenarioError:
            refused += 1
    return refused, total

