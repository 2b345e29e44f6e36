"""Run a scenario's steps on the model (:mod:`sim.mm`, :mod:`sim.procfs`).

The model side of the data flow: the same Steps and the same layout as the
guest executor (:func:`harness.scenario.plan_layout`), the same observations
(:mod:`harness.observations`), read through the model's proc files exactly as
the guest agent reads the kernel's: the same paths, offsets, counts and
reader uid.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from harness.arches import guest_ram_bytes
from harness.observations import (
    CheckObservation,
    FileRead,
    Observations,
    ReadResult,
    StepOutcome,
    observe_check,
    record_check,
)
from harness.scan_step import scan_arg, scan_outcome, unwritten_vec
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
    StepHandlers,
    Swapoff,
    Swapon,
    Touch,
    UffdRegister,
    UffdWp,
    plan_layout,
)
from harness.swapdisk import SWAP_DISK_BYTES
from sim.arch import Arch
from sim.formats_scan import build_page_regions
from sim.mm import Machine, MmError, OutOfMemory, Process
from sim.mm.facts import PINNED, KernelFacts
from sim.mm.settings import ThpSettings
from sim.mm.syscall import NotModelled
from sim.procfs import ProcError, ProcFs
from sim.smaps import rollup_fixed_point

__all__ = [
    "ADVICE_NOT_ON_SHMEM_THP",
    "MODEL",
    "MODEL_RAM_BYTES",
    "NOT_ON_SHMEM_THP",
    "ModelError",
    "ModelRun",
    "model_ram_bytes",
    "run_model",
]

#: The least RAM of a model machine: the guests boot with -m 1G (THP is off
#: below 512 MiB); an arch whose guest has more gets as much (model_ram_bytes()).
MODEL_RAM_BYTES = 1 << 30


def model_ram_bytes(arch: Arch) -> int:
    """Bytes of RAM for a model machine of ``arch``: MODEL_RAM_BYTES, or the guest's if more."""
    return max(MODEL_RAM_BYTES, guest_ram_bytes(arch) or 0)


class ModelError(RuntimeError):
    """The model cannot run a step (a gap in the model, not a kernel result)."""


#: Range ops the model does not follow on a hugetlb region (sim/mm/hugetlb.py):
#: hugetlb_change_protection(), mremap of hugetlb VMAs, mlock's hugetlb paths,
#: pagemap_scan_hugetlb_entry().
NOT_ON_HUGETLB = (Mprotect, Mremap, Mlock, Munlock, PagemapScan)

#: shmem_enabled values under which a fault on a memfd or shared anonymous region may
#: allocate a huge folio (shmem_allowable_huge_orders(), mm/shmem.c; sim/mm/shmem_thp.py).
_SHMEM_HUGE = frozenset({"always", "within_size", "advise"})

#: Steps the model does not follow on a region that may hold huge shmem folios:
#: mlock (mlock_vma_folio() of a PMD mapping), mremap (move_huge_pmd() of a file
#: VMA), userfaultfd, PAGEMAP_SCAN and clear_refs (their huge-PMD paths for file
#: folios), swap (shmem_writepage() of a large folio).
NOT_ON_SHMEM_THP = (Mlock, Munlock, Mremap, UffdRegister, UffdWp, PagemapScan, ClearRefs,
                     Swapon, Swapoff)

#: madvise advice the model does not follow on such a region: MADV_COLD / MADV_PAGEOUT
#: (reclaim of a large shmem folio), MADV_COLLAPSE (hpage_collapse_scan_file()),
#: MADV_POPULATE_* (GUP of a PMD-mapped file folio; MAP_POPULATE too).
ADVICE_NOT_ON_SHMEM_THP = frozenset(
    {"cold", "pageout", "collapse", "populate_read", "populate_write"}
)


