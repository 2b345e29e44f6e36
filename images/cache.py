"""The image cache: where things live, the per-arch lock, atomic publication.

Layout under ``${XDG_CACHE_HOME:-~/.cache}/pagemap-harness/images/``::

    facts.json                  memo of slow facts (tarball hash, tool versions), keyed by stat
    locks/<arch>.lock           flock: one build per arch at a time
    locks/source.lock           flock: one unpack of the pristine source at a time
    source/<version>-<sha12>/   pristine unpacked source (never modified)
    trees/<arch>/src/           patched tree (hard links to the pristine one; patch breaks them)
    trees/<arch>/build/         out-of-tree build directory (O=)
    trees/<arch>/state.json     which source, which patches are applied (copies in applied/)
    out/<arch>/<key>/           published image: kernel, initramfs.cpio.gz, config, build.log,
                                agent, meta.json (written last, inside a temp dir renamed whole)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from images.commands import note

__all__ = ["COMPLETE_MARKER", "Cache", "default_cache_root"]

#: Published outputs kept per arch (the newest); older ones are removed.
KEEP_OUTPUTS = 4

#: The file a build writes last into its staging dir: an output is complete with it.
COMPLETE_MARKER = "meta.json"


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pagemap-harness" / "images"


@dataclass(frozen=True)
class Cache:
    root: Path

    @classmethod
    def default(cls) -> Cache:
        return cls(default_cache_root())

    # -- paths ---------------------------------------------------------------

    def tree_dir(self, arch: str) -> Path:
        return self.root / "trees" / arch

    def source_dir(self, ident: str) -> Path:
        return self.root / "source" / ident

    def out_dir(self, arch: str) -> Path:
        return self.root / "out" / arch

    def output(self, arch: str, key: str) -> Path:
        return self.out_dir(arch) / key

    # -- locking -------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the exclusive lock ``name`` (blocks, saying so, while another holds it)."""
        path = self.root / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                note(f"[{name}] waiting for another build to release {path}")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- publication -----------------------------------------------------------

    def published(self, arch: str, key: str) -> Path | None:
        """The complete output ``key`` of ``arch``, or None."""
        final = self.output(arch, key)
        return final if (final / COMPLETE_MARKER).is_file() else None

    def get_or_build(self, arch: str, key: str, build: Callable[[Path], None]) -> Path:
        """The output ``key`` of ``arch``; made by ``build(staging_dir)`` if absent.

        ``build`` runs with the arch lock held, at most once per key however
        many processes ask at the same time; it must write
        :data:`COMPLETE_MARKER` last.  Its staging dir is renamed into place
        whole, so no reader ever sees half an output.
        """
        if (found := self.published(arch, key)) is not None:
            return found
        with self.lock(arch):
            if (found := self.published(arch, key)) is not None:
                return found  # another process built it while we waited
            self.discard_stale(arch)
            staging = self.staging_dir(arch, key)
            try:
                build(staging)
                if not (staging / COMPLETE_MARKER).is_file():
                    raise RuntimeError(f"the build of {arch} {key} wrote no {COMPLETE_MARKER}")
                final = self.publish(staging, arch, key)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self.prune(arch, keep=key)
            return final

    def staging_dir(self, arch: str, key: str) -> Path:
        """A fresh temp dir beside the outputs (same file system: rename is atomic)."""
        parent = self.out_dir(arch)
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=parent))

    def publish(self, staging: Path, arch: str, key: str) -> Path:
        """Rename ``staging`` to the keyed output dir: readers see all of it or none."""
        final = self.output(arch, key)
        if final.exists():
            # Only a half-made dir can be here (complete ones are found before building).
            shutil.rmtree(final)
        os.replace(staging, final)
        return final

    def discard_stale(self, arch: str) -> None:
        """Remove temp dirs a killed build left (call with the arch lock held)."""
        parent = self.out_dir(arch)
        if parent.is_dir():
            for stale in parent.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)

    def prune(self, arch: str, keep: str) -> None:
        """Keep the newest :data:`KEEP_OUTPUTS` outputs of ``arch`` (and ``keep``)."""
        parent = self.out_dir(arch)
        outputs = sorted(
            (p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime_ns,
            reverse=True,
        )
        for old in outputs[KEEP_OUTPUTS:]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    # -- memo of slow facts ------------------------------------------------------

    def memo(self, name: str, stamp_of: Path, compute: Callable[[], Any]) -> Any:
        """``compute()``, remembered while ``stamp_of`` keeps its size, mtime and inode."""
        st = stamp_of.stat()
        stamp = [str(stamp_of), st.st_size, st.st_mtime_ns, st.st_ino]
        path = self.root / "facts.json"
        try:
            facts = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            facts = {}
        entry = facts.get(name)
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            return entry["value"]
        value = compute()
        facts[name] = {"stamp": stamp, "value": value}
        self.root.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=".facts-", dir=self.root)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(facts, out, indent=1, sort_keys=True)
        os.replace(tmp, path)
        return value
