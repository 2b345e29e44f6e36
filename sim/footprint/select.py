"""Which processes form each group: selectors and their resolution.

Selector syntax (``--group NAME=SELECTOR``; one term per option, repeating a
NAME adds the term's processes to that group):

* ``pid:1,2,3``  -- these processes (each must exist);
* ``tree:PID``   -- PID and all its descendants (by parent pid, at scan time);
* ``name:REGEX`` -- processes whose comm or command line matches (``re.search``),
  except this tool and its ancestors (whose command lines hold the pattern);
* ``uid:UID``    -- processes of this effective uid (a number or a user name).

The plain options (PIDs, ``--tree``, ``--name``, ``--uid``) form one group
named ``selected``; with no selection at all, the group ``all`` holds every
process.  The reader's own process is never a member: its numbers move while
it reads.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sim.footprint.source import ProcessInfo

__all__ = ["KINDS", "SelectionError", "Term", "parse_group", "parse_term", "resolve"]

KINDS = ("pid", "tree", "name", "uid")


class SelectionError(ValueError):
    """A selector that is malformed or selects nothing; one-line message."""


@dataclass(frozen=True)
class Term:
    """One selector term: ``kind`` in :data:`KINDS` and its parsed value."""

    kind: str
    value: tuple[int, ...] | re.Pattern[str]


def _pid(text: str, what: str) -> int:
    try:
        pid = int(text)
    except ValueError:
        raise SelectionError(f"{what}: {text!r} is not a process id") from None
    if pid <= 0:
        raise SelectionError(f"{what}: {text!r} is not a process id")
    return pid


def parse_term(kind: str, value: str) -> Term:
    """A term from its kind and text; SelectionError if the text is not one."""
    what = f"{kind}:{value}"
    if kind == "pid":
        pids = tuple(_pid(part, what) for part in value.split(","))
        return Term("pid", pids)
    if kind == "tree":
        return Term("tree", (_pid(value, what),))
    if kind == "name":
        try:
            return Term("name", re.compile(value))
        except re.error as e:
            raise SelectionError(f"{what}: bad regular expression: {e}") from None
    if kind == "uid":
        if value.isdigit():
            return Term("uid", (int(value),))
        try:
            return Term("uid", (pwd.getpwnam(value).pw_uid,))
        except KeyError:
            raise SelectionError(f"{what}: no such user") from None
    raise SelectionError(f"{what}: unknown selector kind {kind!r} (one of {', '.join(KINDS)})")


def parse_group(text: str) -> tuple[str, Term]:
    """``NAME=KIND:VALUE`` -> (NAME, term)."""
    name, sep, selector = text.partition("=")
    kind, colon, value = selector.partition(":")
    if not sep or not name or not colon or not value:
        raise SelectionError(
            f"bad group {text!r}: expected NAME=KIND:VALUE with KIND one of {', '.join(KINDS)}"
        )
    return name, parse_term(kind, value)


def resolve(terms: Sequence[Term], processes: Sequence[ProcessInfo]) -> list[ProcessInfo]:
    """The processes the terms select (their union), by pid.

    SelectionError if a named pid does not exist or a term selects nothing.
    """
    by_pid = {info.pid: info for info in processes}
    chosen: set[int] = set()
    for term in terms:
        found = _select(term, by_pid, processes)
        if isinstance(term.value, re.Pattern):
            # This tool and the processes that launched it (a shell, sudo,
            # timeout) carry the pattern in their own command lines.
            found -= _ancestors(os.getpid(), by_pid) | {os.getpid()}
        if not found:
            raise SelectionError(f"{_describe(term)}: selects no process")
        chosen |= found
    chosen.discard(os.getpid())
    return [by_pid[pid] for pid in sorted(chosen)]


def _ancestors(pid: int, by_pid: dict[int, ProcessInfo]) -> set[int]:
    """Pids of ``pid``'s parent, its parent, ... up to (excluding) pid 1."""
    found: set[int] = set()
    info = by_pid.get(pid)
    while info is not None and info.ppid > 1 and info.ppid not in found:
        found.add(info.ppid)
        info = by_pid.get(info.ppid)
    return found


def _select(
    term: Term, by_pid: dict[int, ProcessInfo], processes: Sequence[ProcessInfo]
) -> set[int]:
    if isinstance(term.value, re.Pattern):
        pattern = term.value
        return {
            info.pid
            for info in processes
            if pattern.search(info.comm) or pattern.search(info.cmdline)
        }
    if term.kind == "uid":
        return {info.pid for info in processes if info.uid == term.value[0]}
    missing = [pid for pid in term.value if pid not in by_pid]
    if missing:
        raise SelectionError(f"no process {missing[0]} (from {_describe(term)})")
    if term.kind == "pid":
        return set(term.value)
    children: dict[int, list[int]] = {}
    for info in processes:
        children.setdefault(info.ppid, []).append(info.pid)
    tree, todo = set(), [term.value[0]]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, []))
    return tree


def _describe(term: Term) -> str:
    if isinstance(term.value, re.Pattern):
        return f"name:{term.value.pattern}"
    return f"{term.kind}:{','.join(map(str, term.value))}"
