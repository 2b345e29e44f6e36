"""Every binary format of the page-level proc files, defined once with construct.

Each definition is a function of the architecture's byte layout (byte order,
word size, page shift) and is cached per layout; nothing here looks at the
host's byte order.  Parsing and building go through the same definition.

Formats (see /proc documentation and the kernel functions named below):

* ``/proc/pid/pagemap`` (upstream, fs/proc/task_mmu.c ``pagemap_read``): one
  u64 per virtual page at offset ``(vaddr >> PAGE_SHIFT) * 8``; bit layout in
  :func:`pagemap_entry_struct`, decoded into :class:`PagemapEntry`.
* ``/proc/kpageflags`` and ``/proc/kpagecount`` (fs/proc/page.c
  ``kpageflags_read``, ``kpagecount_read``): one u64 per PFN at ``pfn * 8``.
* ``/proc/kpagemap`` (the 2007 interface the patch series re-adds): slot 0 is a
  header (:class:`KpagemapHeader`), PFN n is slot n + 1; a slot is a (flags,
  count) pair of ``unsigned long`` in the header's byte order.
* The seed-era pagemap of April 2007 (:func:`pagemap_v1_struct`), kept as
  documented history: a one-word header slot, then one ``unsigned long`` PFN per
  virtual page, all ones when not present.

The numpy fast path for large buffers is :mod:`sim.bulk`; tests prove it equal
to these definitions.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import construct as c

from sim.flags import PM

__all__ = [
    "KPAGEMAP_HEADER_BYTES",
    "PAGE_SHIFT_RANGE",
    "ByteLayout",
    "FormatError",
    "KpagemapHeader",
    "PagemapEntry",
    "PagemapV1Header",
    "build_kpagemap",
    "build_kpagemap_entries",
    "build_pagemap_entries",
    "build_pagemap_v1",
    "build_u64s",
    "build_words",
    "check_length",
    "kpagemap_entry_struct",
    "kpagemap_file_struct",
    "kpagemap_header_struct",
    "pagemap_entry_struct",
    "pagemap_v1_file_struct",
    "pagemap_v1_header_struct",
    "pagemap_v1_struct",
    "parse_kpagemap",
    "parse_kpagemap_entries",
    "parse_pagemap_entries",
    "parse_pagemap_v1",
    "parse_u64s",
    "parse_words",
    "u64_struct",
    "word_struct",
]

#: The header occupies the first 4 bytes of slot 0 of /proc/kpagemap.
KPAGEMAP_HEADER_BYTES = 4
#: PAGE_SHIFT values a header may carry: 1K pages up to 16M pages.  Linux
#: builds with 4K (12), 16K (14), 64K (16) and 256K (18) base pages.
PAGE_SHIFT_RANGE = range(10, 25)
#: sizeof(unsigned long) of every Linux ABI.
WORD_SIZES = (4, 8)


class FormatError(ValueError):
    """Bytes that are not a valid instance of the format; the message says why."""


class ByteLayout(Protocol):
    """What a format needs from an architecture (an :class:`~sim.arch.Arch` has it).

    A :class:`KpagemapHeader` has it too, so a file can be parsed with the
    layout its own header declares.
    """

    @property
    def little_endian(self) -> bool: ...

    @property
    def word_size(self) -> int: ...

    @property
    def page_shift(self) -> int: ...


def check_length(what: str, data_len: int, entry_size: int, *, offset: int = 0) -> int:
    """Number of whole entries in ``data_len`` bytes; FormatError if a tail is left.

    ``offset`` is where the bytes start in the file, named in the message so a
    reader can find the place.
    """
    if data_len % entry_size:
        raise FormatError(
            f"{what}: length {data_len} bytes (from file offset {offset}) is not a "
            f"multiple of the {entry_size}-byte entry size"
        )
    return data_len // entry_size


# ---------------------------------------------------------------------------
# Integers in the architecture's byte order
# ---------------------------------------------------------------------------


@functools.cache
def _u64(little_endian: bool) -> c.Construct:
    return c.Int64ul if little_endian else c.Int64ub


@functools.cache
def _word(little_endian: bool, word_size: int) -> c.Construct:
    if word_size not in WORD_SIZES:
        raise FormatError(f"word size {word_size} is not 4 or 8")
    table = {
        (True, 4): c.Int32ul,
        (False, 4): c.Int32ub,
        (True, 8): c.Int64ul,
        (False, 8): c.Int64ub,
    }
    return table[(little_endian, word_size)]


def u64_struct(arch: ByteLayout) -> c.Construct:
    """The u64 of pagemap, kpageflags and kpagecount (``u64`` is 8 bytes on every arch)."""
    return _u64(arch.little_endian)


def word_struct(arch: ByteLayout) -> c.Construct:
    """An ``unsigned long`` of the architecture (kpagemap, the seed-era pagemap)."""
    return _word(arch.little_endian, arch.word_size)


def build_u64s(arch: ByteLayout, values: Sequence[int]) -> bytes:
    """The body of a pagemap / kpageflags / kpagecount read returning ``values``."""
    try:
        data: bytes = c.Array(len(values), u64_struct(arch)).build(list(values))
    except c.ConstructError as e:
        raise FormatError(f"u64 values do not fit: {_construct_message(e)}") from None
    return data


def parse_u64s(arch: ByteLayout, data: bytes) -> list[int]:
    """The u64 values in ``data`` (a pagemap / kpageflags / kpagecount body).

    The layout is :func:`u64_struct`'s; parsed with :mod:`struct` (one C
    call) rather than construct's per-element parse, which was the largest
    single cost of a model check (RAM tags and frame reads; see
    benchmarks/bench_fuzz.py).  FormatError unless the length is a multiple of 8.
    """
    n = check_length("u64 array", len(data), 8)
    return list(struct.unpack(f"{'<' if arch.little_endian else '>'}{n}Q", data))


def build_words(arch: ByteLayout, values: Sequence[int]) -> bytes:
    """``unsigned long`` values in the architecture's layout."""
    try:
        data: bytes = c.Array(len(values), word_struct(arch)).build(list(values))
    except c.ConstructError as e:
        raise FormatError(
            f"values do not fit a {arch.word_size}-byte word: {_construct_message(e)}"
        ) from None
    return data


