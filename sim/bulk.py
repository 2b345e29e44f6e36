"""The fast path: the formats of :mod:`sim.formats`, vectorised with numpy.

For buffers of millions of entries (a whole /proc/kpageflags, a pagemap of a
large mapping).  Every dtype names its byte order explicitly (``'<u8'``,
``'>u4'``, ...) from the architecture, never the host's.  Parsing returns
read-only views on the caller's bytes where it can (no copy); the views keep
the file's byte-order dtype, and arithmetic on them yields plain values.

The construct definitions in :mod:`sim.formats` are the specification; the
tests prove this module gives the same answers on random input for every
architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sim.flags import PM
from sim.formats import (
    ByteLayout,
    FormatError,
    KpagemapHeader,
    PagemapEntry,
    check_length,
)

__all__ = [
    "PagemapColumns",
    "bulk_build_kpagemap_entries",
    "bulk_build_u64s",
    "bulk_build_words",
    "bulk_decode_pagemap",
    "bulk_parse_kpagemap",
    "bulk_parse_kpagemap_entries",
    "bulk_parse_u64s",
    "bulk_parse_words",
    "u64_dtype",
    "word_dtype",
]

Buffer = bytes | bytearray | memoryview
U64Array = npt.NDArray[np.uint64]
WordArray = npt.NDArray[np.unsignedinteger[Any]]
BoolArray = npt.NDArray[np.bool_]


def u64_dtype(arch: ByteLayout) -> np.dtype[np.uint64]:
    """u64 in the architecture's byte order."""
    return np.dtype("<u8" if arch.little_endian else ">u8")


def word_dtype(arch: ByteLayout) -> np.dtype[np.unsignedinteger[Any]]:
    """``unsigned long`` in the architecture's byte order."""
    if arch.word_size not in (4, 8):
        raise FormatError(f"word size {arch.word_size} is not 4 or 8")
    return np.dtype(f"{'<' if arch.little_endian else '>'}u{arch.word_size}")


def bulk_parse_u64s(arch: ByteLayout, data: Buffer, *, offset: int = 0) -> U64Array:
    """u64 values of ``data`` (pagemap, kpageflags, kpagecount), a view without copy.

    ``offset`` only names the place in error messages.
    """
    check_length("u64 array", len(data), 8, offset=offset)
    return np.frombuffer(data, dtype=u64_dtype(arch))


def bulk_build_u64s(arch: ByteLayout, values: npt.ArrayLike) -> bytes:
    """Bytes of ``values`` as u64 in the architecture's byte order."""
    return _as_unsigned(values, u64_dtype(arch)).tobytes()


def bulk_parse_words(arch: ByteLayout, data: Buffer, *, offset: int = 0) -> WordArray:
    """``unsigned long`` values of ``data``, a view without copy."""
    check_length("word array", len(data), arch.word_size, offset=offset)
    return np.frombuffer(data, dtype=word_dtype(arch))


def bulk_build_words(arch: ByteLayout, values: npt.ArrayLike) -> bytes:
    """Bytes of ``values`` as ``unsigned long`` in the architecture's layout."""
    return _as_unsigned(values, word_dtype(arch)).tobytes()


def _as_unsigned(
    values: npt.ArrayLike, dtype: np.dtype[np.unsignedinteger[Any]]
) -> WordArray:
    """``values`` as a 1-d array of ``dtype``; FormatError unless each fits exactly.

    Python ints go straight to the target dtype (numpy would otherwise turn a
    list holding 2**63 or more into float64 and lose bits).
    """
    bits = 8 * dtype.itemsize
    if not isinstance(values, np.ndarray):
        try:
            array: WordArray = np.array(values, dtype=dtype)
        except OverflowError:
            raise FormatError(f"a value does not fit {bits} unsigned bits") from None
        except (TypeError, ValueError) as e:
            raise FormatError(f"values are not integers: {e}") from None
        return array.reshape(-1)
    if values.dtype.kind not in "iu":
        raise FormatError(f"values of dtype {values.dtype} are not integers")
    if values.size:
        if values.dtype.kind == "i" and int(values.min()) < 0:
            raise FormatError(f"negative value {int(values.min())} does not fit {bits} bits")
        if values.dtype.itemsize * 8 > bits and int(values.max()) >> bits:
            raise FormatError(f"value {int(values.max()):#x} does not fit {bits} bits")
    converted: WordArray = values.astype(dtype, copy=False).reshape(-1)
    return converted


# ---------------------------------------------------------------------------
# kpagemap
# ---------------------------------------------------------------------------


def bulk_parse_kpagemap_entries(
    arch: ByteLayout, data: Buffer, *, offset: int = 0
) -> tuple[WordArray, WordArray]:
    """(flags, counts) of slots without the header: two strided views, no copy."""
    check_length("kpagemap", len(data), 2 * arch.word_size, offset=offset)
    pairs = np.frombuffer(data, dtype=word_dtype(arch)).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def bulk_parse_kpagemap(data: Buffer) -> tuple[KpagemapHeader, WordArray, WordArray]:
    """The whole file read from offset 0: header, flags and counts (index = PFN)."""
    header = KpagemapHeader.parse(bytes(data[: 2 * 8]))
    check_length("kpagemap", len(data), header.entry_size)
    flags, counts = bulk_parse_kpagemap_entries(header, memoryview(data)[header.entry_size :])
    return header, flags, counts


