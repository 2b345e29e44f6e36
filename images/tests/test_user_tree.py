"""A user's kernel tree as the source: version, series choice, kpagemap detection, fingerprint."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from images.cache import Cache
from images.errors import SourceError
from images.project import find_project
from images.source import ensure_pristine
from images.user_tree import has_kpagemap, tree_choice, tree_patch_set, tree_release


def _tree(root: Path, version: str, page_c: str = "static int x;\n") -> Path:
    major, minor, sub = [*version.split("."), "0"][:3]
    root.mkdir(parents=True, exist_ok=True)
    (root / "Makefile").write_text(
        f"# SPDX\nVERSION = {major}\nPATCHLEVEL = {minor}\nSUBLEVEL = {sub}\nEXTRAVERSION =\n"
        "NAME = Baby Opossum Posse\n"
    )
    (root / "fs" / "proc").mkdir(parents=True, exist_ok=True)
    (root / "fs" / "proc" / "page.c").write_text(page_c)
    return root


def test_release_comes_from_the_makefile(tmp_path: Path) -> None:
    assert tree_release(_tree(tmp_path, "6.12.117")) == "6.12.117"
    rc = _tree(tmp_path / "rc", "6.15.0")
    text = (rc / "Makefile").read_text().replace("EXTRAVERSION =", "EXTRAVERSION = -rc3")
    (rc / "Makefile").write_text(text)
    assert tree_release(rc) == "6.15.0-rc3"


@pytest.mark.parametrize("content", [None, "obj-y += fs/\n"])
def test_not_a_kernel_tree_is_one_line(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "Makefile").write_text(content)
    with pytest.raises(SourceError, match="not a kernel source tree") as info:
        tree_release(tmp_path)
    assert "\n" not in str(info.value)


def test_kpagemap_is_detected_in_fs_proc_page_c(tmp_path: Path) -> None:
    assert not has_kpagemap(_tree(tmp_path / "a", "6.12.117"))
    patched = 'proc_create("kpagemap", S_IRUSR, NULL, &kpagemap_proc_ops);\n'
    assert has_kpagemap(_tree(tmp_path / "b", "6.12.117", patched))
    assert not has_kpagemap(tmp_path / "nothing")


def test_series_is_the_same_version_or_the_nearest_older(tmp_path: Path) -> None:
    project = find_project()
    assert tree_patch_set(project, "6.12.117").version == "6.12"
    assert tree_patch_set(project, "6.12.0-rc1").version == "6.12"
    # A newer tree takes the newest series at or below it.
    newest = tree_patch_set(project, "6.15.2").version
    assert newest == max(project.kernel_versions(), key=lambda v: tuple(map(int, v.split("."))))
    assert tree_patch_set(project, "6.15.2", wanted="6.12").version == "6.12"
    with pytest.raises(SourceError, match=r"the tree is Linux 4\.19\.1; the project has series"):
        tree_patch_set(project, "4.19.1")


def test_tree_is_its_own_pristine_source_and_its_fingerprint_follows_edits(
    tmp_path: Path,
) -> None:
    tree = _tree(tmp_path / "linux", "6.12.117")
    patch_set = find_project().patch_set("6.12")
    choice = tree_choice(tree, patch_set)
    assert choice.reason == "tree" and not choice.pinned
    assert choice.source.version == "tree-6.12.117"
    assert "the source tree" in choice.describe() and "Linux 6.12.117" in choice.describe()
    assert ensure_pristine(Cache(tmp_path / "cache"), choice.source, tmp_path / "log") == tree
    assert tree_choice(tree, patch_set).source.sha256 == choice.source.sha256
    (tree / "fs" / "proc" / "page.c").write_text("static int y;\n")
    edited = tree_choice(tree, patch_set).source.sha256
    assert edited != choice.source.sha256


def test_git_tree_fingerprint_sees_uncommitted_changes(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "linux", "6.12.117")
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    patch_set = find_project().patch_set("6.12")
    clean = tree_choice(tree, patch_set).source.sha256
    (tree / "fs" / "proc" / "page.c").write_text("static int z;\n")
    edited = tree_choice(tree, patch_set).source.sha256
    assert edited != clean
    # An untracked file counts, by contents; an ignored one (build output) does not.
    (tree / ".gitignore").write_text("*.o\n")
    (tree / "new.c").write_text("int a;\n")
    with_new = tree_choice(tree, patch_set).source.sha256
    assert with_new != edited
    (tree / "new.c").write_text("int b;\n")
    assert tree_choice(tree, patch_set).source.sha256 != with_new
    changed = tree_choice(tree, patch_set).source.sha256
    (tree / "page.o").write_bytes(b"\0")
    assert tree_choice(tree, patch_set).source.sha256 == changed


def test_git_tree_of_another_owner_is_fingerprinted(tmp_path: Path) -> None:
    """As root, git refuses another owner's repository unless told it is safe: we tell it."""
    tree = _tree(tmp_path / "linux", "6.12.117")
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    if os.geteuid() != 0:
        pytest.skip("needs root to give the tree to another owner")
    for path in [tree, *tree.rglob("*")]:
        os.lchown(path, 65534, 65534)
    patch_set = find_project().patch_set("6.12")
    before = tree_choice(tree, patch_set).source.sha256
    (tree / "Makefile").write_text((tree / "Makefile").read_text() + "# edited\n")
    assert tree_choice(tree, patch_set).source.sha256 != before


def test_git_failure_is_one_line(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "linux", "6.12.117")
    (tree / ".git").mkdir()  # not a repository git can read
    failed = r"cannot fingerprint .*: git rev-parse HEAD failed"
    with pytest.raises(SourceError, match=failed) as info:
        tree_choice(tree, find_project().patch_set("6.12"))
    assert "\n" not in str(info.value)
