"""The kernel-source pin: reading BASE, choosing a build, checking that the series applies."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from images.cache import Cache
from images.errors import ImageError, SourceError
from images.kconfig import parse_fragment
from images.project import KERNEL_VERSION_ENV, find_project
from images.source import (
    SOURCE_VERSION_ENV,
    BasePin,
    archive_versions,
    choose_version,
    read_base,
    resolve_source,
    series_applies,
)

PIN = BasePin("linux-source-6.12", "6.12.117-1~deb12u1", None)


@pytest.mark.parametrize(
    ("text", "version", "sha256"),
    [
        ("6.12.117-1~deb12u1\n", "6.12.117-1~deb12u1", None),
        (
            "# the series is made for\nlinux-source-6.12 6.12.117-1~deb12u1\n",
            "6.12.117-1~deb12u1",
            None,
        ),
        ("6.12.117\n", "6.12.117", None),
        (f"linux-source-6.12 6.12.117-1~deb12u1\n{'AB' * 32}\n", "6.12.117-1~deb12u1", "ab" * 32),
        ("linux-source-6.1 6.1.192-3\n", "6.1.192-3", None),
    ],
)
def test_base_is_read(tmp_path: Path, text: str, version: str, sha256: str | None) -> None:
    base = tmp_path / "BASE"
    base.write_text(text)
    pin = read_base(base)
    assert (pin.version, pin.sha256) == (version, sha256)
    assert pin.package == f"linux-source-{pin.series}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# nothing here\n", "names no version"),
        ("linux-source-6.1 6.12.117-1~deb12u1\n", "names linux-source-6.1 but version 6.12.117"),
    ],
)
def test_bad_base_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    base = tmp_path / "BASE"
    base.write_text(text)
    with pytest.raises(SourceError, match=message) as info:
        read_base(base)
    assert "\n" not in str(info.value)


def test_missing_base_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot read .*BASE"):
        read_base(tmp_path / "BASE")


def test_the_projects_base_pins_a_6_12_build() -> None:
    pin = read_base(find_project().patch_set().base_file)
    assert pin.package == "linux-source-6.12"
    assert pin.series == "6.12"
    assert pin.sha256 is not None


def test_upstream_pin_matches_any_revision() -> None:
    pin = BasePin("linux-source-6.12", "6.12.117", None)
    assert pin.matches("6.12.117-1~deb12u1")
    assert pin.matches("6.12.117-2")
    assert not pin.matches("6.12.115-2~deb12u1")


def _never(version: str) -> str | None:
    raise AssertionError(f"the pinned build is available: {version} needs no dry run")


def test_pinned_build_available_is_taken() -> None:
    available = ["6.12.118-1~deb12u1", "6.12.117-1~deb12u1", "6.12.115-2~deb12u1"]
    assert choose_version(PIN, available, _never) == ("6.12.117-1~deb12u1", True)


def test_pinned_missing_takes_the_newest_build_the_series_applies_to() -> None:
    tried: list[str] = []

    def applies(version: str) -> str | None:
        tried.append(version)
        return None if version == "6.12.113-1~deb12u1" else "0003-x.patch does not apply"

    # Order of the input does not matter; other series are never candidates.
    available = ["6.12.113-1~deb12u1", "6.1.192-3", "6.12.115-2~deb12u1", "6.12.120-1~deb12u1"]
    assert choose_version(PIN, available, applies) == ("6.12.113-1~deb12u1", False)
    assert tried == ["6.12.120-1~deb12u1", "6.12.115-2~deb12u1", "6.12.113-1~deb12u1"]


def test_nothing_applies_is_one_line_naming_every_refusal() -> None:
    available = ["6.12.115-2~deb12u1", "6.12.107-1~deb12u1"]
    with pytest.raises(SourceError) as info:
        choose_version(PIN, available, lambda v: f"0003-x.patch does not apply to {v}")
    message = str(info.value)
    assert "\n" not in message
    assert (
        "pins linux-source-6.12 6.12.117-1~deb12u1, which the archive no longer serves" in message
    )
    assert "6.12.115-2~deb12u1: 0003-x.patch does not apply to 6.12.115-2~deb12u1" in message
    assert "6.12.107-1~deb12u1: 0003-x.patch" in message


def test_no_build_of_the_series_is_one_line() -> None:
    with pytest.raises(
        SourceError, match=r"no other 6\.12\.y build is available \(seen: 6\.1\.192-3\)"
    ):
        choose_version(PIN, ["6.1.192-3"], _never)


# -- the dry run, on small real tarballs -------------------------------------------------


def _tarball(tmp_path: Path, files: dict[str, str]) -> Path:
    top = tmp_path / "src" / "linux-source-6.12"
    for name, text in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text(text)
    tarball = tmp_path / "linux-source-6.12.tar.xz"
    subprocess.run(
        ["tar", "-cJf", str(tarball), "-C", str(tmp_path / "src"), "linux-source-6.12"], check=True
    )
    return tarball


_CHANGE = b"""--- a/fs/proc/page.c
+++ b/fs/proc/page.c
@@ -1,3 +1,3 @@
 one
