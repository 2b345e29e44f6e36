"""The swap disk a VM with swap gets: its header page as read_swap_header() wants it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import construct as c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.swapdisk import SWAP_DISK_BYTES, qemu_swap_args, write_swap_disk
from sim.arch import ARCH_NAMES, get_arch
from sim.formats_swap import (
    SWAP_MAGIC,
    SwapHeader,
    build_swap_header,
    parse_swap_header,
)


@pytest.mark.parametrize("arch_name", ARCH_NAMES)
def test_disk_is_header_then_zeroes(arch_name: str, tmp_path: Path) -> None:
    arch = get_arch(arch_name)
    path = tmp_path / "swap.img"
    header = write_swap_disk(path, arch)
    data = path.read_bytes()
    page = arch.page_size
    assert len(data) == SWAP_DISK_BYTES
    assert data[page - 10 : page] == SWAP_MAGIC
    assert header.last_page == SWAP_DISK_BYTES // page - 1
    assert parse_swap_header(arch, data[:page]) == header
    # info.version and info.last_page at byte 1024, in the guest's byte order.
    order: Literal["little", "big"] = "little" if arch.little_endian else "big"
    assert int.from_bytes(data[1024:1028], order) == 1
    assert int.from_bytes(data[1028:1032], order) == header.last_page
    assert not any(data[page:])


def test_disk_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "swap.img"
    path.write_bytes(b"x")
    with pytest.raises(FileExistsError):
        write_swap_disk(path, get_arch("x86_64"))


def test_qemu_args_name_the_disk(tmp_path: Path) -> None:
    args = qemu_swap_args(tmp_path / "swap.img")
    assert f"file={tmp_path / 'swap.img'},if=none,id=swapdisk,format=raw" in args
    assert "virtio-blk-pci,drive=swapdisk" in args


@given(st.sampled_from(ARCH_NAMES), st.integers(1, (1 << 32) - 1))
def test_header_round_trips(arch_name: str, last_page: int) -> None:
    arch = get_arch(arch_name)
    header = SwapHeader(last_page=last_page)
    data = build_swap_header(arch, header)
    assert len(data) == arch.page_size
    assert parse_swap_header(arch, data) == header


def test_bad_magic_is_refused() -> None:
    arch = get_arch("x86_64")
    data = bytearray(build_swap_header(arch, SwapHeader(last_page=15)))
    data[-10:] = b"SWAP-SPACE"
    with pytest.raises(c.ConstructError):
        parse_swap_header(arch, bytes(data))


def test_too_small_a_device_is_refused() -> None:
    with pytest.raises(ValueError, match="no page besides its header"):
        SwapHeader.for_size(get_arch("x86_64"), 4096)
