"""Compare the model's observations with the real kernel's, field by field.

:func:`compare` takes two :class:`~harness.observations.Observations` of one
scenario on one architecture and returns every :class:`Divergence`.  It knows
nothing of QEMU nor of the model's internals, so it runs on recorded data.

What is compared (nothing is left out):

* every step's outcome (ok, SIGSEGV address, errno);
* per check: the reader uid, the kpagemap header slot (decoded and raw), the
  kpageflags / kpagecount probes; per (process, region): the pagemap read
  (errno, length) and every entry field by field (present, swapped,
  file_shared, exclusive, soft_dirty, uffd_wp, guard, swap type and offset,
  and the PFN through the bijection below), and the tag each page's frame holds
  (the RAM oracle);
* per frame seen: the kpagemap slot (flags, count), kpageflags and kpagecount;
* on each side on its own: kpagemap flags equal kpageflags (truncated to an
  ``unsigned long``), since the patch series exports the same stable flags.

**PFN identity.**  Model PFNs are not real PFNs; they are related by one
bijection kept for the whole scenario (:class:`PfnBijection`): the first time
a model PFN and a real PFN are seen at the same page they are bound.

* Within one check the bijection is strict: a model PFN at two real PFNs, or
  two model PFNs at one real PFN, is a divergence (one side shares a frame the
  other does not).
* Across checks a binding may end because a frame was freed and its PFN
  reused: the kernel's per-CPU lists hand back the last frame freed, and an
  allocator may hand back the lowest.  A side whose observations say
  ``stable_pfns`` (it never reuses a PFN within a run) is held to its
  bindings: its PFN seen with a different partner than before is a divergence
  (the model kept the frame; the kernel replaced or migrated it).  Otherwise
  the PFN is bound to its new partner.  A real kernel is never ``stable_pfns``.

PFN 0 names no frame (an unprivileged reader sees 0 for every page: the
kernel hides PFNs without CAP_SYS_ADMIN), so it is compared as a plain value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from harness.observations import (
    CheckObservation,
    FrameRead,
    Observations,
    ReadResult,
    RegionRead,
    StepOutcome,
    ram_tag_pages,
)
from harness.scenario import Scenario, describe_tag
from sim.arch import Arch
from sim.bulk import bulk_parse_kpagemap_entries, bulk_parse_u64s
from sim.flags import kpf_names
from sim.formats import FormatError, KpagemapHeader, PagemapEntry

__all__ = [
    "PAGEMAP_FIELDS",
    "CompareError",
    "Divergence",
    "PfnBijection",
    "Sighting",
    "compare",
    "describe_pagemap",
    "flag_delta",
]

Kind = Literal["value", "identity", "consistency", "missing"]

#: Fields of a pagemap entry compared one by one (the PFN goes through the bijection).
PAGEMAP_FIELDS = (
    "present",
    "swapped",
    "file_shared",
    "exclusive",
    "soft_dirty",
    "uffd_wp",
    "guard",
    "swap_type",
    "swap_offset",
)


class CompareError(ValueError):
    """Two observations that are not of the same scenario and architecture."""


@dataclass(frozen=True)
class Divergence:
    """One difference, located and with both values decoded.

    ``kind``: ``value`` (model and real differ), ``identity`` (the PFN
    bijection breaks), ``consistency`` (one side disagrees with itself; then
    ``side`` names it and only its column is filled), ``missing`` (one side
    has an observation the other lacks).
    """

    scenario: str
    arch: str
    step: int
    op: str
    kind: Kind
    field: str
    model: str
    real: str
    proc: str | None = None
    region: str | None = None
    page: int | None = None
    vaddr: int | None = None
    model_pfn: int | None = None
    real_pfn: int | None = None
    side: str | None = None
    #: Where a frame is mapped (``main:a+2``), for frame divergences.
    where: str = ""
    #: Context: both whole entries, the bijection history, a flag delta.
    detail: str = ""

    @property
    def location(self) -> str:
        """``main a+2 @0x10002000`` or ``pfn model 0x12 / real 0x3456``."""
        parts = []
        if self.proc is not None:
            parts.append(self.proc)
        if self.region is not None:
            parts.append(self.region if self.page is None else f"{self.region}+{self.page}")
        if self.vaddr is not None:
            parts.append(f"@{self.vaddr:#x}")
        if self.model_pfn is not None or self.real_pfn is not None:
            m = "-" if self.model_pfn is None else f"{self.model_pfn:#x}"
            r = "-" if self.real_pfn is None else f"{self.real_pfn:#x}"
            parts.append(f"pfn model {m} / real {r}")
        if self.where:
            parts.append(f"({self.where})")
        return " ".join(parts) if parts else "-"

    def to_json(self) -> dict[str, Any]:
        obj = asdict(self)
        for key in ("vaddr", "model_pfn", "real_pfn"):
            if obj[key] is not None:
                obj[key] = f"{obj[key]:#x}"
        return obj


# ---------------------------------------------------------------------------
# The PFN bijection
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """One page at which both sides name a frame."""

    model_pfn: int
    real_pfn: int
    proc: str
    region: str
    page: int
    vaddr: int

    @property
    def place(self) -> str:
        return f"{self.proc}:{self.region}+{self.page}"


@dataclass
class PfnBijection:
    """Model PFN <-> real PFN, built by first sightings (see the module doc)."""

    model_to_real: dict[int, int] = field(default_factory=dict)
    real_to_model: dict[int, int] = field(default_factory=dict)
    #: Step at which each (model, real) pair was bound, for messages.
    bound_at: dict[tuple[int, int], int] = field(default_factory=dict)

    def real_of(self, model_pfn: int) -> int | None:
        return self.model_to_real.get(model_pfn)

    def model_of(self, real_pfn: int) -> int | None:
        return self.real_to_model.get(real_pfn)

    def observe(
        self,
        step: int,
        sightings: list[Sighting],
        *,
        model_stable: bool = False,
        real_stable: bool = False,
    ) -> list[tuple[Sighting, str]]:
        """Take every sighting of one check; return the conflicting ones, in words.

        Bindings that hold are kept, new pairs are bound, and a PFN whose
        partner changed since an earlier check is rebound (after being
        reported if its side is stable).
        """
        conflicts: list[tuple[Sighting, str]] = []
        first_real: dict[int, Sighting] = {}
        first_model: dict[int, Sighting] = {}
        pairs: dict[tuple[int, int], Sighting] = {}
        for s in sightings:
            by_model = first_real.setdefault(s.model_pfn, s)
            by_real = first_model.setdefault(s.real_pfn, s)
            if by_model.real_pfn != s.real_pfn:
                conflicts.append((s, (
                    f"model PFN {s.model_pfn:#x} is real PFN {by_model.real_pfn:#x} at "
                    f"{by_model.place} but real PFN {s.real_pfn:#x} here: the model shares a "
                    "frame the kernel does not"
                )))
            elif by_real.model_pfn != s.model_pfn:
                conflicts.append((s, (
                    f"real PFN {s.real_pfn:#x} is model PFN {by_real.model_pfn:#x} at "
                    f"{by_real.place} but model PFN {s.model_pfn:#x} here: the kernel shares a "
                    "frame the model does not"
                )))
            else:
                pairs.setdefault((s.model_pfn, s.real_pfn), s)
        # Across checks: judged against the bindings as they were before this check.
        old_real = dict(self.model_to_real)
        old_model = dict(self.real_to_model)
        for (model_pfn, real_pfn), s in pairs.items():
            before_real = old_real.get(model_pfn)
            before_model = old_model.get(real_pfn)
            if model_stable and before_real is not None and before_real != real_pfn:
                since = self.bound_at.get((model_pfn, before_real))
                conflicts.append((s, (
                    f"model PFN {model_pfn:#x} was real PFN {before_real:#x} (bound at step "
                    f"{since}), here real PFN {real_pfn:#x}: the model kept the frame, the "
                    "kernel did not"
                )))
            if real_stable and before_model is not None and before_model != model_pfn:
                since = self.bound_at.get((before_model, real_pfn))
                conflicts.append((s, (
                    f"real PFN {real_pfn:#x} was model PFN {before_model:#x} (bound at step "
                    f"{since}), here model PFN {model_pfn:#x}"
                )))
            self._bind(model_pfn, real_pfn, step)
        return conflicts

    def _bind(self, model_pfn: int, real_pfn: int, step: int) -> None:
        if self.model_to_real.get(model_pfn) == real_pfn:
            return
        old_real = self.model_to_real.pop(model_pfn, None)
        if old_real is not None and self.real_to_model.get(old_real) == model_pfn:
            del self.real_to_model[old_real]
        old_model = self.real_to_model.pop(real_pfn, None)
        if old_model is not None and self.model_to_real.get(old_model) == real_pfn:
            del self.model_to_real[old_model]
        self.model_to_real[model_pfn] = real_pfn
        self.real_to_model[real_pfn] = model_pfn
        self.bound_at[(model_pfn, real_pfn)] = step


# ---------------------------------------------------------------------------
# Decoding helpers (the formats themselves live in sim.formats and sim.bulk)
# ---------------------------------------------------------------------------


def describe_pagemap(entry: PagemapEntry) -> str:
    """``present pfn=0x1234 exclusive soft_dirty``: an entry in words."""
    if entry.present:
        words = [f"present pfn={entry.pfn:#x}"]
    elif entry.swapped:
        words = [f"swapped type={entry.swap_type} offset={entry.swap_offset:#x}"]
    else:
        words = ["none"]
    words += [
        name
        for name in ("file_shared", "exclusive", "soft_dirty", "uffd_wp", "guard")
        if getattr(entry, name)
    ]
    return " ".join(words)


def flag_delta(model: int, real: int, labels: tuple[str, str] = ("model", "real")) -> str:
    """``model only: ANON; real only: KSM``: which flag names differ."""
    model_names = kpf_names(model)
    real_names = kpf_names(real)
    only_model = [n for n in model_names if n not in real_names]
    only_real = [n for n in real_names if n not in model_names]
    parts = []
    if only_model:
        parts.append(f"{labels[0]} only: {' '.join(only_model)}")
    if only_real:
        parts.append(f"{labels[1]} only: {' '.join(only_real)}")
    return "; ".join(parts)


def _flags(value: int) -> str:
    names = kpf_names(value)
    return f"{value:#x} {'|'.join(names) if names else '(none)'}"


def _entries(arch: Arch, data: bytes) -> list[PagemapEntry | str]:
    """Decoded pagemap entries of whole u64s; an impossible value becomes its error text."""
    usable = len(data) - len(data) % 8
    result: list[PagemapEntry | str] = []
    for raw in bulk_parse_u64s(arch, data[:usable]).tolist():
        try:
            result.append(PagemapEntry.from_raw(raw))
        except FormatError as e:
            result.append(f"invalid {raw:#018x}: {e}")
    return result


def _u64(arch: Arch, read: ReadResult) -> int | str:
    """The single u64 of a kpageflags/kpagecount read, or why there is none."""
    if read.errno is not None or read.data is None:
        return read.describe()
    if len(read.data) != 8:
        return f"short read: {read.describe()}"
    return int(bulk_parse_u64s(arch, read.data)[0])


def _slot(arch: Arch, read: ReadResult) -> tuple[int, int] | str:
    """(flags, count) of one kpagemap slot read, or why there is none."""
    if read.errno is not None or read.data is None:
        return read.describe()
    if len(read.data) != arch.kpagemap_entry_size:
        return f"short read: {read.describe()}"
    flags, counts = bulk_parse_kpagemap_entries(arch, read.data)
    return int(flags[0]), int(counts[0])


# ---------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------


class _Comparer:
    def __init__(
        self,
        model: Observations,
        real: Observations,
        scenario: Scenario,
        arch: Arch,
        bijection: PfnBijection,
    ) -> None:
        self.model = model
        self.real = real
        self.scenario = scenario
        self.arch = arch
        self.bijection = bijection
        self.found: list[Divergence] = []

    def add(
        self, step: int, kind: Kind, field_name: str, model: str, real: str, **where: Any
    ) -> None:
        self.found.append(
            Divergence(
                scenario=self.scenario.name,
                arch=self.arch.name,
                step=step,
                op=self._op(step),
                kind=kind,
                field=field_name,
                model=model,
                real=real,
                **where,
            )
        )

    def _op(self, step: int) -> str:
        if 0 <= step < len(self.scenario.steps):
            return self.scenario.steps[step].op
        return "?"

    # -- steps ---------------------------------------------------------------

    def outcomes(self) -> None:
        model = {o.step: o for o in self.model.outcomes}
        real = {o.step: o for o in self.real.outcomes}
        for step in sorted(model.keys() | real.keys()):
            m, r = model.get(step), real.get(step)
            where = self._step_where(step)
            if m is None or r is None:
                self.add(
                    step, "missing", "outcome", _outcome(m), _outcome(r),
                    detail="the step did not run on one side", **where,
                )
            elif m != r:
                self.add(step, "value", "outcome", m.describe(), r.describe(), **where)

    def _step_where(self, step: int) -> dict[str, Any]:
        if not 0 <= step < len(self.scenario.steps):
            return {}
        s = self.scenario.steps[step]
        where: dict[str, Any] = {}
        proc = getattr(s, "proc", None)
        if isinstance(proc, str):
            where["proc"] = proc
        region = getattr(s, "region", None)
        if isinstance(region, str):
            where["region"] = region
        return where

    # -- checks --------------------------------------------------------------

    def checks(self) -> None:
        model = {c.step: c for c in self.model.checks}
        real = {c.step: c for c in self.real.checks}
        for step in sorted(model.keys() | real.keys()):
            m, r = model.get(step), real.get(step)
            if m is None or r is None:
                self.add(
                    step, "missing", "check",
                    "observed" if m else "not observed", "observed" if r else "not observed",
                )
                continue
            self.check(m, r)
        for side, observations in (("model", self.model), ("real", self.real)):
            for check in observations.checks:
                self.consistency(side, check)

    def check(self, m: CheckObservation, r: CheckObservation) -> None:
        step = m.step
        if m.reader_uid != r.reader_uid:
            self.add(step, "value", "reader_uid", str(m.reader_uid), str(r.reader_uid))
        self.header(step, m.kpagemap_header, r.kpagemap_header)
        for name, mp, rp in (
            ("kpageflags.probe", m.kpageflags_probe, r.kpageflags_probe),
            ("kpagecount.probe", m.kpagecount_probe, r.kpagecount_probe),
        ):
            if mp != rp:
                self.add(step, "value", name, mp.describe(), rp.describe())

        sightings: list[Sighting] = []
        model_where = _frame_places(self.arch, m.regions)
        real_where = _frame_places(self.arch, r.regions)
        keys = [(x.proc, x.region) for x in m.regions]
        keys += [k for k in ((x.proc, x.region) for x in r.regions) if k not in keys]
        for proc, region in keys:
            mr, rr = m.region(proc, region), r.region(proc, region)
            if mr is None or rr is None:
                self.add(
                    step, "missing", "pagemap",
                    "read" if mr else "not read", "read" if rr else "not read",
                    proc=proc, region=region,
                )
                continue
            self.region(step, mr, rr, sightings)
        for s, conflict in self.bijection.observe(
            step, sightings, model_stable=self.model.stable_pfns, real_stable=self.real.stable_pfns
        ):
            self.add(
                step, "identity", "pagemap.pfn", f"{s.model_pfn:#x}", f"{s.real_pfn:#x}",
                proc=s.proc, region=s.region, page=s.page, vaddr=s.vaddr,
                model_pfn=s.model_pfn, real_pfn=s.real_pfn, detail=conflict,
            )
        self.frames(step, m, r, model_where, real_where)

    def header(self, step: int, m: ReadResult, r: ReadResult) -> None:
        if m == r:
            return
        if m.data is None or r.data is None:
            self.add(step, "value", "kpagemap.header", m.describe(), r.describe())
            return
        mh, rh = _header(m.data), _header(r.data)
        if isinstance(mh, KpagemapHeader) and isinstance(rh, KpagemapHeader):
            for name in ("little_endian", "page_shift", "word_size", "entry_size"):
                mv, rv = getattr(mh, name), getattr(rh, name)
                if mv != rv:
                    self.add(step, "value", f"kpagemap.header.{name}", str(mv), str(rv))
        elif mh != rh:
            self.add(step, "value", "kpagemap.header", str(mh), str(rh))
        # The raw slot, padding included (a decoded header does not show all of it).
        self.add(step, "value", "kpagemap.header.bytes", m.data.hex(" "), r.data.hex(" "))

    def region(self, step: int, m: RegionRead, r: RegionRead, sightings: list[Sighting]) -> None:
        where: dict[str, Any] = {"proc": m.proc, "region": m.region}
        if (m.vaddr, m.pages) != (r.vaddr, r.pages):
            self.add(
                step, "value", "pagemap.range",
                f"{m.pages} pages at {m.vaddr:#x}", f"{r.pages} pages at {r.vaddr:#x}", **where,
            )
            return
        if m.pagemap.data is None or r.pagemap.data is None:
            if m.pagemap != r.pagemap:
                self.add(
                    step, "value", "pagemap.read", m.pagemap.describe(), r.pagemap.describe(),
                    **where,
                )
        else:
            if len(m.pagemap.data) != len(r.pagemap.data):
                self.add(
                    step, "value", "pagemap.length",
                    f"{len(m.pagemap.data)} bytes", f"{len(r.pagemap.data)} bytes", **where,
                )
            self.entries(step, m, r, sightings)
        self.ram_tags(step, m, r)

    def entries(self, step: int, m: RegionRead, r: RegionRead, sightings: list[Sighting]) -> None:
        """Every field of every entry; pages where both name a frame go to ``sightings``."""
        assert m.pagemap.data is not None and r.pagemap.data is not None
        page_size = self.arch.page_size
        for page, (me, re_) in enumerate(
            zip(_entries(self.arch, m.pagemap.data), _entries(self.arch, r.pagemap.data),
                strict=False)
        ):
            where: dict[str, Any] = {
                "proc": m.proc, "region": m.region, "page": page,
                "vaddr": m.vaddr + page * page_size,
            }
            if isinstance(me, str) or isinstance(re_, str):
                if me != re_:
                    self.add(step, "value", "pagemap", _entry_text(me), _entry_text(re_), **where)
                continue
            detail = f"model: {describe_pagemap(me)}; real: {describe_pagemap(re_)}"
            for name in PAGEMAP_FIELDS:
                mv, rv = getattr(me, name), getattr(re_, name)
                if mv != rv:
                    self.add(
                        step, "value", f"pagemap.{name}", _value(mv), _value(rv),
                        detail=detail, **where,
                    )
            if me.pfn is None or re_.pfn is None:
                continue  # not present on one side: "present" said so
            if me.pfn and re_.pfn:
                sightings.append(Sighting(me.pfn, re_.pfn, m.proc, m.region, page, where["vaddr"]))
            elif me.pfn != re_.pfn:
                self.add(
                    step, "value", "pagemap.pfn", f"{me.pfn:#x}", f"{re_.pfn:#x}",
                    detail=f"PFN 0 names no frame (hidden from an unprivileged reader); {detail}",
                    **where,
                )

    def ram_tags(self, step: int, m: RegionRead, r: RegionRead) -> None:
        where: dict[str, Any] = {"proc": m.proc, "region": m.region}
        if m.ram_tags is None and r.ram_tags is None:
            return
        if m.ram_tags is None or r.ram_tags is None:
            self.add(
                step, "missing", "ram_tag",
                "observed" if m.ram_tags is not None else "not observed",
                "observed" if r.ram_tags is not None else "not observed",
                **where,
            )
            return
        for page, (mt, rt) in enumerate(zip(m.ram_tags, r.ram_tags, strict=True)):
            if mt != rt:
                self.add(
                    step, "value", "ram_tag", _tag(mt, self.scenario), _tag(rt, self.scenario),
                    page=page, vaddr=m.vaddr + page * self.arch.page_size, **where,
                )

    # -- frames --------------------------------------------------------------

    def frames(
        self,
        step: int,
        m: CheckObservation,
        r: CheckObservation,
        model_where: dict[int, list[str]],
        real_where: dict[int, list[str]],
    ) -> None:
        reached: set[int] = set()
        for mf in m.frames:
            places = ", ".join(model_where.get(mf.pfn, []))
            real_pfn = self.bijection.real_of(mf.pfn)
            rf = r.frame(real_pfn) if real_pfn is not None else None
            if rf is None:
                self.add(
                    step, "missing", "frame", _frame_text(self.arch, mf),
                    "no real frame paired" if real_pfn is None else "not read",
                    model_pfn=mf.pfn, real_pfn=real_pfn, where=places,
                )
                continue
            reached.add(rf.pfn)
            self.frame(step, mf, rf, places)
        for rf in r.frames:
            if rf.pfn not in reached:
                model_pfn = self.bijection.model_of(rf.pfn)
                self.add(
                    step, "missing", "frame",
                    "no model frame paired" if model_pfn is None else "not read",
                    _frame_text(self.arch, rf),
                    model_pfn=model_pfn, real_pfn=rf.pfn,
                    where=", ".join(real_where.get(rf.pfn, [])),
                )

    def frame(self, step: int, mf: FrameRead, rf: FrameRead, places: str) -> None:
        where: dict[str, Any] = {"model_pfn": mf.pfn, "real_pfn": rf.pfn, "where": places}
        ms, rs = _slot(self.arch, mf.kpagemap), _slot(self.arch, rf.kpagemap)
        if isinstance(ms, str) or isinstance(rs, str):
            if ms != rs:
                self.add(step, "value", "kpagemap", _slot_text(ms), _slot_text(rs), **where)
        else:
            if ms[0] != rs[0]:
                self.add(
                    step, "value", "kpagemap.flags", _flags(ms[0]), _flags(rs[0]),
                    detail=flag_delta(ms[0], rs[0]), **where,
                )
            if ms[1] != rs[1]:
                self.add(step, "value", "kpagemap.count", str(ms[1]), str(rs[1]), **where)
        mv, rv = _u64(self.arch, mf.kpageflags), _u64(self.arch, rf.kpageflags)
        if mv != rv:
            if isinstance(mv, int) and isinstance(rv, int):
                self.add(
                    step, "value", "kpageflags", _flags(mv), _flags(rv),
                    detail=flag_delta(mv, rv), **where,
                )
            else:
                self.add(step, "value", "kpageflags", _flags_text(mv), _flags_text(rv), **where)
        mc, rc = _u64(self.arch, mf.kpagecount), _u64(self.arch, rf.kpagecount)
        if mc != rc:
            self.add(step, "value", "kpagecount", _text(mc), _text(rc), **where)

    def consistency(self, side: str, check: CheckObservation) -> None:
        """kpagemap flags == kpageflags (as an unsigned long) on one side."""
        mask = (1 << 8 * self.arch.word_size) - 1
        places = _frame_places(self.arch, check.regions)
        for frame in check.frames:
            slot = _slot(self.arch, frame.kpagemap)
            flags = _u64(self.arch, frame.kpageflags)
            if isinstance(slot, str) or isinstance(flags, str) or slot[0] == flags & mask:
                continue
            text = f"kpagemap.flags {_flags(slot[0])} != kpageflags {_flags(flags & mask)}"
            pfn_key = "model_pfn" if side == "model" else "real_pfn"
            self.add(
                check.step, "consistency", "kpagemap.flags",
                text if side == "model" else "-", text if side == "real" else "-",
                side=side, where=", ".join(places.get(frame.pfn, [])),
                detail=flag_delta(slot[0], flags & mask, ("kpagemap", "kpageflags")),
                **{pfn_key: frame.pfn},
            )


def compare(
    model: Observations,
    real: Observations,
    scenario: Scenario,
    arch: Arch,
    bijection: PfnBijection | None = None,
) -> list[Divergence]:
    """Every divergence between ``model`` and ``real`` (empty: they agree).

    ``bijection`` carries PFN bindings in and out (a fresh one by default).
    CompareError if the observations are not of ``scenario`` on ``arch``.
    """
    for obs in (model, real):
        if obs.scenario != scenario.name or obs.arch != arch.name:
            raise CompareError(
                f"{obs.side} observations are of scenario {obs.scenario!r} on {obs.arch}, "
                f"not {scenario.name!r} on {arch.name}"
            )
    comparer = _Comparer(model, real, scenario, arch, bijection or PfnBijection())
    comparer.outcomes()
    comparer.checks()
    return sorted(comparer.found, key=lambda d: d.step)


# ---------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------


def _frame_places(arch: Arch, regions: Iterable[RegionRead]) -> dict[int, list[str]]:
    """PFN -> ``proc:region+page`` of every page that maps it."""
    places: dict[int, list[str]] = defaultdict(list)
    for read in regions:
        for page, pfn in ram_tag_pages(arch, read.pagemap):
            places[pfn].append(f"{read.proc}:{read.region}+{page}")
    return places


def _header(data: bytes) -> KpagemapHeader | str:
    try:
        return KpagemapHeader.parse(data)
    except FormatError as e:
        return f"invalid: {e}"


def _outcome(outcome: StepOutcome | None) -> str:
    return "not run" if outcome is None else outcome.describe()


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:#x}"
    return str(value)


def _entry_text(entry: PagemapEntry | str) -> str:
    return entry if isinstance(entry, str) else describe_pagemap(entry)


def _text(value: int | str) -> str:
    return str(value)


def _flags_text(value: int | str) -> str:
    return _flags(value) if isinstance(value, int) else value


def _slot_text(slot: tuple[int, int] | str) -> str:
    if isinstance(slot, str):
        return slot
    return f"flags {_flags(slot[0])}, count {slot[1]}"


def _frame_text(arch: Arch, frame: FrameRead) -> str:
    flags = _flags_text(_u64(arch, frame.kpageflags))
    count = _u64(arch, frame.kpagecount)
    slot = _slot_text(_slot(arch, frame.kpagemap))
    return f"kpageflags {flags}, kpagecount {count}, kpagemap {slot}"


def _tag(tag: int | None, scenario: Scenario) -> str:
    return "no tag" if tag is None else describe_tag(tag, scenario)
