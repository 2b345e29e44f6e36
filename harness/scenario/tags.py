"""Tags: the u64 each page must hold, so the RAM oracle knows what every frame holds.

A write step stores :func:`write_tag` at the start of each page it touches;
page ``p`` of a file region's backing file starts with :func:`file_tag`.
Both are linear in the page, so an agent is given the first page's tag and
stores tag + k in the k-th page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.scenario.parse import Scenario

__all__ = [
    "FILE_TAG_MAGIC",
    "MAX_PAGES",
    "MAX_REGIONS",
    "MAX_STEPS",
    "WRITE_TAG_MAGIC",
    "describe_tag",
    "file_tag",
    "write_tag",
]

#: Limits that keep tags unique (see :func:`write_tag`) and checks fast.
MAX_STEPS = 1 << 16
MAX_REGIONS = 1 << 8
MAX_PAGES = 1 << 24

#: Top 16 bits of a tag: which kind of store put it there.
WRITE_TAG_MAGIC = 0x5754  # "WT"
FILE_TAG_MAGIC = 0x4654  # "FT"


def write_tag(step: int, region_number: int, page: int) -> int:
    """The u64 a write step stores in the first 8 bytes of a page.

    Bits 63-48 ``WRITE_TAG_MAGIC``, 47-32 the step index, 31-24 the region
    number, 23-0 the page index: unique within a scenario, never 0 (a fresh
    anonymous page or the zero page reads 0), never a file tag.  Stored as a
    u64 in the architecture's byte order.  Linear in the page
    (``write_tag(s, n, p + k) == write_tag(s, n, p) + k``).  ValueError if a
    field is out of range.
    """
    if not (0 <= step < MAX_STEPS and 0 <= region_number < MAX_REGIONS and 0 <= page < MAX_PAGES):
        raise ValueError(f"tag fields out of range: step {step}, region {region_number}, "
                         f"page {page}")
    return WRITE_TAG_MAGIC << 48 | step << 32 | region_number << 24 | page


def file_tag(region_number: int, page: int) -> int:
    """The u64 in the first 8 bytes of page ``page`` of a file region's file.

    The backing file of region number n has ``pages`` pages; page p starts
    with ``file_tag(n, p)`` as a u64 in the architecture's byte order, and the
    rest of the page is zero.  Linear in the page, like :func:`write_tag`.
    """
    if not (0 <= region_number < MAX_REGIONS and 0 <= page < MAX_PAGES):
        raise ValueError(f"tag fields out of range: region {region_number}, page {page}")
    return FILE_TAG_MAGIC << 48 | region_number << 24 | page


def describe_tag(tag: int, scenario: Scenario | None = None) -> str:
    """A tag in words, for reports: ``0x... (write of step 4, region 'a' page 2)``."""
    magic = tag >> 48
    number = tag >> 24 & 0xFF
    page = tag & 0xFF_FFFF
    region = f"#{number}"
    if scenario is not None and number < len(scenario.region_names):
        region = repr(scenario.region_names[number])
    if tag == 0:
        return "0x0 (zero: never written)"
    if magic == WRITE_TAG_MAGIC:
        return f"{tag:#x} (write of step {tag >> 32 & 0xFFFF}, region {region} page {page})"
    if magic == FILE_TAG_MAGIC and not tag >> 32 & 0xFFFF:
        return f"{tag:#x} (file contents, region {region} page {page})"
    return f"{tag:#x} (not a tag)"
