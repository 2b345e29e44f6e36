"""The RAM oracle: what the guest wrote is in the RAM file at pfn << PAGE_SHIFT.

The PFN comes from the guest's own /proc/pid/pagemap (read as root), the
bytes from the host's view of guest memory; the tag is a u64 in the guest's
byte order.
"""

from __future__ import annotations

import secrets

import pytest

from harness.agent.protocol import BackingCode, ProtBits
from harness.probes import pagemap
from harness.process import NamedProcess
from harness.scenario.layout import layout_base

pytestmark = pytest.mark.vm


@pytest.fixture
def base(guest: NamedProcess) -> int:
    """A fixed address inside the guest arch's mmap window (the scenarios' layout base)."""
    return layout_base(guest.vm.profile.arch)


def _ram_u64(guest: NamedProcess, pfn: int) -> int:
    arch = guest.vm.profile.arch
    return int.from_bytes(guest.vm.ram.page(pfn)[:8], "little" if arch.little_endian else "big")


def test_written_tags_are_in_guest_ram(guest: NamedProcess, base: int) -> None:
    arch, pages = guest.vm.profile.arch, 6
    tag = secrets.randbits(63)
    guest.agent.mmap(base, pages * guest.page_size, target=guest.name)
    assert guest.agent.touch(base, pages, write=True, tag=tag, target=guest.name).done == pages
    entries = pagemap(guest.agent, arch, guest.pid, base, pages)
    pfns = [e.pfn for e in entries]
    assert all(e.present for e in entries) and len(set(pfns)) == pages
    for k, pfn in enumerate(pfns):
        assert pfn is not None
        assert _ram_u64(guest, pfn) == tag + k, f"page {k} at PFN {pfn:#x}"


def test_file_pages_hold_their_index_in_guest_ram(guest: NamedProcess, base: int) -> None:
    arch, pages = guest.vm.profile.arch, 3
    file_tag = secrets.randbits(62)
    guest.agent.mmap(
        base, pages * guest.page_size, backing=BackingCode.FILE, prot=ProtBits.READ,
        file_tag=file_tag, target=guest.name,
    )  # fmt: skip
    guest.agent.touch(base, pages, write=False, target=guest.name)
    for k, entry in enumerate(pagemap(guest.agent, arch, guest.pid, base, pages)):
        assert entry.pfn is not None
        assert _ram_u64(guest, entry.pfn) == file_tag + k


def test_copy_on_write_moves_the_child_to_a_new_frame(guest: NamedProcess, base: int) -> None:
    arch, agent = guest.vm.profile.arch, guest.agent
    agent.mmap(base, guest.page_size, target=guest.name)
    agent.touch(base, 1, write=True, tag=0x1111, target=guest.name)
    child = f"{guest.name}c"
    child_pid = agent.fork(child, target=guest.name)
    (before,) = pagemap(agent, arch, child_pid, base, 1)
    (parent,) = pagemap(agent, arch, guest.pid, base, 1)
    assert before.pfn == parent.pfn  # shared until written
    agent.touch(base, 1, write=True, tag=0x2222, target=child)
    (after,) = pagemap(agent, arch, child_pid, base, 1)
    assert after.pfn is not None and parent.pfn is not None and after.pfn != parent.pfn
    assert _ram_u64(guest, parent.pfn) == 0x1111
    assert _ram_u64(guest, after.pfn) == 0x2222
