"""QEMU profiles per architecture, as data.

Each module beside this one defines exactly one :class:`ArchProfile` named
``PROFILE`` and nothing else (in the spirit of KUnit's qemu_configs).  Facts
about the architecture itself (page size, byte order) come from
:mod:`sim.arch`; a profile only says how to boot it under QEMU.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from sim.arch import Arch, get_arch

__all__ = ["PROFILE_NAMES", "ArchProfile", "UnknownProfileError", "get_profile"]

#: Architectures the harness can boot (``--arch``).
PROFILE_NAMES: tuple[str, ...] = ("x86_64", "ppc64", "ppc64-4k")


class UnknownProfileError(ValueError):
    """An architecture name with no QEMU profile."""


@dataclass(frozen=True)
class ArchProfile:
    """How to boot one architecture's test kernel under QEMU (TCG, one vCPU)."""

    name: str
    qemu_binary: str
    machine: str
    #: Machine properties besides the RAM backend (which the harness adds).
    machine_options: tuple[str, ...]
    cpu: str
    #: The kernel's console device on this machine (the first serial port).
    console: str
    #: Kernel command line; the console= entry is added from ``console``.
    kernel_cmdline: tuple[str, ...]
    #: Further QEMU arguments this machine wants.
    extra_args: tuple[str, ...]
    #: PCI device carrying the agent's virtio-serial port.
    virtio_serial_device: str
    #: Name to pass to ``images.build_image``.
    image_arch: str
    memory_mib: int = 1024
    #: Boot to agent-ready under TCG takes about a second here; allow for load.
    boot_timeout_s: float = 120.0

    @property
    def arch(self) -> Arch:
        return get_arch(self.name)

    @property
    def page_shift(self) -> int:
        return self.arch.page_shift

    @property
    def page_size(self) -> int:
        return self.arch.page_size

    def command_line_for_kernel(self, extra: tuple[str, ...] = ()) -> str:
        return " ".join((f"console={self.console}", *self.kernel_cmdline, *extra))


def get_profile(name: str) -> ArchProfile:
    """The profile of ``name`` (one of :data:`PROFILE_NAMES`)."""
    if name not in PROFILE_NAMES:
        raise UnknownProfileError(
            f"no QEMU profile for architecture {name!r}; known: {', '.join(PROFILE_NAMES)}"
        )
    module = importlib.import_module(f"harness.arches.{name.replace('-', '_')}")
    profile: ArchProfile = module.PROFILE
    return profile
