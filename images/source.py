"""The kernel source: the Debian build linux-patch/BASE pins, fetched and unpacked once.

The pin must not be a time bomb: Debian's archive replaces 6.12.y builds as
security updates come out, and ``apt-get install linux-source-6.12`` installs
whatever is newest.  So the source is taken, in this order, from

1. the system package, when dpkg has exactly the pinned version installed;
2. a copy of the pinned version's tarball kept in the cache (``sources/``);
3. the archive: ``apt-get download linux-source-X.Y=VERSION`` into the cache
   (no root needed, nothing installed system-wide, several versions side by side);
4. when the archive no longer serves the pinned version: the newest build of
   the same X.Y series (installed, cached or in the archive) to which the whole
   series applies (checked by applying it to a scratch copy of the files it
   touches).  That choice is printed loudly and recorded with the image
   (:class:`SourceChoice`), so every report can say which kernel it judged.

Nothing applying is one line: :class:`SourceError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from images.cache import Cache
from images.commands import note, run, run_captured
from images.errors import CommandError, SourceError
from images.patching import describe_patch_failure, files_in_patch

__all__ = [
    "SOURCE_VERSION_ENV",
    "BasePin",
    "SourceChoice",
    "SourcePackage",
    "archive_versions",
    "choose_version",
    "ensure_pristine",
    "prepare_source",
    "read_base",
    "resolve_source",
    "series_applies",
]

_DPKG_STATUS = Path("/var/lib/dpkg/status")
_SHA256 = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])")
_VERSION = re.compile(r"(?<!\S)\d+\.\d+(?:\.\d+)?(?:-\S+)?(?!\S)")
_PACKAGE = re.compile(r"(?<!\S)linux-source-(\d+\.\d+)(?!\S)")
_SERIES = re.compile(r"^(\d+)\.(\d+)")


def _series_of(version: str) -> str:
    """``6.12`` of ``6.12.117-1~deb12u1``."""
    match = _SERIES.match(version)
    if match is None:
        raise SourceError(f"{version!r} is not a kernel version (expected e.g. 6.12.117-1~deb12u1)")
    return f"{match[1]}.{match[2]}"


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    """Sort key: upstream numbers first, then the Debian revision (newest last).

    Good enough for the builds one series' archive serves (``6.12.117-1~deb12u1``
    vs ``6.12.115-2~deb12u1``); the archive's own order is kept where it speaks.
    """
    upstream, _, revision = version.partition("-")
    numbers = tuple(int(part) for part in re.findall(r"\d+", upstream))
    return numbers, revision


@dataclass(frozen=True)
class BasePin:
    """What linux-patch/BASE names: the Debian source package and the build the series is for."""

    #: Debian package name, ``linux-source-6.12``.
    package: str
    #: A Debian version (``6.12.117-1~deb12u1``) or an upstream one (``6.12.117``).
    version: str
    #: sha256 of the package's tarball, when BASE gives it.
    sha256: str | None

    @property
    def series(self) -> str:
        """The kernel series (``6.12``): fallbacks stay inside it."""
        return _series_of(self.version)

    def matches(self, version: str) -> bool:
        """Whether Debian ``version`` is the pinned build (an upstream pin matches any revision)."""
        if "-" in self.version:
            return version == self.version
        return version.split("-", 1)[0] == self.version

    def describe(self) -> str:
        return f"{self.package} {self.version}"


def read_base(base_file: Path) -> BasePin:
    """Parse linux-patch/BASE: ``[linux-source-X.Y] VERSION`` and optionally the tarball's sha256.

    Comments start with ``#``.  Raises :class:`SourceError` when no version is named.
    """
    try:
        text = base_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read {base_file}: {exc.strerror or exc}") from None
    lines = [raw.split("#", 1)[0] for raw in text.splitlines()]
    version = next((m[0] for line in lines if (m := _VERSION.search(line))), None)
    if version is None:
        raise SourceError(f"{base_file} names no version (expected e.g. 6.12.117-1~deb12u1)")
    named = next((m[1] for line in lines if (m := _PACKAGE.search(line))), None)
    series = _series_of(version)
    if named is not None and named != series:
        raise SourceError(f"{base_file} names linux-source-{named} but version {version}")
    digest = _SHA256.search("\n".join(lines))
    return BasePin(f"linux-source-{series}", version, digest[0].lower() if digest else None)


@dataclass(frozen=True)
class SourcePackage:
    """One build of a linux-source package: its Debian version and its tarball."""

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


#: Environment variable asking for another build of the pinned series (e.g. 6.12.115-2~deb12u1).
SOURCE_VERSION_ENV = "PAGEMAP_HARNESS_SOURCE_VERSION"


@dataclass(frozen=True)
class SourceChoice:
    """The source a build uses, and why (recorded in meta.json and printed by harness run)."""

    source: SourcePackage
    pin: BasePin
    #: ``pinned`` (BASE's build), ``fallback`` (the archive no longer serves it;
    #: the series applies to this one), ``requested`` ($PAGEMAP_HARNESS_SOURCE_VERSION)
    #: or ``tree`` (a user's source tree: images.user_tree; ``source.tarball`` is the tree).
    reason: str = "pinned"

    @property
    def pinned(self) -> bool:
        return self.reason == "pinned"

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.pinned:
            return f"{self.pin.package} {self.source.version} (the pinned build)"
        if self.reason == "tree":
            return (f"the source tree {self.source.tarball} (Linux {self.pin.version}, "
                    f"fingerprint {self.source.sha256[:12]})")
        why = {
            "fallback": "the archive no longer serves it; the series applies to this build",
            "requested": f"asked for by ${SOURCE_VERSION_ENV}",
        }[self.reason]
        built = f"{self.pin.package} {self.source.version}"
        return f"{built} -- NOT the pinned {self.pin.version} ({why})"

    def as_json(self) -> dict[str, object]:
        return {
            "package": self.pin.package,
            "package_version": self.source.version,
            "sha256": self.source.sha256,
            "pinned_version": self.pin.version,
            "pinned": self.pinned,
            "reason": self.reason,
        }


# -- where builds can come from -------------------------------------------------------


def archive_versions(package: str) -> tuple[str, ...]:
    """The versions of ``package`` the configured apt archives serve, newest first.

    From ``apt-cache madison`` (the local package lists: they are as fresh as
    the last ``apt-get update``).  Empty when apt knows none or is absent.
    """
    if shutil.which("apt-cache") is None:
        return ()
    try:
        out = run_captured(["apt-cache", "madison", package])
    except CommandError:
        return ()
    versions: list[str] = []
    for line in out.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) >= 2 and fields[0] == package and fields[1] not in versions:
            versions.append(fields[1])
    return tuple(sorted(versions, key=_version_key, reverse=True))


def _installed_version(package: str) -> str | None:
    """dpkg's installed version of ``package`` (None: not installed)."""
    if shutil.which("dpkg-query") is None:
        return None
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Version}", package],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, version = proc.stdout.partition("|")
    return version.strip() if proc.returncode == 0 and status.startswith("ii") else None


