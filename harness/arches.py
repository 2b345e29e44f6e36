"""The harness's view of an architecture: its model facts and its QEMU machine.

Both come from the architecture's data file (:mod:`sim.arch`: the ``model``
and ``qemu`` parts); this module only resolves a name to an
:class:`ArchProfile`, and says in one line when the data file has no QEMU
machine (an architecture that exists only in the model).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.arch import Arch, ArchError, MissingPartError, QemuMachine, get_spec, names_with

__all__ = ["PROFILE_NAMES", "ArchProfile", "get_profile", "guest_ram_bytes"]

#: Architectures the harness can boot (a view of sim.arch.ARCH_NAMES).
PROFILE_NAMES: tuple[str, ...] = names_with(lambda spec: spec.qemu)


@dataclass(frozen=True)
class ArchProfile:
    """How to boot one architecture's test kernel under QEMU, with its model facts."""

    arch: Arch
    qemu: QemuMachine

    @property
    def name(self) -> str:
        """The ``--arch`` name (also the name of its kernel image)."""
        return self.arch.name

    @property
    def page_shift(self) -> int:
        """PAGE_SHIFT of the guest kernel."""
        return self.arch.page_shift

    @property
    def page_size(self) -> int:
        """PAGE_SIZE of the guest kernel, bytes."""
        return self.arch.page_size

    def command_line_for_kernel(self, extra: tuple[str, ...] = ()) -> str:
        """The kernel command line: console=, the machine's options, the hugetlb pool
        (``hugepages=N`` of the default size, :attr:`sim.arch.Arch.hugetlb_pages`),
        then ``extra``."""
        pool = (f"hugepages={self.arch.hugetlb_pages}",) if self.arch.hugetlb_pages else ()
        return " ".join((f"console={self.qemu.console}", *self.qemu.kernel_cmdline, *pool, *extra))


def get_profile(name: str) -> ArchProfile:
    """The profile of ``name``.

    Raises sim.arch.UnknownArchError for a name with no data file and
    MissingPartError (listing :data:`PROFILE_NAMES`) for one without a QEMU machine.
    """
    spec = get_spec(name)
    if spec.qemu is None:
        raise MissingPartError(name, "QEMU machine", PROFILE_NAMES)
    return ArchProfile(arch=spec.model, qemu=spec.qemu)


def guest_ram_bytes(arch: Arch) -> int | None:
    """Bytes of RAM the QEMU machine of ``arch`` boots with (``-m``), or None.

    None when no data file of that name has a QEMU machine (a model-only or
    synthetic :class:`Arch`).  The model executor gives its machine at least
    this much, so a THP the guest can allocate the model can too (arm64-64k's
    512 MiB THPs need a 6 GiB guest).
    """
    try:
        spec = get_spec(arch.name)
    except ArchError:
        return None
    return None if spec.qemu is None else spec.qemu.memory_mib << 20
