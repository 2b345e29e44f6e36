"""Capture the real x86_64 slices of this directory (run as root on an x86_64 host).

    python sim/tests/data/capture_x86_64.py sim/tests/data

Maps 8 private anonymous pages, writes to pages 0, 2 and 3, reads page 5 (a
read fault maps the shared zero page), leaves the rest untouched, then saves
the raw bytes of:

* the 8 pagemap entries of the mapping (file offset = (vaddr >> 12) * 8),
* kpageflags and kpagecount of each distinct PFN present there (one entry each),
* the first 64 entries of kpageflags and kpagecount,

and lists them with their kind, arch and file offset in ``fixtures.json``.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import sys
from pathlib import Path

PAGE = 4096
PAGES = 8


def read_at(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        return f.read(size)


def main(out_dir: Path) -> None:
    region = mmap.mmap(-1, PAGES * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for page in (0, 2, 3):
        region[page * PAGE] = 0x5A
    _ = region[5 * PAGE]
    vaddr = ctypes.addressof(ctypes.c_char.from_buffer(region))
    pagemap_offset = (vaddr >> 12) * 8
    pagemap = read_at("/proc/self/pagemap", pagemap_offset, PAGES * 8)
    fixtures: list[dict[str, object]] = []

    def save(name: str, kind: str, offset: int, data: bytes, origin: str) -> None:
        (out_dir / name).write_bytes(data)
        fixtures.append(
            {"file": name, "kind": kind, "arch": "x86_64", "offset": offset, "origin": origin}
        )

    save(
        "x86_64-pagemap-slice.bin",
        "pagemap",
        pagemap_offset,
        pagemap,
        "/proc/self/pagemap of 8 private anon pages: 0, 2, 3 written, 5 read, rest untouched",
    )
    pfns = sorted(
        {
            int.from_bytes(pagemap[i : i + 8], "little") & ((1 << 55) - 1)
            for i in range(0, len(pagemap), 8)
            if pagemap[i + 7] & 0x80
        }
    )
    for pfn in pfns:
        for kind in ("kpageflags", "kpagecount"):
            save(
                f"x86_64-{kind}-pfn{pfn:#x}.bin",
                kind,
                pfn * 8,
                read_at(f"/proc/{kind}", pfn * 8, 8),
                f"/proc/{kind} entry of a PFN present in x86_64-pagemap-slice.bin",
            )
    for kind in ("kpageflags", "kpagecount"):
        save(
            f"x86_64-{kind}-first64.bin",
            kind,
            0,
            read_at(f"/proc/{kind}", 0, 64 * 8),
            f"/proc/{kind}, PFNs 0-63",
        )
    region.close()
    manifest = out_dir / "fixtures.json"
    existing = json.loads(manifest.read_text()) if manifest.exists() else []
    kept = [f for f in existing if f["arch"] != "x86_64" or f.get("hand_built")]
    manifest.write_text(json.dumps(kept + fixtures, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
