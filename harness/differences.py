"""Typed differences between the model's and the kernel's observations.

:func:`harness.compare.compare` returns :class:`Divergence` records whose
``model`` and ``real`` columns hold *values*, decoded once, never text:

========================  ==========================================================
field                     value type (each column)
========================  ==========================================================
``outcome``               :class:`~harness.observations.StepOutcome` (or NOT_RUN)
``reader_uid``            int
``kpagemap.header.*``     int or bool (a decoded header byte)
``kpagemap.header``       ReadResult, or KpagemapHeader / :class:`Invalid`
``kpagemap.header.bytes`` bytes (the raw slot 0)
``k*.probe``              ReadResult
``pagemap.range``         :class:`PageRange`
``pagemap.read``          ReadResult
``pagemap.length``        int (bytes)
``pagemap``               :class:`~sim.formats.PagemapEntry` or :class:`Invalid`
``pagemap.<field>``       bool, or int / None (PFN, swap type and offset)
``ram_tag``               :class:`RamTag`, or NO_TAG
``frame``                 :class:`FrameValues`, or a :class:`Presence`
``kpageflags``            :class:`KpfFlags`, or ReadResult / :class:`ShortRead`
``kpagemap.flags``        KpfFlags; for a consistency divergence :class:`FlagMismatch`
``kpagemap.count``,       int (a mapcount)
``kpagecount``
``kpagemap``              :class:`KpagemapSlot`, or ReadResult / ShortRead
``smaps.read``,           ReadResult (the errno, or the text when one side failed)
``smaps_rollup.read``
``smaps.format``          :class:`Invalid` (text the parser rejects)
``smaps.vma``             :class:`PageRange` of a VMA, or a :class:`Presence`
``smaps.<Field>``         int (kB; ``Size`` ... ``Locked``, ``THPeligible``, ``ProtectionKey``)
``smaps.header.<part>``   :class:`SmapsText` (perms, device, name) or int (offset, inode)
``smaps.VmFlags``         :class:`VmFlags`
``smaps_rollup.<Field>``  int (kB: our regions' share, exact), or for the fixed-point
                          fields :class:`PssShare` (model) vs :class:`PssBounds` (real)
========================  ==========================================================

and a missing observation is a :class:`Presence` in each column.  Context
(both whole pagemap entries, why the PFN bijection broke) is a typed
``context``.  :mod:`harness.report` renders all of it as text; :meth:`Divergence.to_json`
gives the values as JSON (ints, lists of flag names, errno numbers and names).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from harness.observations import ReadResult, StepOutcome, errno_name
from harness.scenario import FILE_TAG_MAGIC, WRITE_TAG_MAGIC
from sim.flags import kpf_names
from sim.formats import KpagemapHeader, PagemapEntry

__all__ = [
    "PSS_KB",
    "ConflictRule",
    "Context",
    "Divergence",
    "DivergenceKind",
    "EntryPair",
    "FlagMismatch",
    "FrameValues",
    "Invalid",
    "KpagemapSlot",
    "KpfFlags",
    "PageRange",
    "PfnConflict",
    "Place",
    "Presence",
    "PssBounds",
    "PssShare",
    "RamTag",
    "ScanRecord",
    "ShortRead",
    "SmapsText",
    "Value",
    "VmFlags",
    "value_to_json",
]

#: ``value``: model and real differ; ``identity``: the PFN bijection breaks;
#: ``consistency``: one side disagrees with itself (``side`` names it);
#: ``missing``: one side has an observation the other lacks.
DivergenceKind = Literal["value", "identity", "consistency", "missing"]


class Presence(Enum):
    """A column that holds no value, only whether (and why not) there is one."""

    OBSERVED = "observed"
    NOT_OBSERVED = "not observed"
    READ = "read"
    NOT_READ = "not read"
    NOT_RUN = "not run"
    #: A frame no frame of the other side is bound to by the PFN bijection.
    UNPAIRED = "unpaired"
    #: No frame named at the page, or the executor could not look.
    NO_TAG = "no tag"


@dataclass(frozen=True)
class KpfFlags:
    """A /proc/kpageflags u64 (or a kpagemap slot's flags word): KPF_* bits."""

    value: int

    @property
    def names(self) -> tuple[str, ...]:
        """Set bits by KPF name (``BIT<n>`` if unnamed), low bit first."""
        return tuple(kpf_names(self.value))

    def only_in_self(self, other: KpfFlags) -> tuple[str, ...]:
        """Names set here and clear in ``other``, low bit first."""
        return tuple(kpf_names(self.value & ~other.value))

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "flags": list(self.names)}


@dataclass(frozen=True)
class KpagemapSlot:
    """One /proc/kpagemap entry: stable flags and mapcount, as unsigned longs."""

    flags: KpfFlags
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"flags": self.flags.to_json(), "count": self.count}


