"""``--show``: each check's decoded observations, model and guest side by side.

Per check, per (process, region), one table row per page (or per run of
pages that agree and whose frames are consecutive on both sides, e.g. a THP):

    page   vaddr           guest PFN  model PFN  pagemap  kpageflags              map  ref
    0-1    0x10000000      0x3f000-1  0x64-0x65  P--XD--  UPTODATE LRU MMAP ANON  1    1

* ``guest PFN`` / ``model PFN``: what each side's pagemap names (the model's
  PFNs are its own; compare pairs them by a bijection, harness/compare.py), or
  ``swap T:0xOFF``, or ``-``;
* ``pagemap``: the flag bits, one letter at a fixed place (:data:`PAGEMAP_LEGEND`);
* ``kpageflags``, ``map`` (/proc/kpagecount: the mapcount) and ``ref`` (the
  /proc/kpagemap count: page_count(), the refcount) of the frame.

A cell where the model says something else shows the guest's value and the
model's in brackets, in bold red on a terminal, and its row's page is
marked ``!`` (so it stands out without colour as well).  The values are
decoded here from the observations; which PFNs compare reported as breaking
the bijection comes from the divergences.  Drawn by ``rich``: ASCII rules,
colour only on a terminal, wrapped to 80 columns (or the terminal's width).
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.differences import KpfFlags
from harness.observations import CheckObservation, FrameRead, Observations, RegionRead
from harness.report import ScenarioResult, flag_delta
from sim.arch import Arch, UnknownArchError, get_arch
from sim.bulk import bulk_parse_kpagemap_entries, bulk_parse_u64s
from sim.formats import FormatError, PagemapEntry

__all__ = ["PAGEMAP_LEGEND", "CheckTables", "Row", "pagemap_bits", "region_rows"]

#: The pagemap column's letters, in order (a ``-`` where the bit is clear).
PAGEMAP_LETTERS = (
    ("P", "present"), ("S", "swapped"), ("F", "file-page or shared-anon"),
    ("X", "exclusive"), ("D", "soft-dirty"), ("W", "uffd-wp"), ("G", "guard"),
)
PAGEMAP_LEGEND = (
    "pagemap: " + " ".join(f"{letter} {name}" for letter, name in PAGEMAP_LETTERS)
    + "; map = kpagecount (mapcount), ref = kpagemap count (page_count());"
    " PFN.. = consecutive PFNs from there on;"
    " a value in [brackets] is the model's where it differs (row marked !)"
)
_ATTRS = ("present", "swapped", "file_shared", "exclusive", "soft_dirty", "uffd_wp", "guard")
#: Rules of ASCII characters: readable in any log, CI system or KTAP diagnostic.
ASCII_RULES = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)
DIVERGENT = "bold red"


def pagemap_bits(entry: PagemapEntry) -> str:
    """``P--XD--``: the entry's flag bits at fixed places (:data:`PAGEMAP_LETTERS`)."""
    return "".join(letter if getattr(entry, attr) else "-"
                   for (letter, _), attr in zip(PAGEMAP_LETTERS, _ATTRS, strict=True))


@dataclass(frozen=True)
class Frame:
    """The kpage* values of one frame as one side read them (None: not read or failed)."""

    flags: KpfFlags | None = None
    mapcount: int | None = None
    refcount: int | None = None


@dataclass(frozen=True)
class Side:
    """One side's view of one page: its pagemap entry (or raw u64) and its frame."""

    entry: PagemapEntry | int | None
    frame: Frame = Frame()

    @property
    def pfn(self) -> int | None:
        entry = self.entry
        return entry.pfn if isinstance(entry, PagemapEntry) and entry.pfn else None

    def pfn_text(self) -> str:
        entry = self.entry
        if entry is None:
            return "-"
        if isinstance(entry, int):
            return f"invalid {entry:#x}"
        if entry.swapped:
            return f"swap {entry.swap_type}:{entry.swap_offset:#x}"
        if entry.pfn is None:
            return "-"
        return f"{entry.pfn:#x}"

    def bits(self) -> str:
        entry = self.entry
        if entry is None:
            return "-"
        return pagemap_bits(entry) if isinstance(entry, PagemapEntry) else "invalid"


