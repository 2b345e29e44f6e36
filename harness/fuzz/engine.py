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

from harness.agent.protocol import SettleFlags
from harness.errors import AgentOpError, VMError
from harness.fuzz.generate import ScenarioData, scenario_from_data, scenarios
from harness.fuzz.reach import CoverageReport, ModelCoverage
from harness.guest_executor import prepare_guest
from harness.khugepaged import HOLDER_PROC
from harness.report import ScenarioResult, render_json, render_text
from harness.run import RunOutcome, run_scenario
from harness.scenario import Scenario, ScenarioError
from harness.vm import VM, VMConfig, VMState
from sim.arch import Arch

__all__ = [
    "Campaign",
    "CampaignStats",
    "Finding",
    "FuzzSettings",
    "Signature",
    "WarmVM",
    "drop_steps",
    "signature",
]

#: How a finding fails: (divergence kind, field), or ("error", cause).
Signature = tuple[str, str]

#: Examples per hypothesis round (one seed each).
ROUND_EXAMPLES = 100
#: Bound of one agent request while fuzzing: a hang is a finding, found fast.
FUZZ_OP_TIMEOUT_S = 30.0


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
    #: Trace the model's code for the coverage of MODEL.md's rules (harness.fuzz.reach).
    coverage: bool = True
    #: Scenarios with swap (``"swap": true``) in a VM with swap: pageout swaps, and
    #: swapon/swapoff are drawn (harness.fuzz.generate.scenarios(swap=True)).
    swap: bool = False


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
    #: What compare held side by side over all examples (harness.compared.Compared's names).
    compared: Counter[str] = field(default_factory=Counter)

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
            "compared": dict(self.compared),
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
            prepare_guest(self.vm)  # spends khugepaged's wake-up (harness.khugepaged)
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
                if name != HOLDER_PROC:
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
        #: The model's lines that ran (None: not traced).
        self.model_coverage = ModelCoverage() if fuzz.coverage else None

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
        outcome = self._run(scenario, vm)
        self.stats.run_seconds += time.monotonic() - started
        self._count(data, outcome)
        started = time.monotonic()
        if outcome.replace_vm or (outcome.result.status == "error" and outcome.model is not None):
            # After any error of the guest side its state is in doubt: a new VM.  A model
            # error ("not modelled: ...", frequent with --swap) ends the run before the
            # guest does anything: the VM is only reset.
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

    def _run(self, scenario: Scenario, vm: VM) -> RunOutcome:
        """``harness run``'s run of one scenario, the model's lines traced if asked."""
        if self.model_coverage is None:
            return run_scenario(scenario, vm)
        # The whole run is traced, but only the model's files are: the guest
        # side costs the tracer a check per call, not per line.
        with self.model_coverage.recording():
            return run_scenario(scenario, vm)

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
        if (compared := outcome.result.compared) is not None:
            stats.compared.update(compared.to_json())
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
        strategy = scenarios(self.arch, self.fuzz.max_steps, name=f"fuzz_{self.fuzz.worker}",
                             swap=self.fuzz.swap)

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
        """After hypothesis: :func:`drop_steps` with this campaign's runs."""

        def still_fails(candidate: ScenarioData, scenario: Scenario) -> bool:
            outcome = self._run(scenario, self.warm.get())
            self._count(candidate, outcome)
            if outcome.replace_vm or outcome.result.status == "error":
                self.warm.replace()
            else:
                self.warm.reset()
            if signature(outcome.result) != finding.signature:
                return False
            finding.data, finding.result = candidate, outcome.result
            return True

        drop_steps(finding.data, self.arch, still_fails)

    # -- output ----------------------------------------------------------------

    def write(self, out: Path) -> list[Path]:
        """Each finding as ``NAME.scenario.json`` + ``NAME.report.{txt,json}``; their paths."""
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for n, finding in enumerate(self.findings.values()):
            stem = self._stem(n, finding)
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

    def _stem(self, n: int, finding: Finding) -> str:
        """The file name stem of the ``n``-th finding's scenario and reports under ``out``."""
        return f"{self.arch.name}.{self.fuzz.worker}.{n}." + re.sub(
            r"[^A-Za-z0-9_.-]+", "_", "_".join(finding.signature))[:60]

    def coverage(self) -> CoverageReport:
        """Ops, op pairs and MODEL.md rules this campaign reached (so far)."""
        traced = self.model_coverage
        return CoverageReport(
            ops=Counter(self.stats.ops), op_pairs=Counter(self.stats.op_pairs),
            reached=traced.reached() if traced is not None else set(),
            rules=traced.rules if traced is not None else None,
            traced=traced is not None,
        )

    def summary(self) -> dict[str, Any]:
        """Stats, coverage (:meth:`CoverageReport.to_json`) and findings as JSON
        (``stem``: the finding's files under ``out``)."""
        return {
            "arch": self.arch.name,
            "worker": self.fuzz.worker,
            "seed": self.fuzz.seed,
            "stats": self.stats.to_json(),
            "coverage": self.coverage().to_json(),
            "findings": [
                {"signature": list(f.signature), "steps": f.steps, "first_steps": f.first_steps,
                 "seen": f.seen, "scenario": f.data, "stem": self._stem(n, f)}
                for n, f in enumerate(self.findings.values())
            ],
        }