def model_settings(scenario: Scenario, arch: Arch) -> ThpSettings:
    """The scenario's sysfs knobs for the model (sim/mm/settings.py); ModelError where
    the model does not follow them.

    Huge shmem folios (shmem THP, sim/mm/shmem_thp.py) are followed on memfd and
    shared anonymous regions under shmem_enabled always, within_size and advise,
    except for the steps in :data:`NOT_ON_SHMEM_THP` and
    :data:`ADVICE_NOT_ON_SHMEM_THP`; ``force`` (huge folios on every tmpfs file
    too, and the per-size knobs inherited) is not modelled for any shmem region.
    """
    settings = scenario.settings.resolve(arch)
    shmem = [m.region for m in scenario.regions
             if m.kind in ("memfd", "file") or m.share == "shared"]
    if settings.shmem_enabled == "force" and shmem:
        raise ModelError(
            f"not modelled: shmem THP with shmem_thp 'force' (the shmem region {shmem[0]!r})"
        )
    if settings.shmem_enabled in _SHMEM_HUGE:
        huge = {m.region for m in scenario.regions
                if m.kind == "memfd" or (m.kind == "anon" and m.share == "shared")}
        for step in scenario.steps if huge else ():
            refused = isinstance(step, NOT_ON_SHMEM_THP) or (
                isinstance(step, Mmap) and step.region in huge and (step.locked or step.populate)
            ) or (
                isinstance(step, Madvise) and step.region in huge
                and str(step.advice) in ADVICE_NOT_ON_SHMEM_THP
            )
            if refused:
                raise ModelError(
                    f"{step.label}: not modelled: {step.op} with shmem THP "
                    f"(shmem_thp {settings.shmem_enabled!r}, the shmem region {min(huge)!r})"
                )
    return settings


@dataclass
class ModelRun:
    """One scenario on one fresh model machine."""

    scenario: Scenario
    arch: Arch
    #: 0: :func:`model_ram_bytes` of ``arch``.
    ram_bytes: int = 0
    facts: KernelFacts = PINNED
    layout: Layout = field(init=False)
    machine: Machine = field(init=False)
    procfs: ProcFs = field(init=False)
    procs: dict[str, Process] = field(init=False, default_factory=dict)
    outcomes: list[StepOutcome] = field(init=False, default_factory=list)
    checks: list[CheckObservation] = field(init=False, default_factory=list)
    #: Regions mapped with MAP_HUGETLB.
    hugetlb_regions: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.layout = plan_layout(self.scenario, self.arch)
        self.ram_bytes = self.ram_bytes or model_ram_bytes(self.arch)
        self.machine = Machine(self.arch, ram_bytes=self.ram_bytes, facts=self.facts)
        if self.scenario.swap:
            self.machine.add_swap_device(SWAP_DISK_BYTES)  # the VM's boot-time swapon
        self.machine.ctx.settings = model_settings(self.scenario, self.arch)
        # settings.ksm_use_zero_pages holds for the run; a ksm step's own key for its scans.
        self.machine.ctx.ksm.use_zero_pages = self.machine.ctx.settings.ksm_use_zero_pages
        self.procfs = ProcFs(self.machine)
        self.procs = {"main": self.machine.spawn("main", uid=0)}
        self.hugetlb_regions = {s.region for s in self.scenario.regions if s.kind == "hugetlb"}

    def run(self, after_step: Callable[[ModelRun], None] | None = None) -> Observations:
        """Every step in order; ``after_step`` (if given) sees the run after each one."""
        drain = self.scenario.locks_memory
        for step in self.scenario.steps:
            self.outcomes.append(self.step(step))
            if drain:
                self.machine.lru_add_drain()  # as the guest's SETTLE(DRAIN_LRU) after it
            if after_step is not None:
                after_step(self)
        return Observations(
            scenario=self.scenario.name,
            arch=self.arch.name,
            side="model",
            outcomes=tuple(self.outcomes),
            checks=tuple(self.checks),
            stable_pfns=self.machine.stable_pfns,
        )

    def step(self, step: AnyStep) -> StepOutcome:
        """Apply one step; a system call the kernel would fail becomes its errno.

        ModelError for a step the model does not follow (NotModelled, and the
        ops it does not follow on hugetlb regions: :data:`NOT_ON_HUGETLB`).
        """
        if isinstance(step, NOT_ON_HUGETLB) and step.region in self.hugetlb_regions:
            raise ModelError(f"{step.label}: not modelled: {step.op} of a hugetlb region")
        try:
            return self.apply(step)
        except MmError as e:
            return StepOutcome(step.index, "error", errno=e.errno)
        except NotModelled as e:
            raise ModelError(f"{step.label}: not modelled: {e}") from None
        except OutOfMemory:
            # Not a result to compare: the guest would OOM-kill the process
            # (or the agent) long before, at a point the model does not know.
            raise ModelError(
                f"{step.label}: the scenario needs more memory than the guest's "
                f"{self.ram_bytes >> 20} MiB of frames; use fewer or smaller regions"
            ) from None

    def apply(self, step: AnyStep) -> StepOutcome:
        """The step's handler in :data:`MODEL`; ``ok`` unless it says otherwise."""
        return MODEL(self, step) or StepOutcome(step.index, "ok")

    def read(self, reads: Sequence[FileRead], uid: int) -> list[ReadResult]:
        """Reads of model proc files, as the guest agent makes them."""
        results = []
        for r in reads:
            try:
                results.append(ReadResult.ok(self.procfs.read(r.path, r.offset, r.count, uid=uid)))
            except ProcError as e:
                results.append(ReadResult.failed(e.errno))
        return results

    def check(self, step: Check) -> CheckObservation:
        # The guest drains the per-CPU batches before each check (SETTLE DRAIN_LRU).
        self.machine.lru_add_drain()
        targets = [
            (t.proc, t.region, self.procs[t.proc].pid)
            for t in self.scenario.targets[step.index]
        ]
        observed = observe_check(
            step,
            targets,
            self.layout,
            self.arch,
            lambda reads: self.read(reads, step.reader_uid),
            lambda pfns: [self.machine.frame_tag(pfn) for pfn in pfns],
        )
        # The exact fixed-point sums behind the rollup's kB floors: compare
        # needs them to place our regions' share inside the kernel's rollup.
        smaps = tuple(
            dataclasses.replace(s, pss_fixed=rollup_fixed_point(self.procs[s.proc].mm))
            if s.rollup.data is not None else s
            for s in observed.smaps or ()
        )
        return dataclasses.replace(observed, smaps=smaps)