def parse_words(arch: ByteLayout, data: bytes) -> list[int]:
    """The ``unsigned long`` values in ``data``."""
    n = check_length("word array", len(data), arch.word_size)
    values: list[int] = list(c.Array(n, word_struct(arch)).parse(data))
    return values


def _construct_message(e: c.ConstructError) -> str:
    # construct's messages carry a path and a newline; keep one line.
    return " ".join(str(e).split())


# ---------------------------------------------------------------------------
# /proc/pid/pagemap (upstream)
# ---------------------------------------------------------------------------


def _frame_kind(ctx: Any) -> str:
    """What the 55 frame bits hold: pte_to_pagemap_entry() sets PM_PRESENT or
    PM_SWAP, never both, and leaves the frame zero for neither."""
    if ctx.present and ctx.swapped:
        return "invalid"
    if ctx.present:
        return "page"
    if ctx.swapped:
        return "swap"
    return "none"


#: The bits of one pagemap u64, most significant first (fs/proc/task_mmu.c:
#: PM_PRESENT 63, PM_SWAP 62, PM_FILE 61, 59-60 unused, PM_GUARD_REGION 58
#: (6.15+), PM_UFFD_WP 57, PM_MMAP_EXCLUSIVE 56, PM_SOFT_DIRTY 55, and the
#: 55-bit frame: PFN if present, swap type | offset << MAX_SWAPFILES_SHIFT if
#: swapped (pte_to_pagemap_entry), zero otherwise (make_pme(0, flags) for holes).
_PAGEMAP_BITS = c.BitStruct(
    "present" / c.Flag,
    "swapped" / c.Flag,
    "file_shared" / c.Flag,
    "reserved" / c.Const(0, c.BitsInteger(2)),
    "guard" / c.Flag,
    "uffd_wp" / c.Flag,
    "exclusive" / c.Flag,
    "soft_dirty" / c.Flag,
    "frame"
    / c.Switch(
        _frame_kind,
        {
            "page": c.BitsInteger(PM.PFN_BITS),
            "swap": c.Struct(
                "offset" / c.BitsInteger(PM.PFN_BITS - PM.SWAP_OFFSET_SHIFT),
                "type" / c.BitsInteger(PM.SWAP_TYPE_BITS),
            ),
            "none": c.Const(0, c.BitsInteger(PM.PFN_BITS)),
        },
        default=c.Error,
    ),
)


