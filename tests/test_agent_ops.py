"""The agent's operations in a real guest: memory, processes, files, settle."""

from __future__ import annotations

import errno
import signal

import pytest

from harness.agent.client import AgentClient, BatchRead
from harness.agent.protocol import (
    MAX_PAYLOAD,
    BackingCode,
    CrashKind,
    Op,
    ProtBits,
    ReadStage,
    RemapBits,
    ReplyStatus,
    SettleFlags,
    Whence,
)
from harness.errors import AgentOpError
from harness.khugepaged import HOLDER_PROC
from harness.probes import kpageflags, pagemap
from harness.process import NamedProcess
from harness.scenario.layout import layout_base
from sim.flags import KPF
from sim.formats import parse_pagemap_entries
from sim.mm.madvise import MADV
from sim.mm.userfaultfd import WANTED_FEATURES

pytestmark = pytest.mark.vm


@pytest.fixture
def base(guest: NamedProcess) -> int:
    """A fixed address far from the agent's own mappings on the guest's arch (bytes).

    The scenarios' layout base (``min(task_size / 4, 1 TiB)``): inside every
    arch's mmap window, 3 GiB of VA on i386 included.
    """
    return layout_base(guest.vm.profile.arch)


@pytest.fixture
def other(base: int) -> int:
    """A second fixed address, 256 MiB above :func:`base` (still inside the layout window)."""
    return base + (256 << 20)


def test_anonymous_private_write_then_read(guest: NamedProcess, base: int) -> None:
    ps = guest.page_size
    assert guest.agent.mmap(base, 8 * ps, target=guest.name) == base
    wrote = guest.agent.touch(base, 8, write=True, tag=0xA000, target=guest.name)
    assert (wrote.done, wrote.faulted) == (8, False)
    read = guest.agent.touch(base, 8, write=False, target=guest.name)
    assert read.values == tuple(range(0xA000, 0xA008))


@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])
def test_file_region_holds_its_page_index_tags(
    guest: NamedProcess, shared: bool, base: int
) -> None:
    ps = guest.page_size
    guest.agent.mmap(
        base, 5 * ps, backing=BackingCode.FILE, shared=shared, prot=ProtBits.READ,
        file_tag=0xF11E_0000, target=guest.name,
    )  # fmt: skip
    read = guest.agent.touch(base, 5, write=False, target=guest.name)
    assert read.values == tuple(0xF11E_0000 + i for i in range(5))
    entries = pagemap(guest.agent, guest.vm.profile.arch, guest.pid, base, 5)
    assert all(e.present and e.file_shared for e in entries)


def test_write_to_read_only_is_a_result_not_a_crash(guest: NamedProcess, base: int) -> None:
    ps = guest.page_size
    guest.agent.mmap(base, 2 * ps, prot=ProtBits.READ, target=guest.name)
    result = guest.agent.touch(base, 2, write=True, tag=1, target=guest.name)
    assert result.done == 0
    assert result.signal == signal.SIGSEGV
    assert result.fault_addr == base
    guest.agent.mprotect(base, 2 * ps, ProtBits.READ | ProtBits.WRITE, target=guest.name)
    assert guest.agent.touch(base, 2, write=True, tag=1, target=guest.name).done == 2
    guest.agent.mprotect(base + ps, ps, ProtBits.READ, target=guest.name)
    result = guest.agent.touch(base, 2, write=True, tag=1, target=guest.name)
    assert (result.done, result.fault_addr) == (1, base + ps)
    assert guest.agent.ping(guest.name).pid == guest.pid


def test_fixed_address_is_never_replaced(guest: NamedProcess, base: int) -> None:
    ps = guest.page_size
    guest.agent.mmap(base, 4 * ps, target=guest.name)
    with pytest.raises(AgentOpError) as caught:
        guest.agent.mmap(base + ps, ps, target=guest.name)
    assert caught.value.errno == errno.EEXIST


def test_mremap_grows_moves_and_reports_errno(guest: NamedProcess, base: int, other: int) -> None:
    ps = guest.page_size
    agent, name = guest.agent, guest.name
    agent.mmap(base, 2 * ps, target=name)
    agent.touch(base, 2, write=True, tag=0xB000, target=name)
    assert agent.mremap(base, 2 * ps, 4 * ps, RemapBits(0), target=name) == base
    agent.mmap(base + 5 * ps, ps, target=name)
    with pytest.raises(AgentOpError) as caught:  # page 5 is mapped: no room to grow in place
        agent.mremap(base, 4 * ps, 6 * ps, RemapBits(0), target=name)
    assert caught.value.errno == errno.ENOMEM
    moved = agent.mremap(base, 2 * ps, 2 * ps, RemapBits.MAYMOVE | RemapBits.FIXED, other,
                         target=name)
    assert moved == other
    assert agent.touch(other, 2, write=False, target=name).values == (0xB000, 0xB001)
    with pytest.raises(AgentOpError) as caught:
        agent.mremap(other, ps, ps, RemapBits.FIXED, base, target=name)  # FIXED needs MAYMOVE
    assert caught.value.errno == errno.EINVAL


