"""Layout: one fixed address per region on one architecture, the same in the model and the guest.

:func:`plan_layout` places every region and checks, for that architecture
only, what depends on it: region sizes and page ranges once THP multiples
are resolved, and that every region fits the layout window.  A scenario is
never checked against architectures it is not being planned for, so an
architecture with a huge THP (512 MiB with 64K pages) cannot make a
``"2*thp"`` file fail elsewhere.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.scenario.dispatch import StepHandlers
from harness.scenario.schema import (
    Fork,
    Mmap,
    Munmap,
    RangeStep,
    ScenarioError,
    ScenarioNotApplicable,
    Step,
)
from harness.scenario.tags import MAX_PAGES, file_tag, write_tag
from sim.arch import Arch

if TYPE_CHECKING:
    from harness.scenario.parse import Scenario

__all__ = [
    "LAYOUT_SPAN",
    "Layout",
    "Placement",
    "Span",
    "layout_alignment",
    "layout_base",
    "plan_layout",
]

#: Every region of a scenario lies in [layout_base, layout_base + LAYOUT_SPAN).
LAYOUT_SPAN = 1 << 30


def layout_alignment(arch: Arch) -> int:
    """Bytes every region start is aligned to, and the least gap between regions.

    The span of one last-level page table (a PMD entry; 4 MiB on i386), which
    is also the THP size where THP exists: a THP-sized region can be mapped by
    one huge leaf, no two regions share a page table, and neighbours never
    merge into one VMA.
    """
    table_span = 1 << arch.level_shifts[-2] if len(arch.levels) > 1 else arch.page_size
    return max(table_span, arch.thp_pages * arch.page_size, arch.page_size)


def layout_base(arch: Arch) -> int:
    """Address of the first region: ``min(task_size / 4, 1 TiB)``, aligned.

    Why there: above the executable and its brk heap (a static binary at a few
    MiB with the heap randomised up to 1 GiB above it on 64-bit,
    arch_randomize_brk() in mm/util.c; 32 MiB on 32-bit), below the top-down
    mmap area and the stack, and inside the default mmap window of every
    architecture (ppc64 maps above 128 TiB only on request).  On i386 this is
    0x30000000.
    """
    base = min(arch.task_size // 4, 1 << 40)
    align = layout_alignment(arch)
    return (base + align - 1) // align * align


@dataclass(frozen=True)
class Placement:
    """Where a region lives: ``pages`` pages from ``vaddr`` in every process."""

    region: str
    number: int  # order of definition; part of every tag
    vaddr: int
    pages: int
    page_size: int
    mmap: Mmap

    @property
    def end(self) -> int:
        return self.vaddr + self.pages * self.page_size

    def page_vaddr(self, page: int) -> int:
        return self.vaddr + page * self.page_size


@dataclass(frozen=True)
class Span:
    """A range step resolved on one architecture: pages [first, end) at vaddr."""

    placement: Placement
    first: int
    end: int

    @property
    def vaddr(self) -> int:
        return self.placement.page_vaddr(self.first)

    @property
    def pages(self) -> int:
        return self.end - self.first

    @property
    def length(self) -> int:
        """Bytes from :attr:`vaddr` (what mmap-family calls take)."""
        return self.pages * self.placement.page_size


class Layout(Mapping[str, Placement]):
    """The placements of one scenario on one architecture (region -> Placement)."""

    def __init__(self, scenario: Scenario, arch: Arch, placements: dict[str, Placement]):
        self.scenario = scenario
        self.arch = arch
        self._placements = placements

    def __getitem__(self, region: str) -> Placement:
        return self._placements[region]

    def __iter__(self) -> Iterator[str]:
        return iter(self._placements)

    def __len__(self) -> int:
        return len(self._placements)

    def span(self, step: RangeStep) -> Span:
        """The pages of a range step on this architecture."""
        first, end = step.pages.resolve(self.arch)
        return Span(self[step.region], first, end)

    def write_tag_base(self, step: RangeStep) -> int:
        """The tag of the first page of a write step; page k of the step gets this + k."""
        span = self.span(step)
        return write_tag(step.index, span.placement.number, span.first)

    def file_tag_base(self, region: str) -> int:
        """The tag of page 0 of a file region's file; page i holds this + i."""
        return file_tag(self[region].number, 0)

    def write_tags(self, step: RangeStep) -> list[int]:
        """The tag of each page of a write step, in page order."""
        span = self.span(step)
        number = span.placement.number
        return [write_tag(step.index, number, page) for page in range(span.first, span.end)]

    def file_tags(self, region: str) -> list[int]:
        """The tag in each page of a file region's backing file."""
        placement = self[region]
        return [file_tag(placement.number, page) for page in range(placement.pages)]

    def region_at(self, vaddr: int) -> tuple[Placement, int] | None:
        """The placement and page index holding ``vaddr`` (None outside every region)."""
        for placement in self._placements.values():
            if placement.vaddr <= vaddr < placement.end:
                return placement, (vaddr - placement.vaddr) // placement.page_size
        return None