@functools.cache
def _pagemap_entry(little_endian: bool) -> c.Construct:
    # BitStruct reads bits most significant byte first: big-endian as is,
    # little-endian after swapping the 8 bytes.
    # (ByteSwapped would need a static size, which the Switch hides.)
    if not little_endian:
        return _PAGEMAP_BITS
    swap = c.lib.swapbytes
    return c.Transformed(_PAGEMAP_BITS, swap, PM.ENTRY_BYTES, swap, PM.ENTRY_BYTES)


def pagemap_entry_struct(arch: ByteLayout) -> c.Construct:
    """One /proc/pid/pagemap u64, field by field, in the architecture's byte order."""
    return _pagemap_entry(arch.little_endian)


_PAGEMAP_FLAG_BITS: dict[str, int] = {
    "present": PM.PRESENT,
    "swapped": PM.SWAP,
    "file_shared": PM.FILE,
    "guard": PM.GUARD_REGION,
    "uffd_wp": PM.UFFD_WP,
    "exclusive": PM.MMAP_EXCLUSIVE,
    "soft_dirty": PM.SOFT_DIRTY,
}
#: Bits 59-60: never set by any kernel.
_PAGEMAP_RESERVED_MASK = 0b11 << 59


@dataclass(frozen=True)
class PagemapEntry:
    """One upstream /proc/pid/pagemap u64, decoded.

    ``pfn`` is None unless present (a present page read without CAP_SYS_ADMIN
    has pfn 0: pagemap_read() clears show_pfn); ``swap_type``/``swap_offset``
    are None unless swapped.  A kernel never sets both present and swapped, the
    frame bits of an entry that is neither, or bits 59-60: :meth:`from_raw`
    rejects such values, so ``from_raw(x).to_raw() == x`` for every accepted x.

    All fields default to "not mapped": ``PagemapEntry()`` is a hole.
    """

    present: bool = False
    swapped: bool = False
    file_shared: bool = False
    exclusive: bool = False
    soft_dirty: bool = False
    uffd_wp: bool = False
    guard: bool = False
    pfn: int | None = None
    swap_type: int | None = None
    swap_offset: int | None = None

    def __post_init__(self) -> None:
        if self.present and self.swapped:
            raise ValueError("a pagemap entry is not both present and swapped")
        if (self.pfn is not None) != self.present:
            raise ValueError("pfn is given exactly when the entry is present")
        if (self.swap_type is not None) != self.swapped or (
            self.swap_offset is not None
        ) != self.swapped:
            raise ValueError("swap_type and swap_offset are given exactly when swapped")
        if self.pfn is not None and not 0 <= self.pfn <= PM.PFN_MASK:
            raise ValueError(f"pfn {self.pfn:#x} does not fit {PM.PFN_BITS} bits")
        if self.swap_type is not None and not 0 <= self.swap_type <= PM.SWAP_TYPE_MASK:
            raise ValueError(f"swap type {self.swap_type} does not fit 5 bits")
        if self.swap_offset is not None and not (
            0 <= self.swap_offset < 1 << (PM.PFN_BITS - PM.SWAP_OFFSET_SHIFT)
        ):
            raise ValueError(f"swap offset {self.swap_offset:#x} does not fit 50 bits")

    @classmethod
    def page(cls, pfn: int, **flags: bool) -> PagemapEntry:
        """A present page (flags: file_shared, exclusive, soft_dirty, uffd_wp)."""
        return cls(present=True, pfn=pfn, **flags)

    @classmethod
    def swap(cls, swap_type: int, swap_offset: int, **flags: bool) -> PagemapEntry:
        """A swap (or migration) entry."""
        return cls(swapped=True, swap_type=swap_type, swap_offset=swap_offset, **flags)

    def to_raw(self) -> int:
        """The u64 the kernel writes (make_pme() in fs/proc/task_mmu.c)."""
        raw = 0
        for name, bit in _PAGEMAP_FLAG_BITS.items():
            if getattr(self, name):
                raw |= 1 << bit
        if self.pfn is not None:
            raw |= self.pfn
        if self.swap_type is not None and self.swap_offset is not None:
            raw |= self.swap_type | self.swap_offset << PM.SWAP_OFFSET_SHIFT
        return raw

    @classmethod
    def from_raw(cls, raw: int) -> PagemapEntry:
        """Decode one u64 value; FormatError for a value no kernel writes."""
        if not 0 <= raw < 1 << 64:
            raise FormatError(f"pagemap value {raw:#x} is not a u64")
        if raw & _PAGEMAP_RESERVED_MASK:
            raise FormatError(f"pagemap value {raw:#018x}: reserved bits 59-60 are set")
        present = bool(raw >> PM.PRESENT & 1)
        swapped = bool(raw >> PM.SWAP & 1)
        frame = raw & PM.PFN_MASK
        if present and swapped:
            raise FormatError(f"pagemap value {raw:#018x}: both present and swapped")
        if frame and not (present or swapped):
            raise FormatError(
                f"pagemap value {raw:#018x}: frame bits set but neither present nor swapped"
            )
        return cls(
            present=present,
            swapped=swapped,
            file_shared=bool(raw >> PM.FILE & 1),
            exclusive=bool(raw >> PM.MMAP_EXCLUSIVE & 1),
            soft_dirty=bool(raw >> PM.SOFT_DIRTY & 1),
            uffd_wp=bool(raw >> PM.UFFD_WP & 1),
            guard=bool(raw >> PM.GUARD_REGION & 1),
            pfn=frame if present else None,
            swap_type=frame & PM.SWAP_TYPE_MASK if swapped else None,
            swap_offset=frame >> PM.SWAP_OFFSET_SHIFT if swapped else None,
        )

    @classmethod
    def from_fields(cls, fields: Any) -> PagemapEntry:
        """From what :func:`pagemap_entry_struct` parses."""
        frame = fields.frame
        return cls(
            present=fields.present,
            swapped=fields.swapped,
            file_shared=fields.file_shared,
            exclusive=fields.exclusive,
            soft_dirty=fields.soft_dirty,
            uffd_wp=fields.uffd_wp,
            guard=fields.guard,
            pfn=frame if fields.present else None,
            swap_type=frame.type if fields.swapped else None,
            swap_offset=frame.offset if fields.swapped else None,
        )

    def to_fields(self) -> dict[str, Any]:
        """What :func:`pagemap_entry_struct` builds from."""
        frame: Any = 0
        if self.pfn is not None:
            frame = self.pfn
        elif self.swapped:
            frame = {"type": self.swap_type, "offset": self.swap_offset}
        fields: dict[str, Any] = {name: getattr(self, name) for name in _PAGEMAP_FLAG_BITS}
        fields["frame"] = frame
        return fields


