"""The static process group of data/footprint_group.c: build, start, stop.

Used by the footprint host test and benchmarks/bench_footprint.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).parent / "data" / "footprint_group.c"
FILE_PAGES = 32


@dataclass(frozen=True)
class Group:
    """The pids the program printed: the parent, children 0-2, the outsider."""

    parent: int
    children: tuple[int, int, int]
    outsider: int

    @property
    def members(self) -> list[int]:
        """Parent and children 0-2 (the outsider is not a member)."""
        return [self.parent, *self.children]

    @property
    def all(self) -> list[int]:
        return [*self.members, self.outsider]


def build_skip_reason() -> str | None:
    """Why the program cannot be built here, or None."""
    if shutil.which("gcc") is None:
        return "no gcc"
    return None


def build(directory: Path) -> Path:
    """Compile the program statically into ``directory``; CalledProcessError on failure."""
    binary = directory / "footprint_group"
    subprocess.run(
        ["gcc", "-static", "-O1", "-Wall", "-o", str(binary), str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return binary


@contextmanager
def running(binary: Path, directory: Path, anon_pages: int) -> Iterator[Group]:
    """Start the group, yield its pids once all are ready, kill all of it after."""
    data = directory / "footprint_group.data"
    data.write_bytes(bytes(range(256)) * (FILE_PAGES * os.sysconf("SC_PAGE_SIZE") // 256))
    process = subprocess.Popen(
        [str(binary), str(data), str(anon_pages)], stdout=subprocess.PIPE, text=True
    )
    group: Group | None = None
    try:
        assert process.stdout is not None
        pids = [int(word) for word in process.stdout.readline().split()]
        assert len(pids) == 5, f"footprint_group printed {pids}"
        group = Group(pids[0], (pids[1], pids[2], pids[3]), pids[4])
        yield group
    finally:
        for pid in group.all[1:] if group else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.kill()
        process.wait()
        if group:
            for pid in group.all[1:]:
                _reap(pid)


def _reap(pid: int) -> None:
    """Children of the killed parent are reparented; wait until they are gone."""
    for _ in range(2000):
        if not os.path.exists(f"/proc/{pid}"):
            return
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.001)
