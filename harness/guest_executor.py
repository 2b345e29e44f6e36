"""Run a scenario's steps in a live guest, through the agent.

The real side of the data flow: the same Steps and layout as the model
executor (:func:`harness.scenario.plan_layout`) and the same observations,
made by the same function (:func:`harness.observations.observe_check`): here
its reads are READ_FILE requests to the agent (as root or as the check's
uid) and the RAM oracle reads the guest's memory-backend file at
``(pfn << PAGE_SHIFT) - ram_base`` (:class:`harness.vm.GuestRAM`).

One VM serves many scenarios.  Each run forks its own named processes from
the agent (``main`` first; names unique to the run), and kills and reaps
whatever of them is still alive when the run ends, however it ends.

What the model assumes of the guest (sim/MODEL.md) and how it is made true:

* per-CPU LRU batches drained before every check: SETTLE(DRAIN_LRU), one
  vCPU (the profiles boot ``-smp 1``);
* in a scenario that locks memory, the lru_add and mlock batches empty when
  each step starts and drained after it: SETTLE(DRAIN_BEFORE_OPS) makes
  ``main`` and every process it forks drain in the op's own request, after
  reading it and just before the system call (first-touch faults on the
  agent's code and buffers have queued folios by then), and SETTLE(DRAIN_LRU)
  to init drains after each step;
* khugepaged quiescent: :func:`prepare_guest` sets its scan interval to a
  day and spends its registration wake-up on a holder process
  (:mod:`harness.khugepaged`); every run checks ``pages_collapsed`` did not
  move during it;
* THP ``enabled`` = madvise, ``use_zero_page`` = 1, ``shmem_enabled`` =
  never: checked once per VM by :func:`prepare_guest`; a scenario's
  ``settings`` are written before its first step and the old values after
  its last, however it ends (:mod:`harness.guest_settings`);
* file regions on tmpfs, each page written by one write() and on the LRU
  before the mapping exists: the agent's MMAP of a FILE region (it drains
  the LRU batches after the writes);
* an exiting process is reaped before the next step: the agent's EXIT
  returns after init reaped it;
* the shared zero page starts every run without PG_referenced: GUP's
  FOLL_TOUCH (MAP_POPULATE, MAP_LOCKED, ...) toggles it, and
  :func:`clear_zero_page_referenced` toggles it back when a run left it set.
"""

from __future__ import annotations

import errno
import inspect
import itertools
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from harness.agent.client import AgentClient, BatchRead, BatchReadReply
from harness.agent.protocol import (
    INIT,
    BackingCode,
    MapBits,
    Op,
    ProtBits,
    ReadStage,
    RemapBits,
    ReplyStatus,
    SettleFlags,
)
from harness.errors import AgentOpError, VMError
from harness.guest_settings import apply_settings, restore_settings
from harness.hugetlb_pool import HugetlbPoolError, check_hugetlb_pool, refill_hugetlb_pool
from harness.khugepaged import hold_khugepaged
from harness.ksm_holder import hold_ksm
from harness.observations import (
    CheckObservation,
    FileRead,
    Observations,
    ReadResult,
    StepOutcome,
    observe_check,
    record_check,
)
from harness.scan_step import scan_arg, scan_outcome
from harness.scenario import (
    AnyStep,
    Check,
    ClearRefs,
    Exit,
    Fork,
    Ksm,
    Layout,
    Madvise,
    Mlock,
    Mmap,
    Mprotect,
    Mremap,
    Munlock,
    Munmap,
    PagemapScan,
    Scenario,
    Step,
    StepHandlers,
    Swapoff,
    Swapon,
    Touch,
    UffdRegister,
    UffdWp,
    layout_base,
    layout_span,
    plan_layout,
)
from harness.swapdisk import SWAP_DEVICE
from harness.vm import VM, VMState
from sim.arch import Arch
from sim.flags import KPF, PM
from sim.formats import parse_u64s
from sim.mm.madvise import MADV, advice_number
from sim.mm.userfaultfd import WANTED_FEATURES