#: The model side of every op: ``handler(run, step)`` -> its outcome (None: ok).
MODEL: StepHandlers[ModelRun, StepOutcome | None] = StepHandlers("the model executor")


MODEL.on(Check)(record_check)


#: d_path() of the agent's memfd_create("pmh") (create_region_memfd() in harness/agent/ops.c).
MEMFD_PATH = "/memfd:pmh (deleted)"


@MODEL.on(Mmap)
def _mmap(run: ModelRun, step: Mmap) -> None:
    placement = run.layout[step.region]
    file = None
    if step.kind == "file":
        # The agent's file: /tmp/pmh-region-<pid>-<vaddr>, unlinked at once
        # (create_region_file() in harness/agent/ops.c); smaps shows d_path().
        # It belongs to the process that creates it (i_uid = its fsuid), which
        # MADV_PAGEOUT asks about (can_do_file_pageout()).
        proc = run.procs[step.proc]
        file = run.machine.create_file(
            placement.pages, name=f"/tmp/pmh-region-{proc.pid}-{placement.vaddr:x} (deleted)",
            tags=run.layout.file_tags(step.region), owner=proc.creds,
        )
    elif step.kind == "memfd":
        file = run.machine.create_memfd(
            placement.pages, MEMFD_PATH, owner=run.procs[step.proc].creds
        )
    try:
        run.procs[step.proc].mmap(
            placement.vaddr, placement.pages, step.kind, step.share, step.prot, file=file,
            fixed=step.fixed, populate=step.populate, locked=step.locked,
        )
    except MmError:
        # The agent closes its unlinked file or memfd whatever mmap() says:
        # without a mapping it is gone with its pages.
        if file is not None and file.vma_refs == 0:
            file.truncate()
        raise


@MODEL.on(Touch)
def _touch(run: ModelRun, step: Touch) -> StepOutcome | None:
    span = run.layout.span(step)
    tags = run.layout.write_tags(step) if step.write else None
    fill = getattr(step, "fill", None)
    result = run.procs[step.proc].touch(span.vaddr, span.pages, step.write, tags, fill=fill)
    if result.ok:
        return None
    if result.segv_vaddr is None:
        raise ModelError(f"{step.label}: the model raised {result.signal}, "
                         "which a scenario cannot expect")
    return StepOutcome(step.index, "segv", vaddr=result.segv_vaddr)


@MODEL.on(Munmap)
def _munmap(run: ModelRun, step: Munmap) -> None:
    span = run.layout.span(step)
    run.procs[step.proc].munmap(span.vaddr, span.pages)


