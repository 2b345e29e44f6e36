"""Real builds (or cache hits): one per architecture."""

from __future__ import annotations

import gzip

import pytest

from images import BuiltImage, build_image
from images.arches import IMAGE_ARCH_NAMES
from images.initramfs import list_cpio
from images.kconfig import parse_config
from sim.arch import get_arch


@pytest.mark.build
@pytest.mark.parametrize("arch", IMAGE_ARCH_NAMES)
def test_build_image(arch: str) -> None:
    image = build_image(arch)
    assert isinstance(image, BuiltImage)
    assert image.arch == arch
    assert image.kernel.stat().st_size > 500_000
    names = list_cpio(gzip.decompress(image.initramfs.read_bytes()))
    assert "init" in names
    assert "dev/console" in names
    config = parse_config(image.config.read_text())
    assert config["TMPFS"] == "y"
    # Soft-dirty where the arch has it (HAVE_ARCH_SOFT_DIRTY); elsewhere the
    # symbol's dependencies are unmet and .config does not mention it.
    assert config.get("MEM_SOFT_DIRTY") == ("y" if get_arch(arch).soft_dirty else None)
    # A second call is a cache hit: same output.
    assert build_image(arch) == image
