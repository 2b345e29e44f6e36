"""The source package check against linux-patch/BASE."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.errors import SourceError
from images.source import SourcePackage, check_base

INSTALLED = SourcePackage("6.12.117-1~deb12u1", Path("/usr/src/x.tar.xz"), "00" * 32)


@pytest.mark.parametrize(
    "text",
    [
        "6.12.117-1~deb12u1\n",
        "# the series is made for\nlinux-source-6.12 6.12.117-1~deb12u1\n",
        "6.12.117\n",  # an upstream version matches the package's upstream part
        f"linux-source-6.12 6.12.117-1~deb12u1\n{'00' * 32}\n",  # with the tarball's sha256
    ],
)
def test_matching_base_is_accepted(tmp_path: Path, text: str) -> None:
    base = tmp_path / "BASE"
    base.write_text(text)
    check_base(base, INSTALLED)


def test_missing_base_accepts_anything(tmp_path: Path) -> None:
    check_base(tmp_path / "BASE", INSTALLED)


@pytest.mark.parametrize("text", ["6.12.118-1~deb12u1\n", "6.12.116\n"])
def test_other_version_is_refused(tmp_path: Path, text: str) -> None:
    base = tmp_path / "BASE"
    base.write_text(text)
    with pytest.raises(SourceError) as info:
        check_base(base, INSTALLED)
    assert f"is for linux-source-6.12 {text.strip()}" in str(info.value)
    assert "but 6.12.117-1~deb12u1 is installed" in str(info.value)


def test_base_without_version_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "BASE"
    base.write_text("# nothing here\n")
    with pytest.raises(SourceError, match="names no version"):
        check_base(base, INSTALLED)


def test_other_tarball_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "BASE"
    base.write_text(f"linux-source-6.12 6.12.117-1~deb12u1\n{'ab' * 32}\n")
    with pytest.raises(SourceError, match=f"tarball with sha256 {'ab' * 32}"):
        check_base(base, INSTALLED)
