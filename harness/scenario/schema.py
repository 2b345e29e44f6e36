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
    "SCAN_CATEGORIES",
    "SCAN_FLAGS",
    "SCAN_VEC_LEN_MAX",
    "SHARES",
    "STEP_TYPES",
    "Advice",
    "AnyStep",
    "Backing",
    "Check",
    "ClearRefs",
    "Exit",
    "Fork",
    "Ksm",
    "Madvise",
    "Mlock",
    "Mmap",
    "Mprotect",
    "Mremap",
    "Munlock",
    "Munmap",
    "NrPages",
    "PageRange",
    "PagemapScan",
    "Prot",
    "RangeStep",
    "RangeStepWithHoles",
    "Read",
    "RegionPage",
    "ScenarioError",
    "ScenarioNotApplicable",
    "Share",
    "Step",
    "StepError",
    "Swapoff",
    "Swapon",
    "Touch",
    "UffdRegister",
    "UffdWp",
    "Write",
    "parse_step",
    "step_keys",
]

Backing = Literal["anon", "file", "memfd", "hugetlb"]
Share = Literal["private", "shared"]
Prot = Literal["none", "r", "rw"]
Advice = Literal[
    "dontneed", "hugepage", "nohugepage", "free", "cold", "pageout", "willneed", "remove",
    "mergeable", "unmergeable", "populate_read", "populate_write", "collapse", "dontfork",
    "dofork", "wipeonfork", "keeponfork",
]

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
_THP_EXPR = re.compile(r"\s*(?:(\d+)\s*\*\s*)?(thp|huge)\s*(?:([+-])\s*(\d+))?\s*\Z")
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
    """A number of pages: ``pages + thps * arch.thp_pages + huges * arch.hugetlb_page_pages``.

    Written as an integer, or as ``"thp"``, ``"K*thp"``, ``"thp+N"``,
    ``"K*thp-N"`` (the THP size, HPAGE_PMD_NR, of the architecture the
    scenario runs on), or the same with ``huge`` (the architecture's default
    hugetlb page size in base pages, pages_per_huge_page(&default_hstate)).
    Used for region sizes and for page offsets in a region.
    """

    pages: int = 0
    thps: int = 0
    huges: int = 0

    def resolve(self, arch: Arch) -> int:
        """The number on ``arch``; ScenarioNotApplicable if it needs THP (hugetlb pages)
        and ``arch`` has none."""
        if self.thps and not arch.thp_pages:
            raise ScenarioNotApplicable(f"uses THP-sized counts; {arch.name} has no THP")
        if self.huges and not arch.hugetlb_page_pages:
            raise ScenarioNotApplicable(
                f"uses hugetlb-sized counts; {arch.name} has no hugetlb pages"
            )
        return self.pages + self.thps * arch.thp_pages + self.huges * arch.hugetlb_page_pages

    @property
    def symbolic(self) -> bool:
        """Whether the value depends on the architecture (a THP or hugetlb multiple)."""
        return self.thps != 0 or self.huges != 0

    def __str__(self) -> str:
        if not self.thps and not self.huges:
            return str(self.pages)
        unit, k = ("thp", self.thps) if self.thps else ("huge", self.huges)
        text = unit if k == 1 else f"{k}*{unit}"
        if self.pages:
            text += f"{'+' if self.pages > 0 else '-'}{abs(self.pages)}"
        return text

    @classmethod
    def parse(cls, value: object) -> NrPages:
        """From the JSON value; ValueError with a short reason."""
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{value!r} is not a page number (an integer or 'K*thp+N')")
        thps = huges = 0
        if isinstance(value, int):
            pages = value
        else:
            match = _THP_EXPR.match(value)
            if match is None:
                raise ValueError(
                    f"{value!r} is not a page number (an integer, 'K*thp+N' or 'K*huge+N')"
                )
            k = int(match.group(1) or 1)
            if match.group(2) == "thp":
                thps = k
            else:
                huges = k
            pages = int(match.group(4) or 0)
            if match.group(3) == "-":
                pages = -pages
        if abs(pages) > _NUMBER_LIMIT or thps > _NUMBER_LIMIT or huges > _NUMBER_LIMIT:
            raise ValueError(f"{value!r} is out of range (numbers up to 2**32)")
        return cls(pages=pages, thps=thps, huges=huges)


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
class RegionPage:
    """Page ``page`` of region ``region``'s address range (JSON: ``{"region": R, "page": P}``).

    An address, not a mapping: the range stays reserved for the region after
    it is unmapped, and ``page`` may lie beyond the region's mapped pages.
    Where an mmap step's page 0 lands (``at``: P may equal R's length, directly
    after R's end, so the two touch) or an mremap moves to (``to``).
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


#: The range of a C int: madvise()'s ``behavior`` argument.
ADVICE_NUMBERS = range(-(1 << 31), 1 << 31)


def _check_advice(value: Any, info: ValidationInfo) -> str | int:
    if isinstance(value, str) and value in ADVICES:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value in ADVICE_NUMBERS:
        return value
    shown = ", ".join(map(repr, ADVICES))
    raise ValueError(
        f"{_key(info)} {value!r} is not one of {shown}, or a C int (a raw MADV_* number)"
    )


def _check_holes(value: Any, info: ValidationInfo) -> bool:
    if value is not True:
        raise ValueError(f"{_key(info)} {value!r} is not true (leave it out for false)")
    return True


def _check_clear_refs(value: Any, info: ValidationInfo) -> int:
    # bool and float are rejected although True == 1 and 1.0 == 1.
    if type(value) is not int or value not in CLEAR_REFS_VALUES:
        raise ValueError(
            f"{_key(info)} {value!r} is not one of {', '.join(map(str, CLEAR_REFS_VALUES))}"
        )
    return value


def _check_region_page(value: Any, info: ValidationInfo) -> RegionPage:
    if isinstance(value, RegionPage):  # a step built in Python
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
    if page.pages < 0 and not page.symbolic:
        raise ValueError(f"{key}.page {page} is negative")
    return RegionPage(region, page)


def _check_bool(value: Any, info: ValidationInfo) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{_key(info)} {value!r} is not true or false")
    return value


Name = Annotated[str, PlainValidator(_check_name)]
Flag = Annotated[bool, PlainValidator(_check_bool)]


def _optional(check: Callable[[Any, ValidationInfo], T]) -> PlainValidator:
    """An optional key: absent means None; in a file, a null is checked (and refused)."""

    def validate(value: Any, info: ValidationInfo) -> T | None:
        if value is None and not (info.context or {}).get(_FROM_FILE):
            return None  # a step built in Python
        return check(value, info)

    return PlainValidator(validate)


OptionalName = Annotated[str | None, _optional(_check_name)]
OptionalUid = Annotated[int | None, _optional(_check_uid)]
OptionalRegionPage = Annotated[RegionPage | None, _optional(_check_region_page)]
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
    at: OptionalRegionPage = None
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


def _check_fill(value: Any, info: ValidationInfo) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError(f"{_key(info)} {value!r} is not an integer 0..255 (a byte)")
    return value


OptionalFill = Annotated[int | None, _optional(_check_fill)]


@dataclass(frozen=True, config=_CONFIG)
class Write(Touch):
    """Store :func:`~harness.scenario.tags.write_tag` in the first 8 bytes of each page;
    with ``fill`` (a byte 0..255) set every byte of each page to it instead, so that
    pages can hold equal contents (KSM merges them)."""

    op: ClassVar[str] = "write"
    write: ClassVar[bool] = True
    fill: OptionalFill = None


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
    """madvise() the range with ``advice`` (do_madvise() in mm/madvise.c).

    ``advice``: a name (MADV_<NAME> in lower case) or the kernel's raw
    MADV_* number, any C int (one the kernel does not know gives EINVAL).
    ``holes``: the range may hold pages this process has unmapped; the
    kernel advises the mapped parts and the outcome is ENOMEM.
    """

    op: ClassVar[str] = "madvise"
    advice: Annotated[Advice | int, PlainValidator(_check_advice)]
    holes: Annotated[bool | None, _optional(_check_holes)] = None


@dataclass(frozen=True, config=_CONFIG)
class Mremap(RangeStep):
    """mremap() the range to ``new_pages`` pages (SYSCALL_DEFINE5(mremap) in mm/mremap.c).

    Without ``to`` it resizes in place (no MREMAP_MAYMOVE: a range that
    cannot grow there gives ENOMEM).  With ``to`` and ``new_region`` it moves
    (MREMAP_MAYMOVE | MREMAP_FIXED) to page ``to.page`` of ``to.region``'s
    address range, and the moved pages become region ``new_region`` (pages
    ``[0, new_pages)``); ``dontunmap`` adds MREMAP_DONTUNMAP (the old range
    stays mapped, empty; the kernel wants new_pages equal to the range's length).
    """

    op: ClassVar[str] = "mremap"
    new_pages: Pages
    to: OptionalRegionPage = None
    new_region: OptionalName = None
    dontunmap: Flag = False

    def __post_init__(self) -> None:
        if (self.to is None) != (self.new_region is None):
            raise ValueError("'to' and 'new_region' go together (a move names both)")
        if self.dontunmap and self.to is None:
            raise ValueError("dontunmap needs 'to' (MREMAP_DONTUNMAP always moves)")

    @property
    def moves(self) -> bool:
        """Whether this is a move (MREMAP_MAYMOVE | MREMAP_FIXED), not a resize in place."""
        return self.to is not None

    def page_numbers(self) -> Iterator[NrPages]:
        yield from super().page_numbers()
        if self.to is not None:
            yield self.to.page


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
class Swapon(Step):
    """swapon(2) of the swap device (the scenario needs ``"swap": true``); an errno
    (EBUSY while it is on) is the step's outcome."""

    op: ClassVar[str] = "swapon"
    defaults: ClassVar[Mapping[str, object]] = {}


@dataclass(frozen=True, config=_CONFIG)
class Swapoff(Step):
    """swapoff(2) of the swap device (the scenario needs ``"swap": true``); an errno
    (EINVAL when it is off) is the step's outcome."""

    op: ClassVar[str] = "swapoff"
    defaults: ClassVar[Mapping[str, object]] = {}


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


#: PAGE_IS_* categories by their UAPI name (include/uapi/linux/fs.h), for pagemap_scan.
SCAN_CATEGORIES: Mapping[str, int] = {
    "WPALLOWED": 1 << 0, "WRITTEN": 1 << 1, "FILE": 1 << 2, "PRESENT": 1 << 3,
    "SWAPPED": 1 << 4, "PFNZERO": 1 << 5, "HUGE": 1 << 6, "SOFT_DIRTY": 1 << 7,
}
#: PM_SCAN_* flags by their UAPI name.
SCAN_FLAGS: Mapping[str, int] = {"WP_MATCHING": 1 << 0, "CHECK_WPASYNC": 1 << 1}
#: The most page_region records a pagemap_scan step's buffer may have (the agent's limit).
SCAN_VEC_LEN_MAX = 1 << 16
_U64_MAX = (1 << 64) - 1


def _bits_of(names: Mapping[str, int]) -> Callable[[Any, ValidationInfo], int]:
    """A list of names of ``names`` or raw integers (bad-input probes) -> their OR."""

    def check(value: Any, info: ValidationInfo) -> int:
        if isinstance(value, int) and not isinstance(value, bool):  # a step built in Python
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"{_key(info)} {value!r} is not a list of names or integers")
        bits = 0
        for item in value:
            if isinstance(item, str) and item in names:
                bits |= names[item]
            elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= _U64_MAX:
                bits |= item
            else:
                raise ValueError(
                    f"{_key(info)}: {item!r} is not one of {', '.join(names)} "
                    "or an integer 0..2**64-1"
                )
        return bits

    return check


