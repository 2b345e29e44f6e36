"""The cache key: a hash of every input that can change a built image."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from images.arches import ImageArch
from images.cache import Cache
from images.commands import run_captured
from images.errors import MissingToolsError
from images.initramfs import LAYOUT, Entry

__all__ = ["RECIPE_VERSION", "BuildInputs", "cache_key", "compiler_version"]

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


def cache_key(inputs: BuildInputs) -> str:
    """16 hex digits naming the output of ``inputs``."""
    digest = hashlib.sha256()

    def field(label: str, data: bytes) -> None:
        # Length-prefixed, so no two different inputs serialise alike.
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    field("recipe", str(inputs.recipe_version).encode())
    field("arch", repr(inputs.arch).encode())
    field("source-version", inputs.source_version.encode())
    field("source-sha256", inputs.source_sha256.encode())
    field("series", b"-" if inputs.series_file is None else b"+" + inputs.series_file)
    for group, items in (
        ("patch", inputs.patches),
        ("fragment", inputs.fragments),
        ("agent", inputs.agent_sources),
    ):
        field(f"{group}-count", str(len(items)).encode())
        for name, data in items:
            field(f"{group}-name", name.encode())
            field(f"{group}-data", data)
    for name, version in inputs.compilers:
        field("compiler", name.encode())
        field("compiler-version", version.encode())
    field("layout", repr(inputs.layout).encode())
    return digest.hexdigest()[:16]


def compiler_version(cache: Cache, compiler: str) -> str:
    """``compiler --version`` (memoised while the binary is unchanged)."""
    found = shutil.which(compiler)
    if found is None:
        raise MissingToolsError(f"{compiler} is not installed (python -m images setup)")
    binary = Path(found).resolve()
    return str(
        cache.memo(f"version:{binary}", binary, lambda: run_captured([compiler, "--version"]))
    )
