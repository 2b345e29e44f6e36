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
    Madvise,
    Mmap,
    Mremap,
    Munmap,
    PagemapScan,
    RangeStep,
    RangeStepWithHoles,
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
    "layout_span",
    "plan_layout",
]

#: The least layout window (bytes): on an arch whose THP is 2 MiB or none
#: (every arch but arm64-64k) every region of a scenario lies in
#: [layout_base, layout_base + LAYOUT_SPAN); :func:`layout_span` gives each arch's.
LAYOUT_SPAN = 1 << 30

#: THP-sized slots in the window: 1 GiB of 2 MiB THPs.
_WINDOW_THPS = 512


def layout_alignment(arch: Arch) -> int:
    """Bytes every region start is aligned to, and the least gap between regions.

    The span of one last-level page table (a PMD entry; 4 MiB on i386), which
    is also the THP size where THP exists: a THP-sized region can be mapped by
    one huge leaf, no two regions share a page table, and neighbours never
    merge into one VMA.
    """
    table_span = 1 << arch.level_shifts[-2] if len(arch.levels) > 1 else arch.page_size
    return max(table_span, arch.thp_pages * arch.page_size, arch.page_size)


def layout_span(arch: Arch) -> int:
    """Bytes of the layout window from :func:`layout_base`: every region lies inside.

    ``max(LAYOUT_SPAN, 512 THPs)``: 1 GiB where a THP is 2 MiB (or absent:
    i386 keeps 1 GiB of its 3 GiB), 256 GiB with arm64-64k's 512 MiB THP, so
    a scenario's regions and the THP-sized gaps between them fit on every
    arch.  Virtual address space costs nothing; only touched pages take RAM.
    """
    return max(LAYOUT_SPAN, _WINDOW_THPS * arch.thp_pages * arch.page_size)


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
    #: The mmap that created the region (for a region a move defined: the mmap of the
    #: region it came from, whose backing it keeps).
    mmap: Mmap
    #: Pages the region can reach by growing in place (mremap); 0: ``pages``.
    extent: int = 0
    #: Pages reserved from ``vaddr``: the extent, and room for every move target
    #: placed in the region's range; 0: the extent.
    room: int = 0

    @property
    def end(self) -> int:
        return self.vaddr + self.pages * self.page_size

    @property
    def observed_pages(self) -> int:
        """Pages a check reads from ``vaddr``: the region's largest extent."""
        return max(self.pages, self.extent)

    @property
    def reserved_pages(self) -> int:
        """Pages from ``vaddr`` no other region is planned into."""
        return max(self.observed_pages, self.room)

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

    Regions are placed in order of definition from :func:`layout_base`.  A
    region without a target (an mmap without ``at``) is an anchor: at an
    address aligned to :func:`layout_alignment`, at least one alignment unit
    after the end of the previous anchor's range, which holds the largest
    extent of every region placed in it.  An mmap ``at`` and a move ``to``
    page P of region R lie in R's anchor range at R's offset + P.  The first plan on an
    architecture also checks the page ranges there (ScenarioError, one line
    naming the step).  ScenarioNotApplicable if the scenario needs THP and
    ``arch`` has none.
    """
    reason = scenario.unsupported_reason(arch)
    if reason is not None:
        raise ScenarioNotApplicable(f"{scenario.path}: {reason}")
    align = layout_alignment(arch)
    cursor = layout_base(arch)
    placements: dict[str, Placement] = {}
    definitions = _definitions(scenario)
    extents = _extents(scenario, arch)
    anchors = _anchors(definitions, arch)
    # Each anchor's range holds the largest extent of every region placed in it.
    spans: dict[str, int] = {}
    for name, _ in definitions:
        anchor, offset = anchors[name]
        spans[anchor] = max(spans.get(anchor, 0), offset + extents[name])
    anchor_vaddr: dict[str, int] = {}
    for name, _ in definitions:
        if anchors[name][0] == name:
            vaddr = (cursor + align - 1) // align * align
            anchor_vaddr[name] = vaddr
            cursor = vaddr + spans[name] * arch.page_size + align
    for number, (name, step) in enumerate(definitions):
        anchor, offset = anchors[name]
        if isinstance(step, Mmap):
            pages, mmap = step.pages.resolve(arch), step
        else:  # a move's region keeps the backing of the region it came from
            pages, mmap = step.new_pages.resolve(arch), placements[step.region].mmap
        placements[name] = Placement(
            name, number, anchor_vaddr[anchor] + offset * arch.page_size, pages,
            arch.page_size, mmap, extent=extents[name], room=spans[anchor] - offset,
        )
    layout = Layout(scenario, arch, placements)
    if arch.name not in scenario.checked_on:
        _check_ranges(layout)
        scenario.checked_on.add(arch.name)
    return layout


def _definitions(scenario: Scenario) -> list[tuple[str, Mmap | Mremap]]:
    """(region, the step defining it) in order of definition: mmaps and moves."""
    found: list[tuple[str, Mmap | Mremap]] = []
    for step in scenario.steps:
        if isinstance(step, Mmap):
            found.append((step.region, step))
        elif isinstance(step, Mremap) and step.new_region is not None:
            found.append((step.new_region, step))
    return found


def _extents(scenario: Scenario, arch: Arch) -> dict[str, int]:
    """Per region: its extent in pages on ``arch`` (see :class:`Placement`): its size,
    grown by every in-place mremap that names it."""
    extent: dict[str, int] = {}
    for name, definition in _definitions(scenario):
        size = definition.pages if isinstance(definition, Mmap) else definition.new_pages
        extent[name] = size.resolve(arch)
    for step in scenario.steps:
        if isinstance(step, Mremap) and step.to is None and step.region in extent:
            first = step.pages.first.resolve(arch)
            extent[step.region] = max(extent[step.region], first + step.new_pages.resolve(arch))
    return extent


def _anchors(
    definitions: list[tuple[str, Mmap | Mremap]], arch: Arch
) -> dict[str, tuple[str, int]]:
    """Per region: the region without a target whose range it lies in, and its page
    offset there.

    An mmap with ``at`` and a move (``to``) lie in their target's anchor, at the
    target's offset plus the target page (flow checked that the target is
    defined before); the anchor's range grows to hold them.
    """
    anchors: dict[str, tuple[str, int]] = {}
    for name, step in definitions:
        target = step.at if isinstance(step, Mmap) else step.to
        if target is None:
            anchors[name] = (name, 0)
        else:
            anchor, offset = anchors[target.region]
            anchors[name] = (anchor, max(0, offset + target.page.resolve(arch)))
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

    def assign(self, first: int, end: int, by: int | None) -> None:
        """Mark [first, end) mapped (``by`` None) or unmapped by step ``by``, whatever it was
        (pages past the runs' end, never mapped before, are added)."""
        if first >= end:
            return
        last = self.runs[-1][1] if self.runs else 0
        runs = [*self.runs, (last, end, -1)] if end > last else self.runs
        pieces: list[tuple[int, int, int | None]] = []
        for start, stop, old in runs:
            for lo, hi, state in ((start, min(stop, first), old), (max(start, first),
                                  min(stop, end), by), (max(start, end), stop, old)):
                if lo < hi and pieces and pieces[-1][2] == state and pieces[-1][1] == lo:
                    pieces[-1] = (pieces[-1][0], hi, state)  # keep runs maximal
                elif lo < hi:
                    pieces.append((lo, hi, state))
        self.runs = pieces
        self.starts = [run[0] for run in pieces]

    def any_mapped(self, first: int, end: int) -> bool:
        """Whether a page of [first, end) is mapped."""
        return any(by is None and start < end and first < stop for start, stop, by in self.runs)
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
    #: Region name -> whether it is a hugetlb region (its ranges must be huge-page aligned).
    hugetlb: dict[str, bool] = field(default_factory=dict)


def _hugetlb_mmap(arch: Arch, step: Mmap, n: int) -> None:
    """A hugetlb region is whole huge pages, mapped where a huge page may start
    (hugetlb_get_unmapped_area(): EINVAL for an unaligned address or length)."""
    huge = arch.hugetlb_page_pages
    if n % huge:
        raise _RangeError(f"pages {step.pages} = {n} of a hugetlb region is not a multiple "
                          f"of 'huge' ({huge} pages on {arch.name})")
    if step.at is not None and step.at.page.resolve(arch) % huge:
        raise _RangeError(f"at.page {step.at.page} of a hugetlb region is not a multiple "
                          f"of 'huge' ({huge} pages on {arch.name})")
    if step.populate or step.locked:
        raise _RangeError("populate/locked of a hugetlb region is not supported "
                          "(the model does not follow hugetlb GUP)")


def _hugetlb_range(ranges: _Ranges, step: RangeStep, first: int, end: int) -> None:
    """A munmap or madvise range of a hugetlb region is whole huge pages (an unaligned
    munmap is EINVAL: hugetlb_vm_op_split(); the loader's view of what stays mapped
    would be wrong)."""
    if not ranges.hugetlb.get(step.region):
        return
    huge = ranges.layout.arch.hugetlb_page_pages
    if first % huge or end % huge:
        raise _RangeError(f"pages {step.pages} = [{first}, {end}) of hugetlb region "
                          f"{step.region!r} are not whole huge pages ('huge' = {huge} pages)")


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
    reserved_end = placement.page_vaddr(placement.reserved_pages)
    if reserved_end > ranges.limit:
        # Checked at the mmap, before anything is built for the region's pages.
        raise ScenarioError(
            f"{ranges.layout.scenario.path}: {step.label}: "
            f"region {placement.region!r} ends at {reserved_end:#x}, beyond the layout limit "
            f"{ranges.limit:#x} on {ranges.layout.arch.name} "
            f"(all regions together must fit in {layout_span(ranges.layout.arch) >> 20} MiB)"
        )
    if step.kind == "hugetlb":
        _hugetlb_mmap(ranges.layout.arch, step, n)
    ranges.sizes[step.region] = n
    ranges.hugetlb[step.region] = step.kind == "hugetlb"
    mine = ranges.mapped[step.proc]
    covered = []
    for region, runs in mine.items():
        other = ranges.layout[region]
        first = max(0, (placement.vaddr - other.vaddr) // other.page_size)
        end = min(other.reserved_pages, (placement.end - other.vaddr) // other.page_size)
        if first < end and runs.mapped_within(first, end):
            covered.append((runs, first, end))
    if covered and not step.fixed:
        # MAP_FIXED_NOREPLACE onto mapped pages: EEXIST, the region is never mapped.
        mine[step.region] = _PageRuns([(0, n, step.index)])
    else:
        for runs, first, end in covered:
            runs.unmap_any(first, end, step.index)
        mine[step.region] = _PageRuns.mapped(n)
    # Room for mremap: reserved, never mapped yet.
    mine[step.region].assign(n, placement.reserved_pages, -1)


@RANGES.on(RangeStep)
def _range(ranges: _Ranges, step: RangeStep) -> None:
    _mapped_range(ranges, step)


@RANGES.on(RangeStepWithHoles)
def _range_with_holes(ranges: _Ranges, step: RangeStepWithHoles) -> None:
    """A step whose holes are the kernel's to answer: inside the region is enough."""
    first, end = step.pages.resolve(ranges.layout.arch)
    n = ranges.sizes[step.region]
    if not 0 <= first < end <= n:
        shown = f"pages {step.pages}"
        if step.pages.symbolic:
            shown += f" = [{first}, {end})"
        raise _RangeError(
            f"{shown} is not a non-empty range inside region {step.region!r} of {n} pages"
        )


@RANGES.on(Madvise)
def _madvise(ranges: _Ranges, step: Madvise) -> None:
    """With ``holes`` the range need only lie inside the region (the kernel's ENOMEM
    is the point); without, it must be mapped as for every range step."""
    if not step.holes:
        _mapped_range(ranges, step)
        return
    _range_in_region(ranges, step)


@RANGES.on(Munmap)
def _munmap(ranges: _Ranges, step: Munmap) -> None:
    runs, first, end = _mapped_range(ranges, step)
    _hugetlb_range(ranges, step, first, end)
    runs.unmap(first, end, step.index)


@RANGES.on(PagemapScan)
def _scan(ranges: _Ranges, step: PagemapScan) -> None:
    """A scan may cover unmapped pages (they are holes to it): inside the region is enough."""
    _range_in_region(ranges, step)
    if step.max_pages.resolve(ranges.layout.arch) < 0:
        raise _RangeError(f"max_pages {step.max_pages} is negative")


@RANGES.on(Fork)
def _fork(ranges: _Ranges, step: Fork) -> None:
    ranges.mapped[step.child] = {r: runs.copy() for r, runs in ranges.mapped[step.proc].items()}


def _range_in_region(ranges: _Ranges, step: RangeStep) -> tuple[int, int, str]:
    """The step's [first, end) in pages, and how to show it; _RangeError unless it is a
    non-empty range inside the region."""
    first, end = step.pages.resolve(ranges.layout.arch)
    n = ranges.sizes[step.region]
    shown = f"pages {step.pages}"
    if step.pages.symbolic:
        shown += f" = [{first}, {end})"
    if not 0 <= first < end <= n:
        raise _RangeError(
            f"{shown} is not a non-empty range inside region {step.region!r} of {n} pages"
        )
    return first, end, shown


def _mapped_range(ranges: _Ranges, step: RangeStep) -> tuple[_PageRuns, int, int]:
    """The runs of the step's region, and its [first, end): inside the region and mapped."""
    first, end, shown = _range_in_region(ranges, step)
    runs = ranges.mapped[step.proc][step.region]
    hole = runs.first_hole(first, end)
    if hole is not None:
        page, by = hole
        why = "never mapped there" if by == -1 else f"unmapped at step {by}"
        raise _RangeError(
            f"{shown}: page {page} of region {step.region!r} is not mapped "
            f"in {step.proc!r} ({why})"
        )
    return runs, first, end


@RANGES.on(Mremap)
def _mremap(ranges: _Ranges, step: Mremap) -> None:
    """What the loader can tell of an mremap's effect on one architecture.

    In place: a shrink unmaps the tail; a grow succeeds iff nothing of ours is
    mapped in the process after the range up to its new end (else the kernel's
    ENOMEM is the outcome and nothing changes).  A move unmaps the target's
    pages in every region of the process (MREMAP_FIXED), then the old range
    (not with dontunmap) and maps the new region's pages [0, new_pages).  The
    loader assumes the range lies in one VMA: if it does not, the kernel's
    EFAULT is the outcome, touches of pages believed mapped fault alike in the
    guest and the model, and checks read what is there.
    """
    runs, first, end = _mapped_range(ranges, step)
    arch = ranges.layout.arch
    new = step.new_pages.resolve(arch)
    if not 1 <= new <= MAX_PAGES:
        raise _RangeError(f"new_pages {step.new_pages} = {new}; a region has 1..{MAX_PAGES} pages")
    if not step.moves:
        if new <= end - first:
            runs.assign(first + new, end, step.index)
        elif not _any_mapped(ranges, step.proc, ranges.layout[step.region].page_vaddr(end),
                             ranges.layout[step.region].page_vaddr(first + new)):
            runs.assign(end, first + new, None)
            ranges.sizes[step.region] = max(ranges.sizes[step.region], first + new)
        return
    assert step.to is not None and step.new_region is not None
    if step.dontunmap and new != end - first:
        raise _RangeError(
            f"dontunmap needs new_pages ({new}) equal to the range's {end - first} pages "
            "(the kernel says EINVAL)"
        )
    target = ranges.layout[step.new_region]
    source = ranges.layout[step.region]
    if source.page_vaddr(first) < target.page_vaddr(new) and \
            target.vaddr < source.page_vaddr(end):
        raise _RangeError(f"to: {step.to} overlaps the moved pages (the kernel says EINVAL)")
    _unmap_addresses(ranges, step.proc, target.vaddr, target.page_vaddr(new), step.index)
    if not step.dontunmap:
        runs.assign(first, end, step.index)
    moved = _PageRuns.mapped(new)
    if target.reserved_pages > new:
        moved.assign(new, target.reserved_pages, -1)
    ranges.mapped[step.proc][step.new_region] = moved
    ranges.sizes[step.new_region] = new


def _any_mapped(ranges: _Ranges, proc: str, lo: int, hi: int) -> bool:
    """Whether any region of ``proc`` has a mapped page in [lo, hi) (bytes)."""
    return any(runs.any_mapped(*_pages_in(ranges.layout[region], lo, hi))
               for region, runs in ranges.mapped[proc].items())


def _unmap_addresses(ranges: _Ranges, proc: str, lo: int, hi: int, by: int) -> None:
    """Mark every page of ``proc``'s regions in [lo, hi) (bytes) unmapped by step ``by``."""
    for region, runs in ranges.mapped[proc].items():
        first, end = _pages_in(ranges.layout[region], lo, hi)
        for start, stop, state in list(runs.runs):
            if state is None and start < end and first < stop:
                runs.assign(max(start, first), min(stop, end), by)


def _pages_in(placement: Placement, lo: int, hi: int) -> tuple[int, int]:
    """The pages [first, end) of ``placement`` whose addresses lie in [lo, hi) (maybe empty)."""
    size = placement.page_size
    first = max(0, -(-(lo - placement.vaddr) // size))
    end = max(first, (hi - placement.vaddr) // size)
    return first, end


def _check_ranges(layout: Layout) -> None:
    """Sizes and page ranges on ``layout.arch``: in the region, and mapped where used."""
    arch = layout.arch
    ranges = _Ranges(layout, min(layout_base(arch) + layout_span(arch), arch.task_size))
    for step in layout.scenario.steps:
        try:
            RANGES(ranges, step)
        except _RangeError as e:
            where = f" on {arch.name}" if any(n.symbolic for n in step.page_numbers()) else ""
            raise ScenarioError(f"{layout.scenario.path}: {step.label}: {e}{where}") from None
