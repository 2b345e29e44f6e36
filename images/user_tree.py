"""A kernel developer's own source tree as the source of an image (``images build --tree PATH``).

The tree is never modified: the build hard-links it (``cp -al``, falling back
to a plain copy across file systems) into the arch's work tree and patches
that copy, exactly as it does a Debian tarball.  What the tree is made of is
named by a fingerprint (git HEAD plus the hash of ``git status`` and of the
diff, or without git the newest file time), so an unchanged tree is not
rebuilt and a changed one is.

Which series applies: the tree's version (Makefile VERSION/PATCHLEVEL/SUBLEVEL)
picks ``linux-patch/<X.Y>/``, or the nearest older version the project has a
series for (with a warning).  A tree that already has /proc/kpagemap
(``fs/proc/page.c`` creates it) gets no series at all: the header is then
checked by the guest tests like any other.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

from images.commands import note
from images.errors import SourceError
from images.project import PatchSet, Project
from images.source import BasePin, SourceChoice, SourcePackage

__all__ = ["has_kpagemap", "tree_choice", "tree_patch_set", "tree_release"]

_MAKE_VAR = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)\s*$", re.M)


def tree_release(tree: Path) -> str:
    """``6.12.117`` (plus EXTRAVERSION) from the tree's top Makefile.

    Raises :class:`SourceError` (one line) when ``tree`` is not a kernel source tree.
    """
    makefile = tree / "Makefile"
    try:
        text = makefile.read_text(encoding="utf-8", errors="replace")
    except OSError:
        raise SourceError(f"{tree} is not a kernel source tree (no readable Makefile)") from None
    values = dict(_MAKE_VAR.findall(text))
    if not values.get("VERSION", "").isdigit() or not values.get("PATCHLEVEL", "").isdigit():
        raise SourceError(f"{makefile} names no VERSION/PATCHLEVEL: not a kernel source tree")
    release = f"{values['VERSION']}.{values['PATCHLEVEL']}"
    if values.get("SUBLEVEL", "").isdigit():
        release += f".{values['SUBLEVEL']}"
    return release + str(values.get("EXTRAVERSION", ""))


def has_kpagemap(tree: Path) -> bool:
    """Whether the tree already creates /proc/kpagemap (fs/proc/page.c)."""
    try:
        text = (tree / "fs" / "proc" / "page.c").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return '"kpagemap"' in text


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def tree_patch_set(project: Project, release: str, wanted: str | None = None) -> PatchSet:
    """The series for a tree of ``release``: ``wanted`` if given, else the same X.Y, else the
    nearest older X.Y the project has a series for (with a warning).

    Raises :class:`SourceError` when the project has no series at or below ``release``.
    """
    if wanted is not None:
        asked = project.patch_set(wanted)
        if _numbers(wanted) != _numbers(release):
            note(f"WARNING: the tree is Linux {release}, but the series of {wanted} was asked for")
        return asked
    known = sorted(project.kernel_versions(), key=_numbers)
    older = [v for v in known if _numbers(v) <= _numbers(release)]
    if not older:
        raise SourceError(
            f"the tree is Linux {release}; the project has series only for "
            f"{', '.join(known) or 'none'} (none at or below it)"
        )
    chosen = older[-1]
    if _numbers(chosen) != _numbers(release):
        note(f"WARNING: the tree is Linux {release}; using the series of {chosen}, the nearest "
             "older version the project knows")
    return project.patch_set(chosen)


def _git(tree: Path, *args: str) -> bytes:
    """``git -C tree ARGS`` output; SourceError (one line) if git fails.

    ``safe.directory``: as root, git refuses a tree another user owns ("dubious
    ownership") and a fingerprint that silently ignored that would never change.
    """
    argv = ["git", "-c", f"safe.directory={tree}", "-C", str(tree), *args]
    proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceError(
            f"cannot fingerprint {tree}: git {' '.join(args)} failed: {(why or ['?'])[-1]}"
        )
    return proc.stdout


def _fingerprint(tree: Path) -> str:
    """sha256 naming the tree's contents cheaply: git state in a git work tree, else mtimes.

    In git: HEAD, the diff of tracked files against it, and the contents of
    untracked files git does not ignore (ignored files are build output).
    """
    digest = hashlib.sha256(str(tree.resolve()).encode())
    if (tree / ".git").exists():
        digest.update(_git(tree, "rev-parse", "HEAD"))
        digest.update(_git(tree, "diff", "HEAD", "--binary"))
        untracked = _git(tree, "ls-files", "--others", "--exclude-standard", "-z")
        for raw in sorted(untracked.split(b"\0")):
            if not raw:
                continue
            digest.update(raw + b"\0")
            try:
                digest.update(hashlib.sha256((tree / os.fsdecode(raw)).read_bytes()).digest())
            except OSError:
                digest.update(b"unreadable")
        return digest.hexdigest()
    newest = 0
    count = 0
    for root, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime_ns)
            except OSError:
                continue
            count += 1
    digest.update(f"{newest}:{count}".encode())
    return digest.hexdigest()


def tree_choice(tree: Path, patch_set: PatchSet) -> SourceChoice:
    """The :class:`SourceChoice` of a user's tree (reason ``tree``; its tarball is the tree)."""
    tree = tree.resolve()
    release = tree_release(tree)
    source = SourcePackage(f"tree-{release}", tree, _fingerprint(tree))
    pin = BasePin(f"tree:{tree}", release, None)
    choice = SourceChoice(source, pin, "tree")
    note(f"[source] {choice.describe()}; series: "
         f"{'none (the tree has /proc/kpagemap)' if has_kpagemap(tree) else patch_set.version}")
    return choice
