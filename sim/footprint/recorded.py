"""Recorded (or synthetic) page data as a :class:`~sim.footprint.source.PageSource`.

Holds raw slices of each file, as a guest's Observations or a test build
them (a pagemap slice per VMA; kpageflags / kpagecount / kpagemap slices
keyed by their first PFN, e.g. one per PFN seen), and answers reads by
copying from them.  Entries no slice covers read as zero (a hole in
pagemap; flags 0 and mapcount 0 for a PFN, which the scan leaves out of
RSS), so a recording must cover every PFN its pagemaps name.  :meth:`RecordedSource.build`
makes one from decoded values in any layout (byte order, word size, page
size), through the project's encoders (:mod:`sim.bulk`, :mod:`sim.formats`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sim.bulk import bulk_build_kpagemap_entries, bulk_build_u64s
from sim.flags import PM
from sim.footprint.source import PageLayout, ProcessGone, ProcessInfo, Run, SourceError
from sim.formats import PagemapEntry

__all__ = ["Frame", "RecordedProcess", "RecordedSource"]


@dataclass(frozen=True)
class Frame:
    """One PFN's values: KPF flags, mapcount (kpagecount), refcount (kpagemap)."""

    flags: int = 0
    mapcount: int = 0
    refcount: int = 0


@dataclass
class RecordedProcess:
    """One process: its info, pagemap bytes per VMA (keyed by first virtual page), rollup."""

    info: ProcessInfo
    pagemaps: dict[int, bytes] = field(default_factory=dict)
    rollup: dict[str, int] = field(default_factory=dict)
    #: Reads of this process raise ProcessGone (it "exited mid-scan").
    gone: bool = False


Slices = Mapping[int, bytes]


def _read_slices(slices: Slices, first: int, count: int, entry_size: int) -> bytes:
    """Entries [first, first + count) from ``slices`` (first index -> bytes); zeros elsewhere."""
    buffer = bytearray(count * entry_size)
    for start, data in slices.items():
        n = len(data) // entry_size
        lo, hi = max(first, start), min(first + count, start + n)
        if lo < hi:
            buffer[(lo - first) * entry_size : (hi - first) * entry_size] = data[
                (lo - start) * entry_size : (hi - start) * entry_size
            ]
    return bytes(buffer)


class RecordedSource:
    """Raw slices of pagemaps, kpageflags, kpagecount and (optionally) kpagemap.

    ``kpageflags``, ``kpagecount`` and ``kpagemap`` map a first PFN to the
    bytes read there (kpagemap: slots of that PFN on, header excluded: the
    header is ``layout``); ``kpagemap`` is None for a kernel without the file.
    """

    def __init__(
        self,
        layout: PageLayout,
        processes: Sequence[RecordedProcess],
        kpageflags: Slices,
        kpagecount: Slices,
        kpagemap: Slices | None = None,
    ) -> None:
        self._layout = layout
        self._processes = {p.info.pid: p for p in processes}
        self._kpageflags = kpageflags
        self._kpagecount = kpagecount
        self._kpagemap = kpagemap

    @property
    def layout(self) -> PageLayout:
        """The layout the bytes were recorded in."""
        return self._layout

    @property
    def has_kpagemap(self) -> bool:
        """True if a kpagemap was recorded."""
        return self._kpagemap is not None

    def processes(self) -> list[ProcessInfo]:
        """The recorded processes, by pid."""
        return [self._processes[pid].info for pid in sorted(self._processes)]

    def _process(self, pid: int) -> RecordedProcess:
        process = self._processes.get(pid)
        if process is None or process.gone:
            raise ProcessGone(pid)
        return process

    def vma_ranges(self, pid: int) -> list[tuple[int, int]]:
        """One range per recorded pagemap slice."""
        process = self._process(pid)
        shift = self._layout.page_shift
        return [
            (start << shift, (start + len(data) // PM.ENTRY_BYTES) << shift)
            for start, data in sorted(process.pagemaps.items())
        ]

    def pagemap(self, pid: int, runs: Sequence[Run]) -> list[bytes]:
        """Slices of the recorded pagemap; unrecorded pages read as holes (0)."""
        process = self._process(pid)
        return [
            _read_slices(process.pagemaps, first, count, PM.ENTRY_BYTES) for first, count in runs
        ]

    def kpageflags(self, runs: Sequence[Run]) -> list[bytes]:
        """The recorded /proc/kpageflags entries of each run."""
        return [_read_slices(self._kpageflags, first, count, 8) for first, count in runs]

    def kpagecount(self, runs: Sequence[Run]) -> list[bytes]:
        """The recorded /proc/kpagecount entries of each run."""
        return [_read_slices(self._kpagecount, first, count, 8) for first, count in runs]

    def kpagemap(self, runs: Sequence[Run]) -> list[bytes]:
        """The recorded /proc/kpagemap slots of each run."""
        if self._kpagemap is None:
            raise SourceError("no kpagemap was recorded")
        size = 2 * self._layout.word_size
        return [_read_slices(self._kpagemap, first, count, size) for first, count in runs]

    def smaps_rollup(self, pid: int) -> dict[str, int]:
        """The recorded rollup fields (kB)."""
        return dict(self._process(pid).rollup)

    @classmethod
    def build(
        cls,
        layout: PageLayout,
        processes: Mapping[ProcessInfo, Mapping[int, Sequence[PagemapEntry]]],
        frames: Mapping[int, Frame],
        *,
        with_kpagemap: bool = False,
        rollups: Mapping[int, dict[str, int]] | None = None,
        gone: Sequence[int] = (),
    ) -> RecordedSource:
        """Encode decoded values into the files' bytes in ``layout``.

        ``processes`` maps each process to its VMAs: first virtual page ->
        the pagemap entries of consecutive pages.  ``frames`` gives each PFN's
        values; PFNs up to the highest one not listed read as flags 0, count 0.
        """
        top = max(frames, default=-1) + 1
        flags = [frames[pfn].flags if pfn in frames else 0 for pfn in range(top)]
        counts = [frames[pfn].mapcount if pfn in frames else 0 for pfn in range(top)]
        refs = [frames[pfn].refcount if pfn in frames else 0 for pfn in range(top)]
        kpagemap = None
        if with_kpagemap:
            # (unsigned long)stable_page_flags(): a 32-bit word keeps bits 0-31.
            word_mask = (1 << 8 * layout.word_size) - 1
            kpagemap = {
                0: bulk_build_kpagemap_entries(
                    layout, [value & word_mask for value in flags], refs
                )
            }
        recorded = [
            RecordedProcess(
                info=info,
                pagemaps={
                    start: bulk_build_u64s(layout, [entry.to_raw() for entry in entries])
                    for start, entries in vmas.items()
                },
                rollup=dict((rollups or {}).get(info.pid, {})),
                gone=info.pid in gone,
            )
            for info, vmas in processes.items()
        ]
        return cls(
            layout,
            recorded,
            {0: bulk_build_u64s(layout, flags)},
            {0: bulk_build_u64s(layout, counts)},
            kpagemap,
        )