-two
+TWO
 three
"""

_CREATE = b"""--- /dev/null
+++ b/fs/proc/kpagemap.c
@@ -0,0 +1 @@
+new
"""

_AFTER_CHANGE = b"""--- a/fs/proc/page.c
+++ b/fs/proc/page.c
@@ -1,3 +1,3 @@
 one
-TWO
+2
 three
"""


def test_series_applies_in_order_including_new_files(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path, {"fs/proc/page.c": "one\ntwo\nthree\n", "Makefile": "x\n"})
    patches = [
        ("0001-change.patch", _CHANGE),
        ("0002-create.patch", _CREATE),
        ("0003-after.patch", _AFTER_CHANGE),
    ]
    assert series_applies(tarball, patches, tmp_path / "log") is None


def test_series_that_does_not_apply_says_which_patch_and_file(tmp_path: Path) -> None:
    tarball = _tarball(tmp_path, {"fs/proc/page.c": "one\nother\nthree\n"})
    why = series_applies(tarball, [("0001-change.patch", _CHANGE)], tmp_path / "log")
    assert why is not None
    assert why.startswith("0001-change.patch does not apply (fs/proc/page.c: Hunk #1 FAILED")
    # Patches depend on those before them: without 0001, 0003 fails.
    tarball = _tarball(tmp_path, {"fs/proc/page.c": "one\ntwo\nthree\n"})
    why = series_applies(tarball, [("0003-after.patch", _AFTER_CHANGE)], tmp_path / "log")
    assert why is not None and why.startswith("0003-after.patch does not apply")


# -- against Debian's archive (downloads and scans real 150 MB tarballs) -----------------


def _have_archive() -> bool:
    return bool(archive_versions("linux-source-6.12"))


@pytest.mark.build
@pytest.mark.skipif(not _have_archive(), reason="apt knows no linux-source-6.12 (no package lists)")
def test_unserved_pin_falls_back_to_a_build_the_series_applies_to(tmp_path: Path) -> None:
    """A pin the archive lacks (6.12.999): the newest served 6.12.y the real series applies to."""
    project = find_project()
    series = project.patch_set().read_series()
    assert series is not None
    base = tmp_path / "BASE"
    base.write_text("linux-source-6.12 6.12.999-1~deb12u1\n")
    cache = Cache.default()
    choice = resolve_source(cache, base, series.patches, tmp_path / "log")
    assert not choice.pinned
    assert choice.source.version == archive_versions("linux-source-6.12")[0]
    assert "NOT the pinned 6.12.999-1~deb12u1" in choice.describe()
    assert choice.as_json()["pinned"] is False
    # Remembered: asking again neither downloads nor dry-runs.
    again = resolve_source(cache, base, series.patches, tmp_path / "log")
    assert again == choice


# -- kernel versions: one linux-patch/ directory each -------------------------------------


def test_project_knows_its_kernel_versions() -> None:
    project = find_project()
    assert "6.12" in project.kernel_versions()
    patch_set = project.patch_set()
    assert patch_set.version == "6.12"
    assert patch_set.directory == project.patch_root / "6.12"
    series = patch_set.read_series()
    assert series is not None and len(series.patches) >= 1


def test_6_1_is_a_kernel_version_with_its_own_config_fragment() -> None:
    project = find_project()
    assert {"6.1", "6.12"} <= set(project.kernel_versions())
    six_one = project.patch_set("6.1")
    series = six_one.read_series()
    assert series is not None
    assert [name[:4] for name, _ in series.patches] == ["0001", "0002", "0003"]
    fragment = six_one.config_fragment
    assert fragment is not None and fragment == six_one.directory / "kernel.config"
    requests = parse_fragment(fragment.read_text(encoding="utf-8"), fragment.name)
    assert str(requests["BUG"]) == "CONFIG_BUG=y"
    assert project.patch_set("6.12").config_fragment is None


def test_unknown_kernel_version_lists_the_known_ones() -> None:
    with pytest.raises(ImageError) as info:
        find_project().patch_set("5.4")
    message = str(info.value)
    assert message.startswith("no patch series for kernel version '5.4'")
    assert "known: " in message and "6.12" in message.split("known: ")[1]
    assert "\n" not in message


def test_kernel_version_env_picks_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_VERSION_ENV, "9.9")
    with pytest.raises(ImageError, match=r"'9\.9'"):
        find_project().patch_set()


def test_requested_build_of_another_series_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SOURCE_VERSION_ENV, "6.1.192-3")
    base = tmp_path / "BASE"
    base.write_text("linux-source-6.12 6.12.117-1~deb12u1\n")
    with pytest.raises(SourceError) as info:
        resolve_source(Cache(tmp_path / "cache"), base, (), tmp_path / "log")
    assert str(info.value) == (
        f"{SOURCE_VERSION_ENV}=6.1.192-3 is not a 6.12.y build "
        "(the series is for linux-source-6.12 6.12.117-1~deb12u1)"
    )
