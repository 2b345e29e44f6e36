"""Which kernel and initramfs a VM boots.

In order: paths given explicitly (``--kernel``/``--initramfs``), then the
environment (``PAGEMAP_HARNESS_KERNEL_<ARCH>`` and
``PAGEMAP_HARNESS_INITRAMFS_<ARCH>``, ARCH upper-case with ``-`` as ``_``),
then the images package's cached build (``images.build_image``).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from harness.arches import ArchProfile

__all__ = ["BootImage", "ImageUnavailable", "find_image"]


class ImageUnavailable(Exception):
    """No kernel/initramfs for an architecture; the message says how to get one."""


@dataclass(frozen=True)
class BootImage:
    """A kernel and initramfs to boot; ``source`` says which kernel source build made them."""

    kernel: Path
    initramfs: Path
    #: images' SourceChoice.describe() (``"given"`` for paths from the user or environment).
    source: str = "given"

    def check(self) -> BootImage:
        for what, path in (("kernel", self.kernel), ("initramfs", self.initramfs)):
            if not path.is_file():
                raise ImageUnavailable(f"{what} {path} does not exist")
        return self


def _env_name(what: str, profile: ArchProfile) -> str:
    return f"PAGEMAP_HARNESS_{what}_{profile.name.upper().replace('-', '_')}"


def find_image(
    profile: ArchProfile,
    kernel: Path | None = None,
    initramfs: Path | None = None,
    *,
    build: bool = True,
    kernel_version: str | None = None,
    tree: Path | None = None,
) -> BootImage:
    """The boot image for ``profile``; ImageUnavailable says why there is none.

    With ``build=False`` an image the images cache does not hold yet is
    unavailable rather than built.  ``kernel_version``: the kernel series to
    build (a linux-patch/ directory; default: the images package's default);
    ``tree``: a kernel source tree to build instead (``images build --tree``).
    """
    if kernel is None and (env := os.environ.get(_env_name("KERNEL", profile))):
        kernel = Path(env)
    if initramfs is None and (env := os.environ.get(_env_name("INITRAMFS", profile))):
        initramfs = Path(env)
    if tree is not None and (kernel is not None or initramfs is not None):
        raise ImageUnavailable("give --tree or --kernel/--initramfs, not both")
    if kernel is not None and initramfs is not None:
        return BootImage(kernel, initramfs).check()
    if (kernel is None) != (initramfs is None):
        raise ImageUnavailable("give both a kernel and an initramfs, or neither")
    try:
        images = importlib.import_module("images")
        build_image = images.build_image if build else images.find_image
    except (ImportError, AttributeError) as e:
        raise ImageUnavailable(
            f"no boot image for {profile.name}: images.build_image is not available ({e}); "
            f"pass --kernel and --initramfs or set {_env_name('KERNEL', profile)} and "
            f"{_env_name('INITRAMFS', profile)}"
        ) from None
    image_error: type[Exception] = getattr(images, "ImageError", RuntimeError)
    try:
        built = build_image(profile.name, kernel_version=kernel_version, tree=tree)
    except image_error as e:
        raise ImageUnavailable(f"building the {profile.name} image failed: {e}") from e
    if built is None:
        raise ImageUnavailable(
            f"the {profile.name} image is not built (python -m images build --arch {profile.name})"
        )
    source = str(getattr(built, "source", "unknown"))
    return BootImage(Path(built.kernel), Path(built.initramfs), source).check()
