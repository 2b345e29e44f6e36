"""The cache's lock and atomic publication, with two processes building at once."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from images.cache import COMPLETE_MARKER, KEEP_OUTPUTS, Cache


def _fake_build(root: str, key: str, events: str, barrier: Any, results: Any) -> None:
    """A slow build step: each run appends 'start'/'end' lines to ``events``."""
    cache = Cache(Path(root))

    def build(staging: Path) -> None:
        with open(events, "a") as log:
            log.write(f"start {os.getpid()} {time.monotonic()}\n")
        (staging / "kernel").write_bytes(b"k" * 1000)
        # A reader looking now must not see the output yet.
        assert cache.published("out/x86_64", key) is None
        assert not cache.output("out/x86_64", key).exists()
        time.sleep(0.5)
        (staging / "initramfs.cpio.gz").write_bytes(b"i" * 100)
        (staging / COMPLETE_MARKER).write_text("{}")
        with open(events, "a") as log:
            log.write(f"end {os.getpid()} {time.monotonic()}\n")

    barrier.wait()  # both processes ask at the same moment
    results.put(str(cache.get_or_build("out/x86_64", key, build)))


def _race(cache_root: Path, keys: tuple[str, str], events: Path) -> list[str]:
    """Run two fake builds in two processes at once; their output dirs."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_fake_build, args=(str(cache_root), key, str(events), barrier, results)
        )
        for key in keys
    ]
    for worker in workers:
        worker.start()
    try:
        outputs = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    return outputs


def test_two_processes_build_once(tmp_path: Path) -> None:
    events = tmp_path / "events"
    results = _race(tmp_path / "cache", ("k1", "k1"), events)
    assert results[0] == results[1]
    out = Path(results[0])
    assert {p.name for p in out.iterdir()} == {COMPLETE_MARKER, "initramfs.cpio.gz", "kernel"}
    # Built exactly once; the other process waited and took the result.
    assert [line.split()[0] for line in events.read_text().splitlines()] == ["start", "end"]
    assert not list(out.parent.glob(".tmp-*"))


def test_two_keys_are_serialised(tmp_path: Path) -> None:
    events = tmp_path / "events"
    assert len(set(_race(tmp_path / "cache", ("k1", "k2"), events))) == 2
    kinds = [line.split()[0] for line in events.read_text().splitlines()]
    # Never two builds of one arch inside the lock at once.
    assert kinds == ["start", "end", "start", "end"]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def broken(staging: Path) -> None:
        (staging / "kernel").write_bytes(b"half")
        raise RuntimeError("make failed")

    with pytest.raises(RuntimeError, match="make failed"):
        cache.get_or_build("out/ppc64", "k", broken)
    assert cache.published("out/ppc64", "k") is None
    assert list(cache.area_dir("out/ppc64").iterdir()) == []

    def no_marker(staging: Path) -> None:
        (staging / "kernel").write_bytes(b"all")

    with pytest.raises(RuntimeError, match=f"wrote no {COMPLETE_MARKER}"):
        cache.get_or_build("out/ppc64", "k", no_marker)
    assert list(cache.area_dir("out/ppc64").iterdir()) == []


def test_stale_staging_dirs_are_discarded_and_old_outputs_pruned(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    stale = cache.staging_dir("out/ppc64", "dead")  # as a killed build leaves it
    (stale / "kernel").write_bytes(b"half")

    def build(staging: Path) -> None:
        (staging / COMPLETE_MARKER).write_text("{}")

    for index in range(KEEP_OUTPUTS + 2):
        cache.get_or_build("out/ppc64", f"key{index}", build)
        os.utime(cache.output("out/ppc64", f"key{index}"), (index, index))
    assert not stale.exists()
    kept = sorted(p.name for p in cache.area_dir("out/ppc64").iterdir())
    assert kept == [f"key{index}" for index in range(2, KEEP_OUTPUTS + 2)]


def test_memo_recomputes_when_the_file_changes(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    stamp = tmp_path / "tool"
    stamp.write_text("v1")
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        return f"version {len(calls)}"

    assert cache.memo("tool", stamp, compute) == "version 1"
    assert cache.memo("tool", stamp, compute) == "version 1"
    stamp.write_text("v22")
    assert cache.memo("tool", stamp, compute) == "version 2"
    assert len(calls) == 2