@dataclass
class Row:
    """Pages ``first``..``last`` of a region whose sides agree page by page (or one page)."""

    first: int
    last: int
    vaddr: int
    guest: Side
    model: Side
    #: Columns where the model differs: pfn, pagemap, kpageflags, map, ref.
    divergent: set[str] = field(default_factory=set)
    #: Each side's PFN at page ``last``, and how PFNs go on from page to page in
    #: the row: 1 consecutive (a THP), 0 one frame (the zero page), None: one page.
    last_pfns: tuple[int | None, int | None] = (None, None)
    pfn_steps: tuple[int | None, int | None] = (None, None)

    def __post_init__(self) -> None:
        self.last_pfns = (self.guest.pfn, self.model.pfn)

    def absorb(self, other: Row) -> bool:
        """Take ``other`` (the next page) into this row if nothing but the PFNs differ and
        they go on as before, on each side: consecutive, or the same frame."""
        if self.divergent or other.divergent or other.first != self.last + 1:
            return False
        same = (self.guest.bits(), self.guest.frame, self.model.bits(), self.model.frame) == (
            other.guest.bits(), other.guest.frame, other.model.bits(), other.model.frame)
        if not same:
            return False
        steps: list[int | None] = []
        for last, step, side in zip(self.last_pfns, self.pfn_steps, (other.guest, other.model),
                                    strict=True):
            if side.pfn is None or last is None:
                if side.pfn != last or (isinstance(side.entry, PagemapEntry)
                                        and side.entry.swapped):
                    return False  # a swap entry names its own slot: one row each
                steps.append(None)
                continue
            delta = side.pfn - last
            if delta not in (0, 1) or step not in (None, delta):
                return False
            steps.append(delta)
        self.last = other.first
        self.last_pfns = (other.guest.pfn, other.model.pfn)
        self.pfn_steps = (steps[0], steps[1])
        return True


def _frames(arch: Arch, check: CheckObservation | None) -> dict[int, Frame]:
    """PFN -> its decoded kpage* values, for every frame ``check`` read."""
    if check is None:
        return {}
    return {f.pfn: _frame(arch, f) for f in check.frames}


def _frame(arch: Arch, f: FrameRead) -> Frame:
    def u64(data: bytes | None) -> int | None:
        return int(bulk_parse_u64s(arch, data)[0]) if data and len(data) == 8 else None

    flags = u64(f.kpageflags.data)
    refcount = None
    if f.kpagemap.data is not None and len(f.kpagemap.data) == arch.kpagemap_entry_size:
        refcount = int(bulk_parse_kpagemap_entries(arch, f.kpagemap.data)[1][0])
    return Frame(None if flags is None else KpfFlags(flags), u64(f.kpagecount.data), refcount)


def _entries(arch: Arch, read: RegionRead | None) -> list[PagemapEntry | int]:
    if read is None or read.pagemap.data is None:
        return []
    data = read.pagemap.data
    out: list[PagemapEntry | int] = []
    for raw in bulk_parse_u64s(arch, data[: len(data) - len(data) % 8]).tolist():
        try:
            out.append(PagemapEntry.from_raw(raw))
        except FormatError:
            out.append(raw)
    return out


