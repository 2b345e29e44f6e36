"""The selftests build: its cpio writer, and (marked build) real static builds per arch."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from images.agent import check_elf
from images.arches import get_image_arch
from images.initramfs import list_cpio
from images.selftests import PROGRAMS, build_selftests, combined_initramfs, newc_archive


def test_newc_archive(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"12345")
    (tmp_path / "b").write_bytes(b"")
    data = newc_archive(["selftests"], {"selftests/a": tmp_path / "a",
                                        "selftests/b": tmp_path / "b"})
    assert list_cpio(data) == ["selftests", "selftests/a", "selftests/b"]
    assert len(data) % 4 == 0
    assert b"12345" in data


def test_combined_initramfs_is_two_gzip_members(tmp_path: Path) -> None:
    first = tmp_path / "1.gz"
    second = tmp_path / "2.gz"
    first.write_bytes(gzip.compress(b"one"))
    second.write_bytes(gzip.compress(b"two"))
    out = combined_initramfs(first, second, tmp_path / "both.gz")
    assert gzip.decompress(out.read_bytes()) == b"onetwo"


@pytest.mark.build
@pytest.mark.parametrize("arch", ["x86_64", "ppc64"])
def test_build_selftests(arch: str) -> None:
    built = build_selftests(arch)
    for program in PROGRAMS:
        check_elf(built.programs[program.name], get_image_arch(arch))
    names = list_cpio(gzip.decompress(built.initramfs.read_bytes()))
    assert {f"selftests/{p.name}" for p in PROGRAMS} <= set(names)
    # A second call is a cache hit; ppc64-4k shares ppc64's userland build.
    assert build_selftests(arch) == built
    if arch == "ppc64":
        assert build_selftests("ppc64-4k").directory == built.directory
