"""``--plot FILE.svg|png``: each group's memory by category and by sharing.

Needs the optional ``plot`` extra (matplotlib); without it
:class:`PlotUnavailable` says how to get it.  One horizontal bar per group and
category (anon, file, shmem, and THP / KSM / locked / ... as overlapping
attributes), split into private, shared only inside the group and shared
with outsiders.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from sim.footprint.scan import CATEGORIES, SHARING, Footprint

__all__ = ["FORMATS", "PlotUnavailable", "check", "plot"]

FORMATS = (".svg", ".png")
_COLOURS = {"private": "#2b8cbe", "shared_inside": "#7bccc4", "shared_outside": "#f03b20"}
_LABELS = {
    "private": "private (mapped once)",
    "shared_inside": "shared only inside the group",
    "shared_outside": "shared with outsiders",
}


class PlotUnavailable(RuntimeError):
    """matplotlib is missing, or the file type is not one it is asked to write."""


def _pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'pagemap-harness[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only, never a window
    return importlib.import_module("matplotlib.pyplot")


def check(path: Path) -> None:
    """PlotUnavailable now if ``path`` cannot be drawn (bad suffix, no matplotlib)."""
    if path.suffix.lower() not in FORMATS:
        raise PlotUnavailable(f"--plot {path}: the file must end in .svg or .png")
    _pyplot()


def plot(footprint: Footprint, path: Path) -> None:
    """Write the picture to ``path`` (.svg or .png); PlotUnavailable if it cannot."""
    check(path)
    groups = [g for g in footprint.groups if g.categories is not None]
    if not groups:
        raise PlotUnavailable("--plot: no category split without PFNs (run as root)")
    plt = _pyplot()
    rows = [
        (group.name, category, group.categories)
        for group in groups
        for category in CATEGORIES
        if group.categories is not None
        and (category in ("anon", "file", "shmem") or sum(group.categories[category].values()) > 0)
    ]
    unit, unit_name = (1 << 20, "MiB")
    figure, axes = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.6))
    labels = [f"{name}: {category}" for name, category, _ in rows]
    positions = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    for kind in SHARING:
        values = [
            (categories[category][kind] / unit) if categories else 0.0
            for _, category, categories in rows
        ]
        axes.barh(positions, values, left=left, color=_COLOURS[kind], label=_LABELS[kind])
        left = [a + b for a, b in zip(left, values, strict=True)]
    axes.set_yticks(positions, labels)
    axes.set_xlabel(f"{unit_name} (union RSS; anon + file + shmem = RSS)")
    axes.set_title(f"memory footprint by category and sharing ({footprint.data})", fontsize=9)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    try:
        figure.savefig(path)
    except OSError as e:
        raise PlotUnavailable(f"--plot {path}: {e.strerror or e}") from None
    finally:
        plt.close(figure)