def region_rows(arch: Arch, guest: RegionRead | None, model: RegionRead | None,
                guest_frames: dict[int, Frame], model_frames: dict[int, Frame],
                identity: Iterable[int] = ()) -> list[Row]:
    """The rows of one (process, region) of a check; ``identity``: pages whose PFN pair
    compare reported as breaking the bijection."""
    base = guest or model
    if base is None:
        return []
    broken = set(identity)
    gs, ms = _entries(arch, guest), _entries(arch, model)
    rows: list[Row] = []
    for page in range(max(len(gs), len(ms))):
        g = _side(gs, page, guest_frames)
        m = _side(ms, page, model_frames)
        row = Row(page, page, base.vaddr + page * arch.page_size, g, m)
        if g.bits() != m.bits():
            row.divergent.add("pagemap")
        if page in broken or (g.pfn is None) != (m.pfn is None):
            row.divergent.add("pfn")
        if g.pfn is not None and m.pfn is not None:
            for column, a, b in (("kpageflags", g.frame.flags, m.frame.flags),
                                 ("map", g.frame.mapcount, m.frame.mapcount),
                                 ("ref", g.frame.refcount, m.frame.refcount)):
                if a != b:
                    row.divergent.add(column)
        if not rows or not rows[-1].absorb(row):
            rows.append(row)
    return rows


def _side(entries: Sequence[PagemapEntry | int], page: int, frames: dict[int, Frame]) -> Side:
    if page >= len(entries):
        return Side(None)
    entry = entries[page]
    pfn = entry.pfn if isinstance(entry, PagemapEntry) else None
    return Side(entry, frames.get(pfn, Frame()) if pfn else Frame())


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _cell(row: Row, column: str, guest: str, model: str) -> Text:
    if column not in row.divergent:
        return Text(guest)
    return Text(f"{guest}\n[{model}]", style=DIVERGENT)


def _pfns(side: Side, step: int | None) -> str:
    """The PFN of a row's first page; ``..`` after it: consecutive PFNs from there."""
    return side.pfn_text() + (".." if step == 1 else "")


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _flags_text(flags: KpfFlags | None) -> str:
    return "-" if flags is None else " ".join(flags.names) or "(none)"


def _table(rows: Sequence[Row]) -> Table:
    table = Table(box=ASCII_RULES, pad_edge=False,
                  show_edge=False, expand=False, collapse_padding=True)
    for name in ("page", "vaddr"):
        table.add_column(name, no_wrap=True)
    table.add_column("guest PFN")
    table.add_column("model PFN")
    table.add_column("pagemap", no_wrap=True)
    table.add_column("kpageflags", ratio=1, min_width=10, overflow="fold")
    table.add_column("map", justify="right")
    table.add_column("ref", justify="right")
    for row in rows:
        g, m = row.guest, row.model
        page = f"{row.first}" if row.first == row.last else f"{row.first}-{row.last}"
        guest_pfn = _pfns(g, row.pfn_steps[0])
        model_pfn = _pfns(m, row.pfn_steps[1])
        flags = Text(_flags_text(g.frame.flags))
        if "kpageflags" in row.divergent and g.frame.flags and m.frame.flags:
            delta = flag_delta(m.frame.flags, g.frame.flags, ("model", "guest"))
            flags = Text(f"{_flags_text(g.frame.flags)}\n[{delta}]", style=DIVERGENT)
        elif "kpageflags" in row.divergent:
            flags = _cell(row, "kpageflags", _flags_text(g.frame.flags),
                          _flags_text(m.frame.flags))
        table.add_row(
            Text(("!" if row.divergent else "") + page, style=DIVERGENT if row.divergent else ""),
            f"{row.vaddr:#x}",
            _cell(row, "pfn", guest_pfn, "") if "pfn" in row.divergent else Text(guest_pfn),
            Text(model_pfn, style=DIVERGENT if "pfn" in row.divergent else ""),
            _cell(row, "pagemap", g.bits(), m.bits()),
            flags,
            _cell(row, "map", _count(g.frame.mapcount), _count(m.frame.mapcount)),
            _cell(row, "ref", _count(g.frame.refcount), _count(m.frame.refcount)),
        )
    return table


def _read_note(guest: RegionRead | None, model: RegionRead | None) -> str:
    """Why a region has no rows (a read failed or one side has no such region), or ''."""
    parts = []
    for label, read in (("guest", guest), ("model", model)):
        if read is None:
            parts.append(f"{label}: not read")
        elif read.pagemap.errno is not None:
            parts.append(f"{label}: pagemap {read.pagemap.describe()}")
    return "; ".join(parts)


