"""Applying the series to a tree: failure messages, minimal re-application, mtimes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from images.errors import PatchError
from images.patching import PatchedTree, describe_patch_failure, files_in_patch

OLD = 1_000_000_000_000_000_000  # ns: 2001, older than anything the test writes


def _diff(path: str, old: str, new: str) -> bytes:
    return (
        f"--- a/{path}\n+++ b/{path}\n@@ -1,3 +1,3 @@\n one\n-{old}\n+{new}\n three\n"
    ).encode()


@pytest.fixture
def tree(tmp_path: Path) -> PatchedTree:
    pristine = tmp_path / "pristine"
    (pristine / "sub").mkdir(parents=True)
    for name in ("a.c", "b.c", "sub/c.c"):
        path = pristine / name
        path.write_text("one\ntwo\nthree\n")
        os.utime(path, ns=(OLD, OLD))
    patched = PatchedTree(tmp_path / "tree", tmp_path / "build.log")
    patched.reset(pristine, "src-1", tmp_path / "build")
    return patched


def test_files_in_patch() -> None:
    text = (
        _diff("a.c", "two", "2").decode()
        + "--- /dev/null\n+++ b/new.c\n@@ -0,0 +1 @@\n+x\n"
        + "--- a/gone.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n"
    )
    assert files_in_patch(text) == ["a.c", "new.c", "gone.c"]


def test_broken_patch_names_patch_and_files(tree: PatchedTree) -> None:
    good = ("0001-good.patch", _diff("a.c", "two", "TWO"))
    broken = (
        "0002-broken.patch",
        _diff("b.c", "zwei", "TWO") + _diff("missing.c", "two", "TWO"),
    )
    with pytest.raises(PatchError) as info:
        tree.sync([good, broken], patch_dir=Path("/project/linux-patch"))
    message = str(info.value)
    assert message.startswith("patch 0002-broken.patch does not apply:")
    assert "b.c: Hunk #1 FAILED at 1" in message
    assert "missing.c: file not found" in message
    # The command to reproduce, on the project's copy of the patch.
    assert "patch -p1" in message and "-i /project/linux-patch/0002-broken.patch" in message
    # The good patch stays applied and recorded; the broken one left nothing behind.
    assert (tree.src / "a.c").read_text() == "one\nTWO\nthree\n"
    assert (tree.src / "b.c").read_text() == "one\ntwo\nthree\n"
    state = tree.state()
    assert state is not None
    assert [name for name, _ in state.applied] == ["0001-good.patch"]
    assert not state.in_progress
    assert not list(tree.src.rglob("*.rej")) and not list(tree.src.rglob("*.orig"))


def test_describe_patch_failure_reversed() -> None:
    output = (
        "checking file fs/proc/page.c\n"
        "Reversed (or previously applied) patch detected!  Skipping patch.\n"
        "1 out of 1 hunk ignored\n"
    )
    assert describe_patch_failure(output) == [
        "fs/proc/page.c: already applied (or reversed)"
    ]


def test_pristine_tree_is_never_modified(tree: PatchedTree, tmp_path: Path) -> None:
    tree.sync([("p.patch", _diff("a.c", "two", "TWO"))])
    assert (tmp_path / "pristine" / "a.c").read_text() == "one\ntwo\nthree\n"
    assert (tree.src / "a.c").stat().st_ino != (tmp_path / "pristine" / "a.c").stat().st_ino
    # Untouched files stay hard links to the pristine ones (cheap copies).
    assert (tree.src / "b.c").stat().st_ino == (tmp_path / "pristine" / "b.c").stat().st_ino


def test_unchanged_series_touches_nothing(tree: PatchedTree) -> None:
    series = [("1.patch", _diff("a.c", "two", "TWO")), ("2.patch", _diff("b.c", "two", "2"))]
    assert tree.sync(series) == ["1.patch", "2.patch"]
    mtimes = {p: p.stat().st_mtime_ns for p in tree.src.rglob("*.c")}
    assert tree.sync(series) == []
    assert mtimes == {p: p.stat().st_mtime_ns for p in tree.src.rglob("*.c")}


def test_changed_patch_reapplies_only_from_there(tree: PatchedTree) -> None:
    first = ("1.patch", _diff("a.c", "two", "TWO"))
    second = ("2.patch", _diff("b.c", "two", "2"))
    third = ("3.patch", _diff("sub/c.c", "two", "deux"))
    tree.sync([first, second, third])
    mtimes = {p.name: p.stat().st_mtime_ns for p in tree.src.rglob("*.c")}

    # Change the second patch: the first is kept as is; the third is reverted and
    # re-applied, which leaves c.c as it was, so c.c keeps its mtime too.
    second_v2 = ("2.patch", _diff("b.c", "two", "zwei"))
    assert tree.sync([first, second_v2, third]) == ["2.patch", "3.patch"]
    assert (tree.src / "b.c").read_text() == "one\nzwei\nthree\n"
    now = {p.name: p.stat().st_mtime_ns for p in tree.src.rglob("*.c")}
    assert now["a.c"] == mtimes["a.c"]
    assert now["c.c"] == mtimes["c.c"]
    assert now["b.c"] != mtimes["b.c"]

    # Dropping every patch restores the pristine contents; the files that change
    # get new mtimes (newer than any object built from the patched contents).
    assert tree.sync([]) == []
    for name in ("a.c", "b.c", "sub/c.c"):
        assert (tree.src / name).read_text() == "one\ntwo\nthree\n"
        assert (tree.src / name).stat().st_mtime_ns > OLD


def test_interrupted_sync_is_detected(tree: PatchedTree) -> None:
    state = tree.state()
    assert state is not None
    state.in_progress = True
    state.save(tree.state_path)
    with pytest.raises(RuntimeError, match="reset"):
        tree.sync([])