@dataclass(frozen=True)
class ShortRead:
    """A read that returned fewer bytes than one entry (``data`` is what came)."""

    data: bytes

    def to_json(self) -> dict[str, Any]:
        return {"short_read": len(self.data), "hex": self.data.hex()}


@dataclass(frozen=True)
class Invalid:
    """Bytes the format rejects: a pagemap u64 (int) or a header slot (bytes)."""

    raw: int | bytes
    reason: str

    def to_json(self) -> dict[str, Any]:
        raw = self.raw.hex() if isinstance(self.raw, bytes) else self.raw
        return {"invalid": raw, "reason": self.reason}


@dataclass(frozen=True)
class SmapsText:
    """A text part of a smaps header line (perms, ``MM:mm`` device, name)."""

    text: str

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text}


@dataclass(frozen=True)
class ScanRecord:
    """Record ``index`` of a PAGEMAP_SCAN output buffer: a page_region, or never written.

    ``categories`` are PAGE_IS_* bits; ``written`` False: the record still holds
    the agent's fill bytes (the kernel wrote nothing there).
    """

    index: int
    start: int
    end: int
    categories: int
    written: bool = True

    def to_json(self) -> dict[str, Any]:
        if not self.written:
            return {"index": self.index, "written": False}
        return {"index": self.index, "start": self.start, "end": self.end,
                "categories": self.categories}


@dataclass(frozen=True)
class VmFlags:
    """The mnemonics of a smaps ``VmFlags:`` line, in the kernel's (bit) order."""

    words: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"vm_flags": list(self.words)}


#: One kB in the kernel's Pss fixed point (bytes << PSS_SHIFT, PSS_SHIFT = 12).
PSS_KB = 1 << 22


@dataclass(frozen=True)
class PssShare:
    """The model's share of a fixed-point smaps_rollup field (Pss, Pss_Dirty, ...):
    our regions' exact sum in bytes << PSS_SHIFT."""

    fixed: int

    def to_json(self) -> dict[str, Any]:
        return {"fixed": self.fixed, "kb": self.fixed / PSS_KB}


@dataclass(frozen=True)
class PssBounds:
    """What the kernel's rollup says of our regions' share of a fixed-point field.

    Every share in ``[low, high]`` (bytes << PSS_SHIFT, inclusive) is
    consistent with the rollup's kB floor and the other VMAs' smaps blocks;
    ``low == high`` when the other VMAs' sums are exact.
    """

    low: int
    high: int

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high,
                "low_kb": self.low / PSS_KB, "high_kb": self.high / PSS_KB}


#: A frame file read's decoded value, or why there is none.
Unreadable = ReadResult | ShortRead


@dataclass(frozen=True)
class FrameValues:
    """All three kpage* values of one frame (for a frame only one side read)."""

    kpageflags: KpfFlags | Unreadable
    kpagecount: int | Unreadable
    kpagemap: KpagemapSlot | Unreadable

    def to_json(self) -> dict[str, Any]:
        return {name: value_to_json(getattr(self, name))
                for name in ("kpageflags", "kpagecount", "kpagemap")}


@dataclass(frozen=True)
class FlagMismatch:
    """One side's kpagemap flags differ from its kpageflags (cut to an unsigned long)."""

    kpagemap: KpfFlags
    kpageflags: KpfFlags

    def to_json(self) -> dict[str, Any]:
        return {"kpagemap": self.kpagemap.to_json(), "kpageflags": self.kpageflags.to_json()}


@dataclass(frozen=True)
class PageRange:
    """The pages a region read covers."""

    vaddr: int
    pages: int

    def to_json(self) -> dict[str, Any]:
        return {"vaddr": self.vaddr, "pages": self.pages}


@dataclass(frozen=True)
class RamTag:
    """The u64 at the start of a page's frame, decoded as harness.scenario writes tags.

    ``origin``: ``zero`` (never written), ``write`` (a write step: ``step``,
    ``region``, ``page``), ``file`` (a file region's contents: ``region``,
    ``page``) or ``unknown`` (not a tag).  ``region`` is the region's name, or
    ``#n`` for a region number the scenario does not have.
    """

    value: int
    origin: Literal["zero", "write", "file", "unknown"]
    step: int | None = None
    region: str | None = None
    page: int | None = None

    @classmethod
    def decode(cls, value: int, region_names: Sequence[str]) -> RamTag:
        """``value`` per write_tag() / file_tag() in harness/scenario.py."""
        magic, step = value >> 48, value >> 32 & 0xFFFF
        number, page = value >> 24 & 0xFF, value & 0xFF_FFFF
        region = region_names[number] if number < len(region_names) else f"#{number}"
        if value == 0:
            return cls(value, "zero")
        if magic == WRITE_TAG_MAGIC:
            return cls(value, "write", step, region, page)
        if magic == FILE_TAG_MAGIC and not step:
            return cls(value, "file", None, region, page)
        return cls(value, "unknown")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, order=True)
