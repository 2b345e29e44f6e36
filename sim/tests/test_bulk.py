"""The numpy fast path equals the construct definitions, on every byte layout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import get_arch
from sim.bulk import (
    bulk_build_kpagemap_entries,
    bulk_build_u64s,
    bulk_build_words,
    bulk_decode_pagemap,
    bulk_parse_kpagemap,
    bulk_parse_kpagemap_entries,
    bulk_parse_u64s,
    bulk_parse_words,
    u64_dtype,
    word_dtype,
)
from sim.flags import PM
from sim.formats import (
    ByteLayout,
    FormatError,
    KpagemapHeader,
    PagemapEntry,
    build_kpagemap,
    build_kpagemap_entries,
    build_pagemap_entries,
    build_u64s,
    build_words,
    parse_kpagemap,
    parse_kpagemap_entries,
    parse_pagemap_entries,
    parse_u64s,
    parse_words,
)
from sim.tests.test_formats import LAYOUT_IDS, LAYOUTS, Layout, pagemap_entries, words

layouts = pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)


@st.composite
def pagemap_bytes(draw: st.DrawFn, layout: ByteLayout) -> bytes:
    """Pagemap bodies: mostly valid entries, sometimes a value no kernel writes."""
    values = draw(
        st.lists(
            st.one_of(
                pagemap_entries().map(PagemapEntry.to_raw),
                st.integers(0, 2**64 - 1),
                # one stray bit on an otherwise valid entry
                st.tuples(pagemap_entries(), st.integers(0, 63)).map(
                    lambda pair: pair[0].to_raw() | 1 << pair[1]
                ),
            ),
            max_size=30,
        )
    )
    return build_u64s(layout, values)


def test_dtypes_name_their_byte_order() -> None:
    assert u64_dtype(get_arch("x86_64")).str == "<u8"
    assert u64_dtype(get_arch("ppc64")).str == ">u8"
    assert u64_dtype(get_arch("i386")).str == "<u8"
    assert word_dtype(get_arch("i386")).str == "<u4"
    assert word_dtype(get_arch("ppc64-4k")).str == ">u8"
    assert word_dtype(Layout(False, 4, 12)).str == ">u4"


@layouts
def test_literal_bytes(layout: Layout) -> None:
    le = b"\x34\x12\x00\x00\x00\x00\x00\x81"
    data = le if layout.little_endian else le[::-1]
    assert bulk_parse_u64s(layout, data).tolist() == [0x8100_0000_0000_1234]
    columns = bulk_decode_pagemap(layout, data)
    assert columns.present.tolist() == [True]
    assert columns.exclusive.tolist() == [True]
    assert columns.file_shared.tolist() == [False]
    assert columns.pfn.tolist() == [0x1234]
    assert columns.entry(0) == PagemapEntry.page(0x1234, exclusive=True)


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(st.data())
def test_u64s_equal_construct(data: st.DataObject) -> None:
    raw = data.draw(st.binary(max_size=200))
    raw = raw[: len(raw) - len(raw) % 8]
    for layout in LAYOUTS:
        assert bulk_parse_u64s(layout, raw).tolist() == parse_u64s(layout, raw)
        values = parse_u64s(layout, raw)
        assert bulk_build_u64s(layout, np.array(values, dtype=np.uint64)) == raw
        assert bulk_build_u64s(layout, values) == build_u64s(layout, values)


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(st.data())
def test_words_equal_construct(data: st.DataObject) -> None:
    for layout in LAYOUTS:
        raw = data.draw(st.binary(max_size=100))
        raw = raw[: len(raw) - len(raw) % layout.word_size]
        values = parse_words(layout, raw)
        assert bulk_parse_words(layout, raw).tolist() == values
        assert bulk_build_words(layout, values) == build_words(layout, values) == raw


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(st.data())
def test_pagemap_decode_equals_construct(data: st.DataObject) -> None:
    for layout in LAYOUTS:
        raw = data.draw(pagemap_bytes(layout))
        try:
            expected = parse_pagemap_entries(layout, raw)
        except FormatError:
            with pytest.raises(FormatError):
                bulk_decode_pagemap(layout, raw)
            continue
        columns = bulk_decode_pagemap(layout, raw)
        assert len(columns) == len(expected)
        assert columns.entries() == expected
        # the columns themselves, not only the scalar decoder behind entries()
        assert columns.present.tolist() == [e.present for e in expected]
        assert columns.swapped.tolist() == [e.swapped for e in expected]
        assert columns.file_shared.tolist() == [e.file_shared for e in expected]
        assert columns.exclusive.tolist() == [e.exclusive for e in expected]
        assert columns.soft_dirty.tolist() == [e.soft_dirty for e in expected]
        assert columns.uffd_wp.tolist() == [e.uffd_wp for e in expected]
        assert columns.guard.tolist() == [e.guard for e in expected]
        for i, entry in enumerate(expected):
            if entry.present:
                assert int(columns.pfn[i]) == entry.pfn
            elif entry.swapped:
                assert int(columns.swap_type[i]) == entry.swap_type
                assert int(columns.swap_offset[i]) == entry.swap_offset
            else:
                assert int(columns.frame[i]) == 0
        assert build_pagemap_entries(layout, expected) == raw


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(raw=st.binary(max_size=120))
def test_pagemap_decode_unvalidated_never_rejects_whole_entries(raw: bytes) -> None:
    raw = raw[: len(raw) - len(raw) % 8]
    for layout in LAYOUTS:
        columns = bulk_decode_pagemap(layout, raw, validate=False)
        values = parse_u64s(layout, raw)
        assert columns.raw.tolist() == values
        assert columns.present.tolist() == [bool(v >> 63) for v in values]
        assert columns.frame.tolist() == [v & PM.PFN_MASK for v in values]


def test_pagemap_error_names_file_entry() -> None:
    layout = get_arch("x86_64")
    raw = build_u64s(layout, [0, 0, 1 << 59])
    with pytest.raises(FormatError, match=r"pagemap entry 102 \(file offset 816\): .*59-60"):
        bulk_decode_pagemap(layout, raw, offset=800)
    with pytest.raises(FormatError, match="file offset 800"):
        bulk_decode_pagemap(layout, raw[:-1], offset=800)


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(st.data())
def test_kpagemap_equals_construct(data: st.DataObject) -> None:
    for layout in LAYOUTS:
        word = words(layout.word_size)
        pairs = data.draw(st.lists(st.tuples(word, word), max_size=20))
        flags = [f for f, _ in pairs]
        counts = [n for _, n in pairs]
        body = build_kpagemap_entries(layout, pairs)
        assert bulk_build_kpagemap_entries(layout, flags, counts) == body
        parsed_flags, parsed_counts = bulk_parse_kpagemap_entries(layout, body)
        assert list(zip(parsed_flags.tolist(), parsed_counts.tolist(), strict=True)) == pairs
        assert parse_kpagemap_entries(layout, body) == pairs
        whole = build_kpagemap(layout, pairs)
        header, flags_array, counts_array = bulk_parse_kpagemap(whole)
        assert (header, list(zip(flags_array.tolist(), counts_array.tolist(), strict=True))) == (
            parse_kpagemap(whole)
        )
        assert header == KpagemapHeader.for_arch(layout)


@settings(deadline=None)  # construct is slow; a busy machine slower
@given(raw=st.binary(max_size=80))
def test_kpagemap_bulk_rejects_like_construct(raw: bytes) -> None:
    try:
        expected = parse_kpagemap(raw)
    except FormatError:
        with pytest.raises(FormatError):
            bulk_parse_kpagemap(raw)
        return
    header, flags, counts = bulk_parse_kpagemap(raw)
    assert (header, list(zip(flags.tolist(), counts.tolist(), strict=True))) == expected


def test_build_rejects_values_that_do_not_fit() -> None:
    i386 = get_arch("i386")
    with pytest.raises(FormatError, match="does not fit 32 bits"):
        bulk_build_kpagemap_entries(i386, np.array([1 << 32], dtype=np.uint64), [0])
    with pytest.raises(FormatError, match="negative"):
        bulk_build_u64s(i386, np.array([-1]))
    with pytest.raises(FormatError, match="of one length"):
        bulk_build_kpagemap_entries(i386, [1, 2], [3])


def test_parse_is_a_view_without_copy() -> None:
    data = bytearray(build_u64s(get_arch("ppc64"), [1, 2, 3]))
    values = bulk_parse_u64s(get_arch("ppc64"), data)
    data[7] = 9
    assert values.tolist() == [9, 2, 3]