def test_munmap_and_madvise_dontneed(guest: NamedProcess, base: int) -> None:
    ps = guest.page_size
    guest.agent.mmap(base, 4 * ps, target=guest.name)
    guest.agent.touch(base, 4, write=True, tag=0x55, target=guest.name)
    guest.agent.madvise(base, 2 * ps, MADV.DONTNEED, target=guest.name)
    assert guest.agent.touch(base, 4, write=False, target=guest.name).values == (0, 0, 0x57, 0x58)
    guest.agent.munmap(base, 4 * ps, target=guest.name)
    gone = guest.agent.touch(base, 1, write=False, target=guest.name)
    assert gone.faulted and gone.done == 0


def test_madvise_passes_the_raw_advice_number(guest: NamedProcess, base: int) -> None:
    """The agent hands any C int to madvise(): the kernel's answer is the errno."""
    ps = guest.page_size
    guest.agent.mmap(base, ps, target=guest.name)
    guest.agent.madvise(base, ps, MADV.WIPEONFORK, target=guest.name)
    assert "wf" in _vm_flags(guest, base)
    for advice in (MADV.GUARD_INSTALL, -1, 1000):
        with pytest.raises(AgentOpError) as caught:
            guest.agent.madvise(base, ps, advice, target=guest.name)
        assert caught.value.errno == errno.EINVAL, advice
    with pytest.raises(AgentOpError, match="no C int"):
        guest.agent.madvise(base, ps, 1 << 31, target=guest.name)


def _vm_flags(guest: NamedProcess, vaddr: int) -> list[str]:
    """The VmFlags words of the smaps block of the VMA at ``vaddr`` in the guest process."""
    pid = guest.agent.getpid(guest.name)
    text = guest.agent.read_file(f"/proc/{pid}/smaps", 1 << 20).data.decode()
    block = text.split(f"{vaddr:x}-", 1)[1]
    return block.split("VmFlags:", 1)[1].splitlines()[0].split()


def test_fork_shares_then_copies_on_write(guest: NamedProcess, base: int, other: int) -> None:
    ps, agent = guest.page_size, guest.agent
    agent.mmap(base, 2 * ps, target=guest.name)
    agent.mmap(other, ps, shared=True, target=guest.name)
    agent.touch(base, 2, write=True, tag=0x100, target=guest.name)
    child = f"{guest.name}c"
    child_pid = agent.fork(child, target=guest.name)
    assert agent.getpid(child) == child_pid != guest.pid
    assert agent.touch(base, 2, write=False, target=child).values == (0x100, 0x101)
    agent.touch(base, 1, write=True, tag=0x200, target=child)
    agent.touch(other, 1, write=True, tag=0x300, target=child)
    assert agent.touch(base, 2, write=False, target=guest.name).values == (0x100, 0x101)
    assert agent.touch(other, 1, write=False, target=guest.name).values == (0x300,)
    assert agent.list_processes()[child] == child_pid


def test_exit_kill_and_crash_are_reaped_and_reported(guest: NamedProcess) -> None:
    agent = guest.agent
    for name in ("ex", "kl", "ab"):
        agent.fork(f"{guest.name}{name}", target=guest.name)
    exited = agent.exit(f"{guest.name}ex", 3)
    assert exited.exited and exited.value == 3
    killed = agent.kill(f"{guest.name}kl", signal.SIGTERM)
    assert not killed.exited and killed.value == signal.SIGTERM
    reply = agent.crash(CrashKind.ABORT, target=f"{guest.name}ab")
    assert reply is not None and reply.status is ReplyStatus.NO_PROCESS
    assert f"killed by signal {int(signal.SIGABRT)}" in reply.message
    assert _ours(agent) == {guest.name}
    with pytest.raises(AgentOpError, match="no process named"):
        agent.ping(f"{guest.name}ex")


def test_names_are_unique(guest: NamedProcess) -> None:
    with pytest.raises(AgentOpError, match="reserved or taken"):
        guest.agent.fork(guest.name)
    with pytest.raises(AgentOpError, match="reserved or taken"):
        guest.agent.fork("init")