def _check_count(limit: int, low: int = 0) -> Callable[[Any, ValidationInfo], int]:
    def check(value: Any, info: ValidationInfo) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= limit:
            raise ValueError(f"{_key(info)} {value!r} is not an integer {low}..{limit}")
        return value

    return check


ScanCategories = Annotated[int, PlainValidator(_bits_of(SCAN_CATEGORIES))]


@dataclass(frozen=True, config=_CONFIG)
class PagemapScan(RangeStep):
    """ioctl(PAGEMAP_SCAN) on /proc/<proc>/pagemap over the region's pages ``[first, end)``.

    The pages need not be mapped (holes are scanned too).  The masks are
    lists of PAGE_IS_* names (``"PRESENT"``...) or raw integers:
    ``categories`` is category_mask, ``inverted`` category_inverted,
    ``anyof`` category_anyof_mask; ``return_mask`` defaults to every
    category.  ``max_pages`` (a page number: ``"thp+2"`` works) 0 is no limit; ``vec_len``
    records of output
    (1..65536); ``flags`` PM_SCAN_* names or integers; ``as_uid`` the uid
    that opens the file (None: root), as for a check.
    """

    op: ClassVar[str] = "pagemap_scan"
    categories: ScanCategories = 0
    inverted: ScanCategories = 0
    anyof: ScanCategories = 0
    return_mask: ScanCategories = sum(SCAN_CATEGORIES.values())
    max_pages: Pages = NrPages(0)
    vec_len: Annotated[int, PlainValidator(_check_count(SCAN_VEC_LEN_MAX, 1))] = 64
    flags: Annotated[int, PlainValidator(_bits_of(SCAN_FLAGS))] = 0
    as_uid: OptionalUid = None

    @property
    def reader_uid(self) -> int:
        return 0 if self.as_uid is None else self.as_uid
