"""Write the hand-built fixtures of this directory from the literal bytes below.

    python sim/tests/data/make_hand_built.py sim/tests/data

Each file's expected decoding is written by hand beside it (``.expected.jsonl``,
the output of ``python -m sim decode KIND FILE --offset OFFSET --json``); the
bytes here are typed out, not produced by the code under test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

Z4 = b"\x00" * 4
Z8 = b"\x00" * 8
Z12 = b"\x00" * 12

FIXTURES: list[tuple[str, str, str, int, bytes, str]] = [
    (
        "ppc64-kpagemap.bin",
        "kpagemap",
        "ppc64",
        0,
        # header: big-endian, PAGE_SHIFT 16, 8-byte words, 16-byte entries
        b"\x00\x10\x08\x10" + Z12
        + b"\x00\x00\x00\x00\x00\x00\x04\x00" + Z8  # PFN 0: flags BUDDY, count 0
        + b"\x00\x00\x00\x00\x00\x00\x58\x68" + b"\x00\x00\x00\x00\x00\x00\x00\x02"  # PFN 1
        + b"\x00\x00\x00\x00\x00\x10\x00\x00" + Z8  # PFN 2: NOPAGE
        + b"\x00\x00\x00\x01\x01\x00\x00\x00" + Z8,  # PFN 3: ZERO_PAGE, RESERVED
        "big-endian 64-bit kpagemap with a 64K-page header",
    ),
    (
        "i386-kpagemap.bin",
        "kpagemap",
        "i386",
        0,
        # header: little-endian, PAGE_SHIFT 12, 4-byte words, 8-byte entries
        b"\x01\x0c\x04\x08" + Z4
        + b"\x00\x04\x00\x00" + Z4  # PFN 0: BUDDY, count 0
        + b"\x68\x58\x00\x00" + b"\x01\x00\x00\x00"  # PFN 1: count 1
        + b"\x00\x00\x10\x00" + Z4,  # PFN 2: NOPAGE
        "little-endian 32-bit kpagemap",
    ),
    (
        "ppc64-4k-kpagemap-slice.bin",
        "kpagemap",
        "ppc64-4k",
        0x20,
        # slots 2 and 3 (PFN 1 and 2), no header: byte order from --arch
        b"\x00\x00\x00\x00\x00\x00\x00\x20" + b"\x00\x00\x00\x00\x00\x00\x00\x03"
        + b"\x00\x00\x00\x04\x00\x00\x00\x00" + Z8,
        "big-endian 64-bit kpagemap slice at offset 0x20 (no header)",
    ),
    (
        "ppc64-pagemap-slice.bin",
        "pagemap",
        "ppc64",
        0x8000,
        b"\x81\x00\x00\x00\x00\x00\x12\x34"  # present, exclusive, PFN 0x1234
        + Z8  # nothing mapped
        + b"\x40\x80\x00\x00\x00\x00\x02\x02"  # swapped, soft-dirty, type 2 offset 0x10
        + b"\xa0\x00\x00\x00\x00\x0a\xbc\xde",  # present, file/shared, PFN 0xabcde
        "big-endian pagemap slice at offset 0x8000 (vaddr 0x10000000 with 64K pages)",
    ),
    (
        "i386-pagemap-v1.bin",
        "pagemap-v1",
        "i386",
        0,
        b"\x01\x0c\x04\x04"  # header: little-endian, 4K, 4-byte words, 4-byte header
        + b"\xff\xff\xff\xff"  # page 0 not present
        + b"\x78\x56\x34\x12",  # page 1 at PFN 0x12345678
        "seed-era pagemap of a 32-bit little-endian kernel",
    ),
    (
        "ppc64-4k-pagemap-v1.bin",
        "pagemap-v1",
        "ppc64-4k",
        0,
        b"\x00\x0c\x08\x08" + Z4  # header: big-endian, 4K, 8-byte words, 8-byte header
        + b"\x00\x00\x00\x00\x00\x00\x00\x2a"  # page 0 at PFN 0x2a
        + b"\xff" * 8,  # page 1 not present
        "seed-era pagemap of a 64-bit big-endian kernel",
    ),
]


def main(out_dir: Path) -> None:
    manifest = out_dir / "fixtures.json"
    existing = json.loads(manifest.read_text()) if manifest.exists() else []
    kept = [f for f in existing if not f.get("hand_built")]
    for name, kind, arch, offset, data, origin in FIXTURES:
        (out_dir / name).write_bytes(data)
        kept.append(
            {
                "file": name,
                "kind": kind,
                "arch": arch,
                "offset": offset,
                "origin": origin,
                "hand_built": True,
            }
        )
    manifest.write_text(json.dumps(kept, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