def test_read_as_unprivileged_user(guest: NamedProcess) -> None:
    agent = guest.agent
    denied = agent.read_file("/proc/kpageflags", 8, offset=0, uid=1000)
    assert (denied.stage, denied.errno) == (ReadStage.OPEN, errno.EACCES)
    allowed = agent.read_file("/proc/self/status", 4096, uid=1000, target=guest.name)
    assert allowed.ok
    uids = next(line for line in allowed.data.decode().splitlines() if line.startswith("Uid:"))
    assert uids.split()[1:] == ["1000"] * 4
    caps = next(line for line in allowed.data.decode().splitlines() if line.startswith("CapEff:"))
    assert int(caps.split()[1], 16) == 0


def test_read_files_equals_one_read_file_each(guest: NamedProcess) -> None:
    """READ_FILES: the same bytes and errnos as READ_FILE, in order, as root or as a uid."""
    agent = guest.agent
    reads = [
        BatchRead("/proc/kpageflags", 64, offset=8),
        BatchRead("/proc/kpageflags", 7, offset=0),  # EINVAL at the read
        BatchRead("/proc/no-such-file", 8),  # ENOENT at the open
        BatchRead("/proc/self/status", 1 << 16, loop=True),  # init's: a seq_file, to EOF
        BatchRead("/proc/kpagecount", 0, offset=0),
    ]
    got = agent.read_files(reads, settle=SettleFlags.DRAIN_LRU)
    one = agent.read_file("/proc/kpageflags", 64, offset=8)
    assert got[0].ok and got[0].data == one.data and len(one.data) == 64
    assert (got[1].stage, got[1].errno) == (ReadStage.READ, errno.EINVAL)
    assert (got[2].stage, got[2].errno) == (ReadStage.OPEN, errno.ENOENT)
    assert got[3].ok and got[3].data.startswith(b"Name:")
    assert got[4].ok and got[4].data == b""
    as_user = agent.read_files(reads, uid=1000)
    assert (as_user[0].stage, as_user[0].errno) == (ReadStage.OPEN, errno.EACCES)
    assert (as_user[2].stage, as_user[2].errno) == (ReadStage.OPEN, errno.ENOENT)
    uids = next(ln for ln in as_user[3].data.decode().splitlines() if ln.startswith("Uid:"))
    assert uids.split()[1:] == ["1000"] * 4  # the child that read it, not init
    assert agent.read_files([]) == []


def test_read_files_refuses_what_a_frame_cannot_carry(guest: NamedProcess) -> None:
    agent = guest.agent
    with pytest.raises(ValueError, match="do not fit a frame"):
        agent.read_files([BatchRead("/proc/kpageflags", MAX_PAYLOAD)])
    with pytest.raises(AgentOpError) as e:
        agent.read_files([BatchRead("/proc/kpageflags", 8)], settle=SettleFlags(64))
    assert e.value.status == ReplyStatus.BAD_REQUEST.name
    # Two reads that fit one frame each but not together: two requests, one reply each.
    half = MAX_PAYLOAD // 2
    two = agent.read_files([BatchRead("/init", half, offset=0)] * 2)  # the agent itself
    assert [r.ok for r in two] == [True, True] and two[0].data == two[1].data


def test_seeks_and_final_position(guest: NamedProcess) -> None:
    agent = guest.agent
    result = agent.read_file(
        "/proc/kpageflags", 16, seeks=[(Whence.SET, 64), (Whence.CUR, 8)], loop=False
    )
    assert result.ok and result.seek_results == (64, 72)
    assert (len(result.data), result.final_pos) == (16, 88)
    same = agent.read_file("/proc/kpageflags", 16, offset=72)
    assert same.data == result.data
    refused = agent.read_file("/proc/kpageflags", 8, seeks=[(Whence.END, 0)])
    assert (refused.stage, refused.errno) == (ReadStage.SEEK, errno.EINVAL)
    assert refused.seek_results == (-errno.EINVAL,)


def test_unaligned_kpageflags_read_is_einval(guest: NamedProcess) -> None:
    result = guest.agent.read_file("/proc/kpageflags", 7, offset=0)
    assert (result.stage, result.errno) == (ReadStage.READ, errno.EINVAL)