#: Rounds of :func:`drop_steps` (each replacement may make another step removable).
_DROP_PASSES = 3


def drop_steps(
    data: ScenarioData, arch: Arch, still_fails: Callable[[ScenarioData, Scenario], bool]
) -> ScenarioData:
    """``data`` made smaller, one step at a time, while it still fails the same way.

    Hypothesis shrinks the choices that made the scenario; when its budget
    ends first, or a step is only removable together with a change the
    shrinker does not try (it deletes a step's choices, and the choices
    after it are then read against another state), a step may be left over.
    Passes over the steps, last to first (the final check stays): delete a
    step; else, for a step on a range that is no read or write (an mlock or
    populate that faulted the pages in, an mprotect, a move), replace it by
    a read of that range, which maps the same pages with fewer side effects
    (a fork that only existed to make a page shared may then go in the next
    pass); for a fork, drop it and give its child's later steps to the parent
    (one process fewer when the child only did what the parent could).  Each
    candidate is loaded first (one the loader refuses, e.g. a fork whose child
    a later step uses, is not run) and kept if
    ``still_fails(candidate, its loaded scenario)``.  At most
    :data:`_DROP_PASSES` passes, each at most two runs per step.
    """
    steps = list(data["steps"])

    def fails(candidate_steps: list[dict[str, Any]]) -> bool:
        candidate = dict(data, steps=candidate_steps)
        try:
            scenario = scenario_from_data(candidate, arch)
        except ScenarioError:
            return False
        return still_fails(candidate, scenario)

    for _ in range(_DROP_PASSES):
        changed = False
        for i in reversed(range(len(steps) - 1)):
            if i >= len(steps) - 1:
                continue
            if fails(steps[:i] + steps[i + 1 :]):
                steps = steps[:i] + steps[i + 1 :]
                changed = True
                continue
            step = steps[i]
            if step["op"] == "fork":
                merged = _merge_child(steps, i)
                if merged is not None and fails(merged):
                    steps = merged
                    changed = True
                    continue
            if step["op"] not in ("read", "write") and "region" in step and "pages" in step:
                read = {"op": "read", "region": step["region"], "pages": step["pages"]}
                if "proc" in step:
                    read["proc"] = step["proc"]
                replaced = [*steps[:i], read, *steps[i + 1 :]]
                if fails(replaced):
                    steps = replaced
                    changed = True
        if not changed:
            break
    return dict(data, steps=steps)


def _merge_child(steps: list[dict[str, Any]], i: int) -> list[dict[str, Any]] | None:
    """``steps`` without the fork at ``i``, its child's later steps the parent's; None
    if the child's name is given to another process later (the loader decides the rest)."""
    fork = steps[i]
    child, parent = fork["child"], fork.get("proc", "main")
    merged = steps[:i]
    for later in steps[i + 1 :]:
        later = dict(later)
        if later.get("child") == child:
            return None
        if later.get("proc") == child:
            if parent == "main":
                del later["proc"]
            else:
                later["proc"] = parent
        merged.append(later)
    return merged


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
