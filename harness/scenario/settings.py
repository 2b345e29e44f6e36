"""A scenario's ``"settings"``: the THP and KSM sysfs knobs it runs under.

Parsed once (:func:`parse_settings`, one-line :class:`SettingsError` on an
unknown knob, value or size), resolved per architecture
(:meth:`ScenarioSettings.resolve`: mTHP sizes to folio orders, or the reason
the architecture lacks one, which makes the scenario skip there), and written
to sysfs by the guest executor (:data:`SYSFS`) and to the model's
:class:`sim.mm.settings.ThpSettings`.

mTHP sizes: ``"<N>kB"`` (the kernel's ``hugepages-<N>kB`` directory name) or
``"<N>pages"`` (N base pages of the architecture being run: the same order
everywhere) or ``"thp"`` (the PMD size: 2048kB on the three guests).  The
kernel offers orders 2..PMD_ORDER (THP_ORDERS_ALL_ANON, include/linux/huge_mm.h):
16kB..2048kB on x86_64, ppc64-4k and arm64, 256kB..2048kB on ppc64 (64K pages,
PMD order 5).  A size that no architecture of the project offers is a file
error; one that only this one lacks skips it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import get_args

from sim.arch import ARCH_NAMES, Arch, get_arch
from sim.mm.settings import MthpMode, ShmemMode, ThpMode, ThpSettings, mthp_orders

__all__ = [
    "SYSFS_THP",
    "ScenarioSettings",
    "SettingsError",
    "mthp_sizes",
    "parse_settings",
    "sysfs_writes",
]

SYSFS_THP = "/sys/kernel/mm/transparent_hugepage"
_KSM_ZERO = "/sys/kernel/mm/ksm/use_zero_pages"
_SIZE = re.compile(r"([1-9][0-9]{0,9})(kB|pages)\Z")
_KNOBS = ("thp", "shmem_thp", "mthp", "ksm_use_zero_pages")


class SettingsError(ValueError):
    """A ``settings`` object that cannot be applied (the message is one line, no path)."""


def _pmd_order(arch: Arch) -> int:
    return arch.thp_pages.bit_length() - 1


def mthp_sizes(arch: Arch) -> dict[str, int]:
    """``hugepages-<size>`` directory name (``"64kB"``) -> folio order, on ``arch``."""
    if not arch.thp_pages:
        return {}
    kb = arch.page_size >> 10
    return {f"{kb << order}kB": order for order in mthp_orders(_pmd_order(arch))}


def _size_order(key: str, arch: Arch) -> int | None:
    """The order ``key`` names on ``arch`` (None: not an mTHP size there)."""
    if key == "thp":
        return _pmd_order(arch) if arch.thp_pages else None
    match = _SIZE.match(key)
    assert match is not None
    n, unit = int(match.group(1)), match.group(2)
    if unit == "kB":
        return mthp_sizes(arch).get(key)
    order = n.bit_length() - 1
    if n != 1 << order or not arch.thp_pages or order not in mthp_orders(_pmd_order(arch)):
        return None
    return order


@dataclass(frozen=True)
class ScenarioSettings:
    """The knobs a scenario names (None / absent: left at the boot value)."""

    thp: ThpMode | None = None
    shmem_thp: ShmemMode | None = None
    mthp: Mapping[str, MthpMode] = field(default_factory=lambda: MappingProxyType({}))
    ksm_use_zero_pages: bool | None = None

    def unsupported_reason(self, arch: Arch) -> str | None:
        """Why these knobs cannot be set on ``arch`` (None: they can)."""
        if not arch.thp_pages and (self.thp or self.shmem_thp or self.mthp):
            return f"{arch.name} has no THP, so no THP knobs"
        for key in self.mthp:
            if _size_order(key, arch) is None:
                return (f"mTHP size {key!r} does not exist on {arch.name} "
                        f"(it has {', '.join(mthp_sizes(arch))})")
        return None

    def resolve(self, arch: Arch) -> ThpSettings:
        """The model's knobs on ``arch`` (boot values where not named); the
        sizes must exist there (:meth:`unsupported_reason`)."""
        mthp: dict[int, MthpMode] = {}
        for key, mode in self.mthp.items():
            order = _size_order(key, arch)
            assert order is not None, f"{key} on {arch.name}"
            mthp[order] = mode
        boot = ThpSettings()
        return ThpSettings(
            enabled=self.thp or boot.enabled,
            shmem_enabled=self.shmem_thp or boot.shmem_enabled,
            mthp=MappingProxyType(mthp),
            ksm_use_zero_pages=bool(self.ksm_use_zero_pages),
        )


def sysfs_writes(settings: ScenarioSettings, arch: Arch) -> list[tuple[str, str]]:
    """(path, value) of every knob the scenario names on ``arch``, in the order the
    guest writes them (global ``enabled`` first: the per-size ``inherit`` follows it)."""
    writes: list[tuple[str, str]] = []
    if settings.thp is not None:
        writes.append((f"{SYSFS_THP}/enabled", settings.thp))
    if settings.shmem_thp is not None:
        writes.append((f"{SYSFS_THP}/shmem_enabled", settings.shmem_thp))
    kb = arch.page_size >> 10
    for key, mode in settings.mthp.items():
        order = _size_order(key, arch)
        assert order is not None, f"{key} on {arch.name}"
        writes.append((f"{SYSFS_THP}/hugepages-{kb << order}kB/enabled", mode))
    if settings.ksm_use_zero_pages is not None:
        writes.append((_KSM_ZERO, "1" if settings.ksm_use_zero_pages else "0"))
    return writes


def _known_somewhere(key: str) -> bool:
    return any(_size_order(key, get_arch(name)) is not None for name in ARCH_NAMES)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SettingsError(f"{name} is {value!r}; one of {', '.join(allowed)}")
    return value


def parse_settings(data: object) -> ScenarioSettings:
    """The top-level ``settings`` object; SettingsError (one line) if it is not one."""
    if not isinstance(data, dict):
        raise SettingsError("is not an object of knobs")
    unknown = sorted(set(data) - set(_KNOBS))
    if unknown:
        raise SettingsError(
            f"unknown knob {', '.join(map(repr, unknown))} (known: {', '.join(_KNOBS)})"
        )
    thp = data.get("thp")
    shmem = data.get("shmem_thp")
    raw_mthp = data.get("mthp", {})
    ksm = data.get("ksm_use_zero_pages")
    if thp is not None:
        thp = _choice("thp", thp, get_args(ThpMode))
    if shmem is not None:
        shmem = _choice("shmem_thp", shmem, get_args(ShmemMode))
    if ksm is not None and not isinstance(ksm, bool):
        raise SettingsError(f"ksm_use_zero_pages is {ksm!r}; true or false")
    if not isinstance(raw_mthp, dict):
        raise SettingsError("mthp is not an object of size: mode")
    mthp: dict[str, MthpMode] = {}
    for key, mode in raw_mthp.items():
        if key != "thp" and not _SIZE.match(key):
            raise SettingsError(f"mthp size {key!r} is not '<N>kB', '<N>pages' or 'thp'")
        if not _known_somewhere(key):
            raise SettingsError(
                f"mthp size {key!r} is an mTHP size of no architecture "
                "(orders 2 up to the PMD order: 16kB..2048kB with 4K pages, 256kB..2048kB "
                "with 64K pages; '<N>pages' with N a power of two from 4)"
            )
        mthp[key] = _choice(f"mthp {key!r}", mode, get_args(MthpMode))  # type: ignore[assignment]
    return ScenarioSettings(
        thp=thp,  # type: ignore[arg-type]
        shmem_thp=shmem,  # type: ignore[arg-type]
        mthp=MappingProxyType(mthp),
        ksm_use_zero_pages=ksm,
    )