def test_write_file_sets_a_knob(guest: NamedProcess) -> None:
    arch = guest.vm.profile.arch
    path = "/sys/kernel/mm/transparent_hugepage/enabled"
    if arch.thp_level is None:
        pytest.skip(f"{arch.name} has no THP (CONFIG_TRANSPARENT_HUGEPAGE off): no {path}")
    before = guest.agent.read_file(path, 256).data.decode()
    assert guest.agent.write_file(path, "madvise") == len("madvise")
    assert "[madvise]" in guest.agent.read_file(path, 256).data.decode()
    chosen = before[before.index("[") + 1 : before.index("]")]
    guest.agent.write_file(path, chosen)
    with pytest.raises(AgentOpError) as caught:
        guest.agent.write_file(path, "nonsense")
    assert caught.value.errno == errno.EINVAL


def test_write_file_sets_a_sysctl(guest: NamedProcess) -> None:
    """A knob every kernel has (with or without THP): proc_dointvec() parses one write()."""
    path = "/proc/sys/vm/overcommit_ratio"
    before = guest.agent.read_file(path, 64).data.decode().strip()
    wanted = "51" if before != "51" else "52"
    try:
        assert guest.agent.write_file(path, wanted) == len(wanted)
        assert guest.agent.read_file(path, 64).data.decode() == f"{wanted}\n"
        with pytest.raises(AgentOpError) as caught:
            guest.agent.write_file(path, "nonsense")
        assert caught.value.errno == errno.EINVAL
    finally:
        guest.agent.write_file(path, before)


def test_clear_refs_clears_soft_dirty(guest: NamedProcess, base: int) -> None:
    arch, ps = guest.vm.profile.arch, guest.page_size
    guest.agent.mmap(base, ps, target=guest.name)
    guest.agent.touch(base, 1, write=True, tag=1, target=guest.name)
    (entry,) = pagemap(guest.agent, arch, guest.pid, base, 1)
    if not entry.soft_dirty:
        pytest.skip("the kernel does not track soft-dirty (CONFIG_MEM_SOFT_DIRTY unset)")
    guest.agent.clear_refs(4, target=guest.name)
    (entry,) = pagemap(guest.agent, arch, guest.pid, base, 1)
    assert entry.present and not entry.soft_dirty


def test_settle_puts_new_pages_on_the_lru(guest: NamedProcess, base: int) -> None:
    """Faulted pages wait in a per-CPU batch (no PG_lru) until a drain."""
    arch, ps = guest.vm.profile.arch, guest.page_size
    guest.agent.mmap(base, 4 * ps, target=guest.name)
    guest.agent.touch(base, 4, write=True, tag=1, target=guest.name)
    guest.agent.settle()
    for entry in pagemap(guest.agent, arch, guest.pid, base, 4):
        assert entry.pfn is not None
        (flags,) = kpageflags(guest.agent, arch, entry.pfn, 1)
        assert flags & (1 << KPF.LRU), f"PFN {entry.pfn:#x} flags {flags:#x}"


