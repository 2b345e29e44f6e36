"""A scenario run in a guest process and in the model side by side, for probes between steps.

Tests that probe the proc files themselves (privilege checks, PAGEMAP_SCAN's
argument sweep) first build the same state on both sides: the scenario's
steps, applied by :class:`~harness.guest_executor.GuestRun` in a named
process the test owns and by :class:`~harness.model_executor.ModelRun`.
"""

from __future__ import annotations

from harness.guest_executor import GuestRun, prepare_guest
from harness.model_executor import ModelRun
from harness.process import NamedProcess
from harness.scenario import Scenario
from harness.vm import VM

__all__ = ["LockstepError", "lockstep"]


class LockstepError(RuntimeError):
    """A step did not end ``ok`` on both sides (the message names the step and both outcomes)."""


def lockstep(scenario: Scenario, vm: VM, main: NamedProcess) -> tuple[GuestRun, ModelRun]:
    """Apply every step of ``scenario`` in ``vm`` (its ``main`` being the process ``main``)
    and in a fresh model of ``vm``'s arch; the two runs, ready for probes.

    Raises LockstepError when a step's outcome is not ``ok`` on both sides.
    """
    prepare_guest(vm)
    real = GuestRun(scenario, vm)
    real.names["main"], real.pids["main"] = main.name, main.pid
    model = ModelRun(scenario, vm.profile.arch)
    for step in scenario.steps:
        outcomes = (real.step(step), model.step(step))
        if not all(o.status == "ok" for o in outcomes):
            raise LockstepError(f"{step.label}: {outcomes}")
    return real, model
