"""The image cache: where things live, the locks, atomic publication.

Layout under ``${XDG_CACHE_HOME:-~/.cache}/pagemap-harness/images/``::

    facts.json                  memo of slow facts (tarball hash, tool versions), keyed by stat
    locks/<area>.lock           flock per output area: one build of it at a time
    source/<version>-<sha12>/linux/   pristine unpacked source (never modified)
    trees/<arch>/src/           patched tree (hard links to the pristine one; patch breaks them)
    trees/<arch>/build/         out-of-tree build directory (O=)
    trees/<arch>/state.json     which source, which patches are applied (copies in applied/)
    trees/<arch>/build.log      the last kernel build's log (kept when it fails)
    kernels/<arch>/<kkey>/      a built kernel: image, config, gen_init_cpio, build.log, meta.json
    out/<arch>/<key>/           a published image: kernel (hard link), initramfs.cpio.gz, config,
                                agent, build.log, meta.json

Every output dir is made in a temp dir beside it and renamed into place whole
(meta.json, written last, marks it complete); a kernel is keyed by what the
kernel build reads, an image by its kernel's key plus the agent and layout,
so an agent change only rebuilds the initramfs.
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
KEEP_OUTPUTS = 8

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

    @staticmethod
    def image_area(arch: str) -> str:
        return f"out/{arch}"

    @staticmethod
    def kernel_area(arch: str) -> str:
        return f"kernels/{arch}"

    def area_dir(self, area: str) -> Path:
        return self.root / area

    def output(self, area: str, key: str) -> Path:
        return self.area_dir(area) / key

    # -- locking -------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the exclusive lock ``name`` (blocks, saying so, while another holds it)."""
        path = self.root / "locks" / f"{name.replace('/', '-')}.lock"
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

    def published(self, area: str, key: str) -> Path | None:
        """The complete output ``key`` of ``area``, or None."""
        final = self.output(area, key)
        return final if (final / COMPLETE_MARKER).is_file() else None

    def get_or_build(self, area: str, key: str, build: Callable[[Path], None]) -> Path:
        """The output ``key`` of ``area``; made by ``build(staging_dir)`` if absent.

        ``build`` runs with the area's lock held, at most once per key however
        many processes ask at the same time; it must write
        :data:`COMPLETE_MARKER` last.  Its staging dir is renamed into place
        whole, so no reader ever sees half an output.  (Locks nest in one
        order only: an image's, then its kernel's.)
        """
        if (found := self.published(area, key)) is not None:
            return found
        with self.lock(area):
            if (found := self.published(area, key)) is not None:
                return found  # another process built it while we waited
            self.discard_stale(area)
            staging = self.staging_dir(area, key)
            try:
                build(staging)
                if not (staging / COMPLETE_MARKER).is_file():
                    raise RuntimeError(f"the build of {area} {key} wrote no {COMPLETE_MARKER}")
                final = self.publish(staging, area, key)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self.prune(area, keep=key)
            return final

    def staging_dir(self, area: str, key: str) -> Path:
        """A fresh temp dir beside the outputs (same file system: rename is atomic)."""
        parent = self.area_dir(area)
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=parent))

    def publish(self, staging: Path, area: str, key: str) -> Path:
        """Rename ``staging`` to the keyed output dir: readers see all of it or none."""
        final = self.output(area, key)
        if final.exists():
            # Only a half-made dir can be here (complete ones are found before building).
            shutil.rmtree(final)
        os.replace(staging, final)
        return final

    def discard_stale(self, area: str) -> None:
        """Remove temp dirs a killed build left (call with the area's lock held)."""
        parent = self.area_dir(area)
        if parent.is_dir():
            for stale in parent.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)

    def prune(self, area: str, keep: str) -> None:
        """Keep the newest :data:`KEEP_OUTPUTS` outputs of ``area`` (and ``keep``)."""
        parent = self.area_dir(area)
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
