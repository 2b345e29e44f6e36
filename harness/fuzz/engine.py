"""One fuzz worker: a warm VM, hypothesis rounds, divergences shrunk and written out.

Each example is a scenario from :func:`harness.fuzz.generate.scenarios`, run
by :func:`harness.run.run_scenario`, exactly as ``harness run`` runs a file:
the model on a fresh machine, the guest in the worker's VM, compared by
:func:`harness.compare.compare`.  Between examples the VM is reset (every
named process killed and reaped, so every scenario mapping is unmapped; the
per-CPU LRU batches drained), and replaced when the example left it dead or
in doubt (``RunOutcome.replace_vm``).

A *finding* is an example that diverges or errs.  Its signature is how it
fails: ``(kind, field)`` of its first divergence (``("value",
"pagemap.soft_dirty")``), or ``("error", cause)`` for a model, guest or
compare error (a guest crash, hang or agent error: the VM is replaced and
the console tail is part of the message).  The test body raises one
exception class per signature, so hypothesis' shrinker, which only accepts
a smaller example that fails at the same place with the same exception
type, shrinks each finding to a minimal scenario that fails *the same way*;
a different failure met while shrinking is a finding of its own.  The last
example of each signature hypothesis runs is its final replay of the
minimal one: that is what is written under ``out``
(``NAME.scenario.json``, ``NAME.report.txt``, ``NAME.report.json``).

The campaign runs in rounds of hypothesis examples (seed ``seed + round``)
until its time or example budget is spent; a signature found in one round
is not shrunk again in later ones (they count it and go on).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, reject, seed, settings
from hypothesis.errors import HypothesisException

from harness.agent.protocol import ProtBits, SettleFlags
from harness.errors import AgentOpError, VMError
from harness.fuzz.generate import ScenarioData, scenario_from_data, scenarios
from harness.guest_executor import KHUGEPAGED_SLEEP_MS, prepare_guest
from harness.report import ScenarioResult, render_json, render_text
from harness.run import RunOutcome, run_scenario
from harness.scenario import ScenarioError, layout_base
from harness.vm import VM, VMConfig, VMState
from sim.mm.madvise import MADV

__all__ = [
    "Campaign",
    "CampaignStats",
    "Finding",
    "FuzzSettings",
    "Signature",
    "WarmVM",
    "signature",
]

#: How a finding fails: (divergence kind, field), or ("error", cause).
Signature = tuple[str, str]

#: Examples per hypothesis round (one seed each).
ROUND_EXAMPLES = 100
#: Bound of one agent request while fuzzing: a hang is a finding, found fast.
FUZZ_OP_TIMEOUT_S = 30.0
#: The named process that holds khugepaged's mm list non-empty (never reset).
WARMUP_PROC = "fuzz.warmup"
_THP = "/sys/kernel/mm/transparent_hugepage"
_KHUGEPAGED = f"{_THP}/khugepaged"
#: Seconds to wait for khugepaged's one pass after the warm-up wakes it.
_KHUGEPAGED_PASS_S = 10.0


@dataclass(frozen=True)
class FuzzSettings:
    """One worker's campaign: a budget (seconds or examples), a seed, where findings go."""

    seconds: float | None = None
    examples: int | None = None
    seed: int = 0
    out: Path | None = None
    max_steps: int = 20
    #: Shrink findings (off: report the first example of each signature as found).
    shrink: bool = True
    worker: str = "w0"
    #: End the campaign after the round that found something (tests).
    stop_on_finding: bool = False


@dataclass
class Finding:
    """A signature and the smallest example of it hypothesis ran last."""

    signature: Signature
    data: ScenarioData
    result: ScenarioResult
    first_steps: int
    seen: int = 1

    @property
    def steps(self) -> int:
        return len(self.data["steps"])