def parse_pagemap_entries(arch: ByteLayout, data: bytes) -> list[PagemapEntry]:
    """A pagemap body decoded entry by entry with :func:`pagemap_entry_struct`."""
    n = check_length("pagemap", len(data), PM.ENTRY_BYTES)
    try:
        parsed = c.Array(n, pagemap_entry_struct(arch)).parse(data)
    except c.ConstructError:
        # Name the first entry no kernel would write, and why.
        for index, raw in enumerate(parse_u64s(arch, data)):
            try:
                PagemapEntry.from_raw(raw)
            except FormatError as e:
                raise FormatError(
                    f"entry {index} (byte {index * PM.ENTRY_BYTES}): {e}"
                ) from None
        raise
    return [PagemapEntry.from_fields(fields) for fields in parsed]


def build_pagemap_entries(arch: ByteLayout, entries: Sequence[PagemapEntry]) -> bytes:
    """A pagemap body from decoded entries, with :func:`pagemap_entry_struct`."""
    data: bytes = c.Array(len(entries), pagemap_entry_struct(arch)).build(
        [entry.to_fields() for entry in entries]
    )
    return data


# ---------------------------------------------------------------------------
# /proc/kpagemap
# ---------------------------------------------------------------------------

#: The first 4 bytes of slot 0, one byte each, so the same in either byte
#: order (kpagemap_read() in the seed: byte 0 = ntohl(1) != 1, byte 1 =
#: PAGE_SHIFT, byte 2 = sizeof(unsigned long), byte 3 = KPMSIZE).
kpagemap_header_struct = c.Struct(
    "little_endian" / c.Int8ub,
    "page_shift" / c.Int8ub,
    "word_size" / c.Int8ub,
    "entry_size" / c.Int8ub,
)


