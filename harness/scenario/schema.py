"""The steps of a scenario file: one declaration per op, validated by pydantic.

Each op is one frozen pydantic dataclass below whose fields are the step's
JSON keys (``index`` aside: the step's position in ``steps``).  The
declaration is the whole definition of what a step may say: the loader
(:func:`parse_step`) derives the allowed keys, the required keys and each
value's check from it, and dispatches on ``"op"`` through a pydantic
discriminated union of every declared step type (:data:`STEP_TYPES`).  To add
an op: declare it here and add it to :data:`STEP_TYPES`; then give each
executor a handler (``harness/model_executor.py``, ``harness/guest_executor.py``)
and describe it in ``harness/SCENARIOS.md``.

Why pydantic (v2) rather than msgspec: its errors are structured (type, key
path, the offending value), so each can be turned into the one-line message
the loader has always given (``step 3 (mmap): kind 'heap' is not one of
'anon', 'file'``); msgspec's are preformatted English that would have to be
parsed back.  Every value check is a small function below that raises the
exact message; pydantic supplies the dispatch, the required/unknown key
logic and the frozen dataclasses.

Page numbers may be written in units of the architecture's THP size
(``"thp"``, ``"2*thp"``, ``"thp+1"``): :class:`NrPages` keeps them symbolic
until an architecture resolves them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args

from pydantic import (
    ConfigDict,
    Discriminator,
    PlainValidator,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic.dataclasses import dataclass

from sim.arch import Arch

__all__ = [
    "ADVICES",
    "BACKINGS",
    "CLEAR_REFS_VALUES",
    "PROTS",
    "SHARES",
    "STEP_TYPES",
    "Advice",
    "AnyStep",
    "Backing",
    "Check",
    "ClearRefs",
    "Exit",
    "Fork",
    "Madvise",
    "Mmap",
    "Mprotect",
    "Munmap",
    "NrPages",
    "PageRange",
    "PlaceAt",
    "Prot",
    "RangeStep",
    "Read",
    "ScenarioError",
    "ScenarioNotApplicable",
    "Share",
    "Step",
    "StepError",
    "Touch",
    "Write",
    "parse_step",
    "step_keys",
]

Backing = Literal["anon", "file", "memfd"]
Share = Literal["private", "shared"]
Prot = Literal["none", "r", "rw"]
Advice = Literal["dontneed", "hugepage"]

BACKINGS: tuple[Backing, ...] = get_args(Backing)
SHARES: tuple[Share, ...] = get_args(Share)
PROTS: tuple[Prot, ...] = get_args(Prot)
ADVICES: tuple[Advice, ...] = get_args(Advice)
#: clear_refs values (clear_refs_write() in fs/proc/task_mmu.c): 1 clears the
#: referenced/young bits of all pages, 2 of anonymous pages, 3 of file pages,
#: 4 resets soft-dirty, 5 resets the peak RSS.
CLEAR_REFS_VALUES = (1, 2, 3, 4, 5)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}\Z")
#: Bound on the numbers of a page number (far above MAX_PAGES): keeps every
#: number and its resolved value short enough to print.
_NUMBER_LIMIT = 1 << 32
_THP_EXPR = re.compile(r"\s*(?:(\d+)\s*\*\s*)?thp\s*(?:([+-])\s*(\d+))?\s*\Z")
#: Keys any step may carry for its readers; executors ignore them.
NOTE_KEYS = frozenset({"note"})
#: Validation context key: the values come from a scenario file.
_FROM_FILE = "from_file"
T = TypeVar("T")


class ScenarioError(ValueError):
    """A scenario file that cannot run; the message is one line naming the place."""


class ScenarioNotApplicable(ScenarioError):
    """A valid scenario that needs something the architecture lacks (THP)."""


class StepError(Exception):
    """A problem in one step; the loader turns it into a ScenarioError with the place."""


# ---------------------------------------------------------------------------
# Page numbers
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NrPages:
    """A number of pages: ``pages + thps * arch.thp_pages``.

    Written as an integer, or as ``"thp"``, ``"K*thp"``, ``"thp+N"``,
    ``"K*thp-N"`` (the THP size, HPAGE_PMD_NR, of the architecture the
    scenario runs on).  Used for region sizes and for page offsets in a region.
    """

    pages: int = 0
    thps: int = 0

    def resolve(self, arch: Arch) -> int:
        """The number on ``arch``; ScenarioNotApplicable if it needs THP and ``arch`` has none."""
        if self.thps and not arch.thp_pages:
            raise ScenarioNotApplicable(f"uses THP-sized counts; {arch.name} has no THP")
        return self.pages + self.thps * arch.thp_pages

    @property
    def symbolic(self) -> bool:
        """Whether the value depends on the architecture (a THP multiple)."""
        return self.thps != 0

    def __str__(self) -> str:
        if not self.thps:
            return str(self.pages)
        text = "thp" if self.thps == 1 else f"{self.thps}*thp"
        if self.pages:
            text += f"{'+' if self.pages > 0 else '-'}{abs(self.pages)}"
        return text

    @classmethod
    def parse(cls, value: object) -> NrPages:
        """From the JSON value; ValueError with a short reason."""
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{value!r} is not a page number (an integer or 'K*thp+N')")
        if isinstance(value, int):
            pages, thps = value, 0
        else:
            match = _THP_EXPR.match(value)
            if match is None:
                raise ValueError(f"{value!r} is not a page number (an integer or 'K*thp+N')")
            thps = int(match.group(1) or 1)
            pages = int(match.group(3) or 0)
            if match.group(2) == "-":
                pages = -pages
        if abs(pages) > _NUMBER_LIMIT or thps > _NUMBER_LIMIT:
            raise ValueError(f"{value!r} is out of range (numbers up to 2**32)")
        return cls(pages=pages, thps=thps)


@dataclasses.dataclass(frozen=True)
class PageRange:
    """Pages ``[first, end)`` of a region (JSON: ``[first, end]``)."""

    first: NrPages
    end: NrPages

    def __str__(self) -> str:
        return f"[{self.first}, {self.end})"

    @property
    def symbolic(self) -> bool:
        return self.first.symbolic or self.end.symbolic

    def resolve(self, arch: Arch) -> tuple[int, int]:
        return self.first.resolve(arch), self.end.resolve(arch)


@dataclasses.dataclass(frozen=True)
class PlaceAt:
    """Page ``page`` of region ``region``'s address range (JSON: ``{"region": R, "page": P}``).

    Where an mmap step's page 0 lands: P may equal R's length (directly after
    R's end, so the two touch).
    """

    region: str
    page: NrPages

    def __str__(self) -> str:
        return f"page {self.page} of region {self.region!r}"


# ---------------------------------------------------------------------------
# Value checks: each raises the message the loader prints after the step label
# ---------------------------------------------------------------------------


def _key(info: ValidationInfo) -> str:
    return info.field_name or "?"


def _check_name(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{_key(info)} {value!r} is not a name "
            "(a letter or _, then up to 31 letters, digits, _ or -)"
        )
    return value


#: (uid_t)-1 means "leave unchanged" to setresuid() (kernel/sys.c), so it is no uid to become.
MAX_UID = (1 << 32) - 2


def _check_uid(value: Any, info: ValidationInfo) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UID:
        raise ValueError(
            f"{_key(info)} {value!r} is not a uid (an integer 0..{MAX_UID}; "
            "4294967295 is (uid_t)-1, 'unchanged', to setresuid)"
        )
    return value


def _check_nr_pages(value: Any, info: ValidationInfo) -> NrPages:
    if isinstance(value, NrPages):  # a step built in Python
        return value
    try:
        return NrPages.parse(value)
    except ValueError as e:
        raise ValueError(f"{_key(info)}: {e}") from None


def _check_range(value: Any, info: ValidationInfo) -> PageRange:
    if isinstance(value, PageRange):  # a step built in Python
        return value
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(
            f"{_key(info)} {value!r} is not a range [first, end) of two page numbers"
        )
    bounds = []
    for i, item in enumerate(value):
        try:
            bounds.append(NrPages.parse(item))
        except ValueError as e:
            raise ValueError(f"{_key(info)}[{i}]: {e}") from None
    return PageRange(*bounds)


def _one_of(choices: tuple[str, ...]) -> PlainValidator:
    def check(value: Any, info: ValidationInfo) -> str:
        if not isinstance(value, str) or value not in choices:
            shown = ", ".join(map(repr, choices))
            raise ValueError(f"{_key(info)} {value!r} is not one of {shown}")
        return value

    return PlainValidator(check)


def _check_clear_refs(value: Any, info: ValidationInfo) -> int:
    # bool and float are rejected although True == 1 and 1.0 == 1.
    if type(value) is not int or value not in CLEAR_REFS_VALUES:
        raise ValueError(
            f"{_key(info)} {value!r} is not one of {', '.join(map(str, CLEAR_REFS_VALUES))}"
        )
    return value


def _check_flag(value: Any, info: ValidationInfo) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{_key(info)} {value!r} is not true or false")
    return value


def _check_place_at(value: Any, info: ValidationInfo) -> PlaceAt:
    if isinstance(value, PlaceAt):  # a step built in Python
        return value
    key = _key(info)
    if not isinstance(value, dict) or set(value) != {"region", "page"}:
        raise ValueError(f"{key} {value!r} is not an object {{\"region\": R, \"page\": P}}")
    region = value["region"]
    if not isinstance(region, str) or not _NAME.match(region):
        raise ValueError(f"{key}.region {region!r} is not a name "
                         "(a letter or _, then up to 31 letters, digits, _ or -)")
    try:
        page = NrPages.parse(value["page"])
    except ValueError as e:
        raise ValueError(f"{key}.page: {e}") from None
    if page.pages < 0 and not page.thps:
        raise ValueError(f"{key}.page {page} is negative")
    return PlaceAt(region, page)


Name = Annotated[str, PlainValidator(_check_name)]
Flag = Annotated[bool, PlainValidator(_check_flag)]


def _optional(check: Callable[[Any, ValidationInfo], T]) -> PlainValidator:
    """An optional key: absent means None; in a file, a null is checked (and refused)."""

    def validate(value: Any, info: ValidationInfo) -> T | None:
        if value is None and not (info.context or {}).get(_FROM_FILE):
            return None  # a step built in Python
        return check(value, info)

    return PlainValidator(validate)


OptionalName = Annotated[str | None, _optional(_check_name)]
OptionalUid = Annotated[int | None, _optional(_check_uid)]
OptionalPlaceAt = Annotated[PlaceAt | None, _optional(_check_place_at)]
Pages = Annotated[NrPages, PlainValidator(_check_nr_pages)]
Range = Annotated[PageRange, PlainValidator(_check_range)]

_CONFIG = ConfigDict(extra="ignore")  # unknown keys are reported by parse_step, all at once


# ---------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------


@dataclass(frozen=True, config=_CONFIG)
class Step:
    """One step; ``index`` is its position in the file's ``steps`` list."""

    op: ClassVar[str]
    #: Keys a step may leave out, with the value it then has ("proc": "main").
    defaults: ClassVar[Mapping[str, object]] = {"proc": "main"}
    index: int

    @property
    def label(self) -> str:
        """``step 3 (write)``: how messages and reports name the step."""
        return f"step {self.index} ({self.op})"

    def page_numbers(self) -> Iterator[NrPages]:
        """Every page number the step gives (THP multiples resolve per architecture)."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, NrPages):
                yield value
            elif isinstance(value, PageRange):
                yield value.first
                yield value.end


@dataclass(frozen=True, config=_CONFIG)
class Mmap(Step):
    """mmap() ``pages`` pages of a new region at its planned address.

    A ``file`` region is backed by a file of its own (see
    :func:`harness.scenario.tags.file_tag`); a ``memfd`` region by a memfd of
    its own (memfd_create() + ftruncate(), no page written).

    ``at``: the region's page 0 lands at that page of another region's
    address range (MAP_FIXED_NOREPLACE: EEXIST, the step's outcome, when
    anything is mapped there); with ``fixed`` MAP_FIXED instead (the pages it
    covers leave their region).  ``populate``: MAP_POPULATE; ``locked``:
    MAP_LOCKED (VM_LOCKED, and populated).  Without ``at`` the region gets an
    address range of its own.
    """

    op: ClassVar[str] = "mmap"
    proc: Name
    region: Name
    pages: Pages
    kind: Annotated[Backing, _one_of(BACKINGS)]
    share: Annotated[Share, _one_of(SHARES)]
    prot: Annotated[Prot, _one_of(PROTS)]
    at: OptionalPlaceAt = None
    fixed: Flag = False
    populate: Flag = False
    locked: Flag = False

    def page_numbers(self) -> Iterator[NrPages]:
        yield from super().page_numbers()
        if self.at is not None:
            yield self.at.page


@dataclass(frozen=True, config=_CONFIG)
class RangeStep(Step):
    """A step on the pages ``[first, end)`` of a region."""

    proc: Name
    region: Name
    pages: Range


@dataclass(frozen=True, config=_CONFIG)
class Touch(RangeStep):
    """Touch each page of the range in ascending order.

    The first page the kernel refuses (SIGSEGV) ends the touch; its address is
    the step's outcome.  Pages before it were touched.
    """

    #: A write stores a tag in each page; a read loads from it.
    write: ClassVar[bool]


@dataclass(frozen=True, config=_CONFIG)
class Write(Touch):
    """Store :func:`~harness.scenario.tags.write_tag` in the first 8 bytes of each page."""

    op: ClassVar[str] = "write"
    write: ClassVar[bool] = True


@dataclass(frozen=True, config=_CONFIG)
class Read(Touch):
    """Load the first 8 bytes of each page."""

    op: ClassVar[str] = "read"
    write: ClassVar[bool] = False


@dataclass(frozen=True, config=_CONFIG)
class Munmap(RangeStep):
    """munmap() the range (sys_munmap(), do_vmi_munmap() in mm/vma.c)."""

    op: ClassVar[str] = "munmap"


@dataclass(frozen=True, config=_CONFIG)
class Mprotect(RangeStep):
    """mprotect() the range to ``prot`` (mprotect_fixup() in mm/mprotect.c)."""

    op: ClassVar[str] = "mprotect"
    prot: Annotated[Prot, _one_of(PROTS)]


@dataclass(frozen=True, config=_CONFIG)
class Madvise(RangeStep):
    """madvise() the range with ``advice`` (madvise_vma_behavior() in mm/madvise.c)."""

    op: ClassVar[str] = "madvise"
    advice: Annotated[Advice, _one_of(ADVICES)]


@dataclass(frozen=True, config=_CONFIG)
class Fork(Step):
    """fork(): ``child`` gets a copy of ``proc``'s address space.

    With ``uid`` the child then becomes an ordinary process of that uid
    (setresuid, then PR_SET_DUMPABLE 1, since commit_creds() clears the
    dumpable flag on a uid change and /proc/pid files would stay root's).
    """

    op: ClassVar[str] = "fork"
    proc: Name
    child: Name
    uid: OptionalUid = None


@dataclass(frozen=True, config=_CONFIG)
class Exit(Step):
    """The process exits and is reaped before the next step."""

    op: ClassVar[str] = "exit"
    proc: Name


@dataclass(frozen=True, config=_CONFIG)
class ClearRefs(Step):
    """Write ``value`` to /proc/<proc>/clear_refs."""

    op: ClassVar[str] = "clear_refs"
    proc: Name
    value: Annotated[int, PlainValidator(_check_clear_refs)]


@dataclass(frozen=True, config=_CONFIG)
class Check(Step):
    """Observe the page-level files (see :attr:`harness.scenario.Scenario.targets`).

    ``as_uid``: every file is read as that uid (None: as root).  ``proc``:
    observe only that process (None: every live process).
    """

    op: ClassVar[str] = "check"
    defaults: ClassVar[Mapping[str, object]] = {}
    proc: OptionalName = None
    as_uid: OptionalUid = None

    @property
    def reader_uid(self) -> int:
        return 0 if self.as_uid is None else self.as_uid


AnyStep = Mmap | Write | Read | Munmap | Mprotect | Madvise | Fork | Exit | ClearRefs | Check

#: Every op a scenario file may use, by its name, in the order SCENARIOS.md lists them.
STEP_TYPES: dict[str, type[Step]] = {
    t.op: t for t in (Mmap, Write, Read, Munmap, Mprotect, Madvise, Fork, Exit, ClearRefs, Check)
}


# ---------------------------------------------------------------------------
# Parsing one step
# ---------------------------------------------------------------------------


def step_keys(step_type: type[Step]) -> frozenset[str]:
    """The JSON keys a step of ``step_type`` may carry, ``op`` and notes aside."""
    return frozenset(f.name for f in dataclasses.fields(step_type)) - {"index"}


def _required(step_type: type[Step]) -> tuple[str, ...]:
    return tuple(
        f.name
        for f in dataclasses.fields(step_type)
        if f.default is dataclasses.MISSING and f.name != "index"
        and f.name not in step_type.defaults
    )


#: Per op: (allowed keys, required keys), derived once from the declarations.
_KEYS = {op: (step_keys(t), _required(t)) for op, t in STEP_TYPES.items()}
_STEP_UNION: Any = Union[tuple(Annotated[t, Tag(op)] for op, t in STEP_TYPES.items())]  # noqa: UP007
_ADAPTER: TypeAdapter[Any] = TypeAdapter(
    Annotated[
        _STEP_UNION,
        Discriminator(lambda value: value.get("op") if isinstance(value, dict) else value.op),
    ]
)


def parse_step(index: int, obj: Mapping[str, Any]) -> AnyStep:
    """The step ``obj`` (a JSON object whose ``"op"`` is in :data:`STEP_TYPES`).

    StepError with the message the loader prints after ``step N (op):``:
    unknown keys (all of them, with the allowed ones), then a missing key,
    then the first bad value in declaration order.
    """
    keys, required = _KEYS[obj["op"]]
    unknown = set(obj) - keys - {"op"} - NOTE_KEYS
    if unknown:
        raise StepError(
            f"unknown key {', '.join(map(repr, sorted(unknown)))} "
            f"(allowed: {', '.join(sorted(keys))})"
        )
    for key in required:
        if key not in obj:
            raise StepError(f"missing {key!r}")
    fields = {key: obj[key] for key in keys if key in obj}
    try:
        step: AnyStep = _ADAPTER.validate_python(
            {**STEP_TYPES[obj["op"]].defaults, **fields, "op": obj["op"], "index": index},
            context={_FROM_FILE: True},
        )
    except ValidationError as e:
        raise StepError(_message(e)) from None
    return step


def _message(error: ValidationError) -> str:
    """The first error as the loader words it (value checks raise the final text)."""
    first = error.errors(include_url=False)[0]
    if first["type"] == "value_error":
        return str(first["ctx"]["error"])
    key = ".".join(str(part) for part in first["loc"][1:])
    if first["type"] == "missing":
        return f"missing {key!r}"
    return f"{key}: {first['msg']}"  # pragma: no cover - every field has a value check
