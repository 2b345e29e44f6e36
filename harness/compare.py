"""Compare the model's observations with the real kernel's, field by field.

:func:`compare` takes two :class:`~harness.observations.Observations` of one
scenario on one architecture and returns every
:class:`~harness.differences.Divergence`, holding both sides' decoded values
(flags, counts, PFNs, entries, errnos; :mod:`harness.report` makes text of
them).  It knows nothing of QEMU nor of the model's internals, so it runs on
recorded data.  Observations are looked up by dict (outcomes and checks by
step, region reads by (process, region), frames by PFN), so the time is linear
in the number of observations (benchmarks/bench_compare.py).

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

A page whose pagemap u64s are equal on both sides except for the PFN (the
common case) is not decoded field by field: its PFNs go to the bijection.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.agent.protocol import SCAN_VEC_FILL
from harness.compare_smaps import compare_smaps
from harness.compared import Compared
from harness.differences import (
    ConflictRule,
    Divergence,
    DivergenceKind,
    EntryPair,
    FlagMismatch,
    FrameValues,
    Invalid,
    KpagemapSlot,
    KpfFlags,
    PageRange,
    PfnConflict,
    Place,
    Presence,
    RamTag,
    ScanRecord,
    ShortRead,
    Value,
)
from harness.observations import (
    CheckObservation,
    FrameRead,
    Observations,
    ReadResult,
    RegionRead,
    ScanObservation,
    StepOutcome,
)
from harness.scenario import Scenario
from sim.arch import Arch
from sim.bulk import bulk_parse_kpagemap_entries, bulk_parse_u64s
from sim.flags import PM
from sim.formats import FormatError, KpagemapHeader, PagemapEntry
from sim.formats_scan import PAGE_REGION_BYTES, parse_page_regions

__all__ = [
    "PAGEMAP_FIELDS",
    "CompareError",
    "Compared",
    "Comparison",
    "Divergence",
    "PfnBijection",
    "Sighting",
    "compare",
    "compare_counted",
]

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

_PFN_MASK = PM.PFN_MASK
_FLAG_BITS = ((1 << 64) - 1) & ~PM.PFN_MASK
_PRESENT = 1 << PM.PRESENT
_SWAP = 1 << PM.SWAP
#: Bits 59-60, which no kernel sets (PagemapEntry.from_raw rejects them).
_RESERVED = 0b11 << 59


class CompareError(ValueError):
    """Two observations that are not of the same scenario and architecture."""


# ---------------------------------------------------------------------------
# The PFN bijection
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """One page at which both sides name a frame (``vaddr`` in bytes)."""

    model_pfn: int
    real_pfn: int
    proc: str
    region: str
    page: int
    vaddr: int

    @property
    def place(self) -> Place:
        return Place(self.proc, self.region, self.page)


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
    ) -> list[tuple[Sighting, PfnConflict]]:
        """Take every sighting of one check; return the conflicting ones and why.

        Bindings that hold are kept, new pairs are bound, and a PFN whose
        partner changed since an earlier check is rebound (after being
        reported if its side is stable).  Time linear in ``sightings``.
        """
        conflicts: list[tuple[Sighting, PfnConflict]] = []
        first_real: dict[int, Sighting] = {}
        first_model: dict[int, Sighting] = {}
        pairs: dict[tuple[int, int], Sighting] = {}
        for s in sightings:
            by_model = first_real.setdefault(s.model_pfn, s)
            by_real = first_model.setdefault(s.real_pfn, s)
            if by_model.real_pfn != s.real_pfn:
                conflicts.append((s, PfnConflict(
                    ConflictRule.MODEL_SHARES, by_model.real_pfn, first_seen=by_model.place)))
            elif by_real.model_pfn != s.model_pfn:
                conflicts.append((s, PfnConflict(
                    ConflictRule.KERNEL_SHARES, by_real.model_pfn, first_seen=by_real.place)))
            else:
                pairs.setdefault((s.model_pfn, s.real_pfn), s)
        # Across checks: every pair is judged against the bindings as they were
        # before this check, so judge them all before binding any.
        if model_stable or real_stable:
            for (model_pfn, real_pfn), s in pairs.items():
                before_real = self.model_to_real.get(model_pfn)
                before_model = self.real_to_model.get(real_pfn)
                if model_stable and before_real is not None and before_real != real_pfn:
                    conflicts.append((s, PfnConflict(
                        ConflictRule.MODEL_KEPT, before_real,
                        bound_at=self.bound_at.get((model_pfn, before_real)))))
                if real_stable and before_model is not None and before_model != model_pfn:
                    conflicts.append((s, PfnConflict(
                        ConflictRule.REAL_KEPT, before_model,
                        bound_at=self.bound_at.get((before_model, real_pfn)))))
        for model_pfn, real_pfn in pairs:
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
# Decoding (the formats themselves live in sim.formats and sim.bulk)
# ---------------------------------------------------------------------------


def _raws(arch: Arch, data: bytes) -> list[int]:
    """The whole u64s of a pagemap read (a torn tail is left out)."""
    return bulk_parse_u64s(arch, data[: len(data) - len(data) % 8]).tolist()  # type: ignore[no-any-return]


def _entry(raw: int) -> PagemapEntry | Invalid:
    """A pagemap u64 decoded, or why no kernel writes it."""
    try:
        return PagemapEntry.from_raw(raw)
    except FormatError as e:
        return Invalid(raw, str(e))


def _u64(arch: Arch, read: ReadResult) -> int | ReadResult | ShortRead:
    """The single u64 of a kpageflags/kpagecount read, or why there is none."""
    if read.data is None:
        return read
    if len(read.data) != 8:
        return ShortRead(read.data)
    return int(bulk_parse_u64s(arch, read.data)[0])


def _flags(value: int | ReadResult | ShortRead) -> KpfFlags | ReadResult | ShortRead:
    return KpfFlags(value) if isinstance(value, int) else value


def _slot(arch: Arch, read: ReadResult) -> KpagemapSlot | ReadResult | ShortRead:
    """(flags, count) of one kpagemap slot read, or why there is none."""
    if read.data is None:
        return read
    if len(read.data) != arch.kpagemap_entry_size:
        return ShortRead(read.data)
    flags, counts = bulk_parse_kpagemap_entries(arch, read.data)
    return KpagemapSlot(KpfFlags(int(flags[0])), int(counts[0]))


def _frame_values(arch: Arch, frame: FrameRead) -> FrameValues:
    return FrameValues(
        _flags(_u64(arch, frame.kpageflags)),
        _u64(arch, frame.kpagecount),
        _slot(arch, frame.kpagemap),
    )


def _header(data: bytes) -> KpagemapHeader | Invalid:
    try:
        return KpagemapHeader.parse(data)
    except FormatError as e:
        return Invalid(data, str(e))


def _frame_places(arch: Arch, regions: Iterable[RegionRead]) -> dict[int, list[Place]]:
    """PFN -> every page that maps it.

    The rule of harness.observations.ram_tag_pages (present, not swapped, PFN
    not 0), on pagemaps parsed in bulk with sim.bulk (ram_tag_pages parses
    with construct, far slower on checks of thousands of pages).
    """
    places: dict[int, list[Place]] = defaultdict(list)
    for read in regions:
        if read.pagemap.data is None:
            continue
        for page, raw in enumerate(_raws(arch, read.pagemap.data)):
            if raw & (_PRESENT | _SWAP) == _PRESENT and raw & _PFN_MASK:
                places[raw & _PFN_MASK].append(Place(read.proc, read.region, page))
    return places


class _Places:
    """The pages mapping each PFN in one side's check, worked out on first use.

    Only a frame divergence needs them, so a check that agrees never decodes
    its pagemaps a second time.
    """

    def __init__(self, arch: Arch, regions: Sequence[RegionRead]) -> None:
        self._arch = arch
        self._regions = regions
        self._places: dict[int, list[Place]] | None = None

    def __call__(self, pfn: int) -> tuple[Place, ...]:
        if self._places is None:
            self._places = _frame_places(self._arch, self._regions)
        return tuple(self._places.get(pfn, ()))


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
        #: Swap entries (type | offset << 5, pagemap's frame field) are paired the way
        #: PFNs are: the kernel's slot numbers are not predicted (sim/mm/swapfile.py).
        self.swap_bijection = PfnBijection()
        #: The swap entries of the check being compared, both sides naming one.
        self.swap_sightings: list[Sighting] = []
        self.region_names = list(scenario.region_names)
        self.found: list[Divergence] = []
        #: What was held side by side, per step (harness.compared.Compared's names).
        self.counts: defaultdict[int, Counter[str]] = defaultdict(Counter)

    def count_errno(self, step: int, *results: ReadResult | StepOutcome | None) -> None:
        """Count one compared result pair in which a side failed with an errno."""
        if any(r is not None and r.errno is not None for r in results):
            self.counts[step]["errnos"] += 1

    def add(
        self, step: int, kind: DivergenceKind, field_name: str, model: Value, real: Value,
        **where: Any,
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
                    step, "missing", "outcome",
                    Presence.NOT_RUN if m is None else m, Presence.NOT_RUN if r is None else r,
                    **where,
                )
            else:
                self.counts[step]["steps"] += 1
                self.count_errno(step, m, r)
                if m == r:
                    continue
                if m.scan is not None and r.scan is not None and (
                        (m.status, m.errno) == (r.status, r.errno)):
                    self.scan(step, m.scan, r.scan, where)
                else:
                    self.add(step, "value", "outcome", m, r, **where)

    def scan(
        self, step: int, m: ScanObservation, r: ScanObservation, where: dict[str, Any]
    ) -> None:
        """A PAGEMAP_SCAN's return value, walk_end and output records, each on its own."""
        if m.ret != r.ret:
            self.add(step, "value", "scan.ret", m.ret, r.ret, **where)
        if m.walk_end != r.walk_end:
            self.add(step, "value", "scan.walk_end", m.walk_end, r.walk_end, **where)
        if len(m.vec) != len(r.vec) or len(m.vec) % PAGE_REGION_BYTES:
            self.add(step, "value", "scan.vec", m.vec, r.vec, **where)
            return
        fill = bytes([SCAN_VEC_FILL]) * PAGE_REGION_BYTES
        records = zip(parse_page_regions(self.arch, m.vec), parse_page_regions(self.arch, r.vec),
                      strict=True)
        for index, (mr, rr) in enumerate(records):
            if mr != rr:
                mb = m.vec[index * PAGE_REGION_BYTES : (index + 1) * PAGE_REGION_BYTES]
                rb = r.vec[index * PAGE_REGION_BYTES : (index + 1) * PAGE_REGION_BYTES]
                self.add(step, "value", "scan.region",
                         ScanRecord(index, mr.start, mr.end, mr.categories, mb != fill),
                         ScanRecord(index, rr.start, rr.end, rr.categories, rb != fill),
                         **where)

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
                self.add(step, "missing", "check", _observed(m), _observed(r))
                continue
            self.counts[step]["checks"] += 1
            self.check(m, r)
        for side, observations in (("model", self.model), ("real", self.real)):
            for check in observations.checks:
                self.consistency(side, check)

    def check(self, m: CheckObservation, r: CheckObservation) -> None:
        step = m.step
        if m.reader_uid != r.reader_uid:
            self.add(step, "value", "reader_uid", m.reader_uid, r.reader_uid)
        self.header(step, m.kpagemap_header, r.kpagemap_header)
        for name, mp, rp in (
            ("kpageflags.probe", m.kpageflags_probe, r.kpageflags_probe),
            ("kpagecount.probe", m.kpagecount_probe, r.kpagecount_probe),
        ):
            self.count_errno(step, mp, rp)
            if mp != rp:
                self.add(step, "value", name, mp, rp)

        sightings: list[Sighting] = []
        self.swap_sightings = []
        model_regions = {(x.proc, x.region): x for x in m.regions}
        real_regions = {(x.proc, x.region): x for x in r.regions}
        keys = [*model_regions, *(k for k in real_regions if k not in model_regions)]
        for key in keys:
            mr, rr = model_regions.get(key), real_regions.get(key)
            if mr is None or rr is None:
                self.add(
                    step, "missing", "pagemap", _read(mr), _read(rr), proc=key[0], region=key[1]
                )
                continue
            self.region(step, mr, rr, sightings)
        self.counts[step]["pfns"] += len(sightings)
        for s, conflict in self.bijection.observe(
            step, sightings, model_stable=self.model.stable_pfns, real_stable=self.real.stable_pfns
        ):
            self.add(
                step, "identity", "pagemap.pfn", s.model_pfn, s.real_pfn,
                proc=s.proc, region=s.region, page=s.page, vaddr=s.vaddr,
                model_pfn=s.model_pfn, real_pfn=s.real_pfn, context=conflict,
            )
        self.counts[step]["swap_entries"] += len(self.swap_sightings)
        for s, conflict in self.swap_bijection.observe(
            step, self.swap_sightings,
            model_stable=self.model.stable_pfns, real_stable=self.real.stable_pfns,
        ):
            self.add(
                step, "identity", "pagemap.swap", s.model_pfn, s.real_pfn,
                proc=s.proc, region=s.region, page=s.page, vaddr=s.vaddr, context=conflict,
            )
        self.frames(step, m, r)
        compare_smaps(self.add, step, self.arch, m, r, self.counts[step])

    def header(self, step: int, m: ReadResult, r: ReadResult) -> None:
        self.count_errno(step, m, r)
        if m == r:
            return
        if m.data is None or r.data is None:
            self.add(step, "value", "kpagemap.header", m, r)
            return
        mh, rh = _header(m.data), _header(r.data)
        if isinstance(mh, KpagemapHeader) and isinstance(rh, KpagemapHeader):
            for name in ("little_endian", "page_shift", "word_size", "entry_size"):
                mv, rv = getattr(mh, name), getattr(rh, name)
                if mv != rv:
                    self.add(step, "value", f"kpagemap.header.{name}", mv, rv)
        elif mh != rh:
            self.add(step, "value", "kpagemap.header", mh, rh)
        # The raw slot, padding included (a decoded header does not show all of it).
        self.add(step, "value", "kpagemap.header.bytes", m.data, r.data)

    def region(self, step: int, m: RegionRead, r: RegionRead, sightings: list[Sighting]) -> None:
        where: dict[str, Any] = {"proc": m.proc, "region": m.region}
        if (m.vaddr, m.pages) != (r.vaddr, r.pages):
            self.add(
                step, "value", "pagemap.range",
                PageRange(m.vaddr, m.pages), PageRange(r.vaddr, r.pages), **where,
            )
            return
        if m.pagemap.data is None or r.pagemap.data is None:
            self.count_errno(step, m.pagemap, r.pagemap)
            if m.pagemap != r.pagemap:
                self.add(step, "value", "pagemap.read", m.pagemap, r.pagemap, **where)
        else:
            if len(m.pagemap.data) != len(r.pagemap.data):
                self.add(
                    step, "value", "pagemap.length",
                    len(m.pagemap.data), len(r.pagemap.data), **where,
                )
            self.entries(step, m, r, sightings)
        self.ram_tags(step, m, r)

    def entries(self, step: int, m: RegionRead, r: RegionRead, sightings: list[Sighting]) -> None:
        """Every field of every entry; pages where both name a frame go to ``sightings``."""
        assert m.pagemap.data is not None and r.pagemap.data is not None
        page_size = self.arch.page_size
        proc, region = m.proc, m.region
        mraws, rraws = _raws(self.arch, m.pagemap.data), _raws(self.arch, r.pagemap.data)
        self.counts[step]["pagemap_entries"] += min(len(mraws), len(rraws))
        for page, (mraw, rraw) in enumerate(zip(mraws, rraws, strict=False)):
            if not (mraw ^ rraw) & _FLAG_BITS and mraw & (_PRESENT | _SWAP | _RESERVED) == _PRESENT:
                # Both present, valid and alike but for the PFN: the common case, undecoded.
                mpfn, rpfn = mraw & _PFN_MASK, rraw & _PFN_MASK
                if mpfn and rpfn:
                    sightings.append(
                        Sighting(mpfn, rpfn, proc, region, page, m.vaddr + page * page_size))
                    continue
                if mpfn == rpfn:
                    continue
            elif not (mraw ^ rraw) & _FLAG_BITS and mraw & (_PRESENT | _SWAP | _RESERVED) == _SWAP:
                # Both the same kind of swap entry: the (type, offset) go to the swap bijection.
                mswp, rswp = mraw & _PFN_MASK, rraw & _PFN_MASK
                if mswp and rswp:
                    self.swap_sightings.append(
                        Sighting(mswp, rswp, proc, region, page, m.vaddr + page * page_size))
                    continue
                if mswp == rswp:
                    continue
            elif mraw == rraw:
                continue  # the same hole, swap entry or invalid value on both sides
            self.entry(step, m, page, _entry(mraw), _entry(rraw), sightings)

    def entry(
        self, step: int, m: RegionRead, page: int, me: PagemapEntry | Invalid,
        re_: PagemapEntry | Invalid, sightings: list[Sighting],
    ) -> None:
        """One page whose u64s differ beyond the PFN, or whose PFN 0 is not matched."""
        where: dict[str, Any] = {
            "proc": m.proc, "region": m.region, "page": page,
            "vaddr": m.vaddr + page * self.arch.page_size,
        }
        if isinstance(me, Invalid) or isinstance(re_, Invalid):
            if me != re_:
                self.add(step, "value", "pagemap", me, re_, **where)
            return
        pair = EntryPair(me, re_)
        both_swapped = bool(me.swapped and re_.swapped and me.to_raw() & _PFN_MASK
                            and re_.to_raw() & _PFN_MASK)
        if both_swapped:
            self.swap_sightings.append(Sighting(
                me.to_raw() & _PFN_MASK, re_.to_raw() & _PFN_MASK, m.proc, m.region, page,
                where["vaddr"]))
        for name in PAGEMAP_FIELDS:
            if both_swapped and name in ("swap_type", "swap_offset"):
                continue  # through the swap bijection
            mv, rv = getattr(me, name), getattr(re_, name)
            if mv != rv:
                self.add(step, "value", f"pagemap.{name}", mv, rv, context=pair, **where)
        if me.pfn is None or re_.pfn is None:
            return  # not present on one side: "present" said so
        if me.pfn and re_.pfn:
            sightings.append(Sighting(me.pfn, re_.pfn, m.proc, m.region, page, where["vaddr"]))
        elif me.pfn != re_.pfn:
            self.add(step, "value", "pagemap.pfn", me.pfn, re_.pfn, context=pair, **where)

    def ram_tags(self, step: int, m: RegionRead, r: RegionRead) -> None:
        where: dict[str, Any] = {"proc": m.proc, "region": m.region}
        if m.ram_tags is None and r.ram_tags is None:
            return
        if m.ram_tags is None or r.ram_tags is None:
            self.add(
                step, "missing", "ram_tag", _observed(m.ram_tags), _observed(r.ram_tags), **where
            )
            return
        self.counts[step]["ram_tags"] += sum(
            mt is not None or rt is not None for mt, rt in zip(m.ram_tags, r.ram_tags, strict=True))
        for page, (mt, rt) in enumerate(zip(m.ram_tags, r.ram_tags, strict=True)):
            if mt != rt:
                self.add(
                    step, "value", "ram_tag", self._tag(mt), self._tag(rt),
                    page=page, vaddr=m.vaddr + page * self.arch.page_size, **where,
                )

    def _tag(self, tag: int | None) -> RamTag | Presence:
        return Presence.NO_TAG if tag is None else RamTag.decode(tag, self.region_names)

    # -- frames --------------------------------------------------------------

    def frames(self, step: int, m: CheckObservation, r: CheckObservation) -> None:
        model_places = _Places(self.arch, m.regions)
        real_places = _Places(self.arch, r.regions)
        real_frames = {f.pfn: f for f in r.frames}
        reached: set[int] = set()
        for mf in m.frames:
            real_pfn = self.bijection.real_of(mf.pfn)
            rf = real_frames.get(real_pfn) if real_pfn is not None else None
            if rf is None:
                self.add(
                    step, "missing", "frame", _frame_values(self.arch, mf),
                    Presence.UNPAIRED if real_pfn is None else Presence.NOT_READ,
                    model_pfn=mf.pfn, real_pfn=real_pfn, places=model_places(mf.pfn),
                )
                continue
            reached.add(rf.pfn)
            self.counts[step]["frames"] += 1
            if (mf.kpagemap, mf.kpageflags, mf.kpagecount) != (
                    rf.kpagemap, rf.kpageflags, rf.kpagecount):
                self.frame(step, mf, rf, model_places(mf.pfn))
        for rf in r.frames:
            if rf.pfn not in reached:
                model_pfn = self.bijection.model_of(rf.pfn)
                self.add(
                    step, "missing", "frame",
                    Presence.UNPAIRED if model_pfn is None else Presence.NOT_READ,
                    _frame_values(self.arch, rf),
                    model_pfn=model_pfn, real_pfn=rf.pfn, places=real_places(rf.pfn),
                )

    def frame(self, step: int, mf: FrameRead, rf: FrameRead, places: tuple[Place, ...]) -> None:
        """Two frames paired by the bijection whose bytes differ, value by value."""
        where: dict[str, Any] = {"model_pfn": mf.pfn, "real_pfn": rf.pfn, "places": places}
        ms, rs = _slot(self.arch, mf.kpagemap), _slot(self.arch, rf.kpagemap)
        if isinstance(ms, KpagemapSlot) and isinstance(rs, KpagemapSlot):
            if ms.flags != rs.flags:
                self.add(step, "value", "kpagemap.flags", ms.flags, rs.flags, **where)
            if ms.count != rs.count:
                self.add(step, "value", "kpagemap.count", ms.count, rs.count, **where)
        elif ms != rs:
            self.add(step, "value", "kpagemap", ms, rs, **where)
        mv, rv = _flags(_u64(self.arch, mf.kpageflags)), _flags(_u64(self.arch, rf.kpageflags))
        if mv != rv:
            self.add(step, "value", "kpageflags", mv, rv, **where)
        mc, rc = _u64(self.arch, mf.kpagecount), _u64(self.arch, rf.kpagecount)
        if mc != rc:
            self.add(step, "value", "kpagecount", mc, rc, **where)

    def consistency(self, side: str, check: CheckObservation) -> None:
        """kpagemap flags == kpageflags (as an unsigned long) on one side.

        Every frame whose two reads are whole entries is decoded in one bulk
        parse per file; frames with a failed or short read are compared (and
        reported) by :meth:`frame` only.
        """
        size = self.arch.kpagemap_entry_size
        whole = [
            f for f in check.frames
            if f.kpagemap.data is not None and len(f.kpagemap.data) == size
            and f.kpageflags.data is not None and len(f.kpageflags.data) == 8
        ]
        if not whole:
            return
        self.counts[check.step]["flag_consistency"] += len(whole)
        slot_flags, _ = bulk_parse_kpagemap_entries(
            self.arch, b"".join(f.kpagemap.data or b"" for f in whole))
        flag_words = bulk_parse_u64s(self.arch, b"".join(f.kpageflags.data or b"" for f in whole))
        mask = (1 << 8 * self.arch.word_size) - 1
        places = _Places(self.arch, check.regions)
        pfn_key = "model_pfn" if side == "model" else "real_pfn"
        for frame, slot, flags in zip(whole, slot_flags.tolist(), flag_words.tolist(),
                                      strict=True):
            if slot == flags & mask:
                continue
            mismatch = FlagMismatch(KpfFlags(slot), KpfFlags(flags & mask))
            self.add(
                check.step, "consistency", "kpagemap.flags",
                mismatch if side == "model" else None, mismatch if side == "real" else None,
                side=side, places=places(frame.pfn), **{pfn_key: frame.pfn},
            )


