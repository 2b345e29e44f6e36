"""Where the project's inputs live: the checkout, the patch series, the agent source."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from images.errors import AgentError, ImageError, PatchError

__all__ = ["AGENT_DIR_ENV", "Project", "Series", "find_project"]

#: Environment variable naming another guest agent source directory.
AGENT_DIR_ENV = "PAGEMAP_HARNESS_AGENT_DIR"
#: Environment variable naming the checkout (else it is found from this file or the cwd).
ROOT_ENV = "PAGEMAP_HARNESS_ROOT"

_PROJECT_NAME = 'name = "pagemap-harness"'


@dataclass(frozen=True)
class Series:
    """The patch series in order: (file name, contents) per patch."""

    series_file: bytes
    patches: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def patch_dir(self) -> Path:
        return self.root / "linux-patch"

    @property
    def base_file(self) -> Path:
        """The source package version the series is made for."""
        return self.patch_dir / "BASE"

    def agent_dir(self, override: Path | None = None) -> Path:
        if override is not None:
            return override
        if env := os.environ.get(AGENT_DIR_ENV):
            return Path(env)
        return self.root / "harness" / "agent"

    def read_series(self) -> Series | None:
        """The series, or None while linux-patch/series does not exist."""
        series_path = self.patch_dir / "series"
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
                patches.append((name, (self.patch_dir / name).read_bytes()))
            except FileNotFoundError:
                raise PatchError(
                    f"{series_path}:{number} names {name}, which is not in {self.patch_dir}"
                ) from None
        return Series(series_file, tuple(patches))

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
        return Project(Path(env).resolve())
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