@MODEL.on(Mprotect)
def _mprotect(run: ModelRun, step: Mprotect) -> None:
    span = run.layout.span(step)
    run.procs[step.proc].mprotect(span.vaddr, span.pages, step.prot)


@MODEL.on(Madvise)
def _madvise(run: ModelRun, step: Madvise) -> None:
    span = run.layout.span(step)
    run.procs[step.proc].madvise(span.vaddr, span.pages, step.advice)


@MODEL.on(Mremap)
def _mremap(run: ModelRun, step: Mremap) -> None:
    span = run.layout.span(step)
    new_pages = step.new_pages.resolve(run.arch)
    new_addr = run.layout[step.new_region].vaddr if step.new_region is not None else None
    run.procs[step.proc].mremap(
        span.vaddr, span.pages, new_pages, new_addr=new_addr, dontunmap=step.dontunmap
    )


@MODEL.on(Fork)
def _fork(run: ModelRun, step: Fork) -> None:
    run.procs[step.child] = run.procs[step.proc].fork(step.child, uid=step.uid)


@MODEL.on(Exit)
def _exit(run: ModelRun, step: Exit) -> None:
    run.procs.pop(step.proc).exit()


@MODEL.on(ClearRefs)
def _clear_refs(run: ModelRun, step: ClearRefs) -> None:
    run.procs[step.proc].clear_refs(step.value)


@MODEL.on(PagemapScan)
def _pagemap_scan(run: ModelRun, step: PagemapScan) -> StepOutcome:
    span = run.layout.span(step)
    arg = scan_arg(step, span, run.arch)
    path = f"/proc/{run.procs[step.proc].pid}/pagemap"
    try:
        result = run.procfs.pagemap_scan(path, arg, uid=step.reader_uid)
    except ProcError as e:
        return StepOutcome(step.index, "error", errno=e.errno)
    written = build_page_regions(run.arch, result.regions)
    vec = written + unwritten_vec(step.vec_len)[len(written):]
    return scan_outcome(step, result.ret, result.walk_end, vec)


@MODEL.on(Mlock)
def _mlock(run: ModelRun, step: Mlock) -> None:
    span = run.layout.span(step)
    run.procs[step.proc].mlock(span.vaddr, span.pages, onfault=step.onfault)


@MODEL.on(Munlock)
def _munlock(run: ModelRun, step: Munlock) -> None:
    span = run.layout.span(step)
    run.procs[step.proc].munlock(span.vaddr, span.pages)


@MODEL.on(Swapon)
def _swapon(run: ModelRun, step: Swapon) -> None:
    run.machine.swapon()


@MODEL.on(Swapoff)
def _swapoff(run: ModelRun, step: Swapoff) -> None:
    run.machine.swapoff()


@MODEL.on(UffdRegister)
def _uffd_register(run: ModelRun, step: UffdRegister) -> None:
    span = run.layout.span(step)
    run.procs[step.proc].uffd_register(span.vaddr, span.pages)


@MODEL.on(UffdWp)
def _uffd_wp(run: ModelRun, step: UffdWp) -> None:
    span = run.layout.span(step)
    run.procs[step.proc].uffd_wp(span.vaddr, span.pages, step.enable)


@MODEL.on(Ksm)
def _ksm(run: ModelRun, step: Ksm) -> StepOutcome | None:
    if step.proc is not None and not run.procs[step.proc].creds.capable("CAP_DAC_OVERRIDE"):
        # /sys/kernel/mm/ksm/* are 0644 root (KSM_ATTR): kernfs_iop_permission() ->
        # generic_permission() refuses the write; nothing changes.
        return StepOutcome(step.index, "error", errno=errno.EACCES)
    try:
        run.machine.ksm_scan(step.scans, step.use_zero_pages)
    except NotModelled as e:
        raise ModelError(f"{step.label}: not modelled: {e}") from None
    return None


def run_model(
    scenario: Scenario,
    arch: Arch,
    *,
    ram_bytes: int = 0,
    facts: KernelFacts = PINNED,
) -> Observations:
    """The model's observations of ``scenario`` on ``arch`` (a fresh machine with ``facts``
    and ``ram_bytes`` of RAM; 0: :func:`model_ram_bytes`)."""
    return ModelRun(scenario, arch, ram_bytes, facts).run()
