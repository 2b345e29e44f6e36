"""Where the project's inputs live: the checkout, the patch series, the agent source."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from images.errors import AgentError, ImageError, PatchError, SourceError

__all__ = [
    "AGENT_DIR_ENV",
    "DEFAULT_KERNEL_VERSION",
    "KERNEL_VERSION_ENV",
    "PatchSet",
    "Project",
    "Series",
    "find_project",
]

#: Environment variable naming another guest agent source directory.
AGENT_DIR_ENV = "PAGEMAP_HARNESS_AGENT_DIR"
#: Environment variable choosing the kernel version (a linux-patch/ directory) by default.
KERNEL_VERSION_ENV = "PAGEMAP_HARNESS_KERNEL_VERSION"
#: The kernel series built when nothing else is asked for.
DEFAULT_KERNEL_VERSION = "6.12"
#: Environment variable naming the checkout (else it is found from this file or the cwd).
ROOT_ENV = "PAGEMAP_HARNESS_ROOT"

_PROJECT_NAME = 'name = "pagemap-harness"'


@dataclass(frozen=True)
class Series:
    """The patch series in order: (file name, contents) per patch."""

    series_file: bytes
    patches: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class PatchSet:
    """One kernel version's series: ``linux-patch/<version>/`` with BASE, series and patches."""

    #: The kernel series it is for (``6.12``): the directory's name.
    version: str
    directory: Path

    @property
    def base_file(self) -> Path:
        """The Debian source build the series is made for (see images.source.read_base)."""
        return self.directory / "BASE"

    @property
    def config_fragment(self) -> Path | None:
        """``kernel.config`` of the directory: options this version needs on every arch, or None.

        Appended after the arch's fragments (images/arches/*.config) and checked
        like them: every option must survive into .config.
        """
        path = self.directory / "kernel.config"
        return path if path.is_file() else None

    def read_series(self) -> Series | None:
        """The series, or None while ``series`` does not exist in the directory.

        Raises :class:`PatchError` for a malformed line or a missing patch file.
        """
        series_path = self.directory / "series"
        try:
            series_file = series_path.read_bytes()
        except FileNotFoundError:
            return None
        patches = []
        for number, raw in enumerate(series_file.decode("utf-8").splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, *options = line.split()
            if options not in ([], ["-p1"]):
                raise PatchError(
                    f"{series_path}:{number}: only '-p1' may follow a patch name, got {raw!r}"
                )
            try:
                patches.append((name, (self.directory / name).read_bytes()))
            except FileNotFoundError:
                raise PatchError(
                    f"{series_path}:{number} names {name}, which is not in {self.directory}"
                ) from None
        return Series(series_file, tuple(patches))


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def patch_root(self) -> Path:
        """``linux-patch/``: one directory per kernel version."""
        return self.root / "linux-patch"

    def kernel_versions(self) -> tuple[str, ...]:
        """The kernel versions with a series (directories of linux-patch/ holding a BASE)."""
        if not self.patch_root.is_dir():
            return ()
        found = [d.name for d in self.patch_root.iterdir() if (d / "BASE").is_file()]
        return tuple(sorted(found, key=lambda v: [int(p) for p in v.split(".") if p.isdigit()]))

    def patch_set(self, version: str | None = None) -> PatchSet:
        """The series of kernel ``version`` (default: $PAGEMAP_HARNESS_KERNEL_VERSION, else 6.12).

        Raises :class:`ImageError` (one line, listing the known versions) for
        a version without a directory.
        """
        if version is None:
            version = os.environ.get(KERNEL_VERSION_ENV) or DEFAULT_KERNEL_VERSION
        if not re.fullmatch(r"\d+\.\d+", version):
            known = ", ".join(self.kernel_versions()) or "none"
            raise SourceError(
                f"kernel version {version!r} is not X.Y (a directory of linux-patch/); "
                f"known: {known}"
            )
        directory = self.patch_root / version
        if not (directory / "BASE").is_file():
            known = ", ".join(self.kernel_versions()) or "none"
            raise SourceError(
                f"no patch series for kernel version {version!r} (no {directory}/BASE); "
                f"known: {known}"
            )
        return PatchSet(version, directory)

    def agent_dir(self, override: Path | None = None) -> Path:
        if override is not None:
            return override
        if env := os.environ.get(AGENT_DIR_ENV):
            return Path(env)
        return self.root / "harness" / "agent"

    def read_agent_sources(self, override: Path | None = None) -> tuple[tuple[str, bytes], ...]:
        """(name, contents) of every ``*.c`` and ``*.h`` of the agent, sorted by name."""
        directory = self.agent_dir(override)
        files = sorted([*directory.glob("*.c"), *directory.glob("*.h")])
        if not any(path.suffix == ".c" for path in files):
            raise AgentError(
                f"no guest agent source (*.c) in {directory}; "
                f"set {AGENT_DIR_ENV} to a directory that has one"
            )
        return tuple((path.name, path.read_bytes()) for path in files)


def find_project() -> Project:
    """The checkout: $PAGEMAP_HARNESS_ROOT, else the one holding this package, else the cwd's."""
    if env := os.environ.get(ROOT_ENV):
        root = Path(env).resolve()
        if not (root / "linux-patch").is_dir():
            raise SourceError(
                f"{ROOT_ENV}={env} is not a pagemap-harness checkout (it has no linux-patch/)"
            )
        return Project(root)
    candidates = [Path(__file__).resolve().parent.parent, *Path.cwd().resolve().parents]
    candidates.insert(1, Path.cwd().resolve())
    for directory in candidates:
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and _PROJECT_NAME in pyproject.read_text(encoding="utf-8"):
            return Project(directory)
    raise ImageError(
        f"cannot find the project checkout (pyproject.toml of pagemap-harness) above "
        f"{Path.cwd()}; run from the checkout or set {ROOT_ENV}"
    )
