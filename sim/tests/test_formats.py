"""The construct definitions of sim.formats: literal bytes, round trips, rejections."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import ARCH_NAMES, get_arch
from sim.flags import PM
from sim.formats import (
    FormatError,
    KpagemapHeader,
    PagemapEntry,
    PagemapV1Header,
    build_kpagemap,
    build_kpagemap_entries,
    build_pagemap_entries,
    build_pagemap_v1,
    build_u64s,
    build_words,
    kpagemap_entry_struct,
    kpagemap_file_struct,
    kpagemap_header_struct,
    pagemap_entry_struct,
    parse_kpagemap,
    parse_kpagemap_entries,
    parse_pagemap_entries,
    parse_pagemap_v1,
    parse_u64s,
    parse_words,
    u64_struct,
    word_struct,
)


@dataclass(frozen=True)
class Layout:
    """A byte layout with no arch definition yet (32-bit big-endian: ppc32, mips)."""

    little_endian: bool
    word_size: int
    page_shift: int


BE32 = Layout(little_endian=False, word_size=4, page_shift=12)
#: Every arch, plus the one combination of byte order and word size none has.
LAYOUTS = [get_arch(name) for name in ARCH_NAMES] + [BE32]
LAYOUT_IDS = [*ARCH_NAMES, "be32"]
layouts = pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)

u64 = st.integers(0, 2**64 - 1)


def words(word_size: int) -> st.SearchStrategy[int]:
    return st.integers(0, 2 ** (8 * word_size) - 1)


@st.composite
def pagemap_entries(draw: st.DrawFn) -> PagemapEntry:
    """Any entry a kernel can write."""
    kind = draw(st.sampled_from(["none", "page", "swap"]))
    flags = {
        name: draw(st.booleans())
        for name in ("file_shared", "exclusive", "soft_dirty", "uffd_wp", "guard")
    }
    if kind == "page":
        return PagemapEntry.page(draw(st.integers(0, PM.PFN_MASK)), **flags)
    if kind == "swap":
        return PagemapEntry.swap(
            draw(st.integers(0, PM.SWAP_TYPE_MASK)), draw(st.integers(0, 2**50 - 1)), **flags
        )
    return PagemapEntry(**flags)


# --- literal bytes ----------------------------------------------------------

HEADERS = {
    "x86_64": b"\x01\x0c\x08\x10" + bytes(12),
    "ppc64": b"\x00\x10\x08\x10" + bytes(12),
    "ppc64-4k": b"\x00\x0c\x08\x10" + bytes(12),
    "i386": b"\x01\x0c\x04\x08" + bytes(4),
    "arm64": b"\x01\x0c\x08\x10" + bytes(12),
    "arm64-64k": b"\x01\x10\x08\x10" + bytes(12),
}


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_kpagemap_header_bytes(name: str) -> None:
    header = KpagemapHeader.for_arch(get_arch(name))
    assert header.slot_bytes() == HEADERS[name]
    assert KpagemapHeader.parse(HEADERS[name]) == header
    assert kpagemap_header_struct.parse(HEADERS[name]).page_shift == header.page_shift


def test_kpagemap_file_literal_big_endian_64() -> None:
    data = (
        b"\x00\x10\x08\x10" + bytes(12)
        + b"\x00\x00\x00\x00\x00\x00\x04\x00" + b"\x00\x00\x00\x00\x00\x00\x00\x00"
        + b"\x00\x00\x00\x01\x00\x00\x58\x68" + b"\x00\x00\x00\x00\x00\x00\x00\x02"
    )
    header, pairs = parse_kpagemap(data)
    assert header == KpagemapHeader(little_endian=False, page_shift=16, word_size=8, entry_size=16)
    assert pairs == [(0x400, 0), (0x1_0000_5868, 2)]
    assert build_kpagemap(get_arch("ppc64"), pairs) == data


def test_kpagemap_file_literal_little_endian_32() -> None:
    data = b"\x01\x0c\x04\x08" + bytes(4) + b"\x00\x04\x00\x00\x00\x00\x00\x00"
    data += b"\x68\x58\x00\x00\x01\x00\x00\x00"
    header, pairs = parse_kpagemap(data)
    assert (header.little_endian, header.word_size, header.entry_size) == (True, 4, 8)
    assert pairs == [(0x400, 0), (0x5868, 1)]
    assert build_kpagemap(get_arch("i386"), pairs) == data
    assert parse_kpagemap_entries(get_arch("i386"), data[8:]) == pairs


def test_kpagemap_file_literal_big_endian_32() -> None:
    data = b"\x00\x0c\x04\x08" + bytes(4) + b"\x00\x00\x04\x00\x00\x00\x00\x07"
    header, pairs = parse_kpagemap(data)
    assert (header.little_endian, header.word_size) == (False, 4)
    assert pairs == [(0x400, 7)]
    assert build_kpagemap(BE32, pairs) == data


PAGEMAP_LITERALS = [
    # (little-endian bytes, entry)
    (b"\x34\x12\x00\x00\x00\x00\x00\x81", PagemapEntry.page(0x1234, exclusive=True)),
    (bytes(8), PagemapEntry()),
    (b"\x00\x00\x00\x00\x00\x00\x80\x00", PagemapEntry(soft_dirty=True)),
    (b"\x02\x02\x00\x00\x00\x00\x80\x40", PagemapEntry.swap(2, 0x10, soft_dirty=True)),
    (b"\xde\xbc\x0a\x00\x00\x00\x00\xa0", PagemapEntry.page(0xABCDE, file_shared=True)),
    (b"\x00\x00\x00\x00\x00\x00\x00\x86", PagemapEntry.page(0, uffd_wp=True, guard=True)),
    (b"\xff\xff\xff\xff\xff\xff\x7f\x80", PagemapEntry.page(PM.PFN_MASK)),
]


@pytest.mark.parametrize(("le_bytes", "entry"), PAGEMAP_LITERALS)
@layouts
def test_pagemap_entry_literal(layout: Layout, le_bytes: bytes, entry: PagemapEntry) -> None:
    data = le_bytes if layout.little_endian else le_bytes[::-1]
    assert parse_pagemap_entries(layout, data) == [entry]
    assert build_pagemap_entries(layout, [entry]) == data
    assert entry.to_raw() == int.from_bytes(le_bytes, "little")
    assert PagemapEntry.from_raw(entry.to_raw()) == entry


def test_u64_and_word_literals() -> None:
    x86, ppc, i386 = get_arch("x86_64"), get_arch("ppc64"), get_arch("i386")
    assert build_u64s(x86, [0x0102030405060708]) == b"\x08\x07\x06\x05\x04\x03\x02\x01"
    assert build_u64s(ppc, [0x0102030405060708]) == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert build_u64s(i386, [1]) == b"\x01" + bytes(7)  # u64 is 8 bytes on 32-bit too
    assert build_words(i386, [0x01020304]) == b"\x04\x03\x02\x01"
    assert build_words(BE32, [0x01020304]) == b"\x01\x02\x03\x04"
    assert parse_words(ppc, b"\x00" * 7 + b"\x05") == [5]
    assert u64_struct(i386).sizeof() == 8
    assert word_struct(i386).sizeof() == 4
    assert kpagemap_entry_struct(i386).sizeof() == 8
    assert kpagemap_entry_struct(ppc).sizeof() == 16
    assert pagemap_entry_struct(x86) is pagemap_entry_struct(get_arch("x86_64"))


def test_pagemap_v1_literals() -> None:
    data = b"\x01\x0c\x04\x04" + b"\xff\xff\xff\xff" + b"\x78\x56\x34\x12"
    header, pfns = parse_pagemap_v1(data)
    assert header == PagemapV1Header(little_endian=True, page_shift=12, word_size=4)
    assert pfns == [None, 0x12345678]
    assert build_pagemap_v1(get_arch("i386"), pfns) == data
    data = b"\x00\x10\x08\x08" + bytes(4) + bytes(7) + b"\x2a" + b"\xff" * 8
    header, pfns = parse_pagemap_v1(data)
    assert header == PagemapV1Header.for_arch(get_arch("ppc64"))
    assert pfns == [0x2A, None]


# --- rejections -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"", "shorter than the 4-byte header"),
        (b"\x01\x0c\x08", "shorter than the 4-byte header"),
        (b"\x02\x0c\x08\x10" + bytes(12), "byte 0 (byte order) is 2"),
        (b"\x01\x09\x08\x10" + bytes(12), "byte 1 (PAGE_SHIFT) is 9"),
        (b"\x01\x19\x08\x10" + bytes(12), "byte 1 (PAGE_SHIFT) is 25"),
        (b"\x01\x0c\x02\x04", "byte 2 (word size) is 2"),
        (b"\x01\x0c\x08\x08" + bytes(4), "byte 3 (entry size) is 8, not twice the word size 8"),
        (b"\x01\x0c\x08\x10" + bytes(4), "shorter than the 16-byte slot 0"),
        (b"\x01\x0c\x08\x10" + bytes(11) + b"\x01", "padding of slot 0 is not zero"),
    ],
)
def test_impossible_kpagemap_header(data: bytes, complaint: str) -> None:
    with pytest.raises(FormatError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        KpagemapHeader.parse(data)
    with pytest.raises(FormatError):
        parse_kpagemap(data)


def test_kpagemap_length_not_whole_entries() -> None:
    with pytest.raises(FormatError, match="not a multiple of the 16-byte entry size"):
        parse_kpagemap(HEADERS["x86_64"] + bytes(8))


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (1 << 59, "reserved bits 59-60"),
        (1 << 60 | 1 << 63, "reserved bits 59-60"),
        (1 << 63 | 1 << 62, "both present and swapped"),
        (5, "frame bits set but neither present nor swapped"),
        (1 << 64, "not a u64"),
        (-1, "not a u64"),
    ],
)
def test_pagemap_value_no_kernel_writes(raw: int, complaint: str) -> None:
    with pytest.raises(FormatError, match=complaint):
        PagemapEntry.from_raw(raw)
    if 0 <= raw < 1 << 64:
        with pytest.raises(FormatError, match=f"entry 1 .*{complaint}"):
            parse_pagemap_entries(get_arch("ppc64"), bytes(8) + raw.to_bytes(8, "big"))


@pytest.mark.parametrize(
    "fields",
    [
        {"present": True},
        {"pfn": 1},
        {"present": True, "swapped": True, "pfn": 1, "swap_type": 0, "swap_offset": 0},
        {"swapped": True, "swap_type": 1},
        {"present": True, "pfn": 1 << 55},
        {"swapped": True, "swap_type": 32, "swap_offset": 0},
        {"swapped": True, "swap_type": 0, "swap_offset": 1 << 50},
    ],
)
def test_pagemap_entry_inconsistent_fields(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PagemapEntry(**fields)  # type: ignore[arg-type]


def test_values_that_do_not_fit() -> None:
    with pytest.raises(FormatError, match="4-byte word"):
        build_kpagemap_entries(get_arch("i386"), [(1 << 32, 0)])
    with pytest.raises(FormatError, match="do not fit"):
        build_u64s(get_arch("x86_64"), [1 << 64])
    with pytest.raises(FormatError, match="not a multiple of the 8-byte entry size"):
        parse_u64s(get_arch("x86_64"), bytes(12))
    with pytest.raises(FormatError, match="all ones"):
        build_pagemap_v1(get_arch("i386"), [0xFFFF_FFFF])


def test_kpagemap_file_struct_rejects_other_header() -> None:
    with pytest.raises(Exception, match="parsing"):
        kpagemap_file_struct(get_arch("x86_64")).parse(HEADERS["ppc64"])


# --- properties -------------------------------------------------------------


def test_pagemap_bits_agree_with_flags_module() -> None:
    for name, bit in [
        ("present", PM.PRESENT),
        ("swapped", PM.SWAP),
        ("file_shared", PM.FILE),
        ("exclusive", PM.MMAP_EXCLUSIVE),
        ("soft_dirty", PM.SOFT_DIRTY),
        ("uffd_wp", PM.UFFD_WP),
        ("guard", PM.GUARD_REGION),
    ]:
        fields = pagemap_entry_struct(get_arch("ppc64")).parse((1 << bit).to_bytes(8, "big"))
        assert [key for key, value in fields.items() if value is True] == [name]


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(entry=pagemap_entries())
def test_pagemap_entry_round_trip(entry: PagemapEntry) -> None:
    raw = entry.to_raw()
    assert 0 <= raw < 1 << 64
    assert PagemapEntry.from_raw(raw) == entry


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(raw=u64)
def test_from_raw_agrees_with_construct(raw: int) -> None:
    """The scalar decoder and the construct definition accept and decode alike."""
    for layout in LAYOUTS:
        data = raw.to_bytes(8, "little" if layout.little_endian else "big")
        try:
            expected = PagemapEntry.from_raw(raw)
        except FormatError:
            with pytest.raises(FormatError):
                parse_pagemap_entries(layout, data)
            continue
        assert parse_pagemap_entries(layout, data) == [expected]
        assert build_pagemap_entries(layout, [expected]) == data


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(values=st.lists(u64, max_size=40))
def test_u64s_round_trip(values: list[int]) -> None:
    for layout in LAYOUTS:
        data = build_u64s(layout, values)
        assert len(data) == 8 * len(values)
        assert parse_u64s(layout, data) == values
        assert build_u64s(layout, parse_u64s(layout, data)) == data


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(st.data())
def test_kpagemap_round_trip(data: st.DataObject) -> None:
    for layout in LAYOUTS:
        word = words(layout.word_size)
        pairs = data.draw(st.lists(st.tuples(word, word), max_size=20))
        built = build_kpagemap(layout, pairs)
        assert len(built) == 2 * layout.word_size * (len(pairs) + 1)
        header, parsed = parse_kpagemap(built)
        assert header == KpagemapHeader.for_arch(layout)
        assert parsed == pairs
        assert build_kpagemap(header, parsed) == built
        body = build_kpagemap_entries(layout, pairs)
        assert built == header.slot_bytes() + body
        assert parse_kpagemap_entries(layout, body) == pairs


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(st.data())
def test_pagemap_v1_round_trip(data: st.DataObject) -> None:
    for layout in LAYOUTS:
        limit = 2 ** (8 * layout.word_size) - 2
        pfns = data.draw(st.lists(st.none() | st.integers(0, limit), max_size=20))
        built = build_pagemap_v1(layout, pfns)
        header, parsed = parse_pagemap_v1(built)
        assert header == PagemapV1Header.for_arch(layout)
        assert parsed == pfns
        assert build_pagemap_v1(header, parsed) == built


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(entries=st.lists(pagemap_entries(), max_size=20))
def test_pagemap_entries_round_trip(entries: list[PagemapEntry]) -> None:
    for layout in LAYOUTS:
        built = build_pagemap_entries(layout, entries)
        assert parse_u64s(layout, built) == [entry.to_raw() for entry in entries]
        assert parse_pagemap_entries(layout, built) == entries
