"""The PAGEMAP_SCAN ioctl's binary structures, defined once with construct.

UAPI: include/uapi/linux/fs.h (6.7+): ``struct pm_scan_arg`` (the ioctl's
in/out argument, 12 ``__u64``: 96 bytes) and ``struct page_region`` (one output
record, 3 ``__u64``: 24 bytes).  Every field is a ``__u64`` whatever the word
size, so only the byte order differs between architectures; a 32-bit task
uses the same layout (the ioctl is its own compat_ioctl).

Like :mod:`sim.formats`, each definition is a function of the architecture's
byte layout and is cached per byte order; parsing and building go through the
same definition.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

import construct as c

from sim.formats import ByteLayout, FormatError, check_length

__all__ = [
    "PAGE_REGION_BYTES",
    "PM_SCAN_ARG_BYTES",
    "PageRegion",
    "PmScanArg",
    "build_page_regions",
    "build_pm_scan_arg",
    "page_region_struct",
    "parse_page_regions",
    "parse_pm_scan_arg",
    "pm_scan_arg_struct",
]

#: sizeof(struct pm_scan_arg): the only ``size`` pagemap_scan_get_args() accepts.
PM_SCAN_ARG_BYTES = 96
#: sizeof(struct page_region).
PAGE_REGION_BYTES = 24


@dataclass(frozen=True)
class PmScanArg:
    """struct pm_scan_arg, field by field (addresses in bytes, counts in pages/records).

    ``vec`` is a user address of ``vec_len`` page_region records;
    ``walk_end`` is written back by the kernel; ``max_pages`` 0 means no limit.
    The category fields are PAGE_IS_* bit masks (:class:`sim.pagemap_scan.PageIs`).
    """

    size: int = PM_SCAN_ARG_BYTES
    flags: int = 0
    start: int = 0
    end: int = 0
    walk_end: int = 0
    vec: int = 0
    vec_len: int = 0
    max_pages: int = 0
    category_inverted: int = 0
    category_mask: int = 0
    category_anyof_mask: int = 0
    return_mask: int = 0


@dataclass(frozen=True)
class PageRegion:
    """struct page_region: pages [start, end) (bytes, end exclusive) sharing ``categories``."""

    start: int
    end: int
    categories: int


@functools.cache
def _u64s_struct(little_endian: bool, names: tuple[str, ...]) -> c.Construct:
    u64 = c.Int64ul if little_endian else c.Int64ub
    return c.Struct(*(name / u64 for name in names))


def pm_scan_arg_struct(arch: ByteLayout) -> c.Construct:
    """struct pm_scan_arg in the architecture's byte order (96 bytes)."""
    return _u64s_struct(arch.little_endian, tuple(f.name for f in fields(PmScanArg)))


def page_region_struct(arch: ByteLayout) -> c.Construct:
    """struct page_region in the architecture's byte order (24 bytes)."""
    return _u64s_struct(arch.little_endian, tuple(f.name for f in fields(PageRegion)))


def build_pm_scan_arg(arch: ByteLayout, arg: PmScanArg) -> bytes:
    """The 96 bytes of ``arg``; FormatError if a field does not fit a u64."""
    try:
        data: bytes = pm_scan_arg_struct(arch).build(_as_dict(arg))
    except c.ConstructError as e:
        raise FormatError(f"pm_scan_arg does not fit: {' '.join(str(e).split())}") from None
    return data


def parse_pm_scan_arg(arch: ByteLayout, data: bytes) -> PmScanArg:
    """A pm_scan_arg from exactly 96 bytes; FormatError otherwise."""
    if len(data) != PM_SCAN_ARG_BYTES:
        raise FormatError(f"pm_scan_arg is {PM_SCAN_ARG_BYTES} bytes, not {len(data)}")
    parsed = pm_scan_arg_struct(arch).parse(data)
    return PmScanArg(**{f.name: parsed[f.name] for f in fields(PmScanArg)})


def build_page_regions(arch: ByteLayout, regions: Sequence[PageRegion]) -> bytes:
    """An array of page_region records (what the kernel copies to ``vec``)."""
    try:
        data: bytes = c.Array(len(regions), page_region_struct(arch)).build(
            [_as_dict(r) for r in regions]
        )
    except c.ConstructError as e:
        raise FormatError(f"page_region does not fit: {' '.join(str(e).split())}") from None
    return data


def parse_page_regions(arch: ByteLayout, data: bytes) -> list[PageRegion]:
    """The page_region records in ``data``; FormatError unless its length is a multiple of 24."""
    n = check_length("page_region array", len(data), PAGE_REGION_BYTES)
    parsed = c.Array(n, page_region_struct(arch)).parse(data)
    return [PageRegion(r.start, r.end, r.categories) for r in parsed]


def _as_dict(value: Any) -> dict[str, int]:
    return dict(zip((f.name for f in fields(value)), astuple(value), strict=True))

