"""The THP sysfs knobs of /sys/kernel/mm/transparent_hugepage/, as the model reads them.

One place for them (a :class:`ThpSettings` on the machine context), read by
the fault paths: the PMD fault (:func:`sim.mm.huge_memory.thp_vma_allowable`)
and the anonymous mTHP fault (:mod:`sim.mm.mthp`).  The default is the
guest's boot state that every scenario without ``settings`` assumes:
``enabled`` = madvise, ``shmem_enabled`` = never, every ``hugepages-<size>kB``
``never`` except the PMD size's ``inherit`` (hugepage_init_sysfs() in
mm/huge_memory.c: ``huge_anon_orders_inherit = BIT(PMD_ORDER)``), and
ksm ``use_zero_pages`` 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from sim.mm.vma import VM_HUGEPAGE

__all__ = [
    "MthpMode",
    "ShmemMode",
    "ThpMode",
    "ThpSettings",
    "anon_order_mask",
    "anon_orders",
    "mthp_orders",
]

ThpMode = Literal["always", "madvise", "never"]
ShmemMode = Literal["always", "within_size", "advise", "never", "deny", "force"]
MthpMode = Literal["always", "inherit", "madvise", "never"]


def mthp_orders(pmd_order: int) -> range:
    """The orders with a ``hugepages-<size>kB`` directory: THP_ORDERS_ALL_ANON
    (include/linux/huge_mm.h), every order from 2 up to PMD_ORDER.  (6.12 also
    makes directories for THP_ORDERS_ALL_FILE_DEFAULT orders, but with an
    ``enabled`` file only for anonymous orders: hugepage_init_sysfs().)"""
    return range(2, pmd_order + 1)


@dataclass(frozen=True)
class ThpSettings:
    """The knobs a scenario may set; ``mthp`` maps folio order -> its ``enabled`` value
    (orders not named keep their boot value: :meth:`mthp_mode`)."""

    enabled: ThpMode = "madvise"
    shmem_enabled: ShmemMode = "never"
    mthp: Mapping[int, MthpMode] = field(default_factory=lambda: MappingProxyType({}))
    ksm_use_zero_pages: bool = False

    def mthp_mode(self, order: int, pmd_order: int) -> MthpMode:
        """hugepages-<size>kB/enabled of ``order`` (boot: inherit for PMD_ORDER, else never)."""
        if order in self.mthp:
            return self.mthp[order]
        return "inherit" if order == pmd_order else "never"


def anon_order_mask(settings: ThpSettings, vm_flags: int, pmd_order: int) -> set[int]:
    """The sysfs half of thp_vma_allowable_orders() (include/linux/huge_mm.h) for an
    anonymous VMA with ``vm_flags``: huge_anon_orders_always, plus _madvise with
    VM_HUGEPAGE, plus _inherit when hugepage_global_always() or (VM_HUGEPAGE and
    hugepage_global_enabled())."""
    madvised = bool(vm_flags & VM_HUGEPAGE)
    inherit = settings.enabled == "always" or (madvised and settings.enabled == "madvise")
    allowed: set[int] = set()
    for order in mthp_orders(pmd_order):
        mode = settings.mthp_mode(order, pmd_order)
        if mode == "always" or (mode == "madvise" and madvised) or (
            mode == "inherit" and inherit
        ):
            allowed.add(order)
    return allowed


def anon_orders(settings: ThpSettings, vm_flags: int, pmd_order: int, below: int) -> list[int]:
    """The allowed orders below ``below`` (exclusive), highest first (the
    ``BIT(PMD_ORDER) - 1`` argument alloc_anon_folio() passes)."""
    return sorted((o for o in anon_order_mask(settings, vm_flags, pmd_order) if o < below),
                  reverse=True)
