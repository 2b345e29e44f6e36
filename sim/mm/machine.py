"""The model's front door: a machine with RAM, tmpfs files and processes.

    m = Machine(get_arch("x86_64"), ram_bytes=1 << 30)
    p = m.spawn("main")
    f = m.create_file(4, tags=[...])
    p.mmap(addr, 4, kind="file", share="private", prot="rw", file=f)
    result = p.touch(addr, 4, write=True, tags=[...])
    child = p.fork("child", uid=1000)

Every operation applies the kernel's rules (sim/MODEL.md names the functions);
the proc files are read with :mod:`sim.procfs`.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from sim.arch import Arch
from sim.mm.facts import PINNED, KernelFacts
from sim.mm.hugetlb import HugetlbFile
from sim.mm.memmap import FrameState, PhysMem
from sim.mm.mm_struct import MachineContext, MmStruct
from sim.mm.mremap import MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE
from sim.mm.shmem import ShmemFile
from sim.mm.swapfile import SwapInfo
from sim.mm.syscall import MmError, Signal
from sim.mm.vma import VM, Vma

__all__ = [
    "ALL_CAPS",
    "REGION_FILE_MODE",
    "Credentials",
    "Machine",
    "MmError",
    "Process",
    "TouchResult",
    "parse_prot",
]

#: The capabilities the model looks at (a root process has them all).
ALL_CAPS: frozenset[str] = frozenset(
    {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH",
     "CAP_IPC_LOCK", "CAP_FOWNER"}
)

#: Permission bits the agent creates a "file" region's file with
#: (create_region_file() in harness/agent/ops.c: open(..., 0600)).
REGION_FILE_MODE = 0o600

_PROTS = {"none": 0, "r": int(VM.READ), "rw": int(VM.READ | VM.WRITE)}


def parse_prot(prot: str) -> int:
    """``"none"``, ``"r"`` or ``"rw"`` as VM_READ/VM_WRITE bits."""
    try:
        return _PROTS[prot]
    except KeyError:
        raise ValueError(f"prot {prot!r} is not one of {', '.join(_PROTS)}") from None


@dataclass(frozen=True)
class Credentials:
    """A task's credentials as far as /proc permission checks go.

    A process that drops root with setresuid() loses every capability
    (cap_emulate_setxuid()); its gid stays what it was (0 unless changed).
    """

    uid: int = 0
    gid: int = 0
    caps: frozenset[str] = ALL_CAPS

    @classmethod
    def root(cls) -> Self:
        """uid 0 with every capability."""
        return cls()

    @classmethod
    def user(cls, uid: int, gid: int = 0) -> Self:
        """An ordinary process of ``uid``: setresuid() away from root drops every capability."""
        return cls(uid=uid, gid=gid, caps=frozenset())

    def capable(self, cap: str) -> bool:
        """capable(cap)."""
        return cap in self.caps

    def may_write(self, file: ShmemFile) -> bool:
        """file_permission(file, MAY_WRITE) == 0 on a regular file: generic_permission()
        (fs/namei.c) picks the owner, group or other write bit of i_mode (acl_permission_check(),
        no ACLs on the guest's tmpfs, no supplementary groups), else CAP_DAC_OVERRIDE."""
        if self.uid == file.uid:
            bit = 0o200
        elif self.gid == file.gid:
            bit = 0o020
        else:
            bit = 0o002
        return bool(file.mode & bit) or self.capable("CAP_DAC_OVERRIDE")

    def can_do_file_pageout(self, file: ShmemFile) -> bool:
        """can_do_file_pageout() (mm/madvise.c) for a VMA of ``file``: file_owner_or_capable()
        (inode_owner_or_capable(): the fsuid owns it, or CAP_FOWNER) or :meth:`may_write`.

        A uid the agent dropped to owns none of root's files, and the agent's
        region files are 0600: such a process may page out their page cache
        only if it created the file itself.  memfds and shared anonymous
        memory are 0777 (:data:`~sim.mm.shmem.SHMEM_SETUP_MODE`): anyone may.
        """
        return self.uid == file.uid or self.capable("CAP_FOWNER") or self.may_write(file)


@dataclass(frozen=True)
class TouchResult:
    """How a touch ended: all pages touched, or a signal at ``addr``."""

    touched: int
    signal: Signal | None = None
    addr: int | None = None

    @property
    def ok(self) -> bool:
        return self.signal is None

    @property
    def segv_vaddr(self) -> int | None:
        """The address of a SIGSEGV, None otherwise."""
        return self.addr if self.signal == "SIGSEGV" else None


@dataclass(eq=False)
class Process:
    """A task with its own mm."""

    machine: Machine
    pid: int
    name: str
    creds: Credentials
    mm: MmStruct
    #: get_dumpable(mm) == SUID_DUMP_USER; decides who owns /proc/PID files.
    dumpable: bool = True
    alive: bool = field(default=True)

    @property
    def uid(self) -> int:
        return self.creds.uid

    def __repr__(self) -> str:
        return f"Process({self.name!r}, pid={self.pid}, uid={self.uid})"

    def _live(self) -> MmStruct:
        if not self.alive:
            raise MmError(errno.ESRCH, f"process {self.name!r} has exited")
        return self.mm

    def mmap(
        self,
        addr: int,
        nr_pages: int,
        kind: str = "anon",
        share: str = "private",
        prot: str = "rw",
        file: ShmemFile | None = None,
        offset_pages: int = 0,
        *,
        fixed: bool = False,
        locked: bool = False,
        populate: bool = False,
    ) -> Vma:
        """mmap() at ``addr`` with MAP_FIXED_NOREPLACE and MAP_PRIVATE or MAP_SHARED.

        ``kind`` "anon" adds MAP_ANONYMOUS; "hugetlb" MAP_HUGETLB | MAP_ANONYMOUS
        (a hugetlbfs inode of its own, :mod:`sim.mm.hugetlb`); "file" and "memfd" map ``file``
        (a tmpfs file, or :meth:`Machine.create_memfd`) from page
        ``offset_pages``.  ``prot`` is "none", "r" or "rw".  ``fixed``:
        MAP_FIXED instead of MAP_FIXED_NOREPLACE; ``locked``: MAP_LOCKED;
        ``populate``: MAP_POPULATE (sim.mm.mmap.do_mmap()).  MmError (EEXIST)
        when the range is occupied and not ``fixed``.
        """
        mm = self._live()
        if kind not in ("anon", "file", "memfd", "hugetlb"):
            raise ValueError(f"kind {kind!r} is not 'anon', 'file', 'memfd' or 'hugetlb'")
        if share not in ("private", "shared"):
            raise ValueError(f"share {share!r} is not 'private' or 'shared'")
        if (kind not in ("anon", "hugetlb")) != (file is not None):
            raise ValueError("a file mapping needs file=, an anonymous one must not have it")
        shared = share == "shared"
        if kind == "hugetlb":
            # MAP_HUGETLB | MAP_ANONYMOUS: ksys_mmap_pgoff() -> hugetlb_file_setup(), an
            # unlinked hugetlbfs inode of the mapping's size (sim/mm/hugetlb.py).
            hstate = mm.ctx.hstate
            if hstate is None:
                raise MmError(errno.EINVAL, "MAP_HUGETLB without a hugetlb pool")
            file = HugetlbFile(self.machine.mem, hstate, self.machine.next_inode(), nr_pages,
                               shared, owner=mm)
            offset_pages = 0
        if kind == "anon" and shared:
            # shmem_zero_setup(): an unlinked shmem file of the mapping's size.
            file = self.machine._new_shmem(nr_pages, f"dev/zero (deleted) pid {self.pid}",
                                           anonymous=True)
            offset_pages = 0
        return mm.mmap(addr, nr_pages, parse_prot(prot), shared, file, offset_pages,
                       fixed=fixed, locked=locked, populate=populate,
                       cap_ipc_lock=self.creds.capable("CAP_IPC_LOCK"))

    def touch(
        self, addr: int, nr_pages: int, write: bool, tags: Sequence[int | None] | None = None,
        fill: int | None = None,
    ) -> TouchResult:
        """Load from (or store ``tags[i]`` into) the first word of each page, ascending;
        a write with ``fill`` (a byte) sets every byte of each page to it instead.

        The first refused page ends the touch with its signal; the pages
        before it were touched.
        """
        mm = self._live()
        if tags is not None and len(tags) != nr_pages:
            raise ValueError(f"{len(tags)} tags for {nr_pages} pages")
        page_size = self.machine.arch.page_size
        for i in range(nr_pages):
            va = addr + i * page_size
            tag = None if tags is None else tags[i]
            signal = mm.access(va, write, tag, fill)
            if signal is not None:
                return TouchResult(touched=i, signal=signal, addr=va)
        return TouchResult(touched=nr_pages)

    def fork(self, child_name: str, uid: int | None = None) -> Process:
        """fork(): the child gets a copy of the address space (dup_mmap()).

        With ``uid`` the child then setresuid()s to it (losing every
        capability) and sets PR_SET_DUMPABLE 1 again.
        """
        mm = self._live()
        creds = self.creds if uid is None else (
            Credentials.root() if uid == 0 else Credentials.user(uid, self.creds.gid)
        )
        child = self.machine._new_process(child_name, creds)
        mm.dup_mmap(child.mm)
        return child

    def set_uid(self, uid: int) -> None:
        """setresuid(uid, uid, uid) then prctl(PR_SET_DUMPABLE, 1).

        Leaving uid 0 clears every capability (cap_emulate_setxuid());
        commit_creds() clears the dumpable flag, which the prctl sets again.
        """
        self._live()
        self.creds = Credentials.root() if uid == 0 else Credentials.user(uid, self.creds.gid)
        self.dumpable = True

    def exit(self) -> None:
        """exit() and wait(): exit_mmap(), then the pid is gone."""
        mm = self._live()
        mm.exit_mmap()
        self.alive = False
        self.machine._reap(self)

    def munmap(self, addr: int, nr_pages: int) -> None:
        self._live().munmap(addr, nr_pages)

    def mprotect(self, addr: int, nr_pages: int, prot: str) -> None:
        self._live().mprotect(addr, nr_pages, parse_prot(prot))

    def madvise(self, addr: int, nr_pages: int, advice: str | int) -> None:
        """madvise(addr, len, advice) with this process's credentials (MADV_PAGEOUT asks
        :meth:`Credentials.can_do_file_pageout` of each file VMA)."""
        self._live().madvise(addr, nr_pages, advice,
                             can_do_file_pageout=self.creds.can_do_file_pageout)

    def mlock(self, addr: int, nr_pages: int, onfault: bool = False) -> None:
        """mlock(addr, len), or mlock2(addr, len, MLOCK_ONFAULT) with ``onfault``.

        RLIMIT_MEMLOCK (8 MiB) binds a process without CAP_IPC_LOCK (any uid
        but 0 here): ENOMEM past it (do_mlock()).
        """
        self._live().mlock(addr, nr_pages, onfault, self.creds.capable("CAP_IPC_LOCK"))

    def munlock(self, addr: int, nr_pages: int) -> None:
        """munlock(addr, len)."""
        self._live().munlock(addr, nr_pages)

    def uffd_register(self, addr: int, nr_pages: int) -> None:
        """UFFDIO_REGISTER_MODE_WP of [addr, +nr_pages) with this process's userfaultfd
        (opened with WP_ASYNC where the kernel has it): sim/mm/userfaultfd.py.

        The first one opens the userfaultfd (flags O_CLOEXEC | O_NONBLOCK, no
        UFFD_USER_MODE_ONLY): userfaultfd_syscall_allowed() wants CAP_SYS_PTRACE,
        since vm.unprivileged_userfaultfd is 0 (its default, never changed): EPERM
        for any uid but 0, and no userfaultfd is opened.
        """
        mm = self._live()
        if mm.uffd is None and not self.creds.capable("CAP_SYS_PTRACE"):
            raise MmError(errno.EPERM, "userfaultfd: not allowed without CAP_SYS_PTRACE")
        mm.uffd_register(addr, nr_pages)

    def uffd_wp(self, addr: int, nr_pages: int, enable: bool) -> None:
        """UFFDIO_WRITEPROTECT of [addr, +nr_pages): sim/mm/userfaultfd.py."""
        self._live().uffd_wp(addr, nr_pages, enable)

    def mremap(
        self, addr: int, old_pages: int, new_pages: int, *, new_addr: int | None = None,
        dontunmap: bool = False,
    ) -> int:
        """mremap(addr, old, new, flags, new_addr): in place without ``new_addr``, else
        MREMAP_MAYMOVE | MREMAP_FIXED to ``new_addr`` (with ``dontunmap``:
        | MREMAP_DONTUNMAP).  Lengths in pages; the range's address afterwards.
        Growing a VM_LOCKED VMA is bound by RLIMIT_MEMLOCK without CAP_IPC_LOCK
        (EAGAIN, vma_to_resize())."""
        flags = 0
        if new_addr is not None:
            flags = MREMAP_MAYMOVE | MREMAP_FIXED | (MREMAP_DONTUNMAP if dontunmap else 0)
        elif dontunmap:
            raise ValueError("dontunmap needs new_addr (MREMAP_DONTUNMAP moves)")
        return self._live().mremap(addr, old_pages, new_pages, flags, new_addr or 0,
                                   cap_ipc_lock=self.creds.capable("CAP_IPC_LOCK"))

    def clear_refs(self, value: int = 4) -> None:
        """echo VALUE > /proc/PID/clear_refs."""
        self._live().clear_refs(value)

    @property
    def vmas(self) -> list[Vma]:
        return self.mm.each_vma()


class Machine:
    """Physical memory, the page cache of tmpfs files, and the processes."""

    def __init__(
        self,
        arch: Arch,
        ram_bytes: int = 1 << 30,
        *,
        facts: KernelFacts = PINNED,
        ram: Sequence[tuple[int, int]] | None = None,
        reserved: Sequence[tuple[int, int]] | None = None,
        reuse_frames: bool = False,
    ) -> None:
        """``ram`` and ``reserved`` are guest-physical byte ranges [start, end);
        the default RAM is one block of ``ram_bytes`` from ``arch.ram_base``
        whose first 4 MiB (at least two pages) are the kernel's (reserved; the
        zero page is among them).  ``reuse_frames`` lets the allocator hand
        out freed frames again (the default never does: :attr:`stable_pfns`)."""
        self.arch = arch
        self.facts = facts
        shift = arch.page_shift
        if ram is None:
            ram = [(arch.ram_base, arch.ram_base + ram_bytes)]
        if reserved is None:
            first = ram[0][0]
            reserved = [(first, first + max(2 << shift, 4 << 20))]
        ram_pfns = [(start >> shift, end >> shift) for start, end in ram]
        reserved_pfns = [(start >> shift, -(-end >> shift)) for start, end in reserved]
        self.mem = PhysMem(arch, facts, ram_pfns, reserved_pfns, reuse_frames)
        self.ctx = MachineContext(arch, facts, self.mem)
        self._pids = itertools.count(1000)
        self._inodes = itertools.count(1)
        self._processes: dict[int, Process] = {}
        self.files: list[ShmemFile] = []

    # -- setup -----------------------------------------------------------

    def add_swap_device(self, size_bytes: int) -> SwapInfo:
        """The machine's swap device of ``size_bytes`` (header page included), swapped on,
        as the harness's boot-time swapon leaves a VM with swap (sim/mm/swapfile.py)."""
        pages = size_bytes >> self.arch.page_shift
        self.ctx.swap = SwapInfo(last_page=pages - 1)
        return self.ctx.swap

    def swapon(self) -> None:
        """swapon(2) of the swap device; MmError (ENOENT without one, EBUSY while on)."""
        if self.ctx.swap is None:
            raise MmError(errno.ENOENT, "swapon: no swap device")
        self.ctx.swap.swapon()

    def swapoff(self) -> None:
        """swapoff(2) of the swap device; MmError (ENOENT without one, EINVAL when off);
        swap entries in page tables are mapped back (try_to_unuse())."""
        if self.ctx.swap is None:
            raise MmError(errno.ENOENT, "swapoff: no swap device")
        self.ctx.swap.swapoff(self.mem, list(self.ctx.mms))

    def spawn(self, name: str, uid: int = 0) -> Process:
        """A new process with an empty address space (root unless ``uid``)."""
        creds = Credentials.root() if uid == 0 else Credentials.user(uid)
        return self._new_process(name, creds)

    def create_file(
        self, nr_pages: int, name: str | None = None, tags: Sequence[int | None] | None = None,
        owner: Credentials | None = None,
    ) -> ShmemFile:
        """A tmpfs file of ``nr_pages`` pages written by the agent, one write() per page.

        ``tags[i]`` is the first u64 of page i (default 0).  The file belongs
        to ``owner`` (default root), mode :data:`REGION_FILE_MODE`.
        """
        if nr_pages <= 0:
            raise ValueError(f"a file needs at least one page, not {nr_pages}")
        if tags is not None and len(tags) != nr_pages:
            raise ValueError(f"{len(tags)} tags for {nr_pages} pages")
        owner = owner or Credentials.root()
        file = ShmemFile(self.mem, next(self._inodes), nr_pages, name or f"file{len(self.files)}",
                         anonymous=False, uid=owner.uid, gid=owner.gid, mode=REGION_FILE_MODE)
        file.write_initial(list(tags) if tags is not None else [0] * nr_pages)
        self.files.append(file)
        return file

    def create_memfd(
        self, nr_pages: int, name: str, owner: Credentials | None = None
    ) -> ShmemFile:
        """memfd_create() + ftruncate(): an unlinked shmem file of ``nr_pages`` holes.

        It belongs to ``owner`` (default root) with mode 0777 (__shmem_file_setup()).

        ``name`` is what smaps shows (d_path(): ``/memfd:NAME (deleted)``).
        Its pages are allocated by faults (shmem_fault(), SGP_CACHE); it dies
        with its last VMA once the agent closed the descriptor after mmap().
        """
        if nr_pages <= 0:
            raise ValueError(f"a memfd needs at least one page, not {nr_pages}")
        owner = owner or Credentials.root()
        file = ShmemFile(self.mem, next(self._inodes), nr_pages, name, anonymous=False,
                         unlinked=True, uid=owner.uid, gid=owner.gid)
        self.files.append(file)
        return file

    def next_inode(self) -> int:
        """A new inode number (the model's own; the guest's are not predicted)."""
        return next(self._inodes)

    def _new_shmem(self, nr_pages: int, name: str, anonymous: bool) -> ShmemFile:
        return ShmemFile(self.mem, next(self._inodes), nr_pages, name, anonymous)

    def _new_process(self, name: str, creds: Credentials) -> Process:
        pid = next(self._pids)
        process = Process(self, pid, name, creds, MmStruct(self.ctx))
        self._processes[pid] = process
        return process

    def _reap(self, process: Process) -> None:
        self._processes.pop(process.pid, None)

    # -- lookups ---------------------------------------------------------

    @property
    def processes(self) -> list[Process]:
        """Live processes, in order of creation."""
        return list(self._processes.values())

    def process(self, pid: int) -> Process | None:
        return self._processes.get(pid)

    @property
    def stable_pfns(self) -> bool:
        """The allocator never reuses a PFN within the run."""
        return not self.mem.reuse_frames

    @property
    def max_pfn(self) -> int:
        return self.mem.max_pfn

    @property
    def max_dump_pfn(self) -> int:
        """get_max_dump_pfn(): where the kpage* files end."""
        return self.mem.max_dump_pfn

    @property
    def zero_pfn(self) -> int:
        return self.mem.zero_pfn

    @property
    def huge_zero_pfn(self) -> int | None:
        return self.mem.huge_zero_pfn

    def frame_tag(self, pfn: int) -> int | None:
        """The first u64 the frame holds, None if the model does not know it."""
        if not 0 <= pfn < self.mem.max_dump_pfn or not self.mem.tag_known[pfn]:
            return None
        return int(self.mem.tag[pfn])

    def frame_state(self, pfn: int) -> FrameState:
        return FrameState(int(self.mem.state[pfn]))

    def frame_freed(self, pfn: int) -> bool:
        """The frame was used and freed: the guest may have reused it (do not compare)."""
        return 0 <= pfn < self.mem.max_dump_pfn and bool(self.mem.freed[pfn])

    def lru_add_drain(self) -> None:
        """lru_add_drain() on the one CPU: the lru_add batch, then the mlock batch
        (:meth:`PhysMem.lru_add_drain`).  The harness drains before each check."""
        self.mem.lru_add_drain()

    def ksm_scan(self, scans: int = 2, use_zero_pages: bool | None = None) -> int:
        """Run ksmd for ``scans`` full scans (sim/mm/ksm.py), with sysfs use_zero_pages set
        to ``use_zero_pages`` meanwhile (None: left as it is); the full scans done
        (0 when no mm is registered: ksmd_should_run() is false)."""
        ksm = self.ctx.ksm
        saved = ksm.use_zero_pages
        if use_zero_pages is not None:
            ksm.use_zero_pages = use_zero_pages
        try:
            before = ksm.full_scans
            for _ in range(scans):
                ksm.scan(self.mem)
            return ksm.full_scans - before
        finally:
            ksm.use_zero_pages = saved

    def stable_page_flags(self, pfns: Sequence[int] | np.ndarray) -> list[int]:
        """stable_page_flags() of each PFN (below max_dump_pfn)."""
        return [int(v) for v in self.mem.stable_page_flags(np.asarray(pfns, dtype=np.int64))]

    def kpagecount(self, pfn: int) -> int:
        return int(self.mem.kpagecount_values(np.asarray([pfn], dtype=np.int64))[0])

    def page_count(self, pfn: int) -> int:
        return int(self.mem.page_count_values(np.asarray([pfn], dtype=np.int64))[0])
