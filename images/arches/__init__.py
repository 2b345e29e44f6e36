"""The images' view of an architecture: its kernel and agent builds, and the fragment files.

An architecture's facts live in its data file (:mod:`sim.arch`, the ``kernel``
and ``agent`` parts); this package holds the kconfig fragments those parts
name (data-only ``*.config`` files beside this module) and resolves a name to
an :class:`ImageArch`.  The builder asks it for every arch-specific fact
(make variables, target, image path, agent compiler), so adding an
architecture is its data file and its fragment, never an ``if``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sim.arch import AgentBuild, KernelBuild, MissingPartError, get_spec, names_with

__all__ = [
    "FRAGMENT_DIR",
    "IMAGE_ARCH_NAMES",
    "SERIES_FRAGMENT",
    "ImageArch",
    "get_image_arch",
]

#: Where the fragments named by the data files live.
FRAGMENT_DIR = Path(__file__).resolve().parent

#: Options the patch series adds; requested only when linux-patch/series
#: exists, and checked only for the symbols the series defines.
SERIES_FRAGMENT = FRAGMENT_DIR / "series.config"

#: Architectures whose data file has a kernel build (a view of sim.arch.ARCH_NAMES).
IMAGE_ARCH_NAMES: tuple[str, ...] = names_with(lambda spec: spec.kernel)


@dataclass(frozen=True)
class ImageArch:
    """How to build the kernel and the guest agent for one architecture."""

    #: The project-wide architecture name (``--arch``; see :mod:`sim.arch`).
    name: str
    kernel: KernelBuild
    agent: AgentBuild
    #: The guest's byte order (the agent's ELF data encoding must match).
    big_endian: bool

    @property
    def fragment_paths(self) -> tuple[Path, ...]:
        """Our fragments of the kernel build, as paths in :data:`FRAGMENT_DIR`."""
        return tuple(FRAGMENT_DIR / name for name in self.kernel.fragments)

    @property
    def compilers(self) -> tuple[str, ...]:
        """Every compiler the build runs: host tools, kernel, agent (no repeats)."""
        return tuple(dict.fromkeys((*self.kernel_compilers, self.agent.cc)))

    @property
    def kernel_compilers(self) -> tuple[str, ...]:
        """The compilers a kernel build runs: the host's (scripts) and the kernel's."""
        return tuple(dict.fromkeys(("gcc", self.kernel.compiler)))


def get_image_arch(name: str) -> ImageArch:
    """The image view of ``name``.

    Raises sim.arch.UnknownArchError for a name with no data file and
    MissingPartError (listing :data:`IMAGE_ARCH_NAMES`) for one without a
    kernel build.
    """
    spec = get_spec(name)
    if spec.kernel is None or spec.agent is None:
        raise MissingPartError(name, "kernel build", IMAGE_ARCH_NAMES)
    return ImageArch(
        name=name, kernel=spec.kernel, agent=spec.agent, big_endian=not spec.model.little_endian
    )
