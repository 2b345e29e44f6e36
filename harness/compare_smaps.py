"""Compare /proc/PID/smaps and smaps_rollup of one check: typed differences per field.

What is ours.  The kernel's smaps lists every VMA of the process, the agent's
own (its static /init, heap, stack, vDSO) among them; the model knows only the
scenario's regions.  A real block is *ours* when it lies inside a region the
process has had (the regions' fixed addresses, :func:`harness.scenario.plan_layout`:
no region shares a PMD span with anything else).  Our blocks are compared
exactly, VMA by VMA, matched by their range:

* header: range (the match itself), perms, offset; device and inode only
  where the model knows them (a private anonymous VMA: ``00:00 0``; tmpfs and
  the shm mount number their devices and inodes in the guest); the name
  (``/dev/zero (deleted)``, ``/tmp/pmh-region-PID-VADDR (deleted)`` with the
  pid, which differs between model and guest, left out);
* every kB line (Size ... Locked), THPeligible, ProtectionKey, VmFlags.

The rollup.  show_smaps_rollup() sums every VMA into one mem_size_stats and
floors once, so our regions' share is the rollup minus the other VMAs' blocks:

* fields kept in bytes (Rss, Shared/Private_*, Referenced, Anonymous, KSM,
  LazyFree, *PmdMapped, *_Hugetlb, Swap): every per-VMA value is a whole number
  of pages, so its kB value is exact and the share is an exact difference;
* fields kept in fixed point (bytes << PSS_SHIFT: Pss, Pss_Dirty, Pss_Anon,
  Pss_File, Pss_Shmem, SwapPss, Locked): a block shows ``floor(x / 2^22)``,
  exact only when its pages are all mapped once (Shared_Clean = Shared_Dirty =
  0: smaps_account() then adds whole pages).  Each other VMA's value is known
  to lie in ``[kB, kB + 1)`` (or exactly), so the share lies in an interval
  (:class:`~harness.differences.PssBounds`), and the model's exact fixed-point
  share (:attr:`SmapsRead.pss_fixed`) must lie in it.  The interval is as wide
  as the number of other VMAs with shared pages (in kB) plus one; Pss_Anon,
  Pss_File and Pss_Shmem are not printed per VMA, so a VMA mixing anonymous
  and file pages bounds them by its whole Pss, and File vs Shmem of the
  agent's file pages is open (``[0, its Pss]`` each).  That is the
  approximation; the byte fields and our blocks are exact.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.differences import (
    PSS_KB,
    DivergenceKind,
    Invalid,
    PageRange,
    Presence,
    PssBounds,
    PssShare,
    SmapsText,
    Value,
    VmFlags,
)
from harness.observations import CheckObservation, ReadResult, RegionRead, SmapsRead
from sim.arch import Arch
from sim.smaps_format import SmapsBlock, SmapsFormatError, parse_smaps

__all__ = ["FIXED_POINT_FIELDS", "compare_smaps", "region_of_vma"]

#: The rollup fields show_smaps_rollup() keeps in bytes << PSS_SHIFT.
FIXED_POINT_FIELDS = ("Pss", "Pss_Dirty", "Pss_Anon", "Pss_File", "Pss_Shmem", "SwapPss", "Locked")
_KINDS = ("Pss_Anon", "Pss_File", "Pss_Shmem")
#: The agent names each region's file by its own pid; the pid is not the model's.
_REGION_FILE = re.compile(r"/tmp/pmh-region-\d+-")

Add = Callable[..., None]


def _text(result: ReadResult) -> str | None:
    return None if result.data is None else result.data.decode(errors="replace")


def _parse(result: ReadResult) -> list[SmapsBlock] | Invalid | None:
    text = _text(result)
    if text is None:
        return None
    try:
        return parse_smaps(text)
    except SmapsFormatError as e:
        return Invalid(result.data or b"", str(e))


def _ranges(regions: Sequence[RegionRead], proc: str, page_size: int) -> list[tuple[int, int, str]]:
    return [
        (r.vaddr, r.vaddr + r.pages * page_size, r.region) for r in regions if r.proc == proc
    ]


def region_of_vma(block: SmapsBlock, ranges: Sequence[tuple[int, int, str]]) -> str | None:
    """The region of one of our VMAs (None: not ours).

    A VMA inside one region's range is that region's.  Regions placed to touch
    (``at``) may merge into one VMA: it is ours when the touching ranges
    cover it, and is named by the region holding its start.
    """
    start, end = block.header.start, block.header.end
    for low, high, name in ranges:
        if low <= start and end <= high:
            return name
    first = next((name for low, high, name in ranges if low <= start < high), None)
    if first is None:
        return None
    covered = start
    for low, high, _ in sorted(ranges):
        if low <= covered < high:
            covered = high
    return first if covered >= end else None


class _SmapsComparer:
    def __init__(self, add: Add, step: int, arch: Arch, m: CheckObservation,
                 r: CheckObservation, counts: Counter[str]) -> None:
        self.add_divergence = add
        #: What was compared (harness.compared.Compared's names).
        self.counts = counts
        self.step = step
        self.arch = arch
        self.m = m
        self.r = r
        #: Fields of the divergences added so far.
        self.found: list[str] = []

    def add(self, kind: DivergenceKind, field: str, model: Value, real: Value,
            **where: Any) -> None:
        self.found.append(field)
        self.add_divergence(self.step, kind, field, model, real, **where)

    def run(self) -> None:
        if self.m.smaps is None or self.r.smaps is None:
            return  # a recording made before checks read smaps
        model = {s.proc: s for s in self.m.smaps}
        real = {s.proc: s for s in self.r.smaps}
        for proc in [*model, *(p for p in real if p not in model)]:
            ms, rs = model.get(proc), real.get(proc)
            if ms is None or rs is None:
                self.add("missing", "smaps", _read(ms), _read(rs), proc=proc)
                continue
            self.process(ms, rs)

    def process(self, ms: SmapsRead, rs: SmapsRead) -> None:
        proc = ms.proc
        ranges = _ranges(self.m.regions, proc, self.arch.page_size)
        blocks = self.blocks("smaps", ms.smaps, rs.smaps, proc)
        if blocks is None:
            return
        model_blocks, real_blocks = blocks
        ours = [b for b in real_blocks if region_of_vma(b, ranges) is not None]
        others = [b for b in real_blocks if region_of_vma(b, ranges) is None]
        self.vmas(proc, ranges, model_blocks, ours)
        rollups = self.blocks("smaps_rollup", ms.rollup, rs.rollup, proc)
        if rollups is None:
            return
        self.rollup(proc, rollups[0][0], rollups[1][0], others, ms.pss_fixed)

    def blocks(self, name: str, m: ReadResult, r: ReadResult,
               proc: str) -> tuple[list[SmapsBlock], list[SmapsBlock]] | None:
        """Both sides' parsed blocks, or None after recording why they cannot be compared."""
        if m.data is None or r.data is None:
            if m.errno is not None or r.errno is not None:
                self.counts["errnos"] += 1
            if m != r:
                self.add("value", f"{name}.read", m, r, proc=proc)
            return None
        mb, rb = _parse(m), _parse(r)
        if isinstance(mb, Invalid) or isinstance(rb, Invalid) or mb is None or rb is None:
            self.add("value", f"{name}.format", mb if isinstance(mb, Invalid) else None,
                     rb if isinstance(rb, Invalid) else None, proc=proc)
            return None
        if name == "smaps_rollup" and (len(mb) != 1 or len(rb) != 1):
            self.add("value", "smaps_rollup.blocks", len(mb), len(rb), proc=proc)
            return None
        return mb, rb

    # -- our VMAs ----------------------------------------------------------------

    def vmas(self, proc: str, ranges: Sequence[tuple[int, int, str]],
             model: Sequence[SmapsBlock], real: Sequence[SmapsBlock]) -> None:
        by_range_m = {(b.header.start, b.header.end): b for b in model}
        by_range_r = {(b.header.start, b.header.end): b for b in real}
        page = self.arch.page_size
        for key in sorted(by_range_m.keys() | by_range_r.keys()):
            mb, rb = by_range_m.get(key), by_range_r.get(key)
            region = region_of_vma(mb or rb, ranges)  # type: ignore[arg-type]
            where = {"proc": proc, "region": region, "vaddr": key[0]}
            vma = PageRange(key[0], (key[1] - key[0]) // page)
            if mb is None or rb is None:
                self.add("missing", "smaps.vma", vma if mb else Presence.NOT_OBSERVED,
                         vma if rb else Presence.NOT_OBSERVED, **where)
                continue
            self.counts["vmas"] += 1
            self.block(mb, rb, where)

    def block(self, m: SmapsBlock, r: SmapsBlock, where: Mapping[str, Any]) -> None:
        before = len(self.found)
        self.fields(m, r, where)
        if len(self.found) == before and m.lines != r.lines:
            # Same values, other layout (a field's width, spacing): the first line that differs.
            for ml, rl in zip((*m.lines, ""), (*r.lines, ""), strict=False):
                if ml != rl:
                    self.add("value", "smaps.line", SmapsText(ml), SmapsText(rl), **where)
                    break

    def fields(self, m: SmapsBlock, r: SmapsBlock, where: Mapping[str, Any]) -> None:
        mh, rh = m.header, r.header
        # perms, offset, name and VmFlags always; device and inode of anonymous VMAs.
        compared = 4 + (0 if mh.name else 2) + len(m.values.keys() | r.values.keys())
        compared += (m.thp_eligible, r.thp_eligible) != (None, None)
        compared += (m.protection_key, r.protection_key) != (None, None)
        self.counts["smaps_fields"] += compared
        if mh.perms != rh.perms:
            self.add("value", "smaps.header.perms", SmapsText(mh.perms), SmapsText(rh.perms),
                     **where)
        if mh.offset != rh.offset:
            self.add("value", "smaps.header.offset", mh.offset, rh.offset, **where)
        if not mh.name:  # anonymous: the model knows 00:00 0; files: the guest numbers them
            if mh.device != rh.device:
                self.add("value", "smaps.header.device", SmapsText(mh.device or ""),
                         SmapsText(rh.device or ""), **where)
            if mh.inode != rh.inode:
                self.add("value", "smaps.header.inode", mh.inode, rh.inode, **where)
        m_name, r_name = _REGION_FILE.sub("/tmp/pmh-region-PID-", mh.name), \
            _REGION_FILE.sub("/tmp/pmh-region-PID-", rh.name)
        if m_name != r_name:
            self.add("value", "smaps.header.name", SmapsText(m_name), SmapsText(r_name), **where)
        for name in [*m.values, *(n for n in r.values if n not in m.values)]:
            mv, rv = m.values.get(name), r.values.get(name)
            if mv != rv:
                self.add("value" if mv is not None and rv is not None else "missing",
                         f"smaps.{name}", _line(mv), _line(rv), **where)
        if m.thp_eligible != r.thp_eligible:
            self.add("value", "smaps.THPeligible", _line(m.thp_eligible), _line(r.thp_eligible),
                     **where)
        if m.protection_key != r.protection_key:
            self.add("value", "smaps.ProtectionKey", _line(m.protection_key),
                     _line(r.protection_key), **where)
        if m.vm_flags != r.vm_flags:
            self.add("value", "smaps.VmFlags", VmFlags(m.vm_flags), VmFlags(r.vm_flags), **where)

    # -- the rollup --------------------------------------------------------------

    def rollup(self, proc: str, m: SmapsBlock, r: SmapsBlock, others: Sequence[SmapsBlock],
               pss_fixed: Mapping[str, int] | None) -> None:
        where = {"proc": proc}
        for name in [*m.values, *(n for n in r.values if n not in m.values)]:
            mv, rv = m.values.get(name), r.values.get(name)
            if mv is None or rv is None:
                self.add("missing", f"smaps_rollup.{name}", _line(mv), _line(rv), **where)
                continue
            self.counts["rollup_fields"] += 1
            if name not in FIXED_POINT_FIELDS:
                share = rv - sum(b.values.get(name, 0) for b in others)
                if mv != share:
                    self.add("value", f"smaps_rollup.{name}", mv, share, **where)
                continue
            low, high = _others_bounds(name, others)
            real = PssBounds(max(0, rv * PSS_KB - high), (rv + 1) * PSS_KB - 1 - low)
            if pss_fixed is not None and name in pss_fixed:
                model_low = model_high = pss_fixed[name]
                model: PssShare | int = PssShare(pss_fixed[name])
            else:  # only the model's kB floor is known (older recordings)
                model_low, model_high = mv * PSS_KB, (mv + 1) * PSS_KB - 1
                model = mv
            if model_high < real.low or model_low > real.high:
                self.add("value", f"smaps_rollup.{name}", model, real, **where)


def _others_bounds(name: str, others: Sequence[SmapsBlock]) -> tuple[int, int]:
    """The other VMAs' sum of fixed-point field ``name``: (lowest, highest), inclusive."""
    low = high = 0
    for b in others:
        lo, hi = _block_bounds(name, b)
        low += lo
        high += hi
    return low, high


def _block_bounds(name: str, b: SmapsBlock) -> tuple[int, int]:
    """One VMA's fixed-point ``name`` from its printed kB floor: (lowest, highest), inclusive.

    A page adds a fraction of a kB only when its mapcount is 2 or more
    (smaps_account(): ``PAGE_SIZE << PSS_SHIFT / mapcount``), and then it is
    counted Shared_*; whole pages add whole kB.
    """
    v = b.values
    shared = v.get("Shared_Clean", 0) + v.get("Shared_Dirty", 0)
    pss_low = v.get("Pss", 0) * PSS_KB
    pss_high = pss_low + (PSS_KB - 1 if shared else 0)
    if name == "Pss":
        return pss_low, pss_high
    if name == "Pss_Dirty":
        low = v.get("Pss_Dirty", 0) * PSS_KB
        return low, low + (PSS_KB - 1 if v.get("Shared_Dirty", 0) else 0)
    if name == "SwapPss":
        low = v.get("SwapPss", 0) * PSS_KB
        return low, low + (PSS_KB - 1 if v.get("Swap", 0) else 0)
    if name == "Locked":
        low = v.get("Locked", 0) * PSS_KB
        return low, low + (PSS_KB - 1 if "lo" in b.vm_flags and shared else 0)
    # Pss_Anon / Pss_File / Pss_Shmem: split of the VMA's Pss by folio kind.
    rss, anon = v.get("Rss", 0), v.get("Anonymous", 0)
    if name == "Pss_Anon":
        if anon == 0:
            return 0, 0
        return (pss_low, pss_high) if anon == rss else (0, pss_high)
    if anon == rss:
        return 0, 0
    return 0, pss_high  # file or shmem: smaps does not say which, per VMA


def _line(value: int | None) -> int | Presence:
    return Presence.NOT_OBSERVED if value is None else value


def _read(thing: object | None) -> Presence:
    return Presence.NOT_READ if thing is None else Presence.READ


def compare_smaps(add: Add, step: int, arch: Arch, m: CheckObservation,
                  r: CheckObservation, counts: Counter[str] | None = None) -> None:
    """Every smaps and smaps_rollup difference of one check, through ``add``.

    ``add(step, kind, field, model, real, **where)`` as
    :meth:`harness.compare._Comparer.add`; fields and value types as
    :mod:`harness.differences` lists them.  ``counts`` (if given) is
    incremented by what was compared: ``vmas``, ``smaps_fields``,
    ``rollup_fields``, ``errnos`` (:class:`harness.compared.Compared`).
    """
    _SmapsComparer(add, step, arch, m, r, Counter() if counts is None else counts).run()
