"""Host set-up: every tool and file the builds and boots need, and its Debian package."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from images.arches import IMAGE_ARCH_NAMES
from images.commands import note, run_captured
from images.errors import CommandError, MissingToolsError
from sim.arch import ARCH_NAMES, get_spec

__all__ = ["REQUIREMENTS", "Requirement", "missing", "setup_host"]


@dataclass(frozen=True)
class Requirement:
    """A command on $PATH or a file, provided by a Debian package."""

    what: str  # command name, or absolute file path
    package: str
    #: Arches that need it (empty: all).
    arches: tuple[str, ...] = ()

    def present(self) -> bool:
        if self.what.startswith("/"):
            return Path(self.what).exists()
        return shutil.which(self.what) is not None

    def needed_for(self, arches: Sequence[str]) -> bool:
        return not self.arches or any(arch in self.arches for arch in arches)


def _arch_requirements() -> tuple[Requirement, ...]:
    """The ``host`` needs of every architecture's data file, each with the arches needing it."""
    arches: dict[tuple[str, str], list[str]] = {}
    for name in ARCH_NAMES:
        for need in get_spec(name).host:
            arches.setdefault((need.what, need.package), []).append(name)
    return tuple(
        Requirement(what, package, tuple(names)) for (what, package), names in arches.items()
    )


#: Tool or file -> Debian package: the common ones, then the architectures' (sim.arch).
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("gcc", "gcc"),
    Requirement("make", "make"),
    Requirement("flex", "flex"),
    Requirement("bison", "bison"),
    Requirement("bc", "bc"),
    Requirement("/usr/include/libelf.h", "libelf-dev"),
    Requirement("/usr/include/openssl/ssl.h", "libssl-dev"),
    Requirement("cpio", "cpio"),
    Requirement("gzip", "gzip"),
    Requirement("patch", "patch"),
    Requirement("tar", "tar"),
    Requirement("xz", "xz-utils"),
    # 6.12's headers_install (top Makefile, `headers_install:` runs rsync): the
    # selftests build needs it.
    Requirement("rsync", "rsync"),
    Requirement("dpkg-query", "dpkg"),
    Requirement("dpkg-deb", "dpkg"),
    # The kernel source is fetched by version with apt-get download (images.source).
    Requirement("apt-get", "apt"),
    *_arch_requirements(),
)


def missing(arches: Sequence[str]) -> list[Requirement]:
    """The requirements of ``arches`` (``--arch`` names) that are absent from this host."""
    return [r for r in REQUIREMENTS if r.needed_for(arches) and not r.present()]


def setup_host(arches: Sequence[str] = IMAGE_ARCH_NAMES) -> None:
    """Install what is missing (as root with apt-get), else raise with the command to run."""
    absent = missing(arches)
    if not absent:
        note(f"setup: everything needed for {', '.join(arches)} is installed")
        return
    packages = sorted({r.package for r in absent})
    listing = ", ".join(f"{r.what} ({r.package})" for r in absent)
    install = ["apt-get", "install", "-y", "-q", *packages]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingToolsError(
            f"missing: {listing}; install them as root with: {' '.join(install)}"
        )
    note(f"setup: missing {listing}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        run_captured(["apt-get", "update", "-q"], env=env)
        run_captured(install, env=env)
    except CommandError as exc:
        raise MissingToolsError(f"installing {' '.join(packages)} failed: {exc}") from None
    still = missing(arches)
    if still:
        raise MissingToolsError(
            "still missing after apt-get install: "
            + ", ".join(f"{r.what} ({r.package})" for r in still)
        )
    note(f"setup: installed {' '.join(packages)}")