def plan_layout(scenario: Scenario, arch: Arch) -> Layout:
    """Place every region of ``scenario`` on ``arch``; both executors use this.

    Regions are placed in order of definition from :func:`layout_base`, each
    at an address aligned to :func:`layout_alignment` and at least one
    alignment unit after the end of the previous one.  The first plan on an
    architecture also checks the page ranges there (ScenarioError, one line
    naming the step).  ScenarioNotApplicable if the scenario needs THP and
    ``arch`` has none.
    """
    reason = scenario.unsupported_reason(arch)
    if reason is not None:
        raise ScenarioNotApplicable(f"{scenario.path}: {reason}")
    align = layout_alignment(arch)
    cursor = layout_base(arch)
    anchors = _anchors(scenario, arch)
    # Each anchor's range holds the largest extent of every region placed in it.
    extents: dict[str, int] = {}
    for step in scenario.regions:
        anchor, offset = anchors[step.region]
        extents[anchor] = max(extents.get(anchor, 0), offset + _room_pages(step, arch))
    anchor_vaddr: dict[str, int] = {}
    for step in scenario.regions:
        if step.at is None:
            vaddr = (cursor + align - 1) // align * align
            anchor_vaddr[step.region] = vaddr
            cursor = vaddr + extents[step.region] * arch.page_size + align
    placements: dict[str, Placement] = {}
    for number, step in enumerate(scenario.regions):
        anchor, offset = anchors[step.region]
        placements[step.region] = Placement(
            step.region, number, anchor_vaddr[anchor] + offset * arch.page_size,
            step.pages.resolve(arch), arch.page_size, step,
        )
    layout = Layout(scenario, arch, placements)
    if arch.name not in scenario.checked_on:
        _check_ranges(layout)
        scenario.checked_on.add(arch.name)
    return layout


def _room_pages(step: Mmap, arch: Arch) -> int:
    """Pages a region may come to cover from its page 0: its size."""
    return step.pages.resolve(arch)


def _anchors(scenario: Scenario, arch: Arch) -> dict[str, tuple[str, int]]:
    """Per region: the region without ``at`` whose range it lies in, and its page offset there.

    A region with ``at`` lies in its target's anchor, at the target's offset
    plus ``at.page`` (flow checked that the target is defined before).
    """
    anchors: dict[str, tuple[str, int]] = {}
    for step in scenario.regions:
        if step.at is None:
            anchors[step.region] = (step.region, 0)
        else:
            anchor, offset = anchors[step.at.region]
            anchors[step.region] = (anchor, max(0, offset + step.at.page.resolve(arch)))
    return anchors


# ---------------------------------------------------------------------------
# Range checks on one architecture
# ---------------------------------------------------------------------------


class _PageRuns:
    """Which pages of one region one process has mapped, as runs.

    ``runs`` are ``(start, end, unmapped_by)`` covering ``[0, pages)`` in
    order; ``unmapped_by`` is None for mapped pages, else the munmap step that
    removed them.  Runs make every query and update cost the number of runs
    it touches, not the number of pages (regions hold up to MAX_PAGES).
    """

    def __init__(self, runs: list[tuple[int, int, int | None]]) -> None:
        self.runs = runs
        self.starts = [run[0] for run in runs]

    @classmethod
    def mapped(cls, pages: int) -> _PageRuns:
        return cls([(0, pages, None)])

    def copy(self) -> _PageRuns:
        return _PageRuns(list(self.runs))

    def first_hole(self, first: int, end: int) -> tuple[int, int] | None:
        """(page, unmapped_by) of the first unmapped page in [first, end); None if all mapped."""
        i = bisect.bisect_right(self.starts, first) - 1
        # Mapped runs are never adjacent (they only split), so this loop
        # meets a hole within two runs or leaves the range.
        while i < len(self.runs) and self.runs[i][0] < end:
            start, _, by = self.runs[i]
            if by is not None:
                return max(start, first), by
            i += 1
        return None

    def mapped_within(self, first: int, end: int) -> bool:
        """Whether any page of [first, end) is mapped."""
        return any(by is None and start < end and first < stop
                   for start, stop, by in self.runs)

    def unmap_any(self, first: int, end: int, by: int) -> None:
        """Mark every mapped page of [first, end) unmapped by step ``by`` (MAP_FIXED over it)."""
        runs: list[tuple[int, int, int | None]] = []
        for start, stop, was in self.runs:
            if was is not None or stop <= first or end <= start:
                runs.append((start, stop, was))
                continue
            pieces = [(start, max(start, first), None), (max(start, first), min(stop, end), by),
                      (min(stop, end), stop, None)]
            runs.extend(run for run in pieces if run[0] < run[1])
        self.runs = runs
        self.starts = [run[0] for run in runs]

    def unmap(self, first: int, end: int, by: int) -> None:
        """Mark [first, end) unmapped by step ``by``; the range is mapped (first_hole None)."""
        i = bisect.bisect_right(self.starts, first) - 1
        start, stop, _ = self.runs[i]
        pieces = [(start, first, None), (first, end, by), (end, stop, None)]
        self.runs[i : i + 1] = [run for run in pieces if run[0] < run[1]]
        self.starts[i : i + 1] = [run[0] for run in pieces if run[0] < run[1]]


