"""The swap area header (``union swap_header``, include/linux/swap.h), defined once with construct.

A swap device's first page is its header.  The kernel reads it in
``SYSCALL_DEFINE2(swapon)`` -> ``read_swap_header()`` (mm/swapfile.c): the
magic ``SWAPSPACE2`` in the page's last 10 bytes, then the ``info`` view:
``version`` 1, ``last_page`` (the last usable page's index: slots 1 ..
last_page, page 0 being the header itself), ``nr_badpages`` (0 here) and the
bad-page list.  The integers are in the guest's byte order (the kernel also
accepts the other one and swab32()s it, but mkswap writes the native order).

The harness writes this page on the host side (:func:`build_swap_header`), so
the guest needs no ``mkswap``: the swap disk of a VM with swap
(:mod:`harness.swapdisk`) is this page followed by zeroes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import construct as c

from sim.formats import ByteLayout

__all__ = [
    "SWAP_MAGIC",
    "SWAP_VERSION",
    "SwapHeader",
    "build_swap_header",
    "parse_swap_header",
    "swap_header_struct",
]

#: The magic of a version-1 swap area (``SWAPSPACE2``; ``SWAP-SPACE`` was version 0).
SWAP_MAGIC = b"SWAPSPACE2"
#: ``info.version`` read_swap_header() accepts.
SWAP_VERSION = 1
#: ``bootbits``: space left for a disk label before ``info`` starts.
_BOOTBITS = 1024


@functools.cache
def _header(little_endian: bool, page_size: int) -> c.Construct:
    u32 = c.Int32ul if little_endian else c.Int32ub
    info = c.Struct(
        "bootbits" / c.Bytes(_BOOTBITS),
        "version" / u32,
        "last_page" / u32,
        "nr_badpages" / u32,
        "sws_uuid" / c.Bytes(16),
        "sws_volume" / c.Bytes(16),
        "padding" / c.Array(117, u32),
        "badpages" / c.Array(c.this.nr_badpages, u32),
    )
    # union swap_header: the info view at the start, the magic at PAGE_SIZE - 10.
    return c.Struct(
        "info" / info,
        c.Padding(lambda ctx: page_size - len(SWAP_MAGIC) - _info_size(ctx.info.nr_badpages)),
        "magic" / c.Const(SWAP_MAGIC),
    )


def _info_size(nr_badpages: int) -> int:
    """Bytes of the info view with ``nr_badpages`` entries in badpages[]."""
    return _BOOTBITS + 3 * 4 + 16 + 16 + 117 * 4 + 4 * nr_badpages


def swap_header_struct(arch: ByteLayout) -> c.Construct:
    """The header page of a swap area on ``arch`` (its byte order and page size)."""
    return _header(arch.little_endian, 1 << arch.page_shift)


@dataclass(frozen=True)
class SwapHeader:
    """The fields of a swap header that matter: ``last_page`` is the last slot's index."""

    last_page: int
    version: int = SWAP_VERSION
    nr_badpages: int = 0

    @classmethod
    def for_size(cls, arch: ByteLayout, size_bytes: int) -> SwapHeader:
        """The header of a whole device of ``size_bytes`` (ValueError if under two pages)."""
        pages = size_bytes >> arch.page_shift
        if pages < 2:
            raise ValueError(f"a swap area of {size_bytes} bytes has no page besides its header")
        return cls(last_page=pages - 1)


def build_swap_header(arch: ByteLayout, header: SwapHeader) -> bytes:
    """The header page (PAGE_SIZE bytes); ValueError for bad pages (never written here)."""
    if header.nr_badpages:
        raise ValueError("bad pages are not supported")
    return bytes(
        swap_header_struct(arch).build(
            {
                "info": {
                    "bootbits": bytes(_BOOTBITS),
                    "version": header.version,
                    "last_page": header.last_page,
                    "nr_badpages": 0,
                    "sws_uuid": bytes(16),
                    "sws_volume": bytes(16),
                    "padding": [0] * 117,
                    "badpages": [],
                }
            }
        )
    )


def parse_swap_header(arch: ByteLayout, data: bytes) -> SwapHeader:
    """The header of a header page; construct.ConstructError if the magic or size is wrong."""
    parsed = swap_header_struct(arch).parse(data)
    return SwapHeader(
        last_page=parsed.info.last_page,
        version=parsed.info.version,
        nr_badpages=parsed.info.nr_badpages,
    )
