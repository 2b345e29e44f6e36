"""Scenarios: the JSON file, its steps as data, and what both executors share.

A scenario is ``{"name": ..., "steps": [...]}``; every step is an object with
an ``"op"``.  The file format is described for authors in
``harness/SCENARIOS.md``.  This module

* parses and validates a file into frozen :class:`Step` dataclasses, before
  anything boots (:func:`load_scenario`; every problem is one
  :class:`ScenarioError` line naming the file, the step index and op);
* places every region at a fixed virtual address computed from the
  architecture (:func:`plan_layout`), so the model and the guest map the same
  addresses;
* derives the 64-bit tag every write stores in a page and the contents of
  every file page (:func:`write_tag`, :func:`file_tag`), so the RAM oracle
  knows what each frame must hold.

Page counts may be written in units of the architecture's THP size
(``"thp"``, ``"2*thp"``, ``"thp+1"``): the same file then runs unchanged on
every architecture.  A scenario that uses them does not apply to an
architecture without THP (:meth:`Scenario.unsupported_reason`).
"""

from __future__ import annotations

import bisect
import json
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from sim.arch import ARCH_NAMES, Arch, get_arch

__all__ = [
    "ADVICES",
    "CLEAR_REFS_VALUES",
    "KINDS",
    "LAYOUT_SPAN",
    "MAX_OBSERVATIONS",
    "MAX_PAGES",
    "MAX_PROCS",
    "MAX_REGIONS",
    "MAX_STEPS",
    "PROTS",
    "SHARES",
    "AnyStep",
    "Check",
    "ClearRefs",
    "Exit",
    "Fork",
    "Layout",
    "Madvise",
    "Mmap",
    "Mprotect",
    "Munmap",
    "PageCount",
    "Placement",
    "RangeStep",
    "Read",
    "Scenario",
    "ScenarioError",
    "ScenarioNotApplicable",
    "Span",
    "Step",
    "Target",
    "Touch",
    "Write",
    "describe_tag",
    "file_tag",
    "layout_alignment",
    "layout_base",
    "load_scenario",
    "parse_scenario",
    "plan_layout",
    "write_tag",
]

Kind = Literal["anon", "file"]
Share = Literal["private", "shared"]
Prot = Literal["none", "r", "rw"]
Advice = Literal["dontneed", "hugepage"]

KINDS: tuple[Kind, ...] = ("anon", "file")
SHARES: tuple[Share, ...] = ("private", "shared")
PROTS: tuple[Prot, ...] = ("none", "r", "rw")
ADVICES: tuple[Advice, ...] = ("dontneed", "hugepage")
#: clear_refs values (clear_refs_write() in fs/proc/task_mmu.c): 1 clears the
#: referenced/young bits of all pages, 2 of anonymous pages, 3 of file pages,
#: 4 resets soft-dirty, 5 resets the peak RSS.
CLEAR_REFS_VALUES = (1, 2, 3, 4, 5)

#: Limits that keep tags unique (see :func:`write_tag`) and checks fast.
MAX_STEPS = 1 << 16
MAX_REGIONS = 1 << 8
MAX_PAGES = 1 << 24
#: Processes alive at once, ``main`` included: the guest agent's table of
#: named processes (MAX_PROCS in harness/agent/procs.c).
MAX_PROCS = 64
#: (check, process, region) observations of a whole scenario: each is a
#: pagemap read in the guest, and the loader keeps their list.
MAX_OBSERVATIONS = 1 << 16
#: Every region of a scenario lies in [layout_base, layout_base + LAYOUT_SPAN).
LAYOUT_SPAN = 1 << 30

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}\Z")
_SCENARIO_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
#: Bound on the numbers of a page count (far above MAX_PAGES): keeps every
#: count and its resolved value short enough to print.
_COUNT_LIMIT = 1 << 32
_THP_COUNT = re.compile(r"\s*(?:(\d+)\s*\*\s*)?thp\s*(?:([+-])\s*(\d+))?\s*\Z")
#: Keys a file may carry for its readers; executors ignore them.
_NOTE_KEYS = frozenset({"description"})
_STEP_NOTE_KEYS = frozenset({"note"})


