"""The footprint of a check's processes, computed from its observations, against two oracles.

A check's observations hold what the footprint tool (:mod:`sim.footprint`)
reads on a live system: each process's pagemap over our regions and the
kpageflags / kpagecount / kpagemap of every frame those name.
:func:`check_source` serves them through the tool's own interface
(:class:`~sim.footprint.recorded.RecordedSource`, a
:class:`~sim.footprint.source.PageSource`), so the tool runs the code path it
runs on /proc.  :func:`footprint_mismatches` then holds its numbers against:

* **the kernel's smaps**: for each of our VMA blocks in the kernel's
  /proc/PID/smaps, the tool's RSS over the block's range is the block's
  ``Rss`` (bytes / 1024, exact) and its fixed-point PSS floored to kB is the
  block's ``Pss`` (the kernel prints ``pss >> PSS_SHIFT >> 10`` of the same
  sum: smaps_account() adds ``(PAGE_SIZE << PSS_SHIFT) / mapcount`` per
  mapping, the tool the same with kpagecount's mapcount); ``Swap`` is the
  tool's count of the block's swap entries in pagemap (swap types below
  MAX_SWAPFILES: a uffd-wp marker is not swap, as smaps_pte_entry() says);
* **the model's prediction**: per process, the tool's exact fixed-point PSS,
  Pss_Anon and Pss_Shmem and its RSS over our regions equal the model's
  smaps_rollup sums (:attr:`~harness.observations.SmapsRead.pss_fixed`,
  :mod:`sim.smaps`) -- given the model's observations of the same check.

Only checks whose reader sees PFNs (root) are exact; others are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.compare_smaps import region_of_vma
from harness.observations import CheckObservation, SmapsRead
from sim.arch import Arch
from sim.flags import PM
from sim.footprint.recorded import RecordedProcess, RecordedSource
from sim.footprint.scan import PSS_SHIFT, ProcessFootprint, scan
from sim.footprint.source import PageLayout, ProcessInfo
from sim.smaps_format import SmapsBlock, SmapsFormatError, parse_smaps

__all__ = ["FootprintMismatch", "check_source", "footprint_mismatches", "process_footprints"]


@dataclass(frozen=True)
class FootprintMismatch:
    """The tool's number differs from an oracle's, at ``step`` for ``proc`` (and a VMA).

    ``quantity`` names it (``Rss``, ``Pss`` in kB for a block; ``rss`` in
    bytes, ``pss_fixed`` in bytes << PSS_SHIFT for a process); ``oracle`` is
    ``"kernel smaps"`` or ``"model"``.
    """

    step: int
    proc: str
    vaddr: int | None
    quantity: str
    footprint: int
    expected: int
    oracle: str

    def __str__(self) -> str:
        where = self.proc if self.vaddr is None else f"{self.proc} @{self.vaddr:#x}"
        return (f"step {self.step} {where}: footprint {self.quantity} {self.footprint}, "
                f"{self.oracle} {self.expected}")


def _layout(arch: Arch) -> PageLayout:
    return PageLayout(arch.little_endian, arch.word_size, arch.page_shift)


#: Per process, the [start, end) byte ranges of its pagemaps to use.
Ranges = Mapping[str, Sequence[tuple[int, int]]]


def check_source(
    check: CheckObservation, arch: Arch, ranges: Ranges | None = None
) -> tuple[RecordedSource, dict[str, ProcessInfo]]:
    """The check's reads as a PageSource, and the ProcessInfo given to each process.

    ``ranges``: per process, only these [start, end) byte ranges of its
    pagemaps (default: every region it was observed in).  Processes get pids
    1, 2, ... in the check's order.
    """
    shift = arch.page_shift
    names: dict[str, ProcessInfo] = {}
    pieces: dict[str, list[tuple[int, bytes]]] = {}
    for read in check.regions:
        info = names.setdefault(read.proc, ProcessInfo(len(names) + 1, 0, 0, read.proc))
        found = pieces.setdefault(info.comm, [])
        data = read.pagemap.data
        if data is None:
            continue
        data = data[: len(data) - len(data) % PM.ENTRY_BYTES]
        wanted = [(read.vaddr, read.vaddr + len(data) // PM.ENTRY_BYTES << shift)] \
            if ranges is None else ranges.get(read.proc, ())
        for start, end in wanted:
            lo, hi = max(start, read.vaddr), min(end, read.vaddr + (len(data) // 8 << shift))
            if lo < hi:
                first = (lo - read.vaddr) >> shift
                found.append((lo >> shift, data[first * 8 : (hi - read.vaddr >> shift) * 8]))
    pagemaps = {proc: _disjoint(found) for proc, found in pieces.items()}
    flags = {f.pfn: f.kpageflags.data for f in check.frames if f.kpageflags.data}
    counts = {f.pfn: f.kpagecount.data for f in check.frames if f.kpagecount.data}
    slots = {f.pfn: f.kpagemap.data for f in check.frames if f.kpagemap.data}
    processes = [RecordedProcess(info, pagemaps.get(name, {})) for name, info in names.items()]
    source = RecordedSource(_layout(arch), processes, flags, counts, slots or None)
    return source, names


def _disjoint(pieces: Sequence[tuple[int, bytes]]) -> dict[int, bytes]:
    """Pagemap slices (first page -> entries) with every page once.

    Regions placed ``at`` another region's page overlap its range, so two
    reads of one check can hold the same page (the same entry: nothing runs
    between them); the tool must see each page once.
    """
    slices: dict[int, bytes] = {}
    covered = -1
    for first, data in sorted(pieces, key=lambda piece: piece[0]):
        end = first + len(data) // PM.ENTRY_BYTES
        if end <= covered:
            continue
        if first < covered:
            data, first = data[(covered - first) * PM.ENTRY_BYTES :], covered
        slices[first] = data
        covered = end
    return slices


def process_footprints(
    check: CheckObservation, arch: Arch, ranges: Ranges | None = None
) -> dict[str, ProcessFootprint]:
    """The tool's per-process numbers for the check's processes (one group of all)."""
    source, names = check_source(check, arch, ranges)
    found = scan(source, {"all": list(names.values())})
    return {p.comm: p for p in found.groups[0].members}


def _ours(read: SmapsRead, check: CheckObservation, arch: Arch) -> list[SmapsBlock]:
    if read.smaps.data is None:
        return []
    try:
        blocks = parse_smaps(read.smaps.data.decode(errors="replace"))
    except SmapsFormatError:
        return []
    regions = [
        (r.vaddr, r.vaddr + r.pages * arch.page_size, r.region)
        for r in check.regions if r.proc == read.proc
    ]
    return [b for b in blocks if region_of_vma(b, regions) is not None]


def footprint_mismatches(
    real: CheckObservation, arch: Arch, model: CheckObservation | None = None
) -> list[FootprintMismatch]:
    """Where the tool, run on ``real``'s reads, disagrees with the kernel's smaps blocks
    and (given ``model``, the model's observations of the same check) with the model.

    Empty for a check whose reader is not root (no PFNs) or that read no smaps.
    """
    if real.reader_uid != 0 or not real.smaps:
        return []
    found: list[FootprintMismatch] = []
    for read in real.smaps:
        for block in _ours(read, real, arch):
            span = {read.proc: [(block.header.start, block.header.end)]}
            vma = process_footprints(real, arch, span)[read.proc]
            for quantity, value, expected in (
                ("Rss", vma.rss >> 10, block.values.get("Rss")),
                ("Pss", vma.pss_fixed >> PSS_SHIFT >> 10, block.values.get("Pss")),
                ("Swap", vma.swap >> 10, block.values.get("Swap")),
            ):
                if expected is not None and value != expected:
                    found.append(FootprintMismatch(real.step, read.proc, block.header.start,
                                                   quantity, value, expected, "kernel smaps"))
    if model is None or not model.smaps:
        return found
    tools = process_footprints(real, arch)
    for read in model.smaps:
        fixed = read.pss_fixed
        tool = tools.get(read.proc)
        if fixed is None or tool is None:
            continue
        for quantity, value, key in (
            ("pss_fixed", tool.pss_fixed, "Pss"),
            ("pss_anon_fixed", tool.pss_anon_fixed, "Pss_Anon"),
            ("pss_shmem_fixed", tool.pss_shmem_fixed, "Pss_Shmem"),
            ("pss_file_fixed", tool.pss_file_fixed, "Pss_File"),
        ):
            if value != fixed[key]:
                found.append(FootprintMismatch(real.step, read.proc, None, quantity, value,
                                               fixed[key], "model"))
        model_rss = sum(b.values.get("Rss", 0) for b in _ours(read, model, arch)) << 10
        if tool.rss != model_rss:
            found.append(FootprintMismatch(real.step, read.proc, None, "rss", tool.rss,
                                           model_rss, "model"))
    return found