def _parse_seed_header(kind: str, struct: c.Construct, data: bytes) -> tuple[Any, str]:
    """Parse and check the 4 bytes both seed-era headers share.

    Bytes 0-2 mean the same in kpagemap and the seed's pagemap (byte order,
    PAGE_SHIFT, sizeof(unsigned long)); byte 3 and the padding are each
    format's own and are checked by the caller.  Returns the parsed container
    and the text that names the header in error messages.
    """
    if len(data) < KPAGEMAP_HEADER_BYTES:
        raise FormatError(
            f"{kind}: {len(data)} bytes is shorter than the {KPAGEMAP_HEADER_BYTES}-byte header"
        )
    raw = struct.parse(data[:KPAGEMAP_HEADER_BYTES])
    where = f"{kind} header {bytes(data[:KPAGEMAP_HEADER_BYTES]).hex(' ')}"
    if raw.little_endian not in (0, 1):
        raise FormatError(f"{where}: byte 0 (byte order) is {raw.little_endian}, not 0 or 1")
    if raw.page_shift not in PAGE_SHIFT_RANGE:
        raise FormatError(
            f"{where}: byte 1 (PAGE_SHIFT) is {raw.page_shift}, outside "
            f"{PAGE_SHIFT_RANGE.start}..{PAGE_SHIFT_RANGE.stop - 1}"
        )
    if raw.word_size not in WORD_SIZES:
        raise FormatError(f"{where}: byte 2 (word size) is {raw.word_size}, not 4 or 8")
    return raw, where


@dataclass(frozen=True)
class KpagemapHeader:
    """Slot 0 of /proc/kpagemap: how to read the rest of the file."""

    little_endian: bool
    page_shift: int
    word_size: int
    entry_size: int

    @classmethod
    def for_arch(cls, arch: ByteLayout) -> KpagemapHeader:
        return cls(
            little_endian=arch.little_endian,
            page_shift=arch.page_shift,
            word_size=arch.word_size,
            entry_size=2 * arch.word_size,
        )

    def slot_bytes(self) -> bytes:
        """The whole slot 0: the 4 header bytes, then zeros up to entry_size."""
        head: bytes = kpagemap_header_struct.build(
            {
                "little_endian": int(self.little_endian),
                "page_shift": self.page_shift,
                "word_size": self.word_size,
                "entry_size": self.entry_size,
            }
        )
        return head + bytes(self.entry_size - KPAGEMAP_HEADER_BYTES)

    @classmethod
    def parse(cls, data: bytes) -> KpagemapHeader:
        """The header at the start of ``data`` (slot 0, or the whole file).

        FormatError if the header is impossible: byte order not 0 or 1, word
        size not 4 or 8, entry size not twice the word size, a page shift
        outside 10..24, nonzero padding, or ``data`` shorter than slot 0.
        """
        raw, where = _parse_seed_header("kpagemap", kpagemap_header_struct, data)
        if raw.entry_size != 2 * raw.word_size:
            raise FormatError(
                f"{where}: byte 3 (entry size) is {raw.entry_size}, not twice the "
                f"word size {raw.word_size}"
            )
        if len(data) < raw.entry_size:
            raise FormatError(
                f"kpagemap: {len(data)} bytes is shorter than the {raw.entry_size}-byte slot 0"
            )
        padding = bytes(data[KPAGEMAP_HEADER_BYTES : raw.entry_size])
        if any(padding):
            raise FormatError(f"{where}: padding of slot 0 is not zero ({padding.hex(' ')})")
        return cls(
            little_endian=bool(raw.little_endian),
            page_shift=raw.page_shift,
            word_size=raw.word_size,
            entry_size=raw.entry_size,
        )