@dataclass(frozen=True, config=_CONFIG)
class RangeStepWithHoles(RangeStep):
    """A range step whose pages may be unmapped (inside the region).

    The kernel's answer to a hole is the point of the step (ENOMEM from
    mlock()/munlock()), so the loader does not refuse it; the range check
    (``harness/scenario/layout.py``) still wants the pages inside the region.
    """


@dataclass(frozen=True, config=_CONFIG)
class Mlock(RangeStepWithHoles):
    """mlock() the range; with ``onfault``, mlock2(MLOCK_ONFAULT) (do_mlock() in mm/mlock.c).

    Without ``onfault`` the range is populated (write faults in private
    writable VMAs); a hole in the range is ENOMEM (the step's outcome).
    """

    op: ClassVar[str] = "mlock"
    onfault: Annotated[Literal[False, True], PlainValidator(_check_bool)] = False


@dataclass(frozen=True, config=_CONFIG)
class Munlock(RangeStepWithHoles):
    """munlock() the range (apply_vma_lock_flags() in mm/mlock.c); a hole is ENOMEM."""

    op: ClassVar[str] = "munlock"


UffdMode = Literal["wp"]
UFFD_MODES: tuple[UffdMode, ...] = ("wp",)


@dataclass(frozen=True, config=_CONFIG)
class UffdRegister(RangeStep):
    """UFFDIO_REGISTER of the range with the process's userfaultfd (fs/userfaultfd.c
    userfaultfd_register()).

    ``mode``: ``"wp"`` (UFFDIO_REGISTER_MODE_WP), the only one.  The first
    register in a process opens its userfaultfd with UFFD_FEATURE_WP_ASYNC
    and WP_UNPOPULATED where the kernel has them (no fault handler: a write
    to a write-protected page clears its uffd-wp bit and goes on).  Without
    uffd-wp in the kernel (ppc64 6.12: no HAVE_ARCH_USERFAULTFD_WP) the
    outcome is EINVAL.
    """

    op: ClassVar[str] = "uffd_register"
    mode: Annotated[UffdMode, _one_of(UFFD_MODES)]