@dataclass(frozen=True)
class Comparison:
    """Every divergence (by step) and, per step, what was compared to find them.

    ``by_step`` has an entry for every step that had an outcome or a check
    on both sides (:class:`~harness.compared.Compared`, counts).
    """

    divergences: list[Divergence]
    by_step: Mapping[int, Compared]

    @property
    def compared(self) -> Compared:
        """The counts of the whole scenario."""
        return Compared.total(self.by_step.values())


def compare(
    model: Observations,
    real: Observations,
    scenario: Scenario,
    arch: Arch,
    bijection: PfnBijection | None = None,
) -> list[Divergence]:
    """Every divergence between ``model`` and ``real`` (empty: they agree), by step.

    ``bijection`` carries PFN bindings in and out (a fresh one by default).
    CompareError if the observations are not of ``scenario`` on ``arch``.
    Time linear in the number of pages and frames observed.
    """
    return compare_counted(model, real, scenario, arch, bijection).divergences


def compare_counted(
    model: Observations,
    real: Observations,
    scenario: Scenario,
    arch: Arch,
    bijection: PfnBijection | None = None,
) -> Comparison:
    """As :func:`compare`, and what was compared, per step (the report's "compared ...")."""
    for obs in (model, real):
        if obs.scenario != scenario.name or obs.arch != arch.name:
            raise CompareError(
                f"{obs.side} observations are of scenario {obs.scenario!r} on {obs.arch}, "
                f"not {scenario.name!r} on {arch.name}"
            )
    comparer = _Comparer(model, real, scenario, arch, bijection or PfnBijection())
    comparer.outcomes()
    comparer.checks()
    by_step = {step: Compared.of(counts) for step, counts in sorted(comparer.counts.items())}
    return Comparison(sorted(comparer.found, key=lambda d: d.step), by_step)


def _observed(thing: object | None) -> Presence:
    return Presence.NOT_OBSERVED if thing is None else Presence.OBSERVED


def _read(thing: object | None) -> Presence:
    return Presence.NOT_READ if thing is None else Presence.READ