class ScenarioError(ValueError):
    """A scenario file that cannot run; the message is one line naming the place."""


class ScenarioNotApplicable(ScenarioError):
    """A valid scenario that needs something the architecture lacks (THP)."""


# ---------------------------------------------------------------------------
# Page counts
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PageCount:
    """A number of pages: ``pages + thps * arch.thp_pages``.

    Written as an integer, or as ``"thp"``, ``"K*thp"``, ``"thp+N"``,
    ``"K*thp-N"`` (the THP size of the architecture the scenario runs on).
    """

    pages: int = 0
    thps: int = 0

    def resolve(self, arch: Arch) -> int:
        if self.thps and not arch.thp_pages:
            raise ScenarioNotApplicable(f"uses THP-sized counts; {arch.name} has no THP")
        return self.pages + self.thps * arch.thp_pages

    @property
    def symbolic(self) -> bool:
        return self.thps != 0

    def __str__(self) -> str:
        if not self.thps:
            return str(self.pages)
        text = "thp" if self.thps == 1 else f"{self.thps}*thp"
        if self.pages:
            text += f"{'+' if self.pages > 0 else '-'}{abs(self.pages)}"
        return text

    @classmethod
    def parse(cls, value: object) -> PageCount:
        """From the JSON value; ValueError with a short reason."""
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{value!r} is not a page number (an integer or 'K*thp+N')")
        if isinstance(value, int):
            pages, thps = value, 0
        else:
            match = _THP_COUNT.match(value)
            if match is None:
                raise ValueError(f"{value!r} is not a page number (an integer or 'K*thp+N')")
            thps = int(match.group(1) or 1)
            pages = int(match.group(3) or 0)
            if match.group(2) == "-":
                pages = -pages
        if abs(pages) > _COUNT_LIMIT or thps > _COUNT_LIMIT:
            raise ValueError(f"{value!r} is out of range (numbers up to 2**32)")
        return cls(pages=pages, thps=thps)


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step; ``index`` is its position in the file's ``steps`` list."""

    op: ClassVar[str]
    index: int

    @property
    def label(self) -> str:
        """``step 3 (write)``: how messages and reports name the step."""
        return f"step {self.index} ({self.op})"


@dataclass(frozen=True)
class Mmap(Step):
    """mmap() ``pages`` pages of a new region at its planned address.

    A ``file`` region is backed by a file of its own (see :func:`file_tag`).
    """

    op: ClassVar[str] = "mmap"
    proc: str
    region: str
    pages: PageCount
    kind: Kind
    share: Share
    prot: Prot


@dataclass(frozen=True)
class RangeStep(Step):
    """A step on the pages ``[first, end)`` of a region."""

    proc: str
    region: str
    first: PageCount
    end: PageCount


@dataclass(frozen=True)
class Touch(RangeStep):
    """Touch each page of the range in ascending order.

    The first page the kernel refuses (SIGSEGV) ends the touch; its address is
    the step's outcome.  Pages before it were touched.
    """

    @property
    def write(self) -> bool:
        return isinstance(self, Write)


@dataclass(frozen=True)
class Write(Touch):
    """Store :func:`write_tag` in the first 8 bytes of each page."""

    op: ClassVar[str] = "write"


@dataclass(frozen=True)
class Read(Touch):
    """Load the first 8 bytes of each page."""

    op: ClassVar[str] = "read"


@dataclass(frozen=True)
class Munmap(RangeStep):
    op: ClassVar[str] = "munmap"


@dataclass(frozen=True)
class Mprotect(RangeStep):
    op: ClassVar[str] = "mprotect"
    prot: Prot


@dataclass(frozen=True)
class Madvise(RangeStep):
    op: ClassVar[str] = "madvise"
    advice: Advice


@dataclass(frozen=True)
class Fork(Step):
    """fork(): ``child`` gets a copy of ``proc``'s address space.

    With ``uid`` the child then becomes an ordinary process of that uid
    (setresuid, then PR_SET_DUMPABLE 1, since commit_creds() clears the
    dumpable flag on a uid change and /proc/pid files would stay root's).
    """

    op: ClassVar[str] = "fork"
    proc: str
    child: str
    uid: int | None = None


