"""The cache key: a hash of every input that can change a built image."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from images.arches import ImageArch
from images.cache import Cache
from images.commands import run_captured
from images.errors import MissingToolsError
from images.initramfs import LAYOUT, Entry
from sim.arch import AgentBuild, KernelBuild

__all__ = ["RECIPE_VERSION", "BuildInputs", "cache_key", "compiler_version", "kernel_key"]

#: Bump when the build steps change in a way the other inputs do not show.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class BuildInputs:
    """Everything a build reads, as values (contents, not paths)."""

    arch: ImageArch
    source_version: str
    source_sha256: str
    #: linux-patch/series itself, None while it does not exist.
    series_file: bytes | None
    patches: tuple[tuple[str, bytes], ...]
    #: Every fragment requested: the kernel's base ones are inside the source;
    #: these are ours (name, contents), the series fragment included when applied.
    fragments: tuple[tuple[str, bytes], ...]
    agent_sources: tuple[tuple[str, bytes], ...]
    #: (compiler, its ``--version`` output) for every compiler the build runs.
    compilers: tuple[tuple[str, str], ...]
    layout: tuple[Entry, ...] = LAYOUT
    recipe_version: int = RECIPE_VERSION


class _Digest:
    """sha256 over length-prefixed labelled fields: no two inputs serialise alike."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def field(self, label: str, data: bytes) -> None:
        self._hash.update(f"{label}\0{len(data)}\0".encode())
        self._hash.update(data)

    def files(self, group: str, items: tuple[tuple[str, bytes], ...]) -> None:
        self.field(f"{group}-count", str(len(items)).encode())
        for name, data in items:
            self.field(f"{group}-name", name.encode())
            self.field(f"{group}-data", data)

    def key(self) -> str:
        return self._hash.hexdigest()[:16]


def kernel_key(inputs: BuildInputs) -> str:
    """16 hex digits naming the kernel build of ``inputs`` (agent and layout aside).

    Of the architecture it hashes only the kernel-build facts (the data file's
    ``kernel`` part) and the compilers the kernel build runs, so an edit to
    the QEMU machine, the host packages or the agent build never rebuilds a
    kernel.
    """
    digest = _Digest()
    digest.field("recipe", str(inputs.recipe_version).encode())
    _record(digest, "kernel", inputs.arch.kernel)
    digest.field("source-version", inputs.source_version.encode())
    digest.field("source-sha256", inputs.source_sha256.encode())
    digest.field("series", b"-" if inputs.series_file is None else b"+" + inputs.series_file)
    digest.files("patch", inputs.patches)
    digest.files("fragment", inputs.fragments)
    _compilers(digest, inputs, kernel=True)
    return digest.key()


def _record(digest: _Digest, label: str, record: KernelBuild | AgentBuild) -> None:
    """Hash every field of a data-file part by name (a new field changes the key)."""
    for item in fields(record):
        digest.field(f"{label}-{item.name}", repr(getattr(record, item.name)).encode())


def _compilers(digest: _Digest, inputs: BuildInputs, *, kernel: bool) -> None:
    """Hash the compilers the kernel build runs (``kernel``), or the others."""
    runs_kernel = set(inputs.arch.kernel_compilers)
    for name, version in inputs.compilers:
        if (name in runs_kernel) == kernel:
            digest.field("compiler", name.encode())
            digest.field("compiler-version", version.encode())


def cache_key(inputs: BuildInputs) -> str:
    """16 hex digits naming the image (kernel + initramfs) of ``inputs``."""
    digest = _Digest()
    digest.field("kernel", kernel_key(inputs).encode())
    digest.files("agent", inputs.agent_sources)
    _record(digest, "agent", inputs.arch.agent)
    digest.field("agent-big-endian", str(inputs.arch.big_endian).encode())
    _compilers(digest, inputs, kernel=False)
    digest.field("layout", repr(inputs.layout).encode())
    return digest.key()


def compiler_version(cache: Cache, compiler: str) -> str:
    """``compiler --version`` (memoised while the binary is unchanged)."""
    found = shutil.which(compiler)
    if found is None:
        raise MissingToolsError(f"{compiler} is not installed (python -m images setup)")
    binary = Path(found).resolve()
    return str(
        cache.memo(f"version:{binary}", binary, lambda: run_captured([compiler, "--version"]))
    )