def test_fork_as_an_unprivileged_user(guest: NamedProcess, base: int) -> None:
    agent, arch, ps = guest.agent, guest.vm.profile.arch, guest.page_size
    agent.mmap(base, ps, target=guest.name)
    agent.touch(base, 1, write=True, tag=7, target=guest.name)
    user = f"{guest.name}u"
    pid = agent.fork(user, target=guest.name, uid=1000)
    status = agent.read_file("/proc/self/status", 4096, target=user).data.decode()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == ["1000"] * 4
    assert fields["Gid"].split() == ["0"] * 4
    assert int(fields["CapEff"], 16) == 0
    # Dumpable again: it reads its own pagemap, flags without the PFN.
    own = agent.read_file(f"/proc/{pid}/pagemap", 8, offset=(base // ps) * 8, target=user)
    assert own.ok, own.describe()
    (entry,) = parse_pagemap_entries(arch, own.data)
    assert entry.present and entry.pfn == 0
    assert _ours(agent) == {guest.name, user}


def _ids(guest: NamedProcess, name: str) -> dict[str, list[str]]:
    """Uid, Gid, CapEff of a named process, from its /proc/self/status."""
    status = guest.agent.read_file("/proc/self/status", 4096, target=name).data.decode()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {key: fields[key].split() for key in ("Uid", "Gid", "CapEff")}


def test_unprivileged_process_forks_named_children(
    guest: NamedProcess, base: int, other: int
) -> None:
    """Issue 16: a uid-1000 process forks, its children serve every op and exit.

    The forking process makes the pipes; init takes its ends with
    pidfd_getfd() (it used to be the other way round, which needed ptrace
    access to init: EACCES once the forking process had left uid 0).
    """
    agent, arch, ps = guest.agent, guest.vm.profile.arch, guest.page_size
    agent.mmap(base, 2 * ps, target=guest.name)
    agent.touch(base, 2, write=True, tag=0x70, target=guest.name)
    user, child, grandchild = f"{guest.name}u", f"{guest.name}g", f"{guest.name}h"
    agent.fork(user, target=guest.name, uid=1000)
    child_pid = agent.fork(child, target=user)
    # Naming its own uid again is allowed (no groups to drop, same ids).
    grandchild_pid = agent.fork(grandchild, target=child, uid=1000)
    unprivileged = {"Uid": ["1000"] * 4, "Gid": ["0"] * 4, "CapEff": ["0000000000000000"]}
    for name in (user, child, grandchild):
        assert _ids(guest, name) == unprivileged, name
    assert agent.list_processes()[grandchild] == grandchild_pid
    # Every op in the grandchild: its copy of the region, a new one, COW.
    assert agent.touch(base, 2, write=False, target=grandchild).values == (0x70, 0x71)
    agent.touch(base, 1, write=True, tag=0x90, target=grandchild)
    agent.mmap(other, ps, target=grandchild)
    agent.touch(other, 1, write=True, tag=0x91, target=grandchild)
    agent.mprotect(other, ps, ProtBits.READ, target=grandchild)
    agent.madvise(base + ps, ps, MADV.DONTNEED, target=grandchild)
    agent.clear_refs(4, target=grandchild)
    assert agent.touch(base, 2, write=False, target=child).values == (0x70, 0x71)
    # Observed by uid 1000: flags without PFNs.
    own = agent.read_file(f"/proc/{grandchild_pid}/pagemap", 8, offset=(other // ps) * 8, uid=1000,
                          gid=0)
    assert own.ok, own.describe()
    (entry,) = parse_pagemap_entries(arch, own.data)
    assert entry.present and entry.pfn == 0
    # Observed by root: the PFNs.
    assert all(e.pfn for e in pagemap(agent, arch, grandchild_pid, base, 1))
    exited = agent.exit(grandchild, 3)
    assert (exited.pid, exited.exited, exited.value) == (grandchild_pid, True, 3)
    # The kernel refuses a uid change without CAP_SETUID; the half-born child is reaped.
    with pytest.raises(AgentOpError) as caught:
        agent.fork(f"{guest.name}r", target=child, uid=0)
    assert caught.value.errno == errno.EPERM
    assert _ours(agent) == {guest.name, user, child}
    assert agent.exit(child).pid == child_pid
    assert _ours(agent) == {guest.name, user}


def _ours(agent: AgentClient) -> set[str]:
    """The agent's named processes, without the khugepaged holder a scenario run may have left."""
    return set(agent.list_processes()) - {HOLDER_PROC}


def test_uffd_register_and_writeprotect(guest: NamedProcess, base: int) -> None:
    """UFFD_REGISTER opens the process's userfaultfd with the wanted features the kernel
    has and registers mode WP (VmFlags ``uw``); UFFD_WP then marks pagemap bit 57, and a
    write clears it (WP_ASYNC: the write does not block).  Where the arch has no uffd-wp
    (powerpc 6.12) the features come back without WP_ASYNC and the register is EINVAL.
    A process without a userfaultfd gets ENOENT from UFFD_WP (the agent's answer)."""
    ps, agent = guest.page_size, guest.agent
    agent.mmap(base, 2 * ps, target=guest.name)
    with pytest.raises(AgentOpError) as caught:
        agent.call_op(Op.UFFD_WP, guest.name, addr=base, length=ps, enable=1)
    assert caught.value.errno == errno.ENOENT
    has_wp = guest.vm.profile.arch.uffd_wp
    if not has_wp:
        with pytest.raises(AgentOpError) as caught:
            agent.call_op(Op.UFFD_REGISTER, guest.name, addr=base, length=2 * ps,
                          features=WANTED_FEATURES)
        assert caught.value.errno == errno.EINVAL
        return
    got = agent.call_op(Op.UFFD_REGISTER, guest.name, addr=base, length=2 * ps,
                        features=WANTED_FEATURES)
    assert got["features"] == WANTED_FEATURES
    assert "uw" in _vm_flags(guest, base)
    agent.call_op(Op.UFFD_WP, guest.name, addr=base, length=2 * ps, enable=1)
    arch = guest.vm.profile.arch
    before = pagemap(agent, arch, guest.pid, base, 2)
    assert [(e.uffd_wp, e.swapped) for e in before] == [(True, True), (True, True)]  # markers
    agent.touch(base, 1, write=True, tag=0x77, target=guest.name)
    after = pagemap(agent, arch, guest.pid, base, 2)
    assert [(e.present, e.uffd_wp) for e in after] == [(True, False), (False, True)]