def _system_tarball(package: str) -> Path:
    return Path("/usr/src") / f"{package}.tar.xz"


def _cached_tarball(cache: Cache, package: str, version: str) -> Path:
    safe = version.replace("~", "_").replace(":", "_")
    return cache.root / "sources" / f"{package}_{safe}" / f"{package}.tar.xz"


def _hash(cache: Cache, tarball: Path) -> str:
    def compute() -> str:
        note(f"[source] hashing {tarball}")
        digest = hashlib.sha256()
        with open(tarball, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    return str(cache.memo(f"sha256:{tarball}", tarball, compute))


def _local_tarball(cache: Cache, package: str, version: str) -> Path | None:
    """The tarball of ``package`` ``version`` already on this machine, or None."""
    cached = _cached_tarball(cache, package, version)
    if cached.is_file():
        return cached
    system = _system_tarball(package)
    if system.is_file():
        stamp = _DPKG_STATUS if _DPKG_STATUS.exists() else system
        installed = cache.memo(
            f"dpkg-version:{package}", stamp, lambda: _installed_version(package)
        )
        if installed == version:
            return system
    return None


def _download(cache: Cache, package: str, version: str, log: Path) -> Path:
    """Fetch ``package`` ``version`` from the archive into the cache; its tarball's path."""
    target = _cached_tarball(cache, package, version)
    with cache.lock("source"):
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
        try:
            run(
                ["apt-get", "download", f"{package}={version}"],
                log,
                cwd=staging,
                progress=f"source: download {package} {version}",
            )
            debs = sorted(staging.glob("*.deb"))
            if len(debs) != 1:
                raise SourceError(
                    f"apt-get download {package}={version} gave {len(debs)} .deb files"
                )
            member = f"./usr/src/{package}.tar.xz"
            run(
                [
                    "sh",
                    "-c",
                    'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" "$3"',
                    "sh",
                    str(debs[0]),
                    str(staging),
                    member,
                ],
                log,
                progress="source: unpack .deb",
            )
            (staging / member).rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _obtain(cache: Cache, package: str, version: str, log: Path) -> SourcePackage:
    tarball = _local_tarball(cache, package, version) or _download(cache, package, version, log)
    return SourcePackage(version, tarball, _hash(cache, tarball))


# -- does the series apply? -----------------------------------------------------------


def series_applies(tarball: Path, patches: Sequence[tuple[str, bytes]], log: Path) -> str | None:
    """None if every patch applies in order to ``tarball``'s tree, else why not (one line).

    Only the files the series touches are unpacked (into a scratch dir that
    is removed), so a candidate costs one pass over the tarball, not a tree.
    """
    touched = sorted(
        {f for _, data in patches for f in files_in_patch(data.decode(errors="replace"))}
    )
    with tempfile.TemporaryDirectory(prefix="pagemap-harness-dry-run-") as scratch:
        root = Path(scratch)
        top = _tarball_top(tarball)
        members = [f"{top}/{name}" for name in touched]
        # Files a patch creates are not in the tarball: tar then exits non-zero
        # after extracting the others, which is what is wanted here.
        subprocess.run(
            ["tar", "-xf", str(tarball), "-C", scratch, *members],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        tree = root / top
        tree.mkdir(exist_ok=True)
        for name, data in patches:
            patch_file = root / f"patch-{Path(name).name}"
            patch_file.write_bytes(data)
            proc = subprocess.run(
                ["patch", "-p1", "--forward", "--batch", "-d", str(tree), "-i", str(patch_file)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            with open(log, "a", encoding="utf-8") as out:
                out.write(
                    f"+ patch -p1 --forward -d <{tarball.name} files> -i {name}\n{proc.stdout}"
                )
            if proc.returncode != 0:
                problems = describe_patch_failure(proc.stdout) or ["patch failed"]
                return f"{name} does not apply ({', '.join(problems)})"
    return None


def _tarball_top(tarball: Path) -> str:
    """The tarball's one top directory (``linux-source-6.12``), from its first member."""
    proc = subprocess.run(
        ["sh", "-c", 'tar -tf "$1" | head -n 1', "sh", str(tarball)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    first = proc.stdout.strip().lstrip("./")
    if not first:
        raise SourceError(f"{tarball} is not a readable tar archive")
    return first.split("/", 1)[0]


# -- the choice -----------------------------------------------------------------------


def choose_version(
    pin: BasePin,
    available: Sequence[str],
    applies: Callable[[str], str | None],
) -> tuple[str, bool]:
    """(version, pinned) of the build to use.

    ``available``: every build of ``pin.package`` that can be had (local or in
    the archive).  The pinned build wins when available; otherwise the newest
    build of the same series for which ``applies(version)`` returns None (it
    returns why not, otherwise).  Raises :class:`SourceError` (one line) when
    none qualifies.
    """
    for version in available:
        if pin.matches(version):
            return version, True
    same_series = sorted(
        {v for v in available if _SERIES.match(v) and _series_of(v) == pin.series},
        key=_version_key,
        reverse=True,
    )
    if not same_series:
        served = ", ".join(available) or "none"
        raise SourceError(
            f"linux-patch/BASE pins {pin.describe()}, which neither this machine nor the apt "
            f"archive has, and no other {pin.series}.y build is available (seen: {served}); "
            "run apt-get update, or rebase the series"
        )
    refusals = []
    for version in same_series:
        why = applies(version)
        if why is None:
            return version, False
        refusals.append(f"{version}: {why}")
    raise SourceError(
        f"linux-patch/BASE pins {pin.describe()}, which the archive no longer serves, and the "
        f"series applies to no other {pin.series}.y build: {'; '.join(refusals)}"
    )


def _choice_file(cache: Cache) -> Path:
    return cache.root / "sources" / "choice.json"


def resolve_source(
    cache: Cache, base_file: Path, patches: Sequence[tuple[str, bytes]], log: Path
) -> SourceChoice:
    """The source build to use for ``base_file``'s pin (see the module docstring).

    A fallback choice is remembered in the cache for this pin and series (so it
    is made once, not per command) and announced on every call.
    Raises :class:`SourceError` (one line) when no build qualifies.
    """
    pin = read_base(base_file)
    if requested := os.environ.get(SOURCE_VERSION_ENV):
        return _requested(cache, pin, requested, patches, log)
    series_hash = hashlib.sha256(b"".join(n.encode() + b"\0" + d for n, d in patches)).hexdigest()
    # Fast path: the pinned build is already here.
    local = _local_tarball(cache, pin.package, pin.version) if "-" in pin.version else None
    if local is not None:
        return _checked(SourceChoice(_obtain(cache, pin.package, pin.version, log), pin))

    remembered = _remembered(cache, pin, series_hash)
    if remembered is not None and _local_tarball(cache, pin.package, remembered) is not None:
        choice = SourceChoice(_obtain(cache, pin.package, remembered, log), pin, "fallback")
        note(f"WARNING: building {choice.describe()}")
        return choice

    archive = archive_versions(pin.package)
    installed = _installed_version(pin.package)
    available = list(archive)
    if installed is not None and installed not in available:
        available.append(installed)

    def applies(version: str) -> str | None:
        source = _obtain(cache, pin.package, version, log)
        return series_applies(source.tarball, patches, log)

    version, pinned = choose_version(pin, available, applies)
    choice = SourceChoice(
        _obtain(cache, pin.package, version, log), pin, "pinned" if pinned else "fallback"
    )
    if not pinned:
        _remember(cache, pin, series_hash, version)
        note("WARNING: " + "=" * 70)
        note(f"WARNING: building {choice.describe()}")
        note("WARNING: " + "=" * 70)
    return _checked(choice)


def _requested(
    cache: Cache, pin: BasePin, version: str, patches: Sequence[tuple[str, bytes]], log: Path
) -> SourceChoice:
    """The build $PAGEMAP_HARNESS_SOURCE_VERSION names: same series, and the series must apply."""
    if _series_of(version) != pin.series:
        raise SourceError(
            f"{SOURCE_VERSION_ENV}={version} is not a {pin.series}.y build "
            f"(the series is for {pin.describe()})"
        )
    if pin.matches(version):
        return _checked(SourceChoice(_obtain(cache, pin.package, version, log), pin))
    local = _local_tarball(cache, pin.package, version)
    if local is None and version not in archive_versions(pin.package):
        raise SourceError(
            f"{SOURCE_VERSION_ENV}={version}: neither this machine nor the apt archive has "
            f"{pin.package} {version} (apt-cache madison {pin.package} lists what it serves)"
        )
    source = _obtain(cache, pin.package, version, log)
    stamp = hashlib.sha256(b"".join(n.encode() + b"\0" + d for n, d in patches)).hexdigest()
    why = cache.memo(f"applies:{stamp}:{source.ident}", source.tarball,
                     lambda: series_applies(source.tarball, patches, log))
    if why is not None:
        raise SourceError(f"{SOURCE_VERSION_ENV}={version}: the series does not apply: {why}")
    choice = SourceChoice(source, pin, "requested")
    note(f"WARNING: building {choice.describe()}")
    return choice


def _checked(choice: SourceChoice) -> SourceChoice:
    if choice.pinned and choice.pin.sha256 and choice.pin.sha256 != choice.source.sha256:
        raise SourceError(
            f"the patch series is for a {choice.pin.package} tarball with sha256 "
            f"{choice.pin.sha256} (linux-patch/BASE), but {choice.source.tarball} has "
            f"{choice.source.sha256}"
        )
    return choice


def _remembered(cache: Cache, pin: BasePin, series_hash: str) -> str | None:
    try:
        data = json.loads(_choice_file(cache).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        isinstance(data, dict)
        and data.get("pin") == pin.describe()
        and data.get("series") == series_hash
        and isinstance(data.get("version"), str)
    ):
        return str(data["version"])
    return None


def _remember(cache: Cache, pin: BasePin, series_hash: str, version: str) -> None:
    path = _choice_file(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"pin": pin.describe(), "series": series_hash, "version": version}),
        encoding="utf-8",
    )
    tmp.replace(path)


def ensure_pristine(cache: Cache, source: SourcePackage, log: Path) -> Path:
    """The unpacked, never-modified source tree of ``source`` (unpacked on first use).

    A user's tree (``source.tarball`` is a directory) is its own pristine tree.
    """
    if source.tarball.is_dir():
        return source.tarball
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
            run(
                ["tar", "-xf", str(source.tarball), "-C", str(staging)],
                log,
                progress="source: unpack",
            )
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


def prepare_source(
    cache: Cache, base_file: Path, patches: Sequence[tuple[str, bytes]]
) -> SourceChoice:
    """``images setup``'s source step: fresh enough package lists, then the build fetched.

    When apt knows no build of the pinned package at all (a fresh machine whose
    lists were never downloaded) and this is root, ``apt-get update`` runs first.
    """
    pin = read_base(base_file)
    log = cache.root / "logs" / "source.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if _local_tarball(cache, pin.package, pin.version) is None and not archive_versions(
        pin.package
    ):
        if os.geteuid() != 0:
            raise SourceError(
                f"apt knows no build of {pin.package}: as root run apt-get update, "
                "then python -m images setup"
            )
        run_captured(["apt-get", "update", "-q"], env={"DEBIAN_FRONTEND": "noninteractive"})
    choice = resolve_source(cache, base_file, patches, log)
    note(f"setup: kernel source {choice.describe()}: {choice.source.tarball}")
    return choice