@functools.cache
def _kpagemap_entry(little_endian: bool, word_size: int) -> c.Construct:
    word = _word(little_endian, word_size)
    return c.Struct("flags" / word, "count" / word)


def kpagemap_entry_struct(arch: ByteLayout) -> c.Construct:
    """One kpagemap slot: (flags, count) as two ``unsigned long``."""
    return _kpagemap_entry(arch.little_endian, arch.word_size)


@functools.cache
def _kpagemap_file(little_endian: bool, word_size: int, page_shift: int) -> c.Construct:
    header = KpagemapHeader(little_endian, page_shift, word_size, 2 * word_size)
    return c.Struct(
        "header" / c.Const(header.slot_bytes()),
        "entries" / c.GreedyRange(_kpagemap_entry(little_endian, word_size)),
        c.Terminated,
    )


def kpagemap_file_struct(arch: ByteLayout) -> c.Construct:
    """The whole of /proc/kpagemap as ``arch`` writes it: slot 0, then PFN 0, 1, ..."""
    return _kpagemap_file(arch.little_endian, arch.word_size, arch.page_shift)


def build_kpagemap_entries(arch: ByteLayout, pairs: Sequence[tuple[int, int]]) -> bytes:
    """Slots of (flags, count) pairs, without the header (a read at offset > 0)."""
    try:
        data: bytes = c.Array(len(pairs), kpagemap_entry_struct(arch)).build(
            [{"flags": flags, "count": count} for flags, count in pairs]
        )
    except c.ConstructError as e:
        raise FormatError(
            f"kpagemap values do not fit a {arch.word_size}-byte word: {_construct_message(e)}"
        ) from None
    return data


def parse_kpagemap_entries(arch: ByteLayout, data: bytes) -> list[tuple[int, int]]:
    """(flags, count) pairs of slots without the header."""
    n = check_length("kpagemap", len(data), 2 * arch.word_size)
    parsed = c.Array(n, kpagemap_entry_struct(arch)).parse(data)
    return [(entry.flags, entry.count) for entry in parsed]


def build_kpagemap(arch: ByteLayout, pairs: Sequence[tuple[int, int]]) -> bytes:
    """The whole file: header slot, then (flags, count) for PFN 0, 1, ..."""
    try:
        data: bytes = kpagemap_file_struct(arch).build(
            {"entries": [{"flags": flags, "count": count} for flags, count in pairs]}
        )
    except c.ConstructError as e:
        raise FormatError(
            f"kpagemap values do not fit a {arch.word_size}-byte word: {_construct_message(e)}"
        ) from None
    return data


def parse_kpagemap(data: bytes) -> tuple[KpagemapHeader, list[tuple[int, int]]]:
    """The whole file read from offset 0: its header and (flags, count) per PFN.

    Byte order and word size come from the file's own header.
    """
    header = KpagemapHeader.parse(data)
    check_length("kpagemap", len(data), header.entry_size)
    parsed = kpagemap_file_struct(header).parse(data)
    return header, [(entry.flags, entry.count) for entry in parsed.entries]


# ---------------------------------------------------------------------------
# The seed-era /proc/pid/pagemap (April 2007; removed before merge): history
# ---------------------------------------------------------------------------

#: Its header: the same 4 bytes as kpagemap's, but byte 3 is the header size,
#: sizeof(unsigned long), which is also the slot size.
pagemap_v1_header_struct = c.Struct(
    "little_endian" / c.Int8ub,
    "page_shift" / c.Int8ub,
    "word_size" / c.Int8ub,
    "header_size" / c.Int8ub,
)


