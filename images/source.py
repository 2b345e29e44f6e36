"""The kernel source: Debian's linux-source package, checked and unpacked once."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from images.cache import Cache
from images.commands import note, run, run_captured
from images.errors import CommandError, SourceError

__all__ = [
    "SOURCE_PACKAGE",
    "SOURCE_TARBALL",
    "SourcePackage",
    "check_base",
    "ensure_pristine",
    "installed_source",
]

SOURCE_PACKAGE = "linux-source-6.12"
SOURCE_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
_DPKG_STATUS = Path("/var/lib/dpkg/status")
_SHA256 = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])")
_VERSION = re.compile(r"(?<!\S)\d+\.\d+(?:\.\d+)?(?:-\S+)?(?!\S)")


@dataclass(frozen=True)
class SourcePackage:
    version: str  # Debian package version, e.g. 6.12.117-1~deb12u1
    tarball: Path
    sha256: str

    @property
    def ident(self) -> str:
        """Names the pristine tree: package version and tarball hash."""
        return f"{self.version}-{self.sha256[:12]}"

    @property
    def upstream_version(self) -> str:
        return self.version.split("-", 1)[0]


def installed_source(cache: Cache) -> SourcePackage:
    """The installed source package (version from dpkg, hash of its tarball; both memoised)."""
    if not SOURCE_TARBALL.is_file():
        raise SourceError(
            f"{SOURCE_TARBALL} is missing: install {SOURCE_PACKAGE} (python -m images setup)"
        )

    def query_version() -> str:
        try:
            out = run_captured(["dpkg-query", "-W", "-f=${Version}", SOURCE_PACKAGE])
        except CommandError as exc:
            raise SourceError(
                f"cannot read the version of {SOURCE_PACKAGE} from dpkg: {exc.tail.strip()}"
            ) from None
        return out.strip()

    def hash_tarball() -> str:
        note(f"[source] hashing {SOURCE_TARBALL}")
        digest = hashlib.sha256()
        with open(SOURCE_TARBALL, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    stamp = _DPKG_STATUS if _DPKG_STATUS.exists() else SOURCE_TARBALL
    version = str(cache.memo(f"dpkg-version:{SOURCE_PACKAGE}", stamp, query_version))
    sha256 = str(cache.memo(f"sha256:{SOURCE_TARBALL}", SOURCE_TARBALL, hash_tarball))
    return SourcePackage(version, SOURCE_TARBALL, sha256)


def check_base(base_file: Path, source: SourcePackage) -> None:
    """Refuse a source package other than the one ``base_file`` names (if it exists).

    The file's first version-looking word is the base: a full Debian version
    (``6.12.117-1~deb12u1``) must equal the package's; an upstream one
    (``6.12.117``) must equal the package's upstream part.  A 64-hex-digit
    word, if any, must be the tarball's sha256.
    """
    try:
        text = base_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for raw in text.splitlines():
        line = raw.split("#", 1)[0]
        if match := _VERSION.search(line):
            wanted = match[0]
            break
    else:
        raise SourceError(f"{base_file} names no version (expected e.g. {source.version})")
    have = source.version if "-" in wanted else source.upstream_version
    if have != wanted:
        raise SourceError(
            f"the patch series is for {SOURCE_PACKAGE} {wanted} ({base_file}), "
            f"but {source.version} is installed; install {wanted} or rebase the series"
        )
    if (digest := _SHA256.search(text)) and digest[0].lower() != source.sha256:
        raise SourceError(
            f"the patch series is for a {SOURCE_PACKAGE} tarball with sha256 {digest[0]} "
            f"({base_file}), but {source.tarball} has {source.sha256}"
        )


def ensure_pristine(cache: Cache, source: SourcePackage, log: Path) -> Path:
    """The unpacked, never-modified source tree of ``source`` (unpacked on first use)."""
    directory = cache.source_dir(source.ident)
    tree = directory / "linux"
    if tree.is_dir():
        return tree
    with cache.lock("source"):
        if tree.is_dir():
            return tree
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=directory))
        try:
            run(["tar", "-xf", str(source.tarball), "-C", str(staging)], log,
                progress="source: unpack")
            tops = [p for p in staging.iterdir() if p.is_dir()]
            if len(tops) != 1:
                raise SourceError(
                    f"{source.tarball} should hold one top directory, has "
                    f"{sorted(p.name for p in tops)}"
                )
            tops[0].rename(tree)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return tree