class _RangeError(Exception):
    """A step's pages do not fit on this architecture; the message follows the label."""


@dataclass
class _Ranges:
    """Region sizes and mapped pages per process, as the steps so far left them."""

    layout: Layout
    limit: int
    sizes: dict[str, int] = field(default_factory=dict)
    mapped: dict[str, dict[str, _PageRuns]] = field(default_factory=lambda: {"main": {}})


RANGES: StepHandlers[_Ranges, None] = StepHandlers("the range check")


@RANGES.on(Step)
def _no_pages(ranges: _Ranges, step: Step) -> None:
    """Steps without page ranges (fork aside) change nothing here."""


@RANGES.on(Mmap)
def _mmap(ranges: _Ranges, step: Mmap) -> None:
    n = step.pages.resolve(ranges.layout.arch)
    if not 1 <= n <= MAX_PAGES:
        raise _RangeError(f"pages {step.pages} = {n}; a region has 1..{MAX_PAGES} pages")
    placement = ranges.layout[step.region]
    if step.at is not None:
        # Any page from R's start on: at R's end the two touch, beyond it a
        # gap stays between them (R's anchor range grows to hold it).
        page = step.at.page.resolve(ranges.layout.arch)
        if page < 0:
            raise _RangeError(f"at.page {step.at.page} = {page} is before region "
                              f"{step.at.region!r}")
    if placement.end > ranges.limit:
        # Checked at the mmap, before anything is built for the region's pages.
        raise ScenarioError(
            f"{ranges.layout.scenario.path}: {step.label}: "
            f"region {placement.region!r} ends at {placement.end:#x}, beyond the layout limit "
            f"{ranges.limit:#x} on {ranges.layout.arch.name} "
            f"(all regions together must fit in {LAYOUT_SPAN >> 20} MiB)"
        )
    ranges.sizes[step.region] = n
    mine = ranges.mapped[step.proc]
    covered = []
    for region, runs in mine.items():
        other = ranges.layout[region]
        first = max(0, (placement.vaddr - other.vaddr) // other.page_size)
        end = min(ranges.sizes[region], (placement.end - other.vaddr) // other.page_size)
        if first < end and runs.mapped_within(first, end):
            covered.append((runs, first, end))
    if covered and not step.fixed:
        # MAP_FIXED_NOREPLACE onto mapped pages: EEXIST, the region is never mapped.
        mine[step.region] = _PageRuns([(0, n, step.index)])
        return
    for runs, first, end in covered:
        runs.unmap_any(first, end, step.index)
    mine[step.region] = _PageRuns.mapped(n)


@RANGES.on(RangeStep)
def _range(ranges: _Ranges, step: RangeStep) -> None:
    _mapped_range(ranges, step)


@RANGES.on(Munmap)
def _munmap(ranges: _Ranges, step: Munmap) -> None:
    runs, first, end = _mapped_range(ranges, step)
    runs.unmap(first, end, step.index)


@RANGES.on(Fork)
def _fork(ranges: _Ranges, step: Fork) -> None:
    ranges.mapped[step.child] = {r: runs.copy() for r, runs in ranges.mapped[step.proc].items()}


def _mapped_range(ranges: _Ranges, step: RangeStep) -> tuple[_PageRuns, int, int]:
    """The runs of the step's region, and its [first, end): inside the region and mapped."""
    first, end = step.pages.resolve(ranges.layout.arch)
    n = ranges.sizes[step.region]
    shown = f"pages {step.pages}"
    if step.pages.symbolic:
        shown += f" = [{first}, {end})"
    if not 0 <= first < end <= n:
        raise _RangeError(
            f"{shown} is not a non-empty range inside region {step.region!r} of {n} pages"
        )
    runs = ranges.mapped[step.proc][step.region]
    hole = runs.first_hole(first, end)
    if hole is not None:
        page, by = hole
        raise _RangeError(
            f"{shown}: page {page} of region {step.region!r} is not mapped "
            f"in {step.proc!r} (unmapped at step {by})"
        )
    return runs, first, end


def _check_ranges(layout: Layout) -> None:
    """Sizes and page ranges on ``layout.arch``: in the region, and mapped where used."""
    arch = layout.arch
    ranges = _Ranges(layout, min(layout_base(arch) + LAYOUT_SPAN, arch.task_size))
    for step in layout.scenario.steps:
        try:
            RANGES(ranges, step)
        except _RangeError as e:
            where = f" on {arch.name}" if any(n.symbolic for n in step.page_numbers()) else ""
            raise ScenarioError(f"{layout.scenario.path}: {step.label}: {e}{where}") from None
