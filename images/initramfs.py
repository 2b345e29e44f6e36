"""The initramfs: its layout as data, built with the kernel's usr/gen_init_cpio.

gen_init_cpio (built in every kernel build with BLK_DEV_INITRD) writes a newc
cpio from a text list without needing root for device nodes; ``-t 0`` fixes
every mtime so the same inputs give the same bytes.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from images.commands import run
from images.errors import ImageError

__all__ = ["LAYOUT", "Entry", "cpio_list", "list_cpio", "make_initramfs"]


@dataclass(frozen=True)
class Entry:
    """One line of a gen_init_cpio list."""

    kind: str  # "dir", "nod" (character device) or "file"
    path: str
    mode: int
    major: int = 0
    minor: int = 0
    #: For "file": which built artefact goes there (key of make_initramfs's ``files``).
    source: str = ""

    def line(self, files: dict[str, Path]) -> str:
        owner = "0 0"
        if self.kind == "dir":
            return f"dir {self.path} {self.mode:04o} {owner}"
        if self.kind == "nod":
            return f"nod {self.path} {self.mode:04o} {owner} c {self.major} {self.minor}"
        if self.kind == "file":
            return f"file {self.path} {files[self.source]} {self.mode:04o} {owner}"
        raise ValueError(f"unknown initramfs entry kind {self.kind!r}")


#: Everything in the initramfs.  The kernel opens /dev/console before running
#: /init (console_on_rootfs() in init/main.c), so the node must be in the
#: archive; the agent mounts proc, sysfs and devtmpfs on the empty dirs itself.
LAYOUT: tuple[Entry, ...] = (
    Entry("dir", "/dev", 0o755),
    Entry("nod", "/dev/console", 0o600, major=5, minor=1),
    Entry("dir", "/proc", 0o755),
    Entry("dir", "/sys", 0o755),
    Entry("dir", "/tmp", 0o1777),
    Entry("dir", "/mnt", 0o755),
    Entry("file", "/init", 0o755, source="agent"),
)


def cpio_list(files: dict[str, Path], layout: tuple[Entry, ...] = LAYOUT) -> str:
    return "".join(entry.line(files) + "\n" for entry in layout)


def make_initramfs(
    gen_init_cpio: Path, files: dict[str, Path], output: Path, log: Path
) -> None:
    """Write ``output`` (gzip'd newc cpio of :data:`LAYOUT`) and check it holds /init."""
    list_path = output.with_name("initramfs.list")
    cpio_path = output.with_name("initramfs.cpio")
    list_path.write_text(cpio_list(files), encoding="utf-8")
    run([str(gen_init_cpio), "-t", "0", str(list_path)], log, stdout=cpio_path)
    data = cpio_path.read_bytes()
    names = list_cpio(data)
    if "init" not in names:
        raise ImageError(f"{cpio_path} has no /init (members: {names})")
    # mtime=0: the same cpio always gives the same .gz bytes.
    output.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    cpio_path.unlink()


def list_cpio(data: bytes) -> list[str]:
    """Member names of a newc ("070701") cpio archive, up to its trailer."""
    names: list[str] = []
    offset = 0
    while True:
        header = data[offset : offset + 110]
        if len(header) < 110 or header[:6] not in (b"070701", b"070702"):
            raise ImageError(f"not a newc cpio archive at offset {offset}")
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        filesize, namesize = fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode("utf-8", errors="replace")
        if name == "TRAILER!!!":
            return names
        names.append(name)
        offset = _align4(name_start + namesize)
        offset = _align4(offset + filesize)


def _align4(value: int) -> int:
    return (value + 3) & ~3
