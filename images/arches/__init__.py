"""Kernel image definitions as data: one module per architecture name.

Each module beside this one defines exactly one :class:`ImageArch` (named
``IMAGE``) and nothing else; the kconfig fragments it names are data-only
files in this directory.  The builder asks the definition for every
arch-specific fact (make variables, target, image path, agent compiler), so
adding an architecture is adding a module and a fragment, never an ``if``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from sim.arch import ARCH_NAMES

__all__ = [
    "FRAGMENT_DIR",
    "IMAGE_ARCH_NAMES",
    "SERIES_FRAGMENT",
    "ImageArch",
    "UnknownImageArchError",
    "get_image_arch",
]

#: Where the fragments named by the definitions live.
FRAGMENT_DIR = Path(__file__).resolve().parent

#: Options the patch series adds; requested only when linux-patch/series
#: exists, and checked only for the symbols the series defines.
SERIES_FRAGMENT = FRAGMENT_DIR / "series.config"

#: Architectures (of :data:`sim.arch.ARCH_NAMES`) that have an image definition.
IMAGE_ARCH_NAMES: tuple[str, ...] = ("x86_64", "ppc64", "ppc64-4k")


class UnknownImageArchError(ValueError):
    """An architecture name with no image definition."""


@dataclass(frozen=True)
class ImageArch:
    """How to build the kernel and the guest agent for one architecture."""

    #: The project-wide architecture name (``--arch``; see :mod:`sim.arch`).
    name: str
    #: ``make ARCH=...``.
    kernel_arch: str
    #: ``make CROSS_COMPILE=...`` ("" builds with the host compiler).
    cross_compile: str
    #: The make target that produces the bootable image.
    make_target: str
    #: The bootable image, relative to the out-of-tree build directory.
    image_path: str
    #: Kernel fragments shipped in the source tree, applied first (in order).
    base_fragments: tuple[str, ...]
    #: Fragment files in :data:`FRAGMENT_DIR`, applied after the base ones;
    #: every option in them must survive into .config.
    fragments: tuple[str, ...]
    #: Compiler for the static guest agent, and its flags.
    agent_cc: str
    agent_cflags: tuple[str, ...]
    #: What the agent binary must be: ELF e_machine and byte order.
    elf_machine: int
    elf_big_endian: bool

    def __post_init__(self) -> None:
        if self.name not in ARCH_NAMES:
            raise ValueError(f"image definition {self.name!r} is not one of {ARCH_NAMES}")

    @property
    def fragment_paths(self) -> tuple[Path, ...]:
        return tuple(FRAGMENT_DIR / name for name in self.fragments)

    @property
    def compilers(self) -> tuple[str, ...]:
        """Every compiler the build runs: host tools, kernel, agent."""
        kernel_cc = f"{self.cross_compile}gcc"
        names = ["gcc", kernel_cc, self.agent_cc]
        return tuple(dict.fromkeys(names))


def get_image_arch(name: str) -> ImageArch:
    """The image definition of ``name`` (one of :data:`IMAGE_ARCH_NAMES`)."""
    if name not in IMAGE_ARCH_NAMES:
        raise UnknownImageArchError(
            f"no kernel image definition for architecture {name!r}; "
            f"defined: {', '.join(IMAGE_ARCH_NAMES)}"
        )
    module = importlib.import_module(f"images.arches.{name.replace('-', '_')}")
    image: ImageArch = module.IMAGE
    return image
