"""The guest agent: a static binary compiled from the agent's C source, checked."""

from __future__ import annotations

import struct
from pathlib import Path

from images.arches import ImageArch
from images.commands import run
from images.errors import AgentError

__all__ = ["check_elf", "compile_agent"]

_PT_INTERP = 3


def compile_agent(arch: ImageArch, source_dir: Path, output: Path, log: Path) -> None:
    """Compile every ``*.c`` of ``source_dir`` into the static binary ``output``."""
    sources = sorted(str(path) for path in source_dir.glob("*.c"))
    if not sources:
        raise AgentError(f"no guest agent source (*.c) in {source_dir}")
    run(
        [arch.agent.cc, *arch.agent.cflags, "-I", str(source_dir), "-o", str(output), *sources],
        log,
    )
    check_elf(output, arch)


def check_elf(path: Path, arch: ImageArch) -> None:
    """``path`` must be a static ELF executable for ``arch`` (machine, byte order)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise AgentError(f"{path} is not an ELF file")
    elf_class, elf_data = data[4], data[5]
    if elf_data not in (1, 2) or elf_class not in (1, 2):
        raise AgentError(f"{path}: unknown ELF class {elf_class} / data encoding {elf_data}")
    order = ">" if elf_data == 2 else "<"
    (machine,) = struct.unpack_from(f"{order}H", data, 18)
    if machine != arch.agent.elf_machine or (elf_data == 2) != arch.big_endian:
        want = "big" if arch.big_endian else "little"
        have = "big" if elf_data == 2 else "little"
        raise AgentError(
            f"{path} is for ELF machine {machine} ({have}-endian), {arch.name} needs "
            f"machine {arch.agent.elf_machine} ({want}-endian): check {arch.agent.cc}"
        )
    if elf_class == 2:
        phoff, = struct.unpack_from(f"{order}Q", data, 32)
        phentsize, phnum = struct.unpack_from(f"{order}HH", data, 54)
    else:
        phoff, = struct.unpack_from(f"{order}I", data, 28)
        phentsize, phnum = struct.unpack_from(f"{order}HH", data, 42)
    for index in range(phnum):
        (p_type,) = struct.unpack_from(f"{order}I", data, phoff + index * phentsize)
        if p_type == _PT_INTERP:
            raise AgentError(f"{path} is dynamically linked (has PT_INTERP); /init must be static")