@dataclass(frozen=True)
class Exit(Step):
    """The process exits and is reaped before the next step."""

    op: ClassVar[str] = "exit"
    proc: str


@dataclass(frozen=True)
class ClearRefs(Step):
    """Write ``value`` to /proc/<proc>/clear_refs."""

    op: ClassVar[str] = "clear_refs"
    proc: str
    value: int


@dataclass(frozen=True)
class Check(Step):
    """Observe the page-level files (see :attr:`Scenario.targets`).

    ``as_uid``: every file is read as that uid (None: as root).  ``proc``:
    observe only that process (None: every live process).
    """

    op: ClassVar[str] = "check"
    proc: str | None = None
    as_uid: int | None = None

    @property
    def reader_uid(self) -> int:
        return 0 if self.as_uid is None else self.as_uid


AnyStep = Mmap | Write | Read | Munmap | Mprotect | Madvise | Fork | Exit | ClearRefs | Check


@dataclass(frozen=True)
class Target:
    """One (process, region) pair a check reads the pagemap of."""

    proc: str
    region: str


@dataclass(frozen=True)
class Scenario:
    """A validated scenario, independent of the architecture.

    ``targets`` maps the index of every check step to the (process, region)
    pairs it observes, in a fixed order: processes in order of creation, and
    for each every region it has had (its own mmaps and those inherited at
    fork, including regions since unmapped, whose range then reads as holes).
    """

    name: str
    path: str
    steps: tuple[AnyStep, ...]
    targets: Mapping[int, tuple[Target, ...]] = field(compare=False)
    description: str = ""

    @property
    def regions(self) -> tuple[Mmap, ...]:
        """The mmap steps, in order: region number n is ``regions[n]``."""
        return tuple(step for step in self.steps if isinstance(step, Mmap))

    @property
    def region_numbers(self) -> dict[str, int]:
        return {step.region: n for n, step in enumerate(self.regions)}

    @property
    def procs(self) -> tuple[str, ...]:
        """Every process name, in order of creation (``main`` first)."""
        return ("main", *(step.child for step in self.steps if isinstance(step, Fork)))

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(step for step in self.steps if isinstance(step, Check))

    @property
    def uses_thp_counts(self) -> bool:
        return any(count.symbolic for step in self.steps for count in _counts(step))

    def unsupported_reason(self, arch: Arch) -> str | None:
        """Why this scenario cannot run on ``arch`` (None: it can)."""
        if self.uses_thp_counts and not arch.thp_pages:
            return f"scenario {self.name} uses THP-sized counts; {arch.name} has no THP"
        return None

    def step_label(self, index: int) -> str:
        if 0 <= index < len(self.steps):
            return self.steps[index].label
        return f"step {index} (?)"


def _counts(step: AnyStep) -> Iterator[PageCount]:
    if isinstance(step, Mmap):
        yield step.pages
    elif isinstance(step, RangeStep):
        yield step.first
        yield step.end


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


class _StepError(Exception):
    """A problem in one step; turned into a ScenarioError with the place."""


def _get(obj: Mapping[str, Any], key: str) -> Any:
    if key not in obj:
        raise _StepError(f"missing {key!r}")
    return obj[key]


def _name(obj: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default) if default is not None else _get(obj, key)
    if not isinstance(value, str) or not _NAME.match(value):
        raise _StepError(
            f"{key} {value!r} is not a name (a letter or _, then up to 31 letters, digits, _ or -)"
        )
    return value