__all__ = [
    "GUEST",
    "GuestExecutorError",
    "GuestRun",
    "GuestSetup",
    "clear_zero_page_referenced",
    "prepare_guest",
    "run_guest",
]

#: SIGSEGV is 11 on every architecture the harness boots (asm-generic numbering
#: on x86 and powerpc alike).
SIGSEGV = 11

_THP = "/sys/kernel/mm/transparent_hugepage"
#: What the model assumes of the THP sysfs knobs (sim/mm/facts.py): the
#: bracketed choice of each file, or its plain value.
_THP_EXPECTED = {
    f"{_THP}/enabled": "madvise",
    f"{_THP}/use_zero_page": "1",
    f"{_THP}/shmem_enabled": "never",
}
#: khugepaged sleeps this long between scans (ms): longer than any VM lives.
KHUGEPAGED_SLEEP_MS = 86_400_000
_COLLAPSED = f"{_THP}/khugepaged/pages_collapsed"

_PROTS = {"none": ProtBits.NONE, "r": ProtBits.READ, "rw": ProtBits.READ | ProtBits.WRITE}


class GuestExecutorError(RuntimeError):
    """The guest could not run a step for a reason outside the scenario.

    A bad request, a process the agent lost, a reader that could not drop
    privileges, a guest not set up as the model assumes: never a kernel
    result to compare, always an error of the run.
    """


@dataclass(frozen=True)
class GuestSetup:
    """What :func:`prepare_guest` found: whether the kernel has THP."""

    thp: bool


#: PFN of the shared zero page, per VM (learnt by :func:`clear_zero_page_referenced`).
_zero_pfns: weakref.WeakKeyDictionary[VM, int] = weakref.WeakKeyDictionary()