@dataclass
class CampaignStats:
    """What a campaign did; times in seconds."""

    examples: int = 0
    #: Examples the loader refused (the generator's waste; expected 0).
    rejected: int = 0
    checks: int = 0
    steps: int = 0
    agree: int = 0
    diverge: int = 0
    errors: int = 0
    vm_boots: int = 0
    run_seconds: float = 0.0
    reset_seconds: float = 0.0
    wall_seconds: float = 0.0
    ops: Counter[str] = field(default_factory=Counter)
    op_pairs: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        per_s = self.examples / self.wall_seconds if self.wall_seconds else 0.0
        return {
            "examples": self.examples,
            "rejected": self.rejected,
            "rejection_rate": self.rejected / self.examples if self.examples else 0.0,
            "checks": self.checks,
            "steps": self.steps,
            "agree": self.agree,
            "diverge": self.diverge,
            "errors": self.errors,
            "vm_boots": self.vm_boots,
            "run_seconds": round(self.run_seconds, 3),
            "reset_seconds": round(self.reset_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "examples_per_s": round(per_s, 2),
            "checks_per_s": round(self.checks / self.wall_seconds, 2) if self.wall_seconds else 0,
            "ops": dict(sorted(self.ops.items())),
            "op_pairs": len(self.op_pairs),
        }


def signature(result: ScenarioResult) -> Signature | None:
    """How ``result`` fails (None: it agrees or was skipped).

    A divergence: ``(kind, field)`` of its first difference.  An error: the
    cause with numbers, addresses and names of the run left out, so two
    hangs of one op are one signature.
    """
    if result.status == "diverge":
        first = result.divergences[0]
        return first.kind, first.field
    if result.status == "error":
        cause = re.sub(r"0x[0-9a-f]+|\d+|'[^']*'", "N", result.message)
        return "error", " ".join(cause.split(":")[:3])[:120]
    return None


class WarmVM:
    """The worker's VM: booted on first use, reset between examples, replaced when in doubt."""

    def __init__(self, config: VMConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.vm: VM | None = None
        self.boots = 0

    def get(self) -> VM:
        if self.vm is not None and self.vm.state is not VMState.RUNNING:
            self.replace()
        if self.vm is None:
            self.vm = VM(self.config, name=f"{self.name}.{self.boots}")
            self.boots += 1
            self.vm.launch()
            _spend_khugepaged_wakeup(self.vm)
        return self.vm

    def reset(self) -> bool:
        """Kill every scenario process (their mappings go with them), drain the LRU batches.

        False (and the VM shut down) if the guest did not answer: the next
        example boots a new one.
        """
        vm = self.vm
        if vm is None:
            return True
        try:
            for name in vm.agent.list_processes():
                if name != WARMUP_PROC:
                    vm.agent.kill(name)
            vm.agent.settle(SettleFlags.DRAIN_LRU)
        except (VMError, AgentOpError):
            self.replace()
            return False
        return True

    def replace(self) -> None:
        if self.vm is not None:
            self.vm.shutdown()
            self.vm = None

    def close(self) -> None:
        self.replace()


def _full_scans(vm: VM) -> int | None:
    got = vm.agent.read_file(f"{_KHUGEPAGED}/full_scans", 64)
    return int(got.data) if got.ok else None


def _await_pass(vm: VM, before: int | None) -> None:
    """Wait (bounded) until khugepaged's ``full_scans`` moves past ``before``."""
    deadline = time.monotonic() + _KHUGEPAGED_PASS_S
    while _full_scans(vm) == before and time.monotonic() < deadline:
        time.sleep(0.05)


def _spend_khugepaged_wakeup(vm: VM) -> None:
    """Spend khugepaged's wake-ups before the first scenario, then take its baseline.

    With ``enabled`` = madvise khugepaged sleeps until an mm registers
    (MADV_HUGEPAGE on a VMA with an anon_vma: khugepaged_enter_vma() ->
    __khugepaged_enter() wakes it when its mm list was empty), and then
    scans at once (khugepaged_do_scan(), mm/khugepaged.c) before its
    ``scan_sleep_millisecs`` sleep; writing that knob wakes it too.  Without
    this, the first scenario of a VM that advises hugepage on populated
    pages can be collapsed under it (found by this fuzzer: every later run
    then fails the quiescence check).  So: the scan interval is set to a day,
    a throwaway process (:data:`WARMUP_PROC`) advises a populated region and
    the pass is awaited (``full_scans`` moves); then :func:`prepare_guest`
    takes its baseline and the pass its own knob write causes is awaited.
    The process lives as long as the VM: its mm slot keeps khugepaged's list
    non-empty, so khugepaged stays in its timed sleep and no scenario's
    MADV_HUGEPAGE wakes it (killing it would free the slot in
    __khugepaged_exit() and the next registration would wake it again).
    """
    agent = vm.agent
    if not agent.read_file(f"{_THP}/enabled", 64).ok:
        return  # no THP: no khugepaged
    for knob in ("scan_sleep_millisecs", "alloc_sleep_millisecs"):
        agent.write_file(f"{_KHUGEPAGED}/{knob}", f"{KHUGEPAGED_SLEEP_MS}\n")
    before = _full_scans(vm)
    agent.fork(WARMUP_PROC)
    arch = vm.profile.arch
    vaddr, length = layout_base(arch), arch.thp_pages * arch.page_size
    agent.mmap(vaddr, length, prot=ProtBits.READ | ProtBits.WRITE, target=WARMUP_PROC)
    agent.touch(vaddr, 1, write=True, target=WARMUP_PROC)
    agent.madvise(vaddr, length, MADV.HUGEPAGE, target=WARMUP_PROC)
    _await_pass(vm, before)
    before = _full_scans(vm)
    prepare_guest(vm)
    _await_pass(vm, before)


class _Failure(Exception):
    """Base of the per-signature exceptions the test body raises."""


_FAILURE_TYPES: dict[Signature, type[_Failure]] = {}


def _failure_type(sig: Signature) -> type[_Failure]:
    """One exception class per signature: hypothesis shrinks each on its own."""
    if sig not in _FAILURE_TYPES:
        name = "Fails_" + re.sub(r"\W+", "_", "_".join(sig))[:80]
        _FAILURE_TYPES[sig] = type(name, (_Failure,), {})
    return _FAILURE_TYPES[sig]


class Campaign:
    """One worker's fuzz campaign against the kernel in ``warm``'s VMs.

    ``run()`` returns the findings (by signature); ``stats`` says what was
    done.  Only KeyboardInterrupt and the like escape; the VM is shut down
    either way by the caller's ``warm.close()``.
    """

    def __init__(self, warm: WarmVM, fuzz: FuzzSettings,
                 progress: Callable[[str], None] = lambda _: None) -> None:
        self.warm = warm
        self.fuzz = fuzz
        self.progress = progress
        self.arch = warm.config.profile.arch
        self.stats = CampaignStats()
        self.findings: dict[Signature, Finding] = {}
        #: Signatures of earlier rounds: counted, not shrunk again.
        self._known: set[Signature] = set()
        self._deadline = float("inf")
        self._budget = fuzz.examples

    # -- the hypothesis test body ------------------------------------------------

    def example(self, data: ScenarioData) -> None:
        """Run one example; raises the signature's exception if it fails."""
        if self._out_of_budget():
            return
        try:
            scenario = scenario_from_data(data, self.arch)
        except ScenarioError:
            self.stats.rejected += 1
            reject()
        vm = self.warm.get()
        started = time.monotonic()
        outcome = run_scenario(scenario, vm)
        self.stats.run_seconds += time.monotonic() - started
        self._count(data, outcome)
        started = time.monotonic()
        if outcome.replace_vm or outcome.result.status == "error":
            # After any error the guest's state is in doubt: a new VM.
            self.warm.replace()
        else:
            self.warm.reset()
        self.stats.reset_seconds += time.monotonic() - started
        sig = signature(outcome.result)
        if sig is None:
            return
        if sig in self._known:
            self.findings[sig].seen += 1
            return
        found = self.findings.get(sig)
        if found is None:
            self.progress(f"{self.fuzz.worker}: found {sig[0]} {sig[1]} "
                          f"({len(data['steps'])} steps); shrinking")
            self.findings[sig] = Finding(sig, data, outcome.result, len(data["steps"]))
        else:
            # Hypothesis runs the minimal example of each failure last.
            found.data, found.result = data, outcome.result
            found.seen += 1
        raise _failure_type(sig)(f"{sig[0]} {sig[1]}")

    def _out_of_budget(self) -> bool:
        """The time is up, or the example budget is spent and nothing of this round
        is being shrunk (shrinking a new finding may go past the example budget)."""
        if time.monotonic() >= self._deadline:
            return True
        shrinking = any(sig not in self._known for sig in self.findings)
        return (self._budget is not None and self.stats.examples >= self._budget
                and not shrinking)

    def _count(self, data: ScenarioData, outcome: RunOutcome) -> None:
        stats = self.stats
        stats.examples += 1
        ops = [step["op"] for step in data["steps"]]
        stats.steps += len(ops)
        stats.checks += ops.count("check")
        stats.ops.update(ops)
        stats.op_pairs.update(f"{a}>{b}" for a, b in itertools.pairwise(ops))
        status = outcome.result.status
        if status == "agree":
            stats.agree += 1
        elif status == "diverge":
            stats.diverge += 1
        else:
            stats.errors += 1

    # -- rounds ----------------------------------------------------------------

    def run(self) -> dict[Signature, Finding]:
        """Rounds until the budget is spent; findings written under ``out`` (if set)."""
        started = time.monotonic()
        if self.fuzz.seconds is not None:
            self._deadline = started + self.fuzz.seconds
        boots_before = self.warm.boots
        round_number = 0
        try:
            while not self._out_of_budget():
                self._round(round_number)
                round_number += 1
                self._known.update(self.findings)
                if self.findings and self.fuzz.stop_on_finding:
                    break
            if self.fuzz.shrink:
                for finding in self.findings.values():
                    self._drop_steps(finding)
        finally:
            self.stats.wall_seconds = time.monotonic() - started
            self.stats.vm_boots = self.warm.boots - boots_before
        if self.fuzz.out is not None:
            self.write(self.fuzz.out)
        return self.findings

    def _round(self, number: int) -> None:
        examples = ROUND_EXAMPLES
        if self._budget is not None:
            examples = max(1, min(examples, self._budget - self.stats.examples))
        phases = [Phase.generate, Phase.shrink] if self.fuzz.shrink else [Phase.generate]
        strategy = scenarios(self.arch, self.fuzz.max_steps, name=f"fuzz_{self.fuzz.worker}")

        @seed(self.fuzz.seed * 100_003 + number)
        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=phases,
            report_multiple_bugs=True,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(strategy)
        def fuzz_round(data: ScenarioData) -> None:
            self.example(data)

        # Flaky (a finding that did not fail again on its replay, e.g. the
        # budget ran out while shrinking) leaves the findings as recorded.
        with contextlib.suppress(_Failure, ExceptionGroup, HypothesisException):
            fuzz_round()

    def _drop_steps(self, finding: Finding) -> None:
        """After hypothesis: drop single steps while the rest still fails the same way.

        Hypothesis shrinks the choices that made the scenario; when its
        budget ends first, a step it had not reached yet may be left over.
        One pass over the steps, last to first (the final check stays),
        each candidate loaded (so only valid scenarios run) and run as any
        example; at most one run per step.
        """
        steps = list(finding.data["steps"])
        for i in reversed(range(len(steps) - 1)):
            candidate = dict(finding.data, steps=steps[:i] + steps[i + 1 :])
            try:
                scenario = scenario_from_data(candidate, self.arch)
            except ScenarioError:
                continue
            outcome = run_scenario(scenario, self.warm.get())
            self._count(candidate, outcome)
            if outcome.replace_vm or outcome.result.status == "error":
                self.warm.replace()
            else:
                self.warm.reset()
            if signature(outcome.result) == finding.signature:
                steps = candidate["steps"]
                finding.data, finding.result = candidate, outcome.result

    # -- output ----------------------------------------------------------------

    def write(self, out: Path) -> list[Path]:
        """Each finding as ``NAME.scenario.json`` + ``NAME.report.{txt,json}``; their paths."""
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for n, finding in enumerate(self.findings.values()):
            stem = f"{self.arch.name}.{self.fuzz.worker}.{n}." + re.sub(
                r"[^A-Za-z0-9_.-]+", "_", "_".join(finding.signature)
            )[:60]
            data = dict(finding.data, name=re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64])
            data["description"] = (
                f"Found by harness fuzz on {self.arch.name} (seed {self.fuzz.seed}): "
                f"{finding.signature[0]} {finding.signature[1]}, shrunk from "
                f"{finding.first_steps} to {finding.steps} steps."
            )
            path = out / f"{stem}.scenario.json"
            path.write_text(_scenario_text(data))
            result = finding.result
            (out / f"{stem}.report.txt").write_text(render_text([result]))
            (out / f"{stem}.report.json").write_text(render_json([result]))
            written.append(path)
        (out / f"{self.arch.name}.{self.fuzz.worker}.stats.json").write_text(
            json.dumps(self.summary(), indent=1) + "\n"
        )
        return written

    def summary(self) -> dict[str, Any]:
        """Stats and findings as JSON."""
        return {
            "arch": self.arch.name,
            "worker": self.fuzz.worker,
            "seed": self.fuzz.seed,
            "stats": self.stats.to_json(),
            "findings": [
                {"signature": list(f.signature), "steps": f.steps, "first_steps": f.first_steps,
                 "seen": f.seen, "scenario": f.data}
                for f in self.findings.values()
            ],
        }


def _scenario_text(data: ScenarioData) -> str:
    """The catalog's layout: one step a line."""
    steps = ",\n".join("  " + json.dumps(step) for step in data["steps"])
    head = {k: v for k, v in data.items() if k != "steps"}
    fields = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items())
    return "{\n" + fields + ',\n "steps": [\n' + steps + "\n ]\n}\n"


@contextlib.contextmanager
def warm_vm(config: VMConfig, name: str) -> Iterator[WarmVM]:
    """A :class:`WarmVM` shut down on leaving, however it is left."""
    warm = WarmVM(config, name)
    try:
        yield warm
    finally:
        warm.close()
