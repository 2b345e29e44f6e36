"""Footprints as text (a table read at a glance) and as JSON (bytes).

Rendering only: the numbers come from :func:`sim.footprint.scan.scan`.
Tables are drawn by ``rich`` (a maintained, typed table library; it aligns,
sizes and sections columns so this module only chooses what to show).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from sim.footprint.scan import (
    CATEGORIES,
    PSS_SHIFT,
    SHARING,
    Footprint,
    GroupFootprint,
    ProcessFootprint,
)

__all__ = ["human", "shown", "to_json", "to_text"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human(size: int | None) -> str:
    """``size`` bytes in binary units with 1 decimal ("12.5 MiB"); "-" for None."""
    if size is None:
        return "-"
    value, unit = float(size), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{size} B"
    return f"{value:.1f} {_UNITS[unit]}"


def _plain(size: int | None) -> str:
    return "-" if size is None else str(size)


def _process_json(pf: ProcessFootprint) -> dict[str, Any]:
    return {
        "pid": pf.pid,
        "comm": pf.comm,
        "status": pf.status,
        "exact": pf.exact,
        "rss": pf.rss,
        "pss": pf.pss,
        "pss_fixed_point": pf.pss_fixed,
        "pss_anon": pf.pss_anon_fixed >> PSS_SHIFT,
        "pss_file": pf.pss_file_fixed >> PSS_SHIFT,
        "pss_shmem": pf.pss_shmem_fixed >> PSS_SHIFT,
        "uss": pf.uss,
        "swap": pf.swap,
        "swap_pss": pf.swap_pss,
        "zero_page": pf.zero_page,
        "hugetlb": pf.hugetlb,
    }


def _group_json(group: GroupFootprint) -> dict[str, Any]:
    return {
        "name": group.name,
        "exact": group.exact,
        "rss": group.rss,
        "exclusive": group.exclusive,
        "private": group.private,
        "shared_inside": group.shared_inside,
        "shared_outside": group.shared_outside,
        "pss": group.pss,
        "pss_fixed_point": group.pss_fixed,
        "swap": group.swap,
        "swap_pss": group.swap_pss,
        "zero_page": group.zero_page,
        "inconsistent_frames": group.inconsistent_frames,
        "categories": group.categories,
        "processes": [_process_json(pf) for pf in group.members],
    }


def to_json(footprint: Footprint) -> str:
    """One JSON document; every size in bytes (``pss_fixed_point``: bytes << 12)."""
    return json.dumps(
        {
            "data": footprint.data,
            "page_size": footprint.page_size,
            "pss_shift": PSS_SHIFT,
            "approximations": footprint.approximations,
            "stats": vars(footprint.stats),
            "groups": [_group_json(group) for group in footprint.groups],
        },
        indent=2,
    )


def shown(text: str) -> str:
    """``text`` safe for a terminal: control characters (ESC, newlines) as ``\\xNN`` escapes."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def to_text(footprint: Footprint, *, in_bytes: bool = False, width: int = 120) -> str:
    """The tables: processes per group with the group's totals, then the group split."""
    size: Callable[[int | None], str] = _plain if in_bytes else human
    approx = "" if all(g.exact for g in footprint.groups) else "~"
    out = io.StringIO()
    # markup=False: process and group names are data, never rich markup ("[/]" is a valid comm).
    console = Console(file=out, width=width, color_system=None, highlight=False, markup=False)
    console.print(
        f"footprint from {footprint.data}; {human(footprint.page_size)} pages", soft_wrap=True
    )
    console.print(_process_table(footprint, size, approx))
    console.print(_group_table(footprint, size, approx))
    if any(g.categories is not None for g in footprint.groups):
        console.print(_category_table(footprint, size))
    notes = list(footprint.approximations)
    for group in footprint.groups:
        if group.inconsistent_frames:
            notes.append(
                f"group {shown(group.name)}: {group.inconsistent_frames} frames mapped more often "
                "than their mapcount (processes changed while read; try --freeze)"
            )
    if notes:
        console.print("notes:", soft_wrap=True)
        for note in notes:
            console.print(f"  - {note}", soft_wrap=True)
    # rich pads every line to the table's width; keep the text clean.
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def _process_table(
    footprint: Footprint, size: Callable[[int | None], str], approx: str
) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title="processes", title_justify="left")
    table.add_column("GROUP")
    table.add_column("PID", justify="right")
    table.add_column("NAME")
    for name in ("RSS", "PSS", "USS", "SWAP", "SWAPPSS"):
        table.add_column(name, justify="right")
    for group in footprint.groups:
        for pf in group.members:
            if pf.status == "no-mm":
                continue  # kernel threads and zombies: nothing to show
            if pf.status != "ok":
                table.add_row(shown(group.name), str(pf.pid), shown(pf.comm), pf.status,
                              "", "", "", "")
                continue
            table.add_row(
                shown(group.name),
                str(pf.pid),
                shown(pf.comm),
                approx + size(pf.rss),
                approx + size(pf.pss),
                approx + size(pf.uss),
                size(pf.swap),
                size(pf.swap_pss),
            )
        live = [pf for pf in group.members if pf.status == "ok"]
        table.add_row(
            f"{shown(group.name)} total",
            str(len(live)),
            "(RSS: union, USS: excl.)",
            approx + size(group.rss),
            approx + size(group.pss),
            approx + size(group.exclusive),
            size(group.swap),
            size(group.swap_pss),
            end_section=True,
        )
    return table


def _group_table(footprint: Footprint, size: Callable[[int | None], str], approx: str) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title="groups: union RSS = private + shared inside + shared with outsiders",
        title_justify="left",
    )
    table.add_column("GROUP")
    for name in ("RSS", "EXCLUSIVE", "PRIVATE", "SHARED-IN", "SHARED-OUT", "PSS", "ZERO-PAGE"):
        table.add_column(name, justify="right")
    for group in footprint.groups:
        table.add_row(
            shown(group.name),
            approx + size(group.rss),
            approx + size(group.exclusive),
            size(group.private),
            size(group.shared_inside),
            size(group.shared_outside),
            approx + size(group.pss),
            size(group.zero_page),
        )
    return table


def _category_table(footprint: Footprint, size: Callable[[int | None], str]) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title="categories of the union RSS by sharing (anon + file + shmem = RSS; "
        "the rest overlap them; empty ones left out)",
        title_justify="left",
    )
    table.add_column("GROUP")
    table.add_column("CATEGORY")
    for name in ("PRIVATE", "SHARED-IN", "SHARED-OUT", "TOTAL"):
        table.add_column(name, justify="right")
    for group in footprint.groups:
        if group.categories is None:
            continue
        for category in CATEGORIES:
            split = group.categories[category]
            total = sum(split[kind] for kind in SHARING)
            if total == 0 and category not in ("anon", "file", "shmem"):
                continue
            table.add_row(
                shown(group.name), category, *(size(split[kind]) for kind in SHARING), size(total)
            )
        table.add_section()
    return table