def clear_zero_page_referenced(vm: VM, flags_read: BatchReadReply | None = None) -> None:
    """Leave the shared zero page without PG_referenced, as the model starts every run.

    follow_page_pte() (mm/gup.c) calls mark_page_accessed() on every page a
    populating GUP touches, the zero page too; on no LRU it is never
    activated, so each touch toggles PG_referenced (folio_mark_accessed()).
    One populated read-only private page outside every region maps it and
    toggles it: done once per VM to learn its PFN, and again whenever a run
    left it referenced.  One kpageflags read per run otherwise, or none when
    ``flags_read`` is that read, made by the caller (:func:`zero_page_flags_read`).
    """
    agent, arch = vm.agent, vm.profile.arch
    page = arch.page_size
    scratch = layout_base(arch) + layout_span(arch)  # no region's range reaches it

    def toggle() -> int:
        agent.mmap(scratch, page, prot=ProtBits.READ, map_bits=MapBits.POPULATE)
        try:
            pid = agent.getpid()
            got = agent.read_file(f"/proc/{pid}/pagemap", 8, offset=scratch // page * 8)
        finally:
            agent.munmap(scratch, page)
        if not got.ok or len(got.data) != 8:
            raise GuestExecutorError(f"cannot read the zero page's pagemap entry: {got.describe()}")
        entry = parse_u64s(arch, got.data)[0]
        if not entry >> PM.PRESENT & 1:
            raise GuestExecutorError("a populated read-only page is not present")
        return int(entry & PM.PFN_MASK)

    def referenced(pfn: int) -> bool:
        nonlocal flags_read
        got = flags_read or agent.read_files([_kpageflags_read(pfn)])[0]
        flags_read = None
        if not got.ok or len(got.data) != 8:
            raise GuestExecutorError(f"cannot read the zero page's kpageflags: {got.describe()}")
        return bool(parse_u64s(arch, got.data)[0] >> KPF.REFERENCED & 1)

    pfn = _zero_pfns.get(vm)
    if pfn is None:
        pfn = _zero_pfns[vm] = toggle()
        flags_read = None
    for _ in range(2):
        if not referenced(pfn):
            return
        toggle()
    raise GuestExecutorError(f"the zero page (PFN {pfn:#x}) stays referenced")


def zero_page_flags_read(vm: VM) -> BatchRead | None:
    """The kpageflags read :func:`clear_zero_page_referenced` starts with (None: the
    zero page's PFN is not known yet in this VM)."""
    pfn = _zero_pfns.get(vm)
    return None if pfn is None else _kpageflags_read(pfn)


def _kpageflags_read(pfn: int) -> BatchRead:
    return BatchRead("/proc/kpageflags", 8, offset=pfn * 8)


_prepared: weakref.WeakKeyDictionary[VM, GuestSetup] = weakref.WeakKeyDictionary()
_run_ids = itertools.count()


def _read_text(agent: AgentClient, path: str) -> str | None:
    """A small sysfs file's text; None if it does not exist (no such feature)."""
    result = agent.read_file(path, 4096)
    if not result.ok:
        return None
    return result.data.decode(errors="replace").strip()


def _selected(text: str) -> str:
    """``always [madvise] never`` -> ``madvise``; a plain value as it is."""
    if "[" in text and "]" in text:
        return text[text.index("[") + 1 : text.index("]")]
    return text


def prepare_guest(vm: VM) -> GuestSetup:
    """Make the guest what the model assumes; the setup found.

    Once per VM: the hugetlb pool the kernel command line reserved
    (:mod:`harness.hugetlb_pool`), THP knobs as the model's facts say
    (ScenarioError-like one line if not), khugepaged's scan interval set to a day.  Every call: the
    khugepaged holder alive (:func:`harness.khugepaged.hold_khugepaged`, one
    LIST round trip when it is).  A kernel without THP (no ``enabled`` file)
    is accepted: scenarios that need THP do not run there.
    """
    known = _prepared.get(vm)
    if known is not None:
        if known.thp:
            hold_khugepaged(vm)
        return known
    agent = vm.agent
    try:
        # The boot reservation (hugepages=N on the command line), once per VM.
        check_hugetlb_pool(vm.profile.arch, lambda path: _read_text(agent, path))
    except HugetlbPoolError as e:
        raise GuestExecutorError(f"hugetlb pool at boot: {e}") from None
    enabled = _read_text(agent, f"{_THP}/enabled")
    if enabled is None:
        setup = GuestSetup(thp=False)
    else:
        for path, want in _THP_EXPECTED.items():
            text = _read_text(agent, path)
            if text is not None and _selected(text) != want:
                raise GuestExecutorError(
                    f"{path} is {text!r}; the model assumes {want!r} (sim/mm/facts.py)"
                )
        for knob in ("scan_sleep_millisecs", "alloc_sleep_millisecs"):
            agent.write_file(f"{_THP}/khugepaged/{knob}", f"{KHUGEPAGED_SLEEP_MS}\n")
        # The knob writes wake khugepaged too; its pass is awaited with the holder's.
        hold_khugepaged(vm)
        setup = GuestSetup(thp=True)
    _prepared[vm] = setup
    return setup


def _collapsed(agent: AgentClient) -> int | None:
    text = _read_text(agent, _COLLAPSED)
    return None if text is None else int(text)


#: khugepaged's count of collapsed THPs, as one read of a batch.
_COLLAPSED_READ = BatchRead(_COLLAPSED, 64, loop=True)


@dataclass
class GuestRun:
    """One scenario in ``vm``, in named processes of its own."""

    scenario: Scenario
    vm: VM
    layout: Layout = field(init=False)
    arch: Arch = field(init=False)
    #: Scenario process name -> agent process name, pid.
    names: dict[str, str] = field(init=False, default_factory=dict)
    pids: dict[str, int] = field(init=False, default_factory=dict)
    outcomes: list[StepOutcome] = field(init=False, default_factory=list)
    checks: list[CheckObservation] = field(init=False, default_factory=list)
    #: READ_FILES requests made by checks (for benchmarks).
    reads: int = field(init=False, default=0)
    #: What the next batch of a check's reads settles first (the first: the LRU drain).
    _settle: SettleFlags = field(init=False, default=SettleFlags.NONE)

    def __post_init__(self) -> None:
        self.arch = self.vm.profile.arch
        self.layout = plan_layout(self.scenario, self.arch)
        self._prefix = f"r{next(_run_ids)}."

    @property
    def agent(self) -> AgentClient:
        return self.vm.agent

    def run(self) -> Observations:
        """Every step in order; the run's processes are gone afterwards."""
        if self.scenario.swap != self.vm.config.swap:
            want = "with" if self.scenario.swap else "without"
            raise GuestExecutorError(
                f"{self.scenario.path}: needs a VM {want} swap (VMConfig.swap); this one is "
                f"{'with' if self.vm.config.swap else 'without'}"
            )
        setup = prepare_guest(self.vm)
        # One round trip for khugepaged's count and the zero page's flags.
        zero = zero_page_flags_read(self.vm)
        reads = [r for r in (_COLLAPSED_READ if setup.thp else None, zero) if r is not None]
        replies = self.agent.read_files(reads)
        collapsed = None
        if setup.thp:
            got = replies.pop(0)
            if not got.ok:
                raise GuestExecutorError(f"cannot read {_COLLAPSED}: {got.describe()}")
            collapsed = int(got.data)
        clear_zero_page_referenced(self.vm, replies[0] if replies else None)
        if self.scenario.uses_hugetlb:
            # The model starts with the whole boot pool free and clean.
            try:
                refill_hugetlb_pool(self.arch, lambda path: _read_text(self.agent, path),
                                    lambda path, text: self.agent.write_file(path, text))
            except HugetlbPoolError as e:
                raise GuestExecutorError(str(e)) from None
        restore = apply_settings(self.vm, self.scenario.settings)
        try:
            self._run_steps()
        finally:
            try:
                self._kill_all()
                if self.vm.state is VMState.RUNNING and any(
                    isinstance(step, Swapoff) for step in self.scenario.steps
                ):
                    restore_swap(self.agent)
            finally:
                # A VM that died mid-run has nothing to restore, and the error that
                # ended the run (QEMUDied, GuestPanic) is the one to report.
                if self.vm.state is VMState.RUNNING:
                    restore_settings(self.vm, restore)
        if collapsed is not None:
            after = _collapsed(self.agent)
            if after != collapsed:
                raise GuestExecutorError(
                    f"khugepaged collapsed pages during the run ({collapsed} -> "
                    f"{after}); the model assumes it quiescent"
                )
        return Observations(
            scenario=self.scenario.name,
            arch=self.arch.name,
            side="real",
            outcomes=tuple(self.outcomes),
            checks=tuple(self.checks),
            stable_pfns=False,
        )

    def _run_steps(self) -> None:
        """Spawn ``main`` and apply every step (the caller kills what is left)."""
        self._spawn("main")
        drain = self.scenario.locks_memory
        if drain:
            # The model starts every step with both batches empty.  The
            # process's own faults (COW of the agent's stack and buffers
            # after its fork, its reads of the request) queue folios on the
            # lru_add batch before the step's system call; a MAP_LOCKED or
            # mlock populate of new shmem folios then drains the mlock batch
            # while its last folios still wait there, off the LRU:
            # __mlock_folio() skips them and lru_add() culls them with
            # mlock_count 0, so one munlock of two clears PG_mlocked.  So
            # main (and every process it forks: they inherit the setting)
            # drains once each request is read, just before its op; a drain
            # sent as a request of its own left a window in which another
            # task could queue a folio (seen once on ppc64-4k).
            self.agent.settle(
                SettleFlags.DRAIN_LRU | SettleFlags.DRAIN_BEFORE_OPS, target=self.names["main"]
            )
        for step in self.scenario.steps:
            self.outcomes.append(self.step(step))
            if drain:
                # A munlock queued by one step (a munmap, an exit) is applied
                # whenever anything on this CPU next calls lru_add_drain(): at a
                # moment of the guest's choosing unless drained here, as the model
                # does after every step of a scenario that locks memory.
                self.agent.settle(SettleFlags.DRAIN_LRU)

    # -- processes -------------------------------------------------------------

    def agent_name(self, proc: str) -> str:
        """Short and unique per run: the agent limits names to 32 bytes."""
        return f"{self._prefix}{self.scenario.procs.index(proc)}"

    def _spawn(self, proc: str) -> None:
        name = self.agent_name(proc)
        self.pids[proc] = self.agent.fork(name)
        self.names[proc] = name

    def _kill_all(self) -> None:
        """Kill and reap every process of this run that is still alive.

        Those are the ones in ``names``: a fork adds its child there, an exit
        removes it.  A process that is gone already is NO_PROCESS, not an error.
        """
        for name in self.names.values():
            try:
                self.agent.kill(name)
            except VMError:
                return  # the VM is gone; nothing left to reap
            except AgentOpError as e:
                if e.status != ReplyStatus.NO_PROCESS.name:
                    raise
        self.names.clear()

    def step(self, step: AnyStep) -> StepOutcome:
        """Apply one step; a system call that failed in the guest is its errno."""
        try:
            return self.apply(step)
        except AgentOpError as e:
            # A fork that failed leaves no process for the steps that name it:
            # an error of the run (the model's forks cannot fail), never an outcome.
            if e.status == "ERRNO" and e.errno and not isinstance(step, Fork):
                return StepOutcome(step.index, "error", errno=e.errno)
            raise GuestExecutorError(f"{self.scenario.path}: {step.label}: {e}") from e

    def apply(self, step: AnyStep) -> StepOutcome:
        """The step's handler in :data:`GUEST`; ``ok`` unless it says otherwise."""
        return GUEST(self, step) or StepOutcome(step.index, "ok")

    def fail(self, step: Step, message: str) -> GuestExecutorError:
        """An error of the run at ``step``, naming the file and the step."""
        return GuestExecutorError(f"{self.scenario.path}: {step.label}: {message}")

    # -- checks ----------------------------------------------------------------

    def check(self, step: Check) -> CheckObservation:
        # The model samples with the per-CPU folio batches drained (sim/MODEL.md):
        # the agent drains them before the check's first batch of reads.
        self._settle = SettleFlags.DRAIN_LRU
        targets = [
            (t.proc, t.region, self.pids[t.proc]) for t in self.scenario.targets[step.index]
        ]
        return observe_check(
            step,
            targets,
            self.layout,
            self.arch,
            lambda reads: self.read(reads, step),
            self.frame_tags,
        )

    def read(self, reads: Sequence[FileRead], step: Check) -> list[ReadResult]:
        """Each read as one open + pread + close in the guest, as the reader uid.

        One READ_FILES request per batch (:meth:`AgentClient.read_files`),
        the first of a check preceded by the LRU drain.  The reads run in a
        CLONE_VM child of the agent's init, never in a
        process of the scenario, so they change no observed page state.  An
        unprivileged reader keeps gid 0, as the model's reader does
        (``ProcFs.read()``: setresuid() from root, no capabilities, gid 0)
        and as a scenario's ``fork`` with a uid leaves its child: the gid is
        part of __ptrace_may_access() (kernel/ptrace.c), so it must match.
        """
        uid = None if step.reader_uid == 0 else step.reader_uid
        gid = None if uid is None else 0
        batch = [
            BatchRead(r.path, r.count, loop=True)
            if r.whole
            else BatchRead(r.path, r.count, offset=r.offset)
            for r in reads
        ]
        replies = self.agent.read_files(batch, uid=uid, gid=gid, settle=self._settle)
        self._settle = SettleFlags.NONE
        self.reads += 1
        return [self._result(got, r, step) for got, r in zip(replies, reads, strict=True)]

    def _result(self, got: BatchReadReply, r: FileRead, step: Check) -> ReadResult:
        if got.ok:
            return ReadResult.ok(got.data)
        if got.stage is ReadStage.CREDS or not got.errno:
            raise GuestExecutorError(
                f"{self.scenario.path}: {step.label}: reading {r.path} as uid "
                f"{step.reader_uid}: {got.describe()}"
            )
        return ReadResult.failed(got.errno)

    def frame_tags(self, pfns: Sequence[int]) -> list[int | None]:
        """The u64 at the start of each frame in guest RAM (None: outside RAM)."""
        ram = self.vm.ram
        tags: list[int | None] = []
        for pfn in pfns:
            data = ram.frame_bytes(pfn, 8)
            tags.append(None if data is None else parse_u64s(self.arch, data)[0])
        return tags


#: The guest side of every op: ``handler(run, step)`` -> its outcome (None: ok).
GUEST: StepHandlers[GuestRun, StepOutcome | None] = StepHandlers("the guest executor")


GUEST.on(Check)(record_check)


#: A scenario's region kind is the agent's backing of the same name.
_BACKINGS = {
    "anon": BackingCode.ANON, "file": BackingCode.FILE, "memfd": BackingCode.MEMFD,
    "hugetlb": BackingCode.HUGETLB,
}


@GUEST.on(Mmap)
def _mmap(run: GuestRun, step: Mmap) -> None:
    placement = run.layout[step.region]
    file = step.kind == "file"
    bits = MapBits.NONE
    for wanted, bit in ((step.fixed, MapBits.FIXED), (step.populate, MapBits.POPULATE),
                        (step.locked, MapBits.LOCKED)):
        if wanted:
            bits |= bit
    run.agent.mmap(
        placement.vaddr,
        placement.pages * run.arch.page_size,
        backing=_BACKINGS[step.kind],
        shared=step.share == "shared",
        prot=_PROTS[step.prot],
        file_tag=run.layout.file_tag_base(step.region) if file else 0,
        target=run.names[step.proc],
        map_bits=bits,
    )


@GUEST.on(Touch)
def _touch(run: GuestRun, step: Touch) -> StepOutcome | None:
    span = run.layout.span(step)
    tag = run.layout.write_tag_base(step) if step.write else 0
    result = run.agent.touch(
        span.vaddr, span.pages, write=step.write, tag=tag, target=run.names[step.proc],
        fill=getattr(step, "fill", None),
    )
    if result.faulted:
        if result.signal != SIGSEGV:
            raise run.fail(step, f"signal {result.signal} at {result.fault_addr:#x}; "
                           "a scenario can only expect SIGSEGV")
        return StepOutcome(step.index, "segv", vaddr=result.fault_addr)
    if result.done != span.pages:
        raise run.fail(step, f"touched {result.done} of {span.pages} pages without a fault")
    return None


@GUEST.on(Munmap)
def _munmap(run: GuestRun, step: Munmap) -> None:
    span = run.layout.span(step)
    run.agent.munmap(span.vaddr, span.length, run.names[step.proc])


@GUEST.on(Mprotect)
def _mprotect(run: GuestRun, step: Mprotect) -> None:
    span = run.layout.span(step)
    run.agent.mprotect(span.vaddr, span.length, _PROTS[step.prot], run.names[step.proc])


@GUEST.on(Madvise)
def _madvise(run: GuestRun, step: Madvise) -> None:
    span = run.layout.span(step)
    # The agent passes the kernel's MADV_* number on as it is (a name is MADV_<NAME>).
    advice = advice_number(step.advice)
    swapping = run.scenario.swap and advice == MADV.PAGEOUT
    frames = present_frames(run, step.proc, span.vaddr, span.pages) if swapping else []
    try:
        run.agent.madvise(span.vaddr, span.length, advice, run.names[step.proc])
    finally:
        if frames:
            wait_swap_writeback(run.agent, run.arch, frames)


@GUEST.on(Swapon)
def _swapon(run: GuestRun, step: Swapon) -> None:
    run.agent.swapon(SWAP_DEVICE)


@GUEST.on(Swapoff)
def _swapoff(run: GuestRun, step: Swapoff) -> None:
    run.agent.swapoff(SWAP_DEVICE)


#: How long swap writeback may take before the run is an error.
SWAP_WRITEBACK_TIMEOUT_S = 30.0


def present_frames(run: GuestRun, proc: str, vaddr: int, pages: int) -> list[int]:
    """The PFNs ``proc`` maps at [vaddr, + pages) (its pagemap, read as root), ascending."""
    shift = run.arch.page_shift
    got = run.agent.read_file(f"/proc/{run.pids[proc]}/pagemap", pages * PM.ENTRY_BYTES,
                              offset=(vaddr >> shift) * PM.ENTRY_BYTES)
    if not got.ok:
        raise GuestExecutorError(f"cannot read the pagemap of {proc!r}: {got.describe()}")
    present = 1 << PM.PRESENT
    return sorted({raw & PM.PFN_MASK for raw in parse_u64s(run.arch, got.data)
                   if raw & present and raw & PM.PFN_MASK})


def wait_swap_writeback(
    agent: AgentClient, arch: Arch, pfns: Sequence[int],
    timeout: float = SWAP_WRITEBACK_TIMEOUT_S,
) -> int:
    """Wait, by state, until none of the frames ``pfns`` is under writeback (KPF_WRITEBACK
    clear in /proc/kpageflags); the polls made.

    MADV_PAGEOUT with swap on leaves every folio it wrote in the swap cache under
    writeback (the bio is submitted when do_madvise()'s plug ends); the virtio-blk
    completion runs folio_end_writeback() in interrupt context, which clears
    PG_reclaim (folio_rotate_reclaimable()) and then PG_writeback, all before the
    agent's process runs again on the one vCPU.  ``pfns`` are the frames the range
    mapped before the advice (a superset of the folios written).  Not
    /proc/vmstat's nr_writeback: a global counter without the per-CPU deltas,
    it can read 0 while writeback is in flight.  Polls with one READ_FILES round
    trip after another (no sleep); GuestExecutorError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    reads = [_kpageflags_read(pfn) for pfn in pfns]
    writeback = 1 << KPF.WRITEBACK
    polls = 0
    while True:
        polls += 1
        busy = []
        for pfn, got in zip(pfns, agent.read_files(reads), strict=True):
            if not got.ok or len(got.data) != 8:
                raise GuestExecutorError(f"cannot read kpageflags of PFN {pfn:#x}: "
                                         f"{got.describe()}")
            if parse_u64s(arch, got.data)[0] & writeback:
                busy.append(pfn)
        if not busy:
            return polls
        if time.monotonic() > deadline:
            raise GuestExecutorError(
                f"swap writeback of PFNs {', '.join(map(hex, busy))} not done after "
                f"{timeout:g} s"
            )


def restore_swap(agent: AgentClient) -> None:
    """swapon again after a scenario that swapped off, so that the next scenario finds the
    VM as booted (EBUSY: it is on already)."""
    try:
        agent.swapon(SWAP_DEVICE)
    except AgentOpError as e:
        if e.errno != errno.EBUSY:
            raise


@GUEST.on(Mremap)
def _mremap(run: GuestRun, step: Mremap) -> None:
    span = run.layout.span(step)
    new_length = step.new_pages.resolve(run.arch) * run.arch.page_size
    flags, new_addr = RemapBits(0), 0
    if step.new_region is not None:
        flags = RemapBits.MAYMOVE | RemapBits.FIXED
        if step.dontunmap:
            flags |= RemapBits.DONTUNMAP
        new_addr = run.layout[step.new_region].vaddr
    got = run.agent.mremap(span.vaddr, span.length, new_length, flags, new_addr,
                           run.names[step.proc])
    expected = new_addr if step.new_region is not None else span.vaddr
    if got != expected:
        raise run.fail(step, f"mremap returned {got:#x}, not {expected:#x}")


@GUEST.on(Fork)
def _fork(run: GuestRun, step: Fork) -> None:
    target = run.names[step.proc]
    name = run.agent_name(step.child)
    if step.uid is None:
        run.pids[step.child] = run.agent.fork(name, target=target)
    else:
        fork: Callable[..., int] = run.agent.fork
        if "uid" not in inspect.signature(fork).parameters:
            raise run.fail(step, "the agent's FORK cannot set a uid "
                           "(needs setresuid + PR_SET_DUMPABLE in the child)")
        run.pids[step.child] = fork(name, target=target, uid=step.uid)
    run.names[step.child] = name


@GUEST.on(Exit)
def _exit(run: GuestRun, step: Exit) -> None:
    result = run.agent.exit(run.names[step.proc])
    run.names.pop(step.proc)
    if not result.exited or result.value != 0:
        raise run.fail(step, f"{step.proc!r} ended {result.how.name.lower()} {result.value}, "
                       "not by exit(0)")


@GUEST.on(ClearRefs)
def _clear_refs(run: GuestRun, step: ClearRefs) -> None:
    run.agent.clear_refs(step.value, run.names[step.proc])


@GUEST.on(PagemapScan)
def _pagemap_scan(run: GuestRun, step: PagemapScan) -> StepOutcome:
    """The ioctl from the agent's init (as root) or its CLONE_VM child (as the uid), like
    a check's reads: the scan changes no page state of the scenario's processes."""
    span = run.layout.span(step)
    uid = None if step.reader_uid == 0 else step.reader_uid
    got = run.agent.pagemap_scan(
        f"/proc/{run.pids[step.proc]}/pagemap", scan_arg(step, span, run.arch),
        uid=uid, gid=None if uid is None else 0,
    )
    if got.stage is ReadStage.OPEN:
        return StepOutcome(step.index, "error", errno=got.errno)
    if not got.opened:
        raise run.fail(step, f"pagemap_scan as uid {step.reader_uid}: {got.stage.name.lower()} "
                       f"failed, errno {got.errno}")
    return scan_outcome(step, got.ret, got.walk_end, got.vec)


@GUEST.on(Mlock)
def _mlock(run: GuestRun, step: Mlock) -> None:
    span = run.layout.span(step)
    run.agent.mlock(span.vaddr, span.length, onfault=step.onfault, target=run.names[step.proc])


@GUEST.on(Munlock)
def _munlock(run: GuestRun, step: Munlock) -> None:
    span = run.layout.span(step)
    run.agent.munlock(span.vaddr, span.length, run.names[step.proc])


@GUEST.on(UffdRegister)
def _uffd_register(run: GuestRun, step: UffdRegister) -> None:
    span = run.layout.span(step)
    run.agent.call_op(Op.UFFD_REGISTER, run.names[step.proc], addr=span.vaddr,
                      length=span.length, features=WANTED_FEATURES)


@GUEST.on(UffdWp)
def _uffd_wp(run: GuestRun, step: UffdWp) -> None:
    span = run.layout.span(step)
    run.agent.call_op(Op.UFFD_WP, run.names[step.proc], addr=span.vaddr, length=span.length,
                      enable=int(step.enable))


def run_guest(scenario: Scenario, vm: VM) -> Observations:
    """The kernel's observations of ``scenario`` in the running ``vm``."""
    return GuestRun(scenario, vm).run()


#: What sim/mm/ksm.py assumes of ksmd's knobs (mm/ksm.c defaults).
_KSM_SMART_SCAN = True
_KSM_MAX_PAGE_SHARING = 256


@GUEST.on(Ksm)
def _ksm(run: GuestRun, step: Ksm) -> StepOutcome | None:
    hold_ksm(run.vm)
    try:
        target = INIT if step.proc is None else run.names[step.proc]
        got = run.agent.ksm_scan(step.scans, step.use_zero_pages, target=target)
    except AgentOpError as e:
        if e.status == "ERRNO" and e.errno == errno.EACCES:
            # An unprivileged proc may not write the root-owned 0644 sysfs knobs.
            return StepOutcome(step.index, "error", errno=e.errno)
        raise run.fail(step, f"ksmd: {e}") from e
    if got.after - got.before != step.scans:
        raise run.fail(step, f"ksmd ran {got.after - got.before} full scans, not {step.scans}")
    if (got.smart_scan, got.max_page_sharing) != (_KSM_SMART_SCAN, _KSM_MAX_PAGE_SHARING):
        raise run.fail(step, f"ksm smart_scan {got.smart_scan}, max_page_sharing "
                       f"{got.max_page_sharing}: the model assumes {_KSM_SMART_SCAN}, "
                       f"{_KSM_MAX_PAGE_SHARING} (sim/mm/ksm.py)")
    return None
