"""Flow: which processes exist at each step, and which regions each owns.

Names must be defined before use and nothing may be used after its process
exited; every check gets its targets, the (process, region) pairs it reads
the pagemap of.  These rules hold on every architecture; page ranges, which
depend on it, are checked by :func:`harness.scenario.layout.check_ranges`.

Each step type's effect on the flow is one handler in :data:`FLOW`; a new
range op needs none (the :class:`RangeStep` entry covers it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from harness.scenario.dispatch import StepHandlers
from harness.scenario.schema import (
    AnyStep,
    Check,
    Exit,
    Fork,
    Mmap,
    Mremap,
    RangeStep,
    ScenarioError,
    Step,
)
from harness.scenario.tags import MAX_REGIONS

__all__ = ["MAX_OBSERVATIONS", "MAX_PROCS", "Target", "validate_flow"]

#: Processes alive at once, ``main`` included: the guest agent's table of
#: named processes (MAX_PROCS in harness/agent/procs.c).
MAX_PROCS = 64
#: (check, process, region) observations of a whole scenario: each is a
#: pagemap read in the guest, and the loader keeps their list.
MAX_OBSERVATIONS = 1 << 16


@dataclass(frozen=True)
class Target:
    """One (process, region) pair a check reads the pagemap of."""

    proc: str
    region: str


class _FlowError(Exception):
    """One step breaks the flow; the message follows the step label."""


@dataclass
class _Flow:
    """Processes and regions as the steps so far left them."""

    alive: dict[str, list[str]] = field(default_factory=lambda: {"main": []})
    #: process -> its uid (main is root).
    uids: dict[str, int] = field(default_factory=lambda: {"main": 0})
    created: list[str] = field(default_factory=lambda: ["main"])
    exited: dict[str, int] = field(default_factory=dict)
    region_owner: dict[str, str] = field(default_factory=dict)
    targets: dict[int, tuple[Target, ...]] = field(default_factory=dict)
    observations: int = 0

    def need_proc(self, proc: str) -> None:
        if proc in self.exited:
            raise _FlowError(f"process {proc!r} exited at step {self.exited[proc]}")
        if proc not in self.alive:
            raise _FlowError(f"process {proc!r} is not defined (forked) before this step")


def _claim(name: str, known: Collection[str], used: str, live: Collection[str], limit: int,
           full: str) -> None:
    """_FlowError unless ``name`` was never used and ``live`` has room for one more."""
    if name in known:
        raise _FlowError(used.format(name))
    if len(live) >= limit:
        raise _FlowError(full)


FLOW: StepHandlers[_Flow, None] = StepHandlers("the flow check")


@FLOW.on(Step)
def _no_change(flow: _Flow, step: Step) -> None:
    """Steps that only need their process alive (checked for every step)."""


@FLOW.on(Check)
def _check(flow: _Flow, step: Check) -> None:
    procs = [p for p in flow.created if p in flow.alive and step.proc in (None, p)]
    flow.observations += sum(len(flow.alive[proc]) for proc in procs)
    if flow.observations > MAX_OBSERVATIONS:
        raise _FlowError(
            f"the checks so far observe more than {MAX_OBSERVATIONS} (process, region) pairs"
        )
    flow.targets[step.index] = tuple(
        Target(proc, region) for proc in procs for region in flow.alive[proc]
    )


@FLOW.on(Mmap)
def _mmap(flow: _Flow, step: Mmap) -> None:
    _claim(step.region, flow.region_owner, "region {!r} is already defined (regions are "
           "mapped once)", flow.region_owner, MAX_REGIONS, f"more than {MAX_REGIONS} regions")
    if step.at is not None:
        # Any region's address range may be the target (it stays reserved for
        # its region in every process), but it must be named before.
        if step.at.region not in flow.region_owner:
            raise _FlowError(f"at.region {step.at.region!r} is not defined (mmap) before this step")
    elif step.fixed:
        raise _FlowError("'fixed' needs 'at' (a region's own range is never occupied)")
    flow.region_owner[step.region] = step.proc
    flow.alive[step.proc].append(step.region)


@FLOW.on(RangeStep)
def _range(flow: _Flow, step: RangeStep) -> None:
    if step.region not in flow.region_owner:
        raise _FlowError(f"region {step.region!r} is not defined (mmap) before this step")
    if step.region not in flow.alive[step.proc]:
        raise _FlowError(
            f"region {step.region!r} belongs to {flow.region_owner[step.region]!r}, "
            f"not to {step.proc!r} (nor was it inherited by fork)"
        )


@FLOW.on(Mremap)
def _mremap(flow: _Flow, step: Mremap) -> None:
    """A move defines ``new_region`` in ``proc`` (the old region keeps its name and whatever
    pages stay); ``to`` names any region defined before, whose address range it is."""
    _range(flow, step)
    if step.to is None or step.new_region is None:
        return
    if step.to.region not in flow.region_owner:
        raise _FlowError(f"to: region {step.to.region!r} is not defined before this step")
    _claim(step.new_region, flow.region_owner, "region {!r} is already defined (a region "
           "name is defined once)", flow.region_owner, MAX_REGIONS,
           f"more than {MAX_REGIONS} regions")
    flow.region_owner[step.new_region] = step.proc
    flow.alive[step.proc].append(step.new_region)


@FLOW.on(Fork)
def _fork(flow: _Flow, step: Fork) -> None:
    _claim(step.child, flow.created, "process name {!r} is already used", flow.alive, MAX_PROCS,
           f"more than {MAX_PROCS} processes alive at once")
    parent_uid = flow.uids[step.proc]
    if step.uid is not None and parent_uid != 0 and step.uid != parent_uid:
        # setresuid() to another uid needs CAP_SETUID (kernel/sys.c).
        raise _FlowError(
            f"process {step.proc!r} has uid {parent_uid}: its child cannot become "
            f"uid {step.uid} (only uid 0 may change uid)"
        )
    flow.alive[step.child] = list(flow.alive[step.proc])
    flow.uids[step.child] = parent_uid if step.uid is None else step.uid
    flow.created.append(step.child)


@FLOW.on(Exit)
def _exit(flow: _Flow, step: Exit) -> None:
    del flow.alive[step.proc]
    flow.exited[step.proc] = step.index


def validate_flow(steps: Sequence[AnyStep], path: str) -> dict[int, tuple[Target, ...]]:
    """Check names against the processes and regions that exist at each step.

    Returns the targets of every check step (by step index): processes in
    order of creation, and for each every region it has had (its own mmaps
    and those inherited at fork, including regions since unmapped).
    ScenarioError (one line naming ``path`` and the step) at the first problem.
    """
    flow = _Flow()
    for step in steps:
        try:
            proc = getattr(step, "proc", None)  # a check may name none
            if proc is not None:
                flow.need_proc(proc)
            FLOW(flow, step)
        except _FlowError as e:
            raise ScenarioError(f"{path}: {step.label}: {e}") from None
    return flow.targets
