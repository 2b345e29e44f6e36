"""/proc/kpagemap in the patched kernel: header, permissions, alignment, end, flags.

Facts checked (the patch series' kpagemap_read() in fs/proc/page.c):
slot 0 starts with (little-endian?, PAGE_SHIFT, sizeof(long), entry size)
and is otherwise zero; the file is 0400; offset and count must be multiples
of the entry size (else EINVAL); it ends after get_max_dump_pfn() PFNs plus
the header slot; the flags of PFN n (slot n + 1) are /proc/kpageflags' u64
for n, as unsigned long.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator

import pytest

from harness.agent.protocol import ReadStage, Whence
from harness.probes import file_size, kpagecount, kpageflags, kpagemap, pagemap, read_exact
from harness.vm import VM
from sim.arch import Arch

pytestmark = pytest.mark.vm

#: The header bytes per architecture, written out (not derived) on purpose.
EXPECTED_HEADER = {
    "x86_64": bytes([0x01, 0x0C, 0x08, 0x10]),
    "ppc64": bytes([0x00, 0x10, 0x08, 0x10]),
    "ppc64-4k": bytes([0x00, 0x0C, 0x08, 0x10]),
    "i386": bytes([0x01, 0x0C, 0x04, 0x08]),
    "arm64": bytes([0x01, 0x0C, 0x08, 0x10]),
    "arm64-64k": bytes([0x01, 0x10, 0x08, 0x10]),
}

UNPRIVILEGED_UID = 1000


@pytest.fixture
def kvm(vm: VM) -> VM:
    """The shared VM, if its kernel has /proc/kpagemap."""
    probe = vm.agent.read_file("/proc/kpagemap", 0)
    if probe.stage is ReadStage.OPEN and probe.errno == errno.ENOENT:
        pytest.skip(
            "the kernel has no /proc/kpagemap (ENOENT): boot the patched kernel "
            f"(python -m images build --arch {vm.profile.name})"
        )
    assert probe.ok, probe.describe()
    return vm


def _entry(vm: VM) -> int:
    return vm.profile.arch.kpagemap_entry_size


def _max_dump_pfn(vm: VM) -> int:
    """get_max_dump_pfn(), as the size of /proc/kpageflags read until 0 shows it."""
    return file_size(vm.agent, "/proc/kpageflags") // 8


def test_header(kvm: VM) -> None:
    slot = read_exact(kvm.agent, "/proc/kpagemap", 0, _entry(kvm))
    assert slot[:4] == EXPECTED_HEADER[kvm.profile.name]
    assert slot[4:] == bytes(len(slot) - 4)


def test_unprivileged_reader_gets_eacces(kvm: VM) -> None:
    result = kvm.agent.read_file("/proc/kpagemap", _entry(kvm), offset=0, uid=UNPRIVILEGED_UID)
    assert (result.stage, result.errno) == (ReadStage.OPEN, errno.EACCES)


@pytest.mark.parametrize(
    ("offset_in_entries", "offset_extra", "count_extra"),
    [(0, 1, 0), (1, 0, 1), (2, 8, 0), (2, 0, 8), (0, 4, 4)],
    ids=["offset+1", "count+1", "offset+8", "count+8", "both+4"],
)
def test_unaligned_offset_or_count_gets_einval(
    kvm: VM, offset_in_entries: int, offset_extra: int, count_extra: int
) -> None:
    entry = _entry(kvm)
    if offset_extra % entry == 0 and count_extra % entry == 0:
        pytest.skip(f"an {entry}-byte entry ({kvm.profile.name}): +8 is still aligned")
    offset = offset_in_entries * entry + offset_extra
    result = kvm.agent.read_file("/proc/kpagemap", entry + count_extra, offset=offset)
    assert (result.stage, result.errno) == (ReadStage.READ, errno.EINVAL)
    assert result.data == b""


def test_reads_at_and_past_the_end_return_nothing(kvm: VM) -> None:
    entry = _entry(kvm)
    end = (_max_dump_pfn(kvm) + 1) * entry
    for offset in (end, end + entry, end + 1024 * entry):
        result = kvm.agent.read_file("/proc/kpagemap", entry, offset=offset)
        assert result.ok and result.data == b"", f"offset {offset:#x}: {result.describe()}"
    # read() (not pread) across the end: short, and the position stops at the end.
    across = kvm.agent.read_file(
        "/proc/kpagemap", 4 * entry, seeks=[(Whence.SET, end - entry)], loop=False
    )
    assert across.ok and len(across.data) == entry
    assert across.final_pos == end


def _agent_pfns(vm: VM, arch: Arch) -> set[int]:
    """PFNs of the agent's own mapped pages, from its maps and pagemap."""
    maps = read_maps(vm)
    pfns: set[int] = set()
    for start, end in maps:
        pages = (end - start) >> arch.page_shift
        for entry in pagemap(vm.agent, arch, "self", start, pages):
            if entry.present and entry.pfn:
                pfns.add(entry.pfn)
    return pfns


