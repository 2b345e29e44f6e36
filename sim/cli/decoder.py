"""``sim decode``: print the entries of a page-level proc file, streaming.

Bytes are read in chunks of whole entries, decoded with the fast path of
:mod:`sim.bulk` (formats defined in :mod:`sim.formats`) and printed as an
aligned table or as JSON lines.  Nothing holds more than one chunk, so a
file of any size decodes in constant memory.

Each kind is one class with two jobs: how long an entry is (after reading a
header, for the kinds that have one) and how a chunk of entries prints.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, ClassVar, TextIO

from sim.bulk import (
    bulk_decode_pagemap,
    bulk_parse_kpagemap_entries,
    bulk_parse_u64s,
    bulk_parse_words,
)
from sim.flags import PM, kpf_names
from sim.formats import (
    KPAGEMAP_HEADER_BYTES,
    ByteLayout,
    FormatError,
    KpagemapHeader,
    PagemapV1Header,
)
from sim.formats_scan import PAGE_REGION_BYTES, parse_page_regions
from sim.pagemap_scan import PM_SCAN_CATEGORIES, PageIs

__all__ = [
    "CHUNK_BYTES",
    "KINDS",
    "MAX_OFFSET",
    "DecodeKind",
    "InputError",
    "decode",
    "read_chunks",
]

#: Bytes read per chunk (rounded down to whole entries).
CHUNK_BYTES = 1 << 20
#: The largest file offset: loff_t is a signed 64-bit integer
#: (__kernel_loff_t in include/uapi/asm-generic/posix_types.h).  Beyond it an
#: offset names no place in any file (and a huge one would print as numbers
#: too long for Python's int-to-text limit).
MAX_OFFSET = (1 << 63) - 1

_JSON_BOOL = ("false", "true")


class Title(str):
    """Text before the entries: held back until the first chunk decodes, so
    input that is malformed from the start prints nothing but the error."""

    __slots__ = ()


class InputError(Exception):
    """FILE cannot be read (as opposed to read and found malformed)."""


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at end of file (reads may come back short)."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        try:
            part = stream.read(remaining)
        except OSError as e:
            raise InputError(f"read failed: {e.strerror or e}") from None
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def read_chunks(
    stream: BinaryIO, what: str, entry_size: int, *, offset: int, first: bytes = b""
) -> Iterator[tuple[int, bytes]]:
    """(file offset, bytes) of successive chunks of whole entries.

    ``first`` are bytes already read (a header) that the chunks start after;
    ``offset`` is the file offset of the first chunk byte.  FormatError at the
    end if the stream stops inside an entry.
    """
    chunk_size = max(entry_size, CHUNK_BYTES - CHUNK_BYTES % entry_size)
    start = offset
    while True:
        data = read_exactly(stream, chunk_size)
        if len(data) % entry_size:
            total = start - offset + len(data) + len(first)
            raise FormatError(
                f"{what}: length {total} bytes (read from file offset "
                f"{offset - len(first)}) is not a multiple of the {entry_size}-byte entry size"
            )
        if data:
            yield start, data
        if len(data) < chunk_size:
            return
        start += len(data)


#: Name of each of the 64 bits, as sim.flags names it (BIT<n> when unknown).
_BIT_NAMES = tuple(kpf_names(1 << bit)[0] for bit in range(64))


# 4096 values: real files repeat a few values millions of times, while random
# input would fill a larger cache with long strings (65536 held ~80 MB).
@functools.lru_cache(maxsize=1 << 12)
def flag_names(raw: int) -> tuple[str, str]:
    """(table text, JSON list) of the KPF names set in ``raw``, low bit first.

    The same names as :func:`sim.flags.kpf_names`, found by walking only the set
    bits, and cached: real files repeat a few values millions of times.
    """
    names = []
    while raw:
        lowest = raw & -raw
        names.append(_BIT_NAMES[lowest.bit_length() - 1])
        raw ^= lowest
    quoted = ", ".join(f'"{name}"' for name in names)
    return (",".join(names) or "-"), f"[{quoted}]"


#: Lines joined per write: large enough to be cheap, small enough to keep the
#: text of a chunk from piling up in memory.
LINES_PER_WRITE = 4096


def _batched(lines: Iterable[str]) -> Iterator[str]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == LINES_PER_WRITE:
            yield "".join(batch)
            batch.clear()
    if batch:
        yield "".join(batch)


def _hex_width(word_size: int) -> int:
    return 2 * word_size


class DecodeKind(ABC):
    """One file kind: reads its header (if any) and prints its entries.

    Both methods yield pieces of text of a few thousand lines each (after a
    :class:`Title` or two), so output starts long before a large input ends.
    """

    name: ClassVar[str]
    help: ClassVar[str]

    @abstractmethod
    def entries(self, stream: BinaryIO, arch: ByteLayout | None, offset: int) -> Iterator[str]:
        """The aligned table."""

    @abstractmethod
    def json_entries(
        self, stream: BinaryIO, arch: ByteLayout | None, offset: int
    ) -> Iterator[str]:
        """One JSON object per line."""


def _need_arch(arch: ByteLayout | None, kind: str) -> ByteLayout:
    if arch is None:
        raise FormatError(f"{kind}: the byte order is unknown: pass --arch")
    return arch


def _check_offset(kind: str, offset: int, entry_size: int, why: str = "") -> None:
    if offset < 0 or offset % entry_size:
        raise FormatError(
            f"bad offset {offset}: {kind} offsets are non-negative multiples of the "
            f"{entry_size}-byte entry size{why}"
        )


class PagemapKind(DecodeKind):
    name = "pagemap"
    help = (
        "/proc/PID/pagemap: one u64 per virtual page.  JSON keys: index (entry "
        "number in the file = offset/8 + i), vaddr (index << PAGE_SHIFT), present, "
        "swapped, file_shared, exclusive, soft_dirty, uffd_wp, guard, pfn (null unless "
        "present), swap_type, swap_offset (null unless swapped).  Table flags: P present, "
        "S swapped, F file page or shared anon, X exclusively mapped, D soft-dirty, "
        "W uffd-wp, G guard region."
    )

    def entries(self, stream: BinaryIO, arch: ByteLayout | None, offset: int) -> Iterator[str]:
        layout = _need_arch(arch, self.name)
        _check_offset(self.name, offset, PM.ENTRY_BYTES)
        yield Title(
            f"# pagemap: {_order_text(layout)}, PAGE_SHIFT {layout.page_shift}; flags: "
            "P present, S swapped, F file/shared-anon, X exclusive, D soft-dirty, "
            "W uffd-wp, G guard\n"
        )
        vwidth = _hex_width(layout.word_size)
        yield Title(f"{'INDEX':>11}  {'VADDR':<{vwidth + 2}}  FLAGS    PFN/SWAP\n")
        for start, data in read_chunks(stream, self.name, PM.ENTRY_BYTES, offset=offset):
            yield from _batched(self._table(layout, start, data, vwidth))

    def json_entries(
        self, stream: BinaryIO, arch: ByteLayout | None, offset: int
    ) -> Iterator[str]:
        layout = _need_arch(arch, self.name)
        _check_offset(self.name, offset, PM.ENTRY_BYTES)
        for start, data in read_chunks(stream, self.name, PM.ENTRY_BYTES, offset=offset):
            yield from _batched(self._json(layout, start, data))

    @staticmethod
    def _columns(
        layout: ByteLayout, start: int, data: bytes
    ) -> Iterator[tuple[int, int, bool, bool, bool, bool, bool, bool, bool, int]]:
        cols = bulk_decode_pagemap(layout, data, offset=start)
        first = start // PM.ENTRY_BYTES
        shift = layout.page_shift
        for i, row in enumerate(
            zip(
                cols.present.tolist(),
                cols.swapped.tolist(),
                cols.file_shared.tolist(),
                cols.exclusive.tolist(),
                cols.soft_dirty.tolist(),
                cols.uffd_wp.tolist(),
                cols.guard.tolist(),
                cols.frame.tolist(),
                strict=True,
            )
        ):
            index = first + i
            yield (index, index << shift, *row)

    def _table(self, layout: ByteLayout, start: int, data: bytes, vwidth: int) -> Iterator[str]:
        for index, vaddr, pr, sw, fi, ex, sd, uw, gu, frame in self._columns(layout, start, data):
            flags = (
                ("P" if pr else "-")
                + ("S" if sw else "-")
                + ("F" if fi else "-")
                + ("X" if ex else "-")
                + ("D" if sd else "-")
                + ("W" if uw else "-")
                + ("G" if gu else "-")
            )
            if pr:
                where = f"{frame:#x}"
            elif sw:
                where = f"swap {frame & PM.SWAP_TYPE_MASK}:{frame >> PM.SWAP_OFFSET_SHIFT:#x}"
            else:
                where = ""
            yield f"{index:>11}  {vaddr:#0{vwidth + 2}x}  {flags}  {where}".rstrip() + "\n"

    def _json(self, layout: ByteLayout, start: int, data: bytes) -> Iterator[str]:
        b = _JSON_BOOL
        for index, vaddr, pr, sw, fi, ex, sd, uw, gu, frame in self._columns(layout, start, data):
            pfn = frame if pr else "null"
            if sw:
                swap_type, swap_offset = frame & PM.SWAP_TYPE_MASK, frame >> PM.SWAP_OFFSET_SHIFT
                swap = f'{swap_type}, "swap_offset": {swap_offset}'
            else:
                swap = 'null, "swap_offset": null'
            yield (
                f'{{"index": {index}, "vaddr": {vaddr}, "present": {b[pr]}, '
                f'"swapped": {b[sw]}, "file_shared": {b[fi]}, "exclusive": {b[ex]}, '
                f'"soft_dirty": {b[sd]}, "uffd_wp": {b[uw]}, "guard": {b[gu]}, '
                f'"pfn": {pfn}, "swap_type": {swap}}}\n'
            )


class _PerPfnU64Kind(DecodeKind):
    """A file of one u64 per PFN at offset ``pfn * 8`` (kpageflags, kpagecount)."""

    #: Column heading of the value in the table.
    column: ClassVar[str]

    @abstractmethod
    def row(self, pfn: int, raw: int) -> str:
        """One table line."""

    @abstractmethod
    def json_row(self, pfn: int, raw: int) -> str:
        """One JSON object line."""

    def _rows(
        self, stream: BinaryIO, layout: ByteLayout, offset: int, render: Callable[[int, int], str]
    ) -> Iterator[str]:
        for start, data in read_chunks(stream, self.name, 8, offset=offset):
            first = start // 8
            yield from _batched(
                render(first + i, raw)
                for i, raw in enumerate(bulk_parse_u64s(layout, data).tolist())
            )

    def entries(self, stream: BinaryIO, arch: ByteLayout | None, offset: int) -> Iterator[str]:
        layout = _need_arch(arch, self.name)
        _check_offset(self.name, offset, 8)
        yield Title(f"# {self.name}: {_order_text(layout)}\n")
        yield Title(f"{'PFN':>12}  {self.column}\n")
        yield from self._rows(stream, layout, offset, self.row)

    def json_entries(
        self, stream: BinaryIO, arch: ByteLayout | None, offset: int
    ) -> Iterator[str]:
        layout = _need_arch(arch, self.name)
        _check_offset(self.name, offset, 8)
        yield from self._rows(stream, layout, offset, self.json_row)


class KpageflagsKind(_PerPfnU64Kind):
    name = "kpageflags"
    help = (
        "/proc/kpageflags: one u64 of KPF_* bits per PFN.  JSON keys: pfn (offset/8 + i), "
        "raw, flags (names without KPF_; bits 32 and up by the kernel's internal names, "
        "e.g. RESERVED, OWNER_2; unknown bits as BIT<n>)."
    )
    column = f"{'RAW':<18}  FLAGS"

    def row(self, pfn: int, raw: int) -> str:
        return f"{pfn:#12x}  {raw:#018x}  {flag_names(raw)[0]}\n"

    def json_row(self, pfn: int, raw: int) -> str:
        return f'{{"pfn": {pfn}, "raw": {raw}, "flags": {flag_names(raw)[1]}}}\n'


class KpagecountKind(_PerPfnU64Kind):
    name = "kpagecount"
    help = "/proc/kpagecount: one u64 mapcount per PFN.  JSON keys: pfn, count."
    column = "COUNT"

    def row(self, pfn: int, raw: int) -> str:
        return f"{pfn:#12x}  {raw}\n"

    def json_row(self, pfn: int, raw: int) -> str:
        return f'{{"pfn": {pfn}, "count": {raw}}}\n'


class KpagemapKind(DecodeKind):
    name = "kpagemap"
    help = (
        "/proc/kpagemap: slot 0 is the header (byte order, PAGE_SHIFT, word size, entry "
        "size), PFN n is slot n + 1, a slot is (flags, count) as two unsigned long.  At "
        "offset 0 the byte order and word size come from the header (--arch is not used); "
        "at an offset > 0 the slice has no header and they come from --arch.  JSON: first "
        'line {"header": {little_endian, page_shift, word_size, entry_size}} (offset 0 '
        "only), then pfn, raw_flags, flags (KPF names), count."
    )

    def _open(
        self, stream: BinaryIO, arch: ByteLayout | None, offset: int
    ) -> tuple[KpagemapHeader | None, ByteLayout, bytes]:
        if offset == 0:
            head = read_exactly(stream, KPAGEMAP_HEADER_BYTES)
            if len(head) == KPAGEMAP_HEADER_BYTES and head[3] > KPAGEMAP_HEADER_BYTES:
                head += read_exactly(stream, head[3] - KPAGEMAP_HEADER_BYTES)
            header = KpagemapHeader.parse(head)
            return header, header, head
        layout = _need_arch(arch, self.name)
        _check_offset(
            self.name, offset, 2 * layout.word_size, " of --arch (offset 0 is the header)"
        )
        return None, layout, b""

    def _rows(
        self, stream: BinaryIO, layout: ByteLayout, offset: int, head: bytes
    ) -> Iterator[list[tuple[int, int, int]]]:
        entry_size = 2 * layout.word_size
        for start, data in read_chunks(
            stream, self.name, entry_size, offset=offset + len(head), first=head
        ):
            first_pfn = start // entry_size - 1
            flags, counts = bulk_parse_kpagemap_entries(layout, data, offset=start)
            yield [
                (first_pfn + i, f, n)
                for i, (f, n) in enumerate(zip(flags.tolist(), counts.tolist(), strict=True))
            ]

    def entries(self, stream: BinaryIO, arch: ByteLayout | None, offset: int) -> Iterator[str]:
        header, layout, head = self._open(stream, arch, offset)
        source = "header" if header is not None else "--arch (no header at this offset)"
        yield Title(
            f"# kpagemap: {_order_text(layout)}, PAGE_SHIFT {layout.page_shift}, "
            f"{layout.word_size}-byte words, {2 * layout.word_size}-byte entries (from {source})\n"
        )
        width = _hex_width(layout.word_size) + 2
        yield Title(f"{'PFN':>12}  {'FLAGS':<{width}}  {'COUNT':>6}  NAMES\n")
        for rows in self._rows(stream, layout, offset, head):
            yield from _batched(
                f"{pfn:#12x}  {flags:#0{width}x}  {count:>6}  {flag_names(flags)[0]}\n"
                for pfn, flags, count in rows
            )

    def json_entries(
        self, stream: BinaryIO, arch: ByteLayout | None, offset: int
    ) -> Iterator[str]:
        header, layout, head = self._open(stream, arch, offset)
        if header is not None:
            fields = {
                "little_endian": header.little_endian,
                "page_shift": header.page_shift,
                "word_size": header.word_size,
                "entry_size": header.entry_size,
            }
            yield Title(json.dumps({"header": fields}) + "\n")
        for rows in self._rows(stream, layout, offset, head):
            yield from _batched(
                f'{{"pfn": {pfn}, "raw_flags": {flags}, "flags": {flag_names(flags)[1]}, '
                f'"count": {count}}}\n'
                for pfn, flags, count in rows
            )


class PagemapV1Kind(DecodeKind):
    name = "pagemap-v1"
    help = (
        "the seed-era /proc/PID/pagemap of April 2007 (history): slot 0 is a one-word "
        "header (byte order, PAGE_SHIFT, word size, header size), the unsigned long for "
        "virtual page v is slot v + 1, all ones = not present.  Header and offsets as for "
        'kpagemap.  JSON: first line {"header": {little_endian, page_shift, word_size, '
        "header_size}} (offset 0 only), then index (virtual page number v), vaddr "
        "(v << PAGE_SHIFT), present, pfn (null unless present)."
    )

    def _open(
        self, stream: BinaryIO, arch: ByteLayout | None, offset: int
    ) -> tuple[PagemapV1Header | None, ByteLayout, bytes]:
        if offset == 0:
            head = read_exactly(stream, KPAGEMAP_HEADER_BYTES)
            if len(head) == KPAGEMAP_HEADER_BYTES and head[3] > KPAGEMAP_HEADER_BYTES:
                head += read_exactly(stream, head[3] - KPAGEMAP_HEADER_BYTES)
            header = PagemapV1Header.parse(head)
            return header, header, head
        layout = _need_arch(arch, self.name)
        _check_offset(self.name, offset, layout.word_size, " of --arch (offset 0 is the header)")
        return None, layout, b""

    def _rows(
        self, stream: BinaryIO, layout: ByteLayout, offset: int, head: bytes
    ) -> Iterator[list[tuple[int, int, int | None]]]:
        word = layout.word_size
        not_present = (1 << 8 * word) - 1
        for start, data in read_chunks(
            stream, self.name, word, offset=offset + len(head), first=head
        ):
            first = start // word - 1
            yield [
                (first + i, (first + i) << layout.page_shift, None if v == not_present else v)
                for i, v in enumerate(bulk_parse_words(layout, data, offset=start).tolist())
            ]

    def entries(self, stream: BinaryIO, arch: ByteLayout | None, offset: int) -> Iterator[str]:
        header, layout, head = self._open(stream, arch, offset)
        source = "header" if header is not None else "--arch (no header at this offset)"
        yield Title(
            f"# pagemap-v1: {_order_text(layout)}, PAGE_SHIFT {layout.page_shift}, "
            f"{layout.word_size}-byte words (from {source})\n"
        )
        vwidth = _hex_width(layout.word_size) + 2
        yield Title(f"{'INDEX':>11}  {'VADDR':<{vwidth}}  PFN\n")
        for rows in self._rows(stream, layout, offset, head):
            yield from _batched(
                f"{index:>11}  {vaddr:#0{vwidth}x}  "
                + ("-" if pfn is None else f"{pfn:#x}")
                + "\n"
                for index, vaddr, pfn in rows
            )

    def json_entries(
        self, stream: BinaryIO, arch: ByteLayout | None, offset: int
    ) -> Iterator[str]:
        header, layout, head = self._open(stream, arch, offset)
        if header is not None:
            fields = {
                "little_endian": header.little_endian,
                "page_shift": header.page_shift,
                "word_size": header.word_size,
                "header_size": header.word_size,
            }
            yield Title(json.dumps({"header": fields}) + "\n")
        for rows in self._rows(stream, layout, offset, head):
            yield from _batched(
                f'{{"index": {index}, "vaddr": {vaddr}, "present": '
                + ("false, \"pfn\": null}\n" if pfn is None else f'true, "pfn": {pfn}}}\n')
                for index, vaddr, pfn in rows
            )


class PageRegionKind(DecodeKind):
    name = "page-region"
    help = (
        "the output of the PAGEMAP_SCAN ioctl on /proc/PID/pagemap: an array of struct "
        "page_region (start, end, categories: three u64, 24 bytes; --offset in bytes into "
        "the array).  JSON keys: index (record number = offset/24 + i), start, end (bytes, "
        "end exclusive), pages ((end - start) >> PAGE_SHIFT), raw (the categories u64), "
        "categories (PAGE_IS_* names without PAGE_IS_; unknown bits as BIT<n>)."
    )

    def _rows(
        self, stream: BinaryIO, layout: ByteLayout, offset: int, as_json: bool
    ) -> Iterator[str]:
        shift = layout.page_shift
        for start, data in read_chunks(stream, self.name, PAGE_REGION_BYTES, offset=offset):
            first = start // PAGE_REGION_BYTES
            lines = []
            for i, region in enumerate(parse_page_regions(layout, data)):
                names = _category_names(region.categories)
                pages = (region.end - region.start) >> shift if region.end >= region.start else -1
                if as_json:
                    quoted = ", ".join(f'"{name}"' for name in names)
                    lines.append(
                        f'{{"index": {first + i}, "start": {region.start}, "end": {region.end}, '
                        f'"pages": {pages}, "raw": {region.categories}, '
                        f'"categories": [{quoted}]}}\n'
                    )
                else:
                    lines.append(
                        f"{first + i:>8}  {region.start:#018x}  {region.end:#018x}  "
                        f"{pages:>10}  {'|'.join(names) or '-'}\n"
                    )
            yield from _batched(lines)

    def entries(self, stream: BinaryIO, arch: ByteLayout | None, offset: int) -> Iterator[str]:
        layout = _need_arch(arch, self.name)
        _check_offset(self.name, offset, PAGE_REGION_BYTES)
        yield Title(f"# {self.name}: {_order_text(layout)}, {1 << layout.page_shift}-byte pages\n")
        yield Title(f"{'INDEX':>8}  {'START':<18}  {'END':<18}  {'PAGES':>10}  CATEGORIES\n")
        yield from self._rows(stream, layout, offset, as_json=False)

    def json_entries(
        self, stream: BinaryIO, arch: ByteLayout | None, offset: int
    ) -> Iterator[str]:
        layout = _need_arch(arch, self.name)
        _check_offset(self.name, offset, PAGE_REGION_BYTES)
        yield from self._rows(stream, layout, offset, as_json=True)


def _category_names(raw: int) -> list[str]:
    """PAGE_IS_* names set in ``raw``, low bit first (BIT<n> for bits 6.12 does not know)."""
    names = []
    for bit in range(64):
        if raw >> bit & 1:
            known = PageIs(1 << bit).name if 1 << bit & PM_SCAN_CATEGORIES else None
            names.append(known or f"BIT{bit}")
    return names


def _order_text(layout: ByteLayout) -> str:
    return "little-endian" if layout.little_endian else "big-endian"


KINDS: dict[str, DecodeKind] = {
    kind.name: kind
    for kind in (
        PagemapKind(), PagemapV1Kind(), KpagemapKind(), KpageflagsKind(), KpagecountKind(),
        PageRegionKind(),
    )
}


def decode(
    kind: str,
    stream: BinaryIO,
    out: TextIO,
    *,
    arch: ByteLayout | None,
    offset: int = 0,
    as_json: bool = False,
) -> None:
    """Decode ``stream`` (FILE's bytes from file offset ``offset``) onto ``out``.

    ``arch`` gives byte order and word size to the kinds without a header (and
    to a headerless slice of the others); None when unknown.  Raises
    FormatError for malformed input, after printing the entries before it.
    """
    if kind not in KINDS:
        raise FormatError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    decoder = KINDS[kind]
    if not 0 <= offset <= MAX_OFFSET:
        raise FormatError(f"bad offset {offset:#x}: offsets are 0..{MAX_OFFSET:#x} (loff_t)")
    pieces = (
        decoder.json_entries(stream, arch, offset)
        if as_json
        else decoder.entries(stream, arch, offset)
    )
    titles: list[str] = []
    for piece in pieces:
        if isinstance(piece, Title):
            titles.append(piece)
            continue
        if titles:
            out.write("".join(titles))
            titles.clear()
        out.write(piece)
    out.write("".join(titles))