def bulk_build_kpagemap_entries(
    arch: ByteLayout, flags: npt.ArrayLike, counts: npt.ArrayLike
) -> bytes:
    """Slots of (flags, count), without the header."""
    dtype = word_dtype(arch)
    flag_array, count_array = _as_unsigned(flags, dtype), _as_unsigned(counts, dtype)
    if flag_array.shape != count_array.shape:
        raise FormatError("flags and counts must be of one length")
    pairs = np.empty((flag_array.size, 2), dtype=dtype)
    pairs[:, 0] = flag_array
    pairs[:, 1] = count_array
    return pairs.tobytes()


# ---------------------------------------------------------------------------
# pagemap
# ---------------------------------------------------------------------------

# Every flag bit lives in the top 16 bits of the u64 (bits 48-63): decoding
# reads them as one 16-bit column (the u64's most significant u16, whose place
# in the 8 bytes follows from the byte order) and tests bits of that.
_TOP_SHIFT = 48
_PRESENT_OR_SWAP = 1 << PM.PRESENT - _TOP_SHIFT | 1 << PM.SWAP - _TOP_SHIFT
_RESERVED_TOP = 0b11 << 59 - _TOP_SHIFT  # bits 59-60: never written


@dataclass(frozen=True)
class PagemapColumns:
    """A pagemap buffer decoded into one array per field (index = entry).

    ``frame`` holds bits 0-54: the PFN where ``present``, swap type | offset
    << 5 where ``swapped``, zero elsewhere; :attr:`pfn`, :attr:`swap_type` and
    :attr:`swap_offset` slice it (meaningful only where their flag is set).
    """

    raw: U64Array
    present: BoolArray
    swapped: BoolArray
    file_shared: BoolArray
    exclusive: BoolArray
    soft_dirty: BoolArray
    uffd_wp: BoolArray
    guard: BoolArray
    frame: U64Array

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    @property
    def pfn(self) -> U64Array:
        return self.frame

    @property
    def swap_type(self) -> U64Array:
        return self.frame & np.uint64(PM.SWAP_TYPE_MASK)

    @property
    def swap_offset(self) -> U64Array:
        return self.frame >> np.uint64(PM.SWAP_OFFSET_SHIFT)

    def entry(self, index: int) -> PagemapEntry:
        """Entry ``index`` as the scalar dataclass."""
        return PagemapEntry.from_raw(int(self.raw[index]))

    def entries(self) -> list[PagemapEntry]:
        return [PagemapEntry.from_raw(raw) for raw in self.raw.tolist()]


def bulk_decode_pagemap(
    arch: ByteLayout, data: Buffer, *, offset: int = 0, validate: bool = True
) -> PagemapColumns:
    """Decode a pagemap body field by field, vectorised.

    With ``validate`` (the default) FormatError names the first entry no kernel
    writes (as :meth:`PagemapEntry.from_raw` would reject it); ``offset`` is
    the file offset of ``data``, used in that message.
    """
    raw = bulk_parse_u64s(arch, data, offset=offset)
    # u16 3 of a little-endian u64 is its top; u16 0 of a big-endian one.
    halves = np.frombuffer(data, dtype=np.dtype(f"{'<' if arch.little_endian else '>'}u2"))
    top = halves.reshape(-1, 4)[:, 3 if arch.little_endian else 0].astype(np.uint16)

    def flag(bit: int) -> BoolArray:
        result: BoolArray = (top & (1 << bit - _TOP_SHIFT)) != 0
        return result

    columns = PagemapColumns(
        raw=raw,
        present=flag(PM.PRESENT),
        swapped=flag(PM.SWAP),
        file_shared=flag(PM.FILE),
        exclusive=flag(PM.MMAP_EXCLUSIVE),
        soft_dirty=flag(PM.SOFT_DIRTY),
        uffd_wp=flag(PM.UFFD_WP),
        guard=flag(PM.GUARD_REGION),
        frame=raw & np.uint64(PM.PFN_MASK),
    )
    if validate:
        _validate_pagemap(columns, top, offset)
    return columns


def _validate_pagemap(columns: PagemapColumns, top: npt.NDArray[np.uint16], offset: int) -> None:
    """FormatError naming the first entry PagemapEntry.from_raw() would reject."""
    kind = top & _PRESENT_OR_SWAP
    bad = (top & _RESERVED_TOP) != 0
    bad |= kind == _PRESENT_OR_SWAP
    bad |= (kind == 0) & (columns.frame != 0)
    if not bad.any():
        return
    index = int(np.argmax(bad))
    try:
        columns.entry(index)
    except FormatError as e:
        file_index = offset // PM.ENTRY_BYTES + index
        raise FormatError(
            f"pagemap entry {file_index} (file offset {offset + index * PM.ENTRY_BYTES}): {e}"
        ) from None
    raise AssertionError(f"entry {index} flagged invalid but decodes")  # pragma: no cover