def read_maps(vm: VM) -> list[tuple[int, int]]:
    text = vm.agent.read_file("/proc/self/maps", 1 << 16).data.decode()
    ranges = []
    for line in text.splitlines():
        match = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if match and "[vsyscall]" not in line:
            ranges.append((int(match[1], 16), int(match[2], 16)))
    return ranges


def _runs(pfns: set[int]) -> Iterator[tuple[int, int]]:
    """(first, count) runs of consecutive PFNs, for few large reads."""
    ordered = sorted(pfns)
    start = prev = ordered[0]
    for pfn in ordered[1:]:
        if pfn != prev + 1:
            yield start, prev - start + 1
            start = pfn
        prev = pfn
    yield start, prev - start + 1


def test_flags_equal_kpageflags(kvm: VM) -> None:
    """A few hundred PFNs spread over RAM, plus every page the agent maps.

    Both files are read twice around each other; a PFN whose kpagemap flags
    changed between the two reads was in flux (pages do get allocated and
    freed while we look) and is left out, the rest must agree exactly.
    """
    arch = kvm.profile.arch
    max_pfn = _max_dump_pfn(kvm)
    spread = {
        pfn for start in range(0, max_pfn, max(1, max_pfn // 32))
        for pfn in range(start, min(start + 8, max_pfn))
    }  # fmt: skip
    agent_pfns = _agent_pfns(kvm, arch)
    assert agent_pfns, "the agent maps no pages?"
    kvm.agent.settle()
    # The flags word is an unsigned long: KPF bits from 32 up are cut on i386.
    word = (1 << 8 * arch.word_size) - 1
    compared = unstable = 0
    high = False
    for first, n in _runs(spread | agent_pfns):
        before = kpagemap(kvm.agent, arch, first, n)
        flags = kpageflags(kvm.agent, arch, first, n)
        after = kpagemap(kvm.agent, arch, first, n)
        for i in range(n):
            if before[i][0] != after[i][0]:
                unstable += 1
                continue
            compared += 1
            high |= flags[i] > word
            assert before[i][0] == flags[i] & word, (
                f"PFN {first + i:#x}: kpagemap flags {before[i][0]:#x}, kpageflags {flags[i]:#x}"
            )
    assert unstable <= compared // 50, f"{unstable} PFNs changed while read, {compared} did not"
    assert compared >= 200
    if arch.word_size == 4:
        # Bits 32 and up (KPF_RESERVED, KPF_MMAP_EXCLUSIVE, ...) exist in kpageflags.
        assert high, "no PFN read has a kpageflags bit above 31"


def test_agent_pages_count_at_least_their_mappings(kvm: VM) -> None:
    """page_count() includes a reference per mapping: count >= kpagecount."""
    arch = kvm.profile.arch
    kvm.agent.settle()
    for first, n in _runs(_agent_pfns(kvm, arch)):
        counts = [count for _, count in kpagemap(kvm.agent, arch, first, n)]
        mapcounts = kpagecount(kvm.agent, arch, first, n)
        for i in range(n):
            assert counts[i] >= mapcounts[i] >= 1, (
                f"PFN {first + i:#x}: count {counts[i]}, mapcount {mapcounts[i]}"
            )
