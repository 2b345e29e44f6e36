"""Who may read what: pagemap and the kpage* files as root and as uid 1000, kernel vs model.

A root process (``main``, the test's named process) maps anonymous pages
(written, and read: the zero page) and a shared anonymous region, then forks
``child`` as uid 1000 (setresuid: no capabilities, gid 0; dumpable again).
The scenario executors do the same steps in the guest and in the model.
Each case opens one file as one reader and reads it with pread(); the
failing stage and errno, and the bytes, of the kernel and of the model must
be equal.  The model decides by its rules (sim/procfs.py: open_proc()):

* the file's mode 0400 and owner (proc_create(..., S_IRUSR) for kpage*;
  pid_entry "pagemap" S_IRUSR owned by task_dump_owner()), checked by
  generic_permission() -> EACCES at open;
* pagemap_open() -> proc_mem_open() -> mm_access() ->
  __ptrace_may_access(PTRACE_MODE_READ_FSCREDS): same uid and gid or
  CAP_SYS_PTRACE, dumpable, caps subset; one's own mm passes; -> EACCES;
* pagemap_read(): PFN (and swap) fields only if the opener has CAP_SYS_ADMIN
  (pm.show_pfn = file_ns_capable()); the flag bits are always there.

Bytes with PFNs are compared through the bijection of model PFNs to guest
PFNs that root's reads of both processes establish; bytes without PFNs
(unprivileged readers) are compared as they are.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import pytest

from harness.agent.client import ReadFileReply
from harness.agent.protocol import INIT, ReadStage
from harness.guest_executor import GuestRun
from harness.lockstep import lockstep
from harness.model_executor import ModelRun
from harness.process import NamedProcess
from harness.scenario import Scenario, parse_scenario
from harness.vm import VM
from sim.arch import Arch
from sim.flags import PM
from sim.formats import build_u64s, parse_u64s
from sim.mm import Machine
from sim.procfs import ProcReadError, Reader, open_proc

pytestmark = pytest.mark.vm

USER = 1000
OTHER_USER = 1001

PRIVILEGE_SCENARIO = {
    "name": "privilege",
    "steps": [
        {"op": "mmap", "region": "a", "pages": 4, "kind": "anon", "share": "private",
         "prot": "rw"},
        {"op": "write", "region": "a", "pages": [0, 2]},
        {"op": "read", "region": "a", "pages": [2, 3]},
        {"op": "mmap", "region": "s", "pages": 2, "kind": "anon", "share": "shared",
         "prot": "rw"},
        {"op": "write", "region": "s", "pages": [0, 1]},
        {"op": "fork", "child": "child", "uid": USER},
        {"op": "write", "region": "a", "pages": [1, 2], "proc": "child"},
    ],
}  # fmt: skip


@dataclass(frozen=True)
class Who:
    """A reader on both sides.

    ``proc``: the read runs in that scenario process as it is (its own
    credentials); otherwise in a clone of the agent's init that takes
    ``uid``/``gid`` (None: stays root).  In the model: a Reader with the same
    credentials, ``pid`` set when it is a modelled process.
    """

    label: str
    proc: str | None = None
    uid: int | None = None
    gid: int | None = None


ROOT = Who("root (init)")
MAIN = Who("main (root)", proc="main")
CHILD = Who("child (uid 1000)", proc="child")
USER_GID0 = Who("uid 1000 gid 0", uid=USER, gid=0)
USER_GID_USER = Who("uid 1000 gid 1000", uid=USER, gid=USER)
OTHER = Who("uid 1001 gid 1001", uid=OTHER_USER, gid=OTHER_USER)


@dataclass
class World:
    scenario: Scenario
    real: GuestRun
    model: ModelRun
    arch: Arch
    pfn_map: dict[int, int]

    @property
    def machine(self) -> Machine:
        return self.model.machine

    def guest_read(self, who: Who, path: str, offset: int, count: int) -> ReadFileReply:
        target = self.real.names[who.proc] if who.proc else INIT
        return self.real.agent.read_file(
            path, count, offset=offset, uid=who.uid, gid=who.gid, target=target, loop=False
        )

    def model_read(self, who: Who, path: str, offset: int, count: int) -> ReadFileReply:
        if who.proc is not None:
            process = self.model.procs[who.proc]
            creds = process.creds
            reader = Reader(creds.uid, creds.gid, creds.caps, pid=process.pid)
        elif who.uid is None:
            reader = Reader.root()
        else:
            reader = Reader.user(who.uid, who.gid if who.gid is not None else who.uid)
        try:
            f = open_proc(self.machine, path, reader)
        except ProcReadError as e:
            return ReadFileReply(ReadStage.OPEN, e.errno, b"", seek_results=(), final_pos=0)
        try:
            return ReadFileReply(
                ReadStage.NONE, 0, f.pread(offset, count), seek_results=(), final_pos=f.pos
            )
        except ProcReadError as e:
            return ReadFileReply(ReadStage.READ, e.errno, b"", seek_results=(), final_pos=f.pos)


def _frame(raw: int) -> int | None:
    if raw >> PM.PRESENT & 1 and not raw >> PM.SWAP & 1:
        return raw & PM.PFN_MASK
    return None


def _set_up(vm: VM, guest: NamedProcess) -> World:
    arch = vm.profile.arch
    scenario = parse_scenario(PRIVILEGE_SCENARIO, "tests/test_privilege.py")
    real, model = lockstep(scenario, vm, guest)
    world = World(scenario, real, model, arch, {})
    # Root's reads of every region of both processes: the PFN bijection.
    for proc in ("main", "child"):
        for placement in real.layout.values():
            offset = (placement.vaddr >> arch.page_shift) * PM.ENTRY_BYTES
            count = placement.pages * PM.ENTRY_BYTES
            got = real.agent.read_file(f"/proc/{real.pids[proc]}/pagemap", count, offset=offset)
            want = world.model_read(ROOT, f"/proc/{model.procs[proc].pid}/pagemap", offset, count)
            assert got.ok and want.ok, f"{proc}: {got.describe()} / {want.describe()}"
            for m, r in zip(parse_u64s(arch, want.data), parse_u64s(arch, got.data), strict=True):
                m_pfn, r_pfn = _frame(m), _frame(r)
                if m_pfn and r_pfn:
                    assert world.pfn_map.setdefault(m_pfn, r_pfn) == r_pfn, (
                        f"model PFN {m_pfn:#x} is guest PFNs {world.pfn_map[m_pfn]:#x}, {r_pfn:#x}"
                    )
    assert len(set(world.pfn_map.values())) == len(world.pfn_map)
    assert world.pfn_map, "no frames to compare"
    return world


def _mapped(world: World, data: bytes) -> bytes:
    values = []
    for raw in parse_u64s(world.arch, data):
        pfn = _frame(raw)
        if pfn:
            assert pfn in world.pfn_map, f"model PFN {pfn:#x} not seen by root's reads"
            raw = raw & ~PM.PFN_MASK | world.pfn_map[pfn]
        values.append(raw)
    return build_u64s(world.arch, values)


#: (reader, file, expected stage, expected errno): the kernel's answer written
#: out as well, so a case where model and kernel agree on a wrong answer fails too.
PAGEMAP_CASES = [
    (CHILD, "self", ReadStage.NONE, 0),
    (CHILD, "child", ReadStage.NONE, 0),
    (CHILD, "main", ReadStage.OPEN, errno.EACCES),
    (USER_GID0, "child", ReadStage.NONE, 0),
    (USER_GID_USER, "child", ReadStage.OPEN, errno.EACCES),
    (OTHER, "child", ReadStage.OPEN, errno.EACCES),
    (USER_GID0, "main", ReadStage.OPEN, errno.EACCES),
    (ROOT, "child", ReadStage.NONE, 0),
    (ROOT, "main", ReadStage.NONE, 0),
    (MAIN, "child", ReadStage.NONE, 0),
    (MAIN, "self", ReadStage.NONE, 0),
]


def test_pagemap_permissions_agree(vm: VM, guest: NamedProcess) -> None:
    world = _set_up(vm, guest)
    arch = world.arch
    a = world.real.layout["a"]
    s = world.real.layout["s"]
    failures = []
    for who, whose, stage, err in PAGEMAP_CASES:
        for placement in (a, s):
            offset = (placement.vaddr >> arch.page_shift) * PM.ENTRY_BYTES
            count = placement.pages * PM.ENTRY_BYTES
            if whose == "self":
                real_path = model_path = "/proc/self/pagemap"
            else:
                real_path = f"/proc/{world.real.pids[whose]}/pagemap"
                model_path = f"/proc/{world.model.procs[whose].pid}/pagemap"
            real = world.guest_read(who, real_path, offset, count)
            want = world.model_read(who, model_path, offset, count)
            label = f"{who.label} reads {whose}'s pagemap, region {placement.region}"
            if (real.stage, real.errno) != (want.stage, want.errno):
                failures.append(f"{label}: kernel {real.describe()}, model {want.describe()}")
                continue
            if (real.stage, real.errno) != (stage, err):
                failures.append(f"{label}: both {real.describe()}, expected "
                                f"{stage.name} {errno.errorcode.get(err, err)}")
                continue
            if real.ok and _mapped(world, want.data) != real.data:
                failures.append(f"{label}: kernel {real.data.hex()}, model (PFNs mapped) "
                                f"{_mapped(world, want.data).hex()}")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def test_unprivileged_pagemap_hides_pfns_only(vm: VM, guest: NamedProcess) -> None:
    """The kernel's uid 1000 read of its own pagemap is root's read with PFN bits 0-54 zeroed."""
    world = _set_up(vm, guest)
    arch = world.arch
    child = world.real.pids["child"]
    pfns_seen = 0
    for placement in world.real.layout.values():
        offset = (placement.vaddr >> arch.page_shift) * PM.ENTRY_BYTES
        count = placement.pages * PM.ENTRY_BYTES
        as_root = world.guest_read(ROOT, f"/proc/{child}/pagemap", offset, count)
        as_user = world.guest_read(CHILD, "/proc/self/pagemap", offset, count)
        assert as_root.ok and as_user.ok, f"{as_root.describe()} / {as_user.describe()}"
        root_values = parse_u64s(arch, as_root.data)
        user_values = parse_u64s(arch, as_user.data)
        assert [v & ~PM.PFN_MASK for v in root_values] == user_values
        pfns_seen += sum(1 for v in root_values if v >> PM.PRESENT & 1 and v & PM.PFN_MASK)
    # The shared region is not mapped in the child until it faults (fork copies
    # no page tables of a VMA without anon_vma: vma_needs_copy()); region a is.
    assert pfns_seen > 0


@pytest.mark.parametrize("kind", ["kpagemap", "kpageflags", "kpagecount"])
@pytest.mark.parametrize("who", [CHILD, USER_GID0, OTHER, ROOT], ids=lambda w: w.label)
def test_kpage_permissions_agree(vm: VM, guest: NamedProcess, kind: str, who: Who) -> None:
    """Mode 0400 root: only a reader with uid 0 or CAP_DAC_* opens them (EACCES otherwise)."""
    world = _set_up(vm, guest)
    path = f"/proc/{kind}"
    entry = world.arch.kpagemap_entry_size if kind == "kpagemap" else PM.ENTRY_BYTES
    real = world.guest_read(who, path, entry, entry)
    want = world.model_read(who, path, entry, entry)
    if kind == "kpagemap" and real.stage is ReadStage.OPEN and real.errno == errno.ENOENT:
        pytest.skip("the kernel has no /proc/kpagemap")
    assert (real.stage, real.errno) == (want.stage, want.errno), (
        f"kernel {real.describe()}, model {want.describe()}"
    )
    expected = (ReadStage.NONE, 0) if who is ROOT else (ReadStage.OPEN, errno.EACCES)
    assert (real.stage, real.errno) == expected
    assert len(real.data) == len(want.data)
