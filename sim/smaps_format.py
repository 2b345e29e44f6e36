"""The text of /proc/PID/smaps and smaps_rollup: one block type, its parser and its printer.

fs/proc/task_mmu.c prints each VMA as show_smap() does:

* the header line of show_map_vma(): ``start-end perms offset major:minor
  inode``, hex numbers at least 8 digits wide (seq_put_hex_ll()), padded with
  spaces to column ``25 + 6 * sizeof(void *) - 1`` (seq_setwidth() +
  seq_pad()) before the name when there is one;
* ``Size``, ``KernelPageSize``, ``MMUPageSize``, then __show_smap()'s fields,
  each ``Name:`` padded to 16 columns and the kB value right-aligned in 8
  (seq_put_decimal_ull_width(); Private_Hugetlb in 7 after its longer name);
* ``THPeligible:`` (``%8u`` on 6.12, ``%d`` on 6.1), ``ProtectionKey:`` where
  arch_pkeys_enabled(), and ``VmFlags:`` with one two-letter mnemonic and a
  space per set bit.

show_smaps_rollup() prints one header (first VMA start, last VMA end, perms
``----``, name ``[rollup]``) and __show_smap(rollup_mode) with Pss_Anon,
Pss_File and Pss_Shmem.  :func:`parse_smaps` reads either; a line that fits
neither shape is a :class:`SmapsFormatError` naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "SmapsBlock",
    "SmapsFormatError",
    "SmapsHeader",
    "parse_smaps",
    "render_block",
    "smaps_field_names",
]

#: __show_smap()'s kB fields, in print order; the rollup adds the three Pss_* kinds.
_ROLLUP_ONLY = ("Pss_Anon", "Pss_File", "Pss_Shmem")
_SHOW_SMAP_FIELDS = (
    "Rss", "Pss", "Pss_Dirty", *_ROLLUP_ONLY, "Shared_Clean", "Shared_Dirty", "Private_Clean",
    "Private_Dirty", "Referenced", "Anonymous", "KSM", "LazyFree", "AnonHugePages",
    "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb", "Swap", "SwapPss",
    "Locked",
)
#: show_smap()'s sizes before them.
SIZE_FIELDS = ("Size", "KernelPageSize", "MMUPageSize")


class SmapsFormatError(ValueError):
    """Text that is not smaps as the kernel prints it (one line: which line, why)."""


def smaps_field_names(*, rollup: bool, ksm: bool = True) -> tuple[str, ...]:
    """__show_smap()'s kB fields in order: Pss_Anon/File/Shmem only in the rollup,
    KSM only on kernels that print it (6.12, not 6.1)."""
    return tuple(
        name for name in _SHOW_SMAP_FIELDS
        if (rollup or name not in _ROLLUP_ONLY) and (ksm or name != "KSM")
    )


@dataclass(frozen=True)
class SmapsHeader:
    """show_map_vma()'s line.  ``device`` ``"MM:mm"`` in hex, or None where unknown (model)."""

    start: int
    end: int
    perms: str
    offset: int
    device: str | None
    inode: int
    name: str


@dataclass(frozen=True)
class SmapsBlock:
    """One VMA of smaps (or the rollup): header, kB values in file order, THPeligible, VmFlags.

    ``thp_eligible`` and ``protection_key`` are None where the line is absent
    (always in the rollup); ``vm_flags`` is empty in the rollup.
    """

    header: SmapsHeader
    values: Mapping[str, int]
    thp_eligible: int | None = None
    protection_key: int | None = None
    vm_flags: tuple[str, ...] = field(default=())
    #: The block's lines after the header, as printed (parse_smaps() keeps
    #: them so that a compare can see the layout, not only the values).
    lines: tuple[str, ...] = field(default=(), compare=False)


_HEADER = re.compile(
    r"([0-9a-f]+)-([0-9a-f]+) ([-r][-w][-x][-ps]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) ?(.*)"
)
_KB = re.compile(r"(\w+):\s+(\d+) kB")
_PLAIN = re.compile(r"(THPeligible|ProtectionKey):\s+(\d+)")


def parse_smaps(text: str) -> list[SmapsBlock]:
    """The blocks of smaps or smaps_rollup text, in file order.

    Raises SmapsFormatError (one line) for a line of neither shape or a field
    before the first header.
    """
    blocks: list[SmapsBlock] = []
    header: SmapsHeader | None = None
    values: dict[str, int] = {}
    thp: int | None = None
    pkey: int | None = None
    flags: tuple[str, ...] = ()
    lines: list[str] = []

    def close() -> None:
        if header is not None:
            blocks.append(SmapsBlock(header, dict(values), thp, pkey, flags, tuple(lines)))

    for number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if _HEADER.fullmatch(line) is None:
            lines.append(line)
        if line.startswith("VmFlags:"):
            if header is None:
                raise SmapsFormatError(f"line {number}: VmFlags before a header")
            flags = tuple(line[len("VmFlags:"):].split())
            continue
        kb = _KB.fullmatch(line)
        plain = _PLAIN.fullmatch(line) if kb is None else None
        if kb is not None or plain is not None:
            if header is None:
                raise SmapsFormatError(f"line {number}: {line[:40]!r} before a header")
            if kb is not None:
                values[kb[1]] = int(kb[2])
            elif plain is not None and plain[1] == "THPeligible":
                thp = int(plain[2])
            elif plain is not None:
                pkey = int(plain[2])
            continue
        match = _HEADER.fullmatch(line)
        if match is None:
            raise SmapsFormatError(f"line {number}: {line[:60]!r} is not a smaps line")
        close()
        header = SmapsHeader(
            int(match[1], 16), int(match[2], 16), match[3], int(match[4], 16), match[5],
            int(match[6]), match[7].strip(" "),
        )
        values, thp, pkey, flags, lines = {}, None, None, (), []
    close()
    return blocks


def _hex(value: int) -> str:
    return f"{value:08x}"


def render_block(block: SmapsBlock, *, word_size: int = 8, thp_width: int = 8) -> str:
    """The block as the kernel prints it (``thp_width`` 0: 6.1's ``%d``).

    A header without a known device prints ``00:00``.
    """
    h = block.header
    prefix = (
        f"{_hex(h.start)}-{_hex(h.end)} {h.perms} {_hex(h.offset)} "
        f"{h.device or '00:00'} {h.inode} "
    )
    width = 25 + 6 * word_size - 1
    if h.name:
        line = prefix + " " * max(0, width - len(prefix)) + " " + h.name
    else:
        line = prefix
    out = [line + "\n"]
    for name, value in block.values.items():
        label = f"{name}:"
        if name == "Private_Hugetlb":
            out.append(f"{label} {value:>7} kB\n")
        else:
            out.append(f"{label:<16}{value:>8} kB\n")
    if block.thp_eligible is not None:
        out.append(f"THPeligible:    {block.thp_eligible:>{thp_width}}\n" if thp_width
                   else f"THPeligible:    {block.thp_eligible}\n")
    if block.protection_key is not None:
        out.append(f"ProtectionKey:  {block.protection_key:>8}\n")
    if block.thp_eligible is not None:
        out.append("VmFlags: " + "".join(f"{w} " for w in block.vm_flags) + "\n")
    return "".join(out)