@dataclass(frozen=True)
class PagemapV1Header:
    """Slot 0 of the seed-era pagemap: one ``unsigned long``."""

    little_endian: bool
    page_shift: int
    word_size: int

    @classmethod
    def for_arch(cls, arch: ByteLayout) -> PagemapV1Header:
        return cls(arch.little_endian, arch.page_shift, arch.word_size)

    def slot_bytes(self) -> bytes:
        head: bytes = pagemap_v1_header_struct.build(
            {
                "little_endian": int(self.little_endian),
                "page_shift": self.page_shift,
                "word_size": self.word_size,
                "header_size": self.word_size,
            }
        )
        return head + bytes(self.word_size - KPAGEMAP_HEADER_BYTES)

    @classmethod
    def parse(cls, data: bytes) -> PagemapV1Header:
        """The header at the start of ``data``; FormatError if impossible."""
        raw, where = _parse_seed_header("pagemap-v1", pagemap_v1_header_struct, data)
        if raw.header_size != raw.word_size:
            raise FormatError(
                f"{where}: byte 3 (header size) is {raw.header_size}, not the "
                f"word size {raw.word_size}"
            )
        if len(data) < raw.word_size:
            raise FormatError(
                f"pagemap-v1: {len(data)} bytes is shorter than the {raw.word_size}-byte slot 0"
            )
        padding = bytes(data[KPAGEMAP_HEADER_BYTES : raw.word_size])
        if any(padding):
            raise FormatError(f"{where}: padding of slot 0 is not zero ({padding.hex(' ')})")
        return cls(bool(raw.little_endian), raw.page_shift, raw.word_size)


@functools.cache
def _pagemap_v1_entry(little_endian: bool, word_size: int) -> c.Construct:
    # All ones means "not present" (the seed wrote -1 for a missing page).
    not_present = (1 << 8 * word_size) - 1
    return c.ExprAdapter(
        _word(little_endian, word_size),
        decoder=lambda obj, ctx: None if obj == not_present else obj,
        encoder=lambda obj, ctx: not_present if obj is None else obj,
    )


def pagemap_v1_struct(arch: ByteLayout) -> c.Construct:
    """One seed-era pagemap slot: a PFN, or None when all ones (not present)."""
    return _pagemap_v1_entry(arch.little_endian, arch.word_size)


@functools.cache
def _pagemap_v1_file(little_endian: bool, word_size: int, page_shift: int) -> c.Construct:
    header = PagemapV1Header(little_endian, page_shift, word_size)
    return c.Struct(
        "header" / c.Const(header.slot_bytes()),
        "entries" / c.GreedyRange(_pagemap_v1_entry(little_endian, word_size)),
        c.Terminated,
    )


def pagemap_v1_file_struct(arch: ByteLayout) -> c.Construct:
    """The seed-era pagemap file: header slot, then the slot of virtual page v at v + 1."""
    return _pagemap_v1_file(arch.little_endian, arch.word_size, arch.page_shift)


def build_pagemap_v1(arch: ByteLayout, pfns: Sequence[int | None]) -> bytes:
    """The whole seed-era file: header, then a PFN (None: not present) per page."""
    all_ones = (1 << 8 * arch.word_size) - 1
    if any(pfn == all_ones for pfn in pfns):
        raise FormatError(f"pagemap-v1: PFN {all_ones:#x} (all ones) means not present")
    try:
        data: bytes = pagemap_v1_file_struct(arch).build({"entries": list(pfns)})
    except c.ConstructError as e:
        raise FormatError(f"pagemap-v1 values do not fit: {_construct_message(e)}") from None
    return data


def parse_pagemap_v1(data: bytes) -> tuple[PagemapV1Header, list[int | None]]:
    """The whole seed-era file read from offset 0: header and PFN-or-None per page."""
    header = PagemapV1Header.parse(data)
    check_length("pagemap-v1", len(data), header.word_size)
    parsed = pagemap_v1_file_struct(header).parse(data)
    return header, list(parsed.entries)
