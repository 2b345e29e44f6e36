"""Decode this host's own proc files (root on x86_64 Linux; skipped elsewhere).

The test process maps private anonymous pages, writes to some, reads one (a
read fault maps the shared zero page) and leaves the rest untouched; then it
copies slices of /proc/self/pagemap, /proc/kpageflags and /proc/kpagecount,
decodes them with the CLI (in-process and as a subprocess) and checks that
the three files agree with each other and with what the test did.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.arch import UnknownArchError, host_arch
from sim.cli import EXIT_BROKEN_PIPE, main

REPO = Path(__file__).resolve().parents[2]
PROC_FILES = ("/proc/self/pagemap", "/proc/kpageflags", "/proc/kpagecount")


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "not Linux"
    try:
        arch = host_arch()
    except UnknownArchError as e:
        return str(e)
    if arch.name != "x86_64":
        return f"host is {arch.name}; the expectations here are x86_64's"
    if os.geteuid() != 0:
        return "not root: PFNs read as 0 and /proc/kpage* are mode 0400"
    missing = [path for path in PROC_FILES if not os.path.exists(path)]
    if missing:
        return f"missing {', '.join(missing)} (CONFIG_PROC_PAGE_MONITOR off?)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

PAGE = 4096
PAGES = 8
WRITTEN = (0, 2, 3)
READ_ONLY = 5


@pytest.fixture
def region() -> Iterator[tuple[int, mmap.mmap]]:
    mapping = mmap.mmap(-1, PAGES * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for page in WRITTEN:
        mapping[page * PAGE] = 0x5A
    assert mapping[READ_ONLY * PAGE] == 0
    buffer = ctypes.c_char.from_buffer(mapping)
    vaddr = ctypes.addressof(buffer)
    del buffer  # a live export would keep mmap.close() from working
    yield vaddr, mapping
    mapping.close()


def read_at(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        return f.read(size)


def decode_json(
    kind: str, path: Path, offset: int, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, Any]]:
    status = main(["decode", kind, str(path), "--offset", str(offset), "--json"])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    return [json.loads(line) for line in out.splitlines()]


def test_host_files_agree(
    region: tuple[int, mmap.mmap], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vaddr, _ = region
    offset = (vaddr // PAGE) * 8
    pagemap_copy = tmp_path / "pagemap.bin"
    pagemap_copy.write_bytes(read_at("/proc/self/pagemap", offset, PAGES * 8))
    pagemap = decode_json("pagemap", pagemap_copy, offset, capsys)

    assert [p["vaddr"] for p in pagemap] == [vaddr + i * PAGE for i in range(PAGES)]
    assert [p["index"] for p in pagemap] == [vaddr // PAGE + i for i in range(PAGES)]
    for page, entry in enumerate(pagemap):
        touched = page in WRITTEN or page == READ_ONLY
        assert entry["present"] is touched, (page, entry)
        assert entry["swapped"] is False
        assert (entry["pfn"] is not None) is touched
    for page in WRITTEN:
        entry = pagemap[page]
        assert entry["pfn"] != 0  # root sees PFNs (pagemap_read(): show_pfn)
        assert entry["exclusive"] and not entry["file_shared"]
        pfn = entry["pfn"]
        flags = _one_entry("kpageflags", pfn, tmp_path, capsys)
        count = _one_entry("kpagecount", pfn, tmp_path, capsys)
        assert flags["pfn"] == count["pfn"] == pfn
        assert "NOPAGE" not in flags["flags"] and "ANON" in flags["flags"]
        assert count["count"] >= 1
    zero = pagemap[READ_ONLY]
    flags = _one_entry("kpageflags", zero["pfn"], tmp_path, capsys)
    assert "ZERO_PAGE" in flags["flags"]
    assert not zero["exclusive"]
    assert _one_entry("kpagecount", zero["pfn"], tmp_path, capsys)["count"] == 0


def _one_entry(
    kind: str, pfn: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    copy = tmp_path / f"{kind}-{pfn:#x}.bin"
    copy.write_bytes(read_at(f"/proc/{kind}", pfn * 8, 8))
    (entry,) = decode_json(kind, copy, pfn * 8, capsys)
    return entry


def test_first_64_pfns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for kind in ("kpageflags", "kpagecount"):
        (tmp_path / kind).write_bytes(read_at(f"/proc/{kind}", 0, 64 * 8))
    flags = decode_json("kpageflags", tmp_path / "kpageflags", 0, capsys)
    counts = decode_json("kpagecount", tmp_path / "kpagecount", 0, capsys)
    assert [f["pfn"] for f in flags] == [c["pfn"] for c in counts] == list(range(64))
    for f, c in zip(flags, counts, strict=True):
        if "NOPAGE" in f["flags"]:
            assert c["count"] == 0  # kpagecount_read(): no page, count 0


def test_subprocess_reads_proc_directly() -> None:
    """The CLI on /proc/kpagecount itself, cut short by the reader: the file
    streams (the whole file is never read) and a closed pipe stays quiet."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sim", "decode", "kpagecount", "/proc/kpagecount", "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    lines = [json.loads(process.stdout.readline()) for _ in range(64)]
    process.stdout.close()
    err = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == EXIT_BROKEN_PIPE
    assert err == b""
    assert [line["pfn"] for line in lines] == list(range(64))
