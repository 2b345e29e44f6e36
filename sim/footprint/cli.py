"""``python -m sim footprint``: the argument parser and the command.

Errors the user can cause (bad selector, vanished PID, a file this user may
not read, a missing plotting extra) raise :data:`USER_ERRORS`; ``sim.cli``
prints them as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sim.footprint.live import LiveProc, freeze
from sim.footprint.plot import PlotUnavailable, plot
from sim.footprint.plot import check as check_plot
from sim.footprint.scan import scan
from sim.footprint.select import SelectionError, Term, parse_group, parse_term, resolve
from sim.footprint.source import ProcessInfo, SourceError

__all__ = ["USER_ERRORS", "add_parser", "run"]

USER_ERRORS = (SelectionError, SourceError, PlotUnavailable)

_DESCRIPTION = """\
The memory footprint of sets of cooperating processes, from pagemap and the
per-PFN files (/proc/kpagemap where the kernel has it, else /proc/kpageflags
+ /proc/kpagecount), exact to the kernel's fixed point: per process RSS, PSS,
USS, Swap, SwapPss; per group the union RSS (each frame once), what only the
group maps (exclusive = private + shared inside), what it shares with
outsiders, and a split by category (anon, file, shmem, THP, KSM, locked,
swap cache, dirty, pinned).  Needs root (CAP_SYS_ADMIN) for PFNs; without it
the numbers come from smaps_rollup and are marked approximate (~).

Selection: PIDs, --tree, --name, --uid together form the group "selected";
each --group NAME=KIND:VALUE adds to group NAME (KIND: pid:1,2 | tree:PID |
name:REGEX | uid:UID-or-user; repeat a NAME to join terms).  Nothing selected:
every process (as non-root: your own).  Names match comm or the command line.
"""


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    """Register ``footprint`` on the ``sim`` command's subparsers."""
    parser = commands.add_parser(
        "footprint",
        help="memory footprint of process groups: RSS, exact PSS, USS, sharing, categories",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command_parser=parser, run=run)
    parser.add_argument("pids", metavar="PID", nargs="*", help="processes of group 'selected'")
    parser.add_argument("--tree", metavar="PID", action="append", default=[],
                        help="a process and its descendants")
    parser.add_argument("--name", metavar="REGEX", action="append", default=[],
                        help="processes whose comm or command line matches")
    parser.add_argument("--uid", metavar="UID", action="append", default=[],
                        help="processes of this effective uid or user name")
    parser.add_argument("--group", metavar="NAME=KIND:VALUE", action="append", default=[],
                        help="add the processes KIND:VALUE selects to group NAME")
    parser.add_argument("--freeze", action="store_true",
                        help="SIGSTOP the selected processes while reading, SIGCONT after")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON document, sizes in bytes")
    out.add_argument("--bytes", action="store_true", help="table sizes in bytes")
    parser.add_argument("--plot", metavar="FILE", type=Path,
                        help="also draw the groups by category and sharing (.svg or .png; "
                        "needs the 'plot' extra, matplotlib)")


def _terms(args: argparse.Namespace) -> dict[str, list[Term]]:
    groups: dict[str, list[Term]] = {}
    plain = [parse_term("pid", pid) for pid in args.pids]
    plain += [parse_term("tree", pid) for pid in args.tree]
    plain += [parse_term("name", regex) for regex in args.name]
    plain += [parse_term("uid", uid) for uid in args.uid]
    if plain:
        groups["selected"] = plain
    for text in args.group:
        name, term = parse_group(text)
        groups.setdefault(name, []).append(term)
    return groups


def select_groups(
    terms: dict[str, list[Term]], processes: list[ProcessInfo]
) -> dict[str, list[ProcessInfo]]:
    """Each group's processes; with no terms, group "all" (non-root: own uid)."""
    if not terms:
        everyone = [p for p in processes if p.pid != os.getpid()]
        if os.geteuid() != 0:
            everyone = [p for p in everyone if p.uid == os.geteuid()]
        return {"all": everyone}
    return {name: resolve(group, processes) for name, group in terms.items()}


def run(args: argparse.Namespace) -> int:
    """The command; raises one of USER_ERRORS for the caller to print."""
    terms = _terms(args)
    if args.freeze and not terms:
        raise SelectionError("--freeze needs a selection (it would stop every process)")
    if args.plot is not None:
        check_plot(args.plot)  # before reading anything
    source = LiveProc()
    groups = select_groups(terms, source.processes())
    pids = sorted({p.pid for members in groups.values() for p in members})
    with freeze(pids) if args.freeze else nullcontext():
        # Everyone (no selection): leave out what this user may not read.
        footprint = scan(source, groups, skip_denied=not terms)
    if args.plot is not None:
        plot(footprint, args.plot)
    # rich loads only here, so `sim decode` starts without it.
    from sim.footprint.render import to_json, to_text

    if args.json:
        sys.stdout.write(to_json(footprint) + "\n")
    else:
        sys.stdout.write(to_text(footprint, in_bytes=args.bytes))
    return 0