@dataclass(frozen=True, config=_CONFIG)
class UffdWp(RangeStep):
    """UFFDIO_WRITEPROTECT of the range (mm/userfaultfd.c mwriteprotect_range()):
    ``enable`` true sets uffd-wp (markers on unpopulated pages), false clears it;
    ENOENT where a VMA of the range is not registered for wp (or the process
    has no userfaultfd)."""

    op: ClassVar[str] = "uffd_wp"
    enable: Annotated[Literal[False, True], PlainValidator(_check_bool)]


@dataclass(frozen=True, config=_CONFIG)
class Ksm(Step):
    """Run ksmd until two more full scans have completed, then stop it (mm/ksm.c).

    ``use_zero_pages``: sysfs use_zero_pages during the scans (restored after;
    None: left as the guest has it, false by default).  ``proc``: the process
    that writes the sysfs knobs (None: the agent's init, root); the knobs are
    global, so which one changes nothing but its permission: they are 0644
    root, and a process of another uid gets EACCES (the step's outcome).
    """

    op: ClassVar[str] = "ksm"
    defaults: ClassVar[Mapping[str, object]] = {}
    proc: OptionalName = None
    use_zero_pages: Annotated[bool | None, _optional(_check_bool)] = None

    #: Full scans per step (the model's and the agent's KSM_SCAN argument).
    scans: ClassVar[int] = 2


AnyStep = (
    Mmap | Write | Read | Munmap | Mprotect | Madvise | Mremap | Fork | Exit | ClearRefs | Check
    | PagemapScan
    | Mlock | Munlock
    | Swapon | Swapoff
    | UffdRegister | UffdWp
    | Ksm
)

#: Every op a scenario file may use, by its name, in the order SCENARIOS.md lists them.
STEP_TYPES: dict[str, type[Step]] = {
    t.op: t for t in (
        Mmap, Write, Read, Munmap, Mprotect, Madvise, Mremap, Fork, Exit, ClearRefs, Check,
        Mlock, Munlock, UffdRegister, UffdWp,
    )
}
STEP_TYPES[PagemapScan.op] = PagemapScan
STEP_TYPES[Swapon.op] = Swapon
STEP_TYPES[Swapoff.op] = Swapoff
STEP_TYPES[Ksm.op] = Ksm


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
