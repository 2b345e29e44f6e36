"""The decode CLI (``python -m sim decode``) on bytes read from the guest.

Dumps of /proc/kpagemap and of the agent's own /proc/self/pagemap, read in
the booted guest, are decoded by the CLI in a subprocess, and every decoded
field must be what the harness's parser (sim.formats) reads from the same
bytes: with the layout taken from the kpagemap header (a dump from offset 0)
and with ``--arch`` and ``--offset`` (a slice).  On i386 this is the 4-byte
word path, on arm64 the path with RAM starting at a PFN other than 0.
"""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.agent.protocol import ReadStage
from harness.probes import read_exact
from harness.vm import VM
from sim.formats import parse_kpagemap_entries, parse_pagemap_entries

pytestmark = pytest.mark.vm

#: Slots or entries per dump.
N = 64


@pytest.fixture
def kvm(vm: VM) -> VM:
    """The shared VM, if its kernel has /proc/kpagemap."""
    probe = vm.agent.read_file("/proc/kpagemap", 0)
    if probe.stage is ReadStage.OPEN and probe.errno == errno.ENOENT:
        pytest.skip("the kernel has no /proc/kpagemap (ENOENT)")
    assert probe.ok, probe.describe()
    return vm


def _decode(kind: str, path: Path, *options: str) -> list[dict[str, Any]]:
    """The CLI's JSON lines for ``path`` (it must exit 0 and say nothing on stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "sim", "decode", kind, str(path), *options, "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_kpagemap_dump_decodes_with_the_layout_of_its_header(kvm: VM, tmp_path: Path) -> None:
    arch = kvm.profile.arch
    size = arch.kpagemap_entry_size
    data = read_exact(kvm.agent, "/proc/kpagemap", 0, (N + 1) * size)
    path = tmp_path / "kpagemap.bin"
    path.write_bytes(data)
    header, *decoded = _decode("kpagemap", path)
    assert header == {
        "header": {
            "little_endian": arch.little_endian,
            "page_shift": arch.page_shift,
            "word_size": arch.word_size,
            "entry_size": size,
        }
    }
    expected = parse_kpagemap_entries(arch, data[size:])
    assert [(e["pfn"], e["raw_flags"], e["count"]) for e in decoded] == [
        (pfn, flags, count) for pfn, (flags, count) in enumerate(expected)
    ]
    # A flags word is an unsigned long: KPF bits 32 and up are gone on i386.
    assert all(e["raw_flags"] < 1 << (8 * arch.word_size) for e in decoded)


def test_kpagemap_slice_at_the_ram_base_decodes_with_arch_and_offset(
    kvm: VM, tmp_path: Path
) -> None:
    arch = kvm.profile.arch
    size = arch.kpagemap_entry_size
    first = arch.ram_base_pfn
    offset = (first + 1) * size
    data = read_exact(kvm.agent, "/proc/kpagemap", offset, N * size)
    path = tmp_path / "slice.bin"
    path.write_bytes(data)
    decoded = _decode("kpagemap", path, "--arch", arch.name, "--offset", str(offset))
    expected = parse_kpagemap_entries(arch, data)
    assert [(e["pfn"], e["raw_flags"], e["count"]) for e in decoded] == [
        (first + i, flags, count) for i, (flags, count) in enumerate(expected)
    ]
    # The first frames of RAM hold the kernel or early allocations: never all free.
    assert any(count for _, count in expected) or any(flags for flags, _ in expected)


def test_agent_pagemap_decodes_with_arch_and_offset(kvm: VM, tmp_path: Path) -> None:
    arch = kvm.profile.arch
    maps = kvm.agent.read_file("/proc/self/maps", 1 << 16).data.decode()
    match = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", maps)
    assert match, maps
    start, end = int(match[1], 16), int(match[2], 16)
    pages = min(N, (end - start) >> arch.page_shift)
    offset = (start >> arch.page_shift) * 8
    data = read_exact(kvm.agent, "/proc/self/pagemap", offset, pages * 8)
    path = tmp_path / "pagemap.bin"
    path.write_bytes(data)
    decoded = _decode("pagemap", path, "--arch", arch.name, "--offset", str(offset))
    expected = parse_pagemap_entries(arch, data)
    assert [(e["vaddr"], e["present"], e["pfn"]) for e in decoded] == [
        (start + (i << arch.page_shift), entry.present, entry.pfn if entry.present else None)
        for i, entry in enumerate(expected)
    ]
    # The agent's first mapping is its text, being executed: some of it is present,
    # at PFNs inside RAM (from the arch's RAM base).
    present = [entry.pfn for entry in expected if entry.present and entry.pfn is not None]
    assert present and min(present) >= arch.ram_base_pfn