@dataclass(frozen=True)
class _Run:
    result: ScenarioResult
    model: Observations | None
    real: Observations | None


class CheckTables:
    """The ``--show`` tables of a run: per scenario, per check step.

    ``runs``: (result, model observations, guest observations) per scenario;
    a scenario with either side missing (skipped, failed early) has no tables.
    """

    def __init__(self, runs: Iterable[tuple[ScenarioResult, Observations | None,
                                            Observations | None]]) -> None:
        self.runs = {(r.scenario, r.arch): _Run(r, m, g) for r, m, g in runs}

    def tables(self, result: ScenarioResult, step: int) -> list[Table | str]:
        """The tables of one check, each after its title line (a region without rows: the
        title line saying why)."""
        run = self.runs.get((result.scenario, result.arch))
        if run is None or run.model is None or run.real is None:
            return []
        try:
            arch = get_arch(run.real.arch)
        except UnknownArchError:
            return []
        guest = next((c for c in run.real.checks if c.step == step), None)
        model = next((c for c in run.model.checks if c.step == step), None)
        if guest is None and model is None:
            return []
        guest_frames, model_frames = _frames(arch, guest), _frames(arch, model)
        broken: dict[tuple[str | None, str | None], set[int]] = {}
        for d in result.divergences:
            if d.step == step and d.field == "pagemap.pfn" and d.page is not None:
                broken.setdefault((d.proc, d.region), set()).add(d.page)
        guest_regions = {(r.proc, r.region): r for r in (guest.regions if guest else ())}
        model_regions = {(r.proc, r.region): r for r in (model.regions if model else ())}
        out: list[Table | str] = []
        uid = (guest or model).reader_uid  # type: ignore[union-attr]
        for key in [*guest_regions, *(k for k in model_regions if k not in guest_regions)]:
            g, m = guest_regions.get(key), model_regions.get(key)
            base = g or m
            assert base is not None
            title = (f"{result.scenario} step {step} (check as uid {uid}): {key[0]} "
                     f"region {key[1]} @{base.vaddr:#x}, {base.pages} pages")
            rows = region_rows(arch, g, m, guest_frames, model_frames, broken.get(key, ()))
            note = _read_note(g, m)
            if not rows:
                out.append(f"{title}: {note or 'no entries'}")
                continue
            out += [title, _table(rows)]
            if note:
                out.append(note)
        return out

    def lines(self, result: ScenarioResult, step: int, width: int = 110) -> list[str]:
        """One check's tables as plain lines (no colour): KTAP diagnostics."""
        console = Console(file=io.StringIO(), width=width, color_system=None,
                          force_terminal=False, markup=False, highlight=False, emoji=False)
        for item in self.tables(result, step):
            console.print(item, soft_wrap=isinstance(item, str))
        text = console.file.getvalue()  # type: ignore[attr-defined]
        return [line.rstrip() for line in text.splitlines()]

    def text(self, *, terminal: bool | None = None) -> str:
        """Every scenario's tables, check by check, and the legend once.

        ``terminal``: colour and the terminal's width (default: stdout is a TTY);
        else plain text 80 columns wide (or $COLUMNS).
        """
        tty = sys.stdout.isatty() if terminal is None else terminal
        width = shutil.get_terminal_size((80, 24)).columns if tty else None
        console = Console(file=io.StringIO(), force_terminal=tty,
                          color_system="auto" if tty else None, width=width,
                          markup=False, highlight=False, emoji=False)
        console.print(PAGEMAP_LEGEND)
        for run in self.runs.values():
            steps = sorted({c.step for c in (run.real.checks if run.real else ())}
                           | {c.step for c in (run.model.checks if run.model else ())})
            for step in steps:
                console.print()
                for item in self.tables(run.result, step):
                    console.print(item)
        console.print()
        text: str = console.file.getvalue()  # type: ignore[attr-defined]
        return "".join(line.rstrip() + "\n" for line in text.splitlines())