def _choice(obj: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> Any:
    value = _get(obj, key)
    if value not in choices:
        raise _StepError(f"{key} {value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def _uid(obj: Mapping[str, Any], key: str) -> int | None:
    if key not in obj:
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise _StepError(f"{key} {value!r} is not a uid (an integer 0..2**32-1)")
    return value


def _count(value: object, what: str) -> PageCount:
    try:
        return PageCount.parse(value)
    except ValueError as e:
        raise _StepError(f"{what}: {e}") from None


def _range(obj: Mapping[str, Any]) -> tuple[PageCount, PageCount]:
    value = _get(obj, "pages")
    if not isinstance(value, list) or len(value) != 2:
        raise _StepError(f"pages {value!r} is not a range [first, end) of two page numbers")
    return _count(value[0], "pages[0]"), _count(value[1], "pages[1]")


_STEP_KEYS: dict[str, frozenset[str]] = {
    "mmap": frozenset({"region", "pages", "kind", "share", "prot"}),
    "write": frozenset({"region", "pages"}),
    "read": frozenset({"region", "pages"}),
    "munmap": frozenset({"region", "pages"}),
    "mprotect": frozenset({"region", "pages", "prot"}),
    "madvise": frozenset({"region", "pages", "advice"}),
    "fork": frozenset({"child", "uid"}),
    "exit": frozenset(),
    "clear_refs": frozenset({"value"}),
    "check": frozenset({"as_uid"}),
}
_RANGE_OPS: dict[str, type[Write | Read | Munmap]] = {
    "write": Write,
    "read": Read,
    "munmap": Munmap,
}


def _parse_step(index: int, obj: Mapping[str, Any]) -> AnyStep:
    op = obj["op"]
    unknown = set(obj) - _STEP_KEYS[op] - {"op", "proc"} - _STEP_NOTE_KEYS
    if unknown:
        allowed = sorted(_STEP_KEYS[op] | {"proc"})
        raise _StepError(
            f"unknown key {', '.join(map(repr, sorted(unknown)))} (allowed: {', '.join(allowed)})"
        )
    if op == "check":
        proc = _name(obj, "proc") if "proc" in obj else None
        return Check(index, proc=proc, as_uid=_uid(obj, "as_uid"))
    proc = _name(obj, "proc", "main")
    if op == "mmap":
        return Mmap(
            index,
            proc=proc,
            region=_name(obj, "region"),
            pages=_count(_get(obj, "pages"), "pages"),
            kind=_choice(obj, "kind", KINDS),
            share=_choice(obj, "share", SHARES),
            prot=_choice(obj, "prot", PROTS),
        )
    if op in _RANGE_OPS:
        first, end = _range(obj)
        return _RANGE_OPS[op](index, proc=proc, region=_name(obj, "region"), first=first, end=end)
    if op == "mprotect":
        first, end = _range(obj)
        region = _name(obj, "region")
        prot = _choice(obj, "prot", PROTS)
        return Mprotect(index, proc=proc, region=region, first=first, end=end, prot=prot)
    if op == "madvise":
        first, end = _range(obj)
        region = _name(obj, "region")
        advice = _choice(obj, "advice", ADVICES)
        return Madvise(index, proc=proc, region=region, first=first, end=end, advice=advice)
    if op == "fork":
        return Fork(index, proc=proc, child=_name(obj, "child"), uid=_uid(obj, "uid"))
    if op == "exit":
        return Exit(index, proc=proc)
    if op == "clear_refs":
        value = _get(obj, "value")
        if isinstance(value, bool) or not isinstance(value, int) or value not in (
            CLEAR_REFS_VALUES
        ):
            raise _StepError(
                f"value {value!r} is not one of {', '.join(map(str, CLEAR_REFS_VALUES))}"
            )
        return ClearRefs(index, proc=proc, value=value)
    raise AssertionError(op)  # pragma: no cover - _STEP_KEYS lists every op


def parse_scenario(data: object, path: str = "<scenario>") -> Scenario:
    """Validate the decoded JSON of a scenario file (see :func:`load_scenario`)."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the top level is not an object with 'name' and 'steps'")
    unknown = set(data) - {"name", "steps"} - _NOTE_KEYS
    if unknown:
        raise ScenarioError(
            f"{path}: unknown top-level key {', '.join(map(repr, sorted(unknown)))} "
            "(allowed: name, steps, description)"
        )
    name = data.get("name")
    if not isinstance(name, str) or not _SCENARIO_NAME.match(name):
        raise ScenarioError(
            f"{path}: name {name!r} is not a scenario name (letters, digits, _ . -; up to 64)"
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{path}: description is not a string")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(f"{path}: 'steps' is not a non-empty list")
    if len(raw_steps) > MAX_STEPS:
        raise ScenarioError(f"{path}: {len(raw_steps)} steps; at most {MAX_STEPS}")

    steps: list[AnyStep] = []
    for index, obj in enumerate(raw_steps):
        if not isinstance(obj, dict):
            raise ScenarioError(f"{path}: step {index}: not an object with an 'op'")
        op = obj.get("op")
        if not isinstance(op, str) or op not in _STEP_KEYS:
            raise ScenarioError(
                f"{path}: step {index} ({op}): unknown op {op!r} "
                f"(known: {', '.join(_STEP_KEYS)})"
            )
        try:
            steps.append(_parse_step(index, obj))
        except _StepError as e:
            raise ScenarioError(f"{path}: step {index} ({op}): {e}") from None

    targets = _validate_flow(steps, path)
    scenario = Scenario(
        name=name, path=path, steps=tuple(steps), targets=targets, description=description
    )
    for arch_name in ARCH_NAMES:
        arch = get_arch(arch_name)
        if scenario.unsupported_reason(arch) is None:
            _validate_ranges(scenario, arch)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; ScenarioError (one line) if it cannot run.

    The scenario is validated for every architecture it applies to, so a file
    that loads runs everywhere (or says why not: unsupported_reason()).
    """
    text_path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{text_path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{text_path}: not UTF-8 text: {e.reason} at byte {e.start}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScenarioError(
            f"{text_path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise ScenarioError(f"{text_path}: not usable JSON: nested too deeply") from None
    except ValueError:  # an integer beyond Python's int-from-text limit
        raise ScenarioError(
            f"{text_path}: not usable JSON: a number has more than "
            f"{sys.get_int_max_str_digits()} digits"
        ) from None
    return parse_scenario(data, text_path)


# ---------------------------------------------------------------------------
# Flow validation: names defined before use, nothing used after exit
# ---------------------------------------------------------------------------


def _validate_flow(steps: list[AnyStep], path: str) -> dict[int, tuple[Target, ...]]:
    """Check names against the processes and regions that exist at each step.

    Returns the targets of every check.  Page ranges are validated per
    architecture by :func:`_validate_ranges`.
    """
    alive: dict[str, list[str]] = {"main": []}  # process -> regions it has had, in order
    uids = {"main": 0}  # process -> its uid
    created = ["main"]
    exited: dict[str, int] = {}
    region_owner: dict[str, str] = {}
    targets: dict[int, tuple[Target, ...]] = {}
    observations = 0

    def fail(step: AnyStep, message: str) -> ScenarioError:
        return ScenarioError(f"{path}: {step.label}: {message}")

    def need_proc(step: AnyStep, proc: str) -> None:
        if proc in exited:
            raise fail(step, f"process {proc!r} exited at step {exited[proc]}")
        if proc not in alive:
            raise fail(step, f"process {proc!r} is not defined (forked) before this step")

    for step in steps:
        if isinstance(step, Check):
            if step.proc is not None:
                need_proc(step, step.proc)
            procs = [p for p in created if p in alive and step.proc in (None, p)]
            observations += sum(len(alive[proc]) for proc in procs)
            if observations > MAX_OBSERVATIONS:
                raise fail(
                    step,
                    f"the checks so far observe more than {MAX_OBSERVATIONS} "
                    "(process, region) pairs",
                )
            targets[step.index] = tuple(
                Target(proc, region) for proc in procs for region in alive[proc]
            )
            continue
        need_proc(step, step.proc)
        if isinstance(step, Mmap):
            if step.region in region_owner:
                raise fail(
                    step,
                    f"region {step.region!r} is already defined (regions are mapped once)",
                )
            if len(region_owner) >= MAX_REGIONS:
                raise fail(step, f"more than {MAX_REGIONS} regions")
            region_owner[step.region] = step.proc
            alive[step.proc].append(step.region)
        elif isinstance(step, RangeStep):
            if step.region not in region_owner:
                raise fail(step, f"region {step.region!r} is not defined (mmap) before this step")
            if step.region not in alive[step.proc]:
                raise fail(
                    step,
                    f"region {step.region!r} belongs to {region_owner[step.region]!r}, "
                    f"not to {step.proc!r} (nor was it inherited by fork)",
                )
        elif isinstance(step, Fork):
            if step.child in created:
                raise fail(step, f"process name {step.child!r} is already used")
            if len(alive) >= MAX_PROCS:
                raise fail(step, f"more than {MAX_PROCS} processes alive at once")
            parent_uid = uids[step.proc]
            if step.uid is not None and parent_uid != 0 and step.uid != parent_uid:
                # setresuid() to another uid needs CAP_SETUID (kernel/sys.c).
                raise fail(
                    step,
                    f"process {step.proc!r} has uid {parent_uid}: its child cannot become "
                    f"uid {step.uid} (only uid 0 may change uid)",
                )
            alive[step.child] = list(alive[step.proc])
            uids[step.child] = parent_uid if step.uid is None else step.uid
            created.append(step.child)
        elif isinstance(step, Exit):
            del alive[step.proc]
            exited[step.proc] = step.index
    return targets


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

    def unmap(self, first: int, end: int, by: int) -> None:
        """Mark [first, end) unmapped by step ``by``; the range is mapped (first_hole None)."""
        i = bisect.bisect_right(self.starts, first) - 1
        start, stop, _ = self.runs[i]
        pieces = [(start, first, None), (first, end, by), (end, stop, None)]
        self.runs[i : i + 1] = [run for run in pieces if run[0] < run[1]]
        self.starts[i : i + 1] = [run[0] for run in pieces if run[0] < run[1]]


def _validate_ranges(scenario: Scenario, arch: Arch) -> None:
    """Sizes and page ranges on ``arch``: in the region, and mapped where used."""
    path = scenario.path

    def fail(step: AnyStep, message: str) -> ScenarioError:
        where = f" on {arch.name}" if any(c.symbolic for c in _counts(step)) else ""
        return ScenarioError(f"{path}: {step.label}: {message}{where}")

    layout = plan_layout(scenario, arch)
    limit = min(layout_base(arch) + LAYOUT_SPAN, arch.task_size)
    sizes: dict[str, int] = {}
    # Mapped pages per process and region (and the step that unmapped a page).
    mapped: dict[str, dict[str, _PageRuns]] = {"main": {}}
    for step in scenario.steps:
        if isinstance(step, Mmap):
            n = step.pages.resolve(arch)
            if not 1 <= n <= MAX_PAGES:
                raise fail(step, f"pages {step.pages} = {n}; a region has 1..{MAX_PAGES} pages")
            _check_fits(scenario, arch, layout[step.region], limit)
            sizes[step.region] = n
            mapped[step.proc][step.region] = _PageRuns.mapped(n)
        elif isinstance(step, RangeStep):
            first, end = step.first.resolve(arch), step.end.resolve(arch)
            n = sizes[step.region]
            shown = f"pages [{step.first}, {step.end})"
            if step.first.symbolic or step.end.symbolic:
                shown += f" = [{first}, {end})"
            if not 0 <= first < end <= n:
                raise fail(
                    step,
                    f"{shown} is not a non-empty range inside region "
                    f"{step.region!r} of {n} pages",
                )
            runs = mapped[step.proc][step.region]
            hole = runs.first_hole(first, end)
            if hole is not None:
                page, by = hole
                raise fail(
                    step,
                    f"{shown}: page {page} of region {step.region!r} is not mapped "
                    f"in {step.proc!r} (unmapped at step {by})",
                )
            if isinstance(step, Munmap):
                runs.unmap(first, end, step.index)
        elif isinstance(step, Fork):
            mapped[step.child] = {r: runs.copy() for r, runs in mapped[step.proc].items()}


# ---------------------------------------------------------------------------
# Layout: one fixed address per region, the same in the model and the guest
# ---------------------------------------------------------------------------


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
        return Span(self[step.region], step.first.resolve(self.arch), step.end.resolve(self.arch))

    def write_tag_base(self, step: Write) -> int:
        """The tag of the first page of a write step; page k of the step gets this + k."""
        span = self.span(step)
        return write_tag(step.index, span.placement.number, span.first)

    def file_tag_base(self, region: str) -> int:
        """The tag of page 0 of a file region's file; page i holds this + i."""
        return file_tag(self[region].number, 0)

    def write_tags(self, step: Write) -> list[int]:
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
    alignment unit after the end of the previous one.  ScenarioNotApplicable
    if the scenario needs THP and ``arch`` has none.
    """
    reason = scenario.unsupported_reason(arch)
    if reason is not None:
        raise ScenarioNotApplicable(f"{scenario.path}: {reason}")
    align = layout_alignment(arch)
    cursor = layout_base(arch)
    placements: dict[str, Placement] = {}
    for number, step in enumerate(scenario.regions):
        vaddr = (cursor + align - 1) // align * align
        pages = step.pages.resolve(arch)
        placements[step.region] = Placement(
            step.region, number, vaddr, pages, arch.page_size, step
        )
        cursor = vaddr + pages * arch.page_size + align
    return Layout(scenario, arch, placements)


def _check_fits(scenario: Scenario, arch: Arch, placement: Placement, limit: int) -> None:
    """ScenarioError unless ``placement`` ends below ``limit`` (checked at its mmap,
    before anything is built for the region's pages)."""
    if placement.end > limit:
        raise ScenarioError(
            f"{scenario.path}: {placement.mmap.label}: region {placement.region!r} "
            f"ends at {placement.end:#x}, beyond the layout limit {limit:#x} on {arch.name} "
            f"(all regions together must fit in {LAYOUT_SPAN >> 20} MiB)"
        )


# ---------------------------------------------------------------------------
# Tags: what each page must hold
# ---------------------------------------------------------------------------

#: Top 16 bits of a tag: which kind of store put it there.
WRITE_TAG_MAGIC = 0x5754  # "WT"
FILE_TAG_MAGIC = 0x4654  # "FT"


def write_tag(step: int, region_number: int, page: int) -> int:
    """The u64 a write step stores in the first 8 bytes of a page.

    Bits 63-48 ``WRITE_TAG_MAGIC``, 47-32 the step index, 31-24 the region
    number, 23-0 the page index: unique within a scenario, never 0 (a fresh
    anonymous page or the zero page reads 0), never a file tag.  Stored as a
    u64 in the architecture's byte order.  Linear in the page
    (``write_tag(s, n, p + k) == write_tag(s, n, p) + k``), so an agent can
    be given the first page's tag and store tag + k in the k-th page.
    """
    if not (0 <= step < MAX_STEPS and 0 <= region_number < MAX_REGIONS and 0 <= page < MAX_PAGES):
        raise ValueError(f"tag fields out of range: step {step}, region {region_number}, "
                         f"page {page}")
    return WRITE_TAG_MAGIC << 48 | step << 32 | region_number << 24 | page


def file_tag(region_number: int, page: int) -> int:
    """The u64 in the first 8 bytes of page ``page`` of a file region's file.

    The backing file of region number n has ``pages`` pages; page p starts
    with ``file_tag(n, p)`` as a u64 in the architecture's byte order, and the
    rest of the page is zero.  Linear in the page, like :func:`write_tag`.
    """
    if not (0 <= region_number < MAX_REGIONS and 0 <= page < MAX_PAGES):
        raise ValueError(f"tag fields out of range: region {region_number}, page {page}")
    return FILE_TAG_MAGIC << 48 | region_number << 24 | page


def describe_tag(tag: int, scenario: Scenario | None = None) -> str:
    """A tag in words, for reports: ``0x... (write of step 4, region 'a' page 2)``."""
    magic = tag >> 48
    number = tag >> 24 & 0xFF
    page = tag & 0xFF_FFFF
    region = f"#{number}"
    if scenario is not None and number < len(scenario.regions):
        region = repr(scenario.regions[number].region)
    if tag == 0:
        return "0x0 (zero: never written)"
    if magic == WRITE_TAG_MAGIC:
        return f"{tag:#x} (write of step {tag >> 32 & 0xFFFF}, region {region} page {page})"
    if magic == FILE_TAG_MAGIC and not tag >> 32 & 0xFFFF:
        return f"{tag:#x} (file contents, region {region} page {page})"
    return f"{tag:#x} (not a tag)"
