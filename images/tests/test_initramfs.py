"""The initramfs list, the newc reader and the agent binary check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from images.agent import check_elf
from images.arches import get_image_arch
from images.errors import AgentError, ImageError
from images.initramfs import LAYOUT, cpio_list, list_cpio


def _newc(members: list[tuple[str, bytes]]) -> bytes:
    """A newc archive built by hand (the format gen_init_cpio writes)."""
    out = bytearray()
    for name, data in [*members, ("TRAILER!!!", b"")]:
        encoded = name.encode() + b"\0"
        fields = [0, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(b"%08X" % value for value in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def test_list_cpio() -> None:
    assert list_cpio(_newc([("dev", b""), ("init", b"\x7fELF..."), ("a/b", b"xy")])) == [
        "dev", "init", "a/b"
    ]


def test_list_cpio_rejects_other_data() -> None:
    with pytest.raises(ImageError, match="not a newc cpio"):
        list_cpio(b"\x1f\x8b" + b"\0" * 200)


def test_cpio_list_has_console_and_init(tmp_path: Path) -> None:
    text = cpio_list({"agent": tmp_path / "agent"})
    assert "nod /dev/console 0600 0 0 c 5 1\n" in text
    assert f"file /init {tmp_path / 'agent'} 0755 0 0\n" in text
    assert "dir /tmp 1777 0 0\n" in text
    # Directories come before what is inside them.
    paths = [entry.path for entry in LAYOUT]
    assert paths.index("/dev") < paths.index("/dev/console")


def test_check_elf_refuses_dynamic_and_foreign_binaries() -> None:
    true = shutil.which("true")
    assert true is not None
    with pytest.raises(AgentError, match="dynamically linked"):
        check_elf(Path(true), get_image_arch("x86_64"))
    with pytest.raises(AgentError, match=r"needs machine 21 \(big-endian\)"):
        check_elf(Path(true), get_image_arch("ppc64"))


def test_check_elf_refuses_non_elf(tmp_path: Path) -> None:
    script = tmp_path / "init"
    script.write_text("#!/bin/sh\n" + "x" * 100)
    with pytest.raises(AgentError, match="not an ELF file"):
        check_elf(script, get_image_arch("x86_64"))
