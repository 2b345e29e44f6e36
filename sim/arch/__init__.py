"""Architectures as data: one data file per architecture, and the one registry of them.

Every module beside this one that defines ``SPEC`` (an :class:`ArchSpec`) is an
architecture's data file, named after its ``--arch`` name with ``-`` as ``_``
(``ppc64-4k`` -> ``ppc64_4k.py``).  :data:`ARCH_NAMES` is the one list of
names, declared once here because its order is seen (the first arch a
scenario's range check names, the order of parametrised tests); at import it
is checked against the data files present, so a file without an entry or an
entry without a file fails at once.  Adding an architecture is its data file,
its name here, and the kernel config fragment it names (if it builds a
kernel); the images and harness lists are views of this one.

Why the schema lives here, in the model package: ``sim`` is the one layer that
``images`` and ``harness`` both import and that imports neither, so one file
can hold an architecture's model facts beside its build and QEMU facts without
a cycle and without a fourth top-level package.  The build and boot parts are
plain values (strings, numbers); the model never reads them, and the code
that interprets them stays in ``images`` (``images.arches``) and ``harness``
(``harness.arches``).  Nothing else in the project branches on an
architecture name: code asks the record for the fact it needs.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable

from sim.arch.schema import (
    AGENT_CFLAGS,
    AgentBuild,
    Arch,
    ArchSpec,
    HostNeed,
    KernelBuild,
    QemuMachine,
)

__all__ = [
    "AGENT_CFLAGS",
    "ARCH_NAMES",
    "AgentBuild",
    "Arch",
    "ArchError",
    "ArchSpec",
    "HostNeed",
    "KernelBuild",
    "MissingPartError",
    "QemuMachine",
    "UnknownArchError",
    "get_arch",
    "get_spec",
    "host_arch",
    "names_with",
]


class ArchError(ValueError):
    """An ``--arch`` name the project cannot use for the job asked (one-line message)."""


class UnknownArchError(ArchError):
    """An architecture name that has no data file."""


class MissingPartError(ArchError):
    """An architecture whose data file lacks the part a command needs (e.g. no QEMU machine)."""

    def __init__(self, name: str, part: str, having: tuple[str, ...]) -> None:
        super().__init__(
            f"architecture {name!r} has no {part} (it exists only in the model); "
            f"with one: {', '.join(having) or 'none'}"
        )


#: Names accepted by every command of the project (``--arch``): one per data file.
ARCH_NAMES: tuple[str, ...] = ("x86_64", "ppc64", "ppc64-4k", "i386", "arm64", "arm64-64k")


def _discover() -> dict[str, ArchSpec]:
    """Every data file of this package, by ``--arch`` name, in :data:`ARCH_NAMES` order.

    Raises ValueError when a file's name and its spec's name disagree, or the
    files present and :data:`ARCH_NAMES` differ.
    """
    specs: dict[str, ArchSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, ArchSpec):
            continue  # the schema, not a data file
        if info.name != spec.name.replace("-", "_"):
            raise ValueError(f"{module.__file__}: defines {spec.name!r}; name the file after it")
        specs[spec.name] = spec
    if set(specs) != set(ARCH_NAMES):
        raise ValueError(
            f"sim/arch: data files define {sorted(specs)} but ARCH_NAMES lists {list(ARCH_NAMES)}"
        )
    return {name: specs[name] for name in ARCH_NAMES}


_SPECS: dict[str, ArchSpec] = _discover()


def get_spec(name: str) -> ArchSpec:
    """The data file of ``name``; UnknownArchError (listing :data:`ARCH_NAMES`) if none."""
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownArchError(
            f"unknown architecture {name!r}; known: {', '.join(ARCH_NAMES)}"
        ) from None


def get_arch(name: str) -> Arch:
    """The model facts of ``name`` (one of :data:`ARCH_NAMES`); UnknownArchError if none."""
    return get_spec(name).model


def names_with(has_part: Callable[[ArchSpec], object]) -> tuple[str, ...]:
    """The names whose spec has the part ``has_part`` returns (not None), in registry order."""
    return tuple(name for name, spec in _SPECS.items() if has_part(spec) is not None)


def host_arch() -> Arch:
    """The architecture of the machine running this Python, if it has one.

    Matches ``platform.machine()`` and the byte order against each data
    file's ``host_machines``; UnknownArchError if none matches.
    """
    import platform

    machine = platform.machine()
    for spec in _SPECS.values():
        model = spec.model
        if machine in model.host_machines and model.byteorder == sys.byteorder:
            return model
    raise UnknownArchError(f"host machine {machine!r} has no definition; pass --arch")
