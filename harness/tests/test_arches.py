"""The harness's view of an arch (profile) and the RAM oracle's address arithmetic."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import sim.arch
from harness.arches import PROFILE_NAMES, get_profile
from harness.errors import VMError
from harness.image import BootImage
from harness.qemu_command import VMPaths, qemu_command
from harness.vm import GuestRAM
from sim.arch import (
    ARCH_NAMES,
    ArchSpec,
    MissingPartError,
    UnknownArchError,
    get_arch,
    get_spec,
)
from sim.formats import build_u64s

ARM_VIRT_RAM = 0x4000_0000


def test_profiles_are_the_arches_with_a_qemu_machine() -> None:
    assert PROFILE_NAMES == tuple(n for n in ARCH_NAMES if get_spec(n).qemu is not None)
    for name in PROFILE_NAMES:
        profile = get_profile(name)
        assert profile.arch is get_arch(name) and profile.name == name


def test_model_only_arch_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # No data file is model-only today: register one for the test.
    model_only = ArchSpec(model=replace(get_arch("i386"), name="model-only"))
    monkeypatch.setitem(sim.arch._SPECS, "model-only", model_only)
    with pytest.raises(MissingPartError) as info:
        get_profile("model-only")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("architecture 'model-only' has no QEMU machine")
    known = r"known: x86_64, ppc64, ppc64-4k, i386, arm64, arm64-64k$"
    with pytest.raises(UnknownArchError, match=known):
        get_profile("sparc")


def test_command_line_comes_from_the_data_file(tmp_path: Path) -> None:
    profile = get_profile("ppc64")
    paths = VMPaths(workdir=tmp_path, ram=tmp_path / "ram")
    cmd = qemu_command(profile, BootImage(tmp_path / "k", tmp_path / "i"), paths)
    assert cmd[0] == "qemu-system-ppc64"
    assert cmd[cmd.index("-machine") + 1].startswith("pseries,x-vof=on,")
    assert cmd[cmd.index("-cpu") + 1] == "POWER9"
    # The hugetlb pool (Arch.hugetlb_pages) follows the machine's options.
    assert cmd[cmd.index("-append") + 1] == "console=hvc0 panic=-1 oops=panic hugepages=32"
    assert f"size={profile.qemu.memory_mib}M" in cmd[cmd.index("-object") + 1]


# ---------------------------------------------------------------------------
# GuestRAM: file offset = guest-physical address - RAM base
# ---------------------------------------------------------------------------


@pytest.fixture
def ram_file(tmp_path: Path) -> Iterator[int]:
    """A 16-page "backend file" whose page i starts with the u64 100 + i (little-endian)."""
    arch = get_arch("x86_64")
    data = bytearray(16 * arch.page_size)
    for i in range(16):
        data[i * arch.page_size : i * arch.page_size + 8] = build_u64s(arch, [100 + i])
    path = tmp_path / "ram"
    path.write_bytes(bytes(data))
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.mark.parametrize("ram_base", [0, ARM_VIRT_RAM])
def test_frames_are_found_at_their_offset_from_the_ram_base(ram_file: int, ram_base: int) -> None:
    arch = replace(get_arch("x86_64"), name="synthetic", ram_base=ram_base)
    ram = GuestRAM(os.dup(ram_file), arch.page_shift, arch.ram_base)
    first = arch.ram_base_pfn
    try:
        for i in (0, 5, 15):
            assert ram.frame_offset(first + i) == i * arch.page_size
            got = ram.frame_bytes(first + i, 8)
            assert got is not None and int.from_bytes(got, "little") == 100 + i
            assert ram.page(first + i)[:8] == got
        # Outside the RAM block: above its end, and (with a base) below it.
        assert ram.frame_bytes(first + 16, 8) is None
        if ram_base:
            assert ram.frame_bytes(first - 1, 8) is None
            assert ram.frame_bytes(0, 8) is None
            with pytest.raises(ValueError, match="outside"):
                ram.page(0)
    finally:
        ram.close()
    with pytest.raises(VMError, match="closed"):
        ram.frame_bytes(first, 8)