class Place:
    """A page of a region of a process: ``proc:region+page``."""

    proc: str
    region: str
    page: int

    def __str__(self) -> str:
        return f"{self.proc}:{self.region}+{self.page}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConflictRule(Enum):
    """Which rule of the PFN bijection (harness/compare.py) a sighting broke."""

    #: Within a check, one model PFN at two real PFNs: the model shares a frame.
    MODEL_SHARES = "model_shares"
    #: Within a check, one real PFN at two model PFNs: the kernel shares a frame.
    KERNEL_SHARES = "kernel_shares"
    #: A stable model's PFN has a new real partner: the model kept the frame.
    MODEL_KEPT = "model_kept"
    #: A stable real side's PFN has a new model partner.
    REAL_KEPT = "real_kept"


@dataclass(frozen=True)
class PfnConflict:
    """Why a sighting breaks the bijection.

    ``partner``: the PFN of the other side the PFN was bound to (at
    ``first_seen`` in this check for the SHARES rules; since step
    ``bound_at`` for the KEPT rules).
    """

    rule: ConflictRule
    partner: int
    first_seen: Place | None = None
    bound_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.value,
            "partner": self.partner,
            "first_seen": None if self.first_seen is None else self.first_seen.to_json(),
            "bound_at": self.bound_at,
        }


@dataclass(frozen=True)
class EntryPair:
    """Both whole pagemap entries of a page whose fields differ."""

    model: PagemapEntry
    real: PagemapEntry

    def to_json(self) -> dict[str, Any]:
        return {"model": value_to_json(self.model), "real": value_to_json(self.real)}


Context = EntryPair | PfnConflict

#: What a column of a divergence holds (see the module doc for which field has which).
Value = (
    None | bool | int | bytes | Presence | KpfFlags | KpagemapSlot | FrameValues | FlagMismatch
    | PageRange | RamTag | Invalid | ShortRead | ReadResult | StepOutcome | PagemapEntry
    | KpagemapHeader | SmapsText | VmFlags | PssShare | PssBounds | ScanRecord
)


@dataclass(frozen=True)
class Divergence:
    """One difference, located, with both sides' values.

    ``step``/``op``: the scenario step; ``proc``, ``region``, ``page`` and
    ``vaddr`` (bytes) locate a page; ``model_pfn``/``real_pfn`` a frame, and
    ``places`` the pages mapping it.  For a ``consistency`` divergence
    ``side`` names the side and the other column is None.
    """

    scenario: str
    arch: str
    step: int
    op: str
    kind: DivergenceKind
    field: str
    model: Value
    real: Value
    proc: str | None = None
    region: str | None = None
    page: int | None = None
    vaddr: int | None = None
    model_pfn: int | None = None
    real_pfn: int | None = None
    side: Literal["model", "real"] | None = None
    places: tuple[Place, ...] = ()
    context: Context | None = None

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON values: ints stay ints, flags are lists of names."""
        return {
            "scenario": self.scenario,
            "arch": self.arch,
            "step": self.step,
            "op": self.op,
            "kind": self.kind,
            "field": self.field,
            "model": value_to_json(self.model),
            "real": value_to_json(self.real),
            "proc": self.proc,
            "region": self.region,
            "page": self.page,
            "vaddr": self.vaddr,
            "model_pfn": self.model_pfn,
            "real_pfn": self.real_pfn,
            "side": self.side,
            "places": [p.to_json() for p in self.places],
            "context": None if self.context is None else self.context.to_json(),
        }


def value_to_json(value: Value) -> Any:
    """A column's value as JSON: ints, bools, lists of flag names, errno number and name."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, Presence):
        return value.value
    if isinstance(value, ReadResult):
        if value.errno is not None:
            return {"errno": value.errno, "errno_name": errno_name(value.errno).split()[0]}
        assert value.data is not None
        return {"length": len(value.data), "hex": value.data.hex()}
    if isinstance(value, StepOutcome):
        obj: dict[str, Any] = {"status": value.status}
        if value.vaddr is not None:
            obj["vaddr"] = value.vaddr
        if value.errno is not None:
            obj["errno"] = value.errno
            obj["errno_name"] = errno_name(value.errno).split()[0]
        return obj
    if isinstance(value, PagemapEntry):
        return {"raw": value.to_raw(), **dataclasses.asdict(value)}
    if isinstance(value, KpagemapHeader):
        return dataclasses.asdict(value)
    return value.to_json()
