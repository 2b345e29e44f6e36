"""Keeping a per-arch source tree patched with the current series, touching little.

The tree starts as hard links to the pristine source (``cp -al``: GNU patch
writes a new file and renames it over the old, so patching breaks the link
and the pristine tree stays intact).  When the series changes, only the
patches after the first difference are reverted and re-applied, and any file
that ends up with the contents it had before gets its old mtime back: make
then rebuilds exactly what the changed patches changed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from images.commands import format_command, run, run_captured
from images.errors import CommandError, PatchError

__all__ = [
    "PatchedTree",
    "TreeState",
    "describe_patch_failure",
    "files_in_patch",
]

_PATCH = ["patch", "-p1", "--batch", "--no-backup-if-mismatch"]


def files_in_patch(text: str) -> list[str]:
    """Paths (``-p1``-stripped) of the files a unified diff touches."""
    lines = text.splitlines()
    paths = []
    for old, new in itertools.pairwise(lines):
        if old.startswith("--- ") and new.startswith("+++ "):
            for header in (new, old):
                name = header[4:].split("\t", 1)[0].strip()
                if name != "/dev/null":
                    paths.append(name.split("/", 1)[1] if "/" in name else name)
                    break
    return list(dict.fromkeys(paths))


_FILE_LINE = re.compile(r"^(?:checking|patching) file (.+)$")


def describe_patch_failure(output: str) -> list[str]:
    """``file: problem`` for each file GNU patch could not patch, from its output."""
    problems: dict[str, list[str]] = {}
    current = "?"
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if match := _FILE_LINE.match(line):
            current = match[1].strip("'\"")
        elif line.startswith("can't find file to patch"):
            # The header patch quotes after this line names the file.
            for quoted in lines[index + 1 : index + 12]:
                if quoted.startswith(("|+++ ", "|--- ")):
                    name = quoted[5:].split("\t", 1)[0].strip()
                    if name != "/dev/null":
                        current = name.split("/", 1)[1] if "/" in name else name
                        break
            problems.setdefault(current, []).append("file not found")
        elif "FAILED" in line and line.startswith("Hunk"):
            problems.setdefault(current, []).append(line.rstrip("."))
        elif line.startswith("Reversed (or previously applied) patch detected"):
            problems.setdefault(current, []).append("already applied (or reversed)")
        elif line.startswith(("patch: **** ", "patch unexpectedly ends")):
            problems.setdefault(current, []).append(line.removeprefix("patch: **** "))
    return [f"{name}: {'; '.join(items)}" for name, items in problems.items()]


@dataclass
class TreeState:
    """What a patched tree holds: which pristine source, which patches (in order)."""

    source: str
    applied: list[tuple[str, str]] = field(default_factory=list)  # (name, sha256)
    #: True while patches are being reverted or applied: an interrupted sync.
    in_progress: bool = False

    @classmethod
    def load(cls, path: Path) -> TreeState | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                source=str(data["source"]),
                applied=[(str(n), str(h)) for n, h in data["applied"]],
                in_progress=bool(data["in_progress"]),
            )
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"source": self.source, "applied": self.applied, "in_progress": self.in_progress},
                indent=1,
            ),
            encoding="utf-8",
        )
        tmp.replace(path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class _Snapshot:
    digest: str | None  # None: the file did not exist
    mtime_ns: int


class PatchedTree:
    """``src`` (a patched copy of a pristine tree) plus its state file and patch copies."""

    def __init__(self, directory: Path, log: Path) -> None:
        self.directory = directory
        self.src = directory / "src"
        self.state_path = directory / "state.json"
        self.applied_dir = directory / "applied"
        self.log = log

    def state(self) -> TreeState | None:
        return TreeState.load(self.state_path)

    def reset(self, pristine: Path, source_ident: str, build_dir: Path) -> None:
        """A fresh tree from ``pristine``; the build dir goes too (its objects are stale)."""
        for stale in (self.src, build_dir, self.applied_dir):
            if stale.exists():
                run(["rm", "-rf", str(stale)], self.log)
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            run(["cp", "-al", str(pristine), str(self.src)], self.log)
        except CommandError:
            # Hard links cannot cross file systems (a user's tree elsewhere): copy.
            run(["rm", "-rf", str(self.src)], self.log)
            run(["cp", "-a", str(pristine), str(self.src)], self.log)
        self.applied_dir.mkdir()
        TreeState(source=source_ident).save(self.state_path)

    def sync(
        self, patches: Sequence[tuple[str, bytes]], patch_dir: Path | None = None
    ) -> list[str]:
        """Make the tree hold exactly ``patches``; returns the names (re)applied.

        ``patch_dir``: where the patches come from, to name in a failure's
        command line (the tree keeps its own copies, to revert them later).

        Raises :class:`PatchError` naming the patch and files that do not
        apply (the patches before it stay applied and recorded), and
        :class:`CommandError` if reverting a recorded patch fails (the tree
        no longer matches its record: reset it).
        """
        state = self.state()
        if state is None or state.in_progress:
            raise RuntimeError("sync() needs a tree with a clean state: reset() it")
        wanted = [(name, _sha256(data), data) for name, data in patches]
        keep = 0
        while (
            keep < len(state.applied)
            and keep < len(wanted)
            and state.applied[keep] == wanted[keep][:2]
        ):
            keep += 1
        to_revert = state.applied[keep:]
        to_apply = wanted[keep:]
        if not to_revert and not to_apply:
            return []

        touched: list[str] = []
        for index, (name, _) in enumerate(to_revert, start=keep):
            touched += files_in_patch(self._copy(index, name).read_text(errors="replace"))
        for _, _, data in to_apply:
            touched += files_in_patch(data.decode("utf-8", errors="replace"))
        before = {path: self._snapshot(path) for path in dict.fromkeys(touched)}

        state.in_progress = True
        state.save(self.state_path)
        applied_now: list[str] = []
        try:
            for index in range(len(state.applied) - 1, keep - 1, -1):
                name, _ = state.applied[index]
                copy = self._copy(index, name)
                run([*_PATCH, "-R", "-d", str(self.src), "-i", str(copy)], self.log)
                state.applied.pop()
                copy.unlink()
            state.in_progress = False
            state.save(self.state_path)
            for index, (name, digest, data) in enumerate(to_apply, start=keep):
                copy = self._copy(index, name)
                copy.write_bytes(data)
                self._dry_run(name, copy, patch_dir)
                state.in_progress = True
                state.save(self.state_path)
                run([*_PATCH, "--forward", "-d", str(self.src), "-i", str(copy)], self.log)
                state.applied.append((name, digest))
                state.in_progress = False
                state.save(self.state_path)
                applied_now.append(name)
        finally:
            self._restore_mtimes(before)
        return applied_now

    def _dry_run(self, name: str, copy: Path, patch_dir: Path | None) -> None:
        argv = [*_PATCH, "--forward", "--dry-run", "-d", str(self.src), "-i", str(copy)]
        try:
            output = run_captured(argv)
        except CommandError as exc:
            copy.unlink()
            with open(self.log, "a", encoding="utf-8") as log:
                log.write(f"+ {exc.command}\n{exc.output}")
            problems = describe_patch_failure(exc.output) or [exc.tail.strip()]
            listing = "\n".join(f"  {problem}" for problem in problems)
            origin = patch_dir / name if patch_dir is not None else copy
            again = format_command([*argv[:-1], str(origin)])
            raise PatchError(
                f"patch {name} does not apply:\n{listing}\n(to see it again: {again})"
            ) from None
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"+ {format_command(argv)}\n{output}")

    def _copy(self, index: int, name: str) -> Path:
        return self.applied_dir / f"{index:04d}-{Path(name).name}"

    def _snapshot(self, relative: str) -> _Snapshot:
        path = self.src / relative
        try:
            return _Snapshot(_sha256(path.read_bytes()), path.stat().st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return _Snapshot(None, 0)

    def _restore_mtimes(self, before: dict[str, _Snapshot]) -> None:
        """Files whose contents came back unchanged keep their old mtime (no rebuild)."""
        for relative, old in before.items():
            if old.digest is None:
                continue
            now = self._snapshot(relative)
            if now.digest == old.digest and now.mtime_ns != old.mtime_ns:
                path = self.src / relative
                st = path.stat()
                os.utime(path, ns=(st.st_atime_ns, old.mtime_ns))
