"""What a fuzz campaign reached: ops, op pairs, and the model's rules (kernel code paths).

* **Ops** and **op pairs** (step i's op, then step i+1's) are counted from the
  scenarios run; every op of :data:`harness.scenario.STEP_TYPES` and every
  ordered pair of them is possible, and those never run are listed.
* **Kernel code paths**: :class:`ModelCoverage` records, with coverage.py (its
  C tracer), which lines of the model's files ran while the campaign ran its
  scenarios, and :class:`harness.fuzz.rules.ModelRules` turns them into the
  kernel functions of sim/MODEL.md whose model code ran.  A rule is reached
  when one of its functions was; a function MODEL.md names that the model
  has no code for is reported as absent.

Only the model's files that hold an anchor are traced, so the guest side of
an example costs the tracer a C-level check per call and nothing per line
(benchmarks/bench_fuzz.py measures the overhead).

:class:`CoverageReport` is the result: JSON (mergeable across workers) and
text lines for the campaign summary.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import coverage

from harness.fuzz.rules import ModelRules, load_model_rules
from harness.scenario import STEP_TYPES

__all__ = ["CoverageReport", "ModelCoverage", "possible_op_pairs"]

#: At most this many names per "never" list in the text summary (JSON has all).
TEXT_LIST_MAX = 24


def possible_op_pairs() -> list[str]:
    """Every ``"a>b"``: op ``a`` at a step, op ``b`` at the next (any order is valid)."""
    return [f"{a}>{b}" for a, b in itertools.product(STEP_TYPES, repeat=2)]


class ModelCoverage:
    """Lines of the model's files that ran inside :meth:`recording` blocks, via coverage.py.

    ``rules`` says which files are the model's (default: as MODEL.md names
    them).  Coverage data stays in memory (no ``.coverage`` file).
    """

    def __init__(self, rules: ModelRules | None = None) -> None:
        self.rules = rules if rules is not None else load_model_rules()
        self._coverage = coverage.Coverage(
            data_file=None, config_file=False, branch=False,
            include=[str(path) for path in self.rules.anchored_files],
        )
        self._started = False

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Trace the model's files while the block runs (nested calls are not supported)."""
        self._coverage.start()
        self._started = True
        try:
            yield
        finally:
            self._coverage.stop()

    def executed(self) -> dict[str, set[int]]:
        """Absolute path -> line numbers that ran (so far)."""
        if not self._started:
            return {}
        data = self._coverage.get_data()
        return {os.path.realpath(path): set(data.lines(path) or ())
                for path in data.measured_files()}

    def reached(self) -> set[str]:
        """The kernel functions (MODEL.md's names) whose model code ran."""
        return self.rules.reached(self.executed())


@dataclass
class CoverageReport:
    """Ops, op pairs and kernel functions reached, against everything possible.

    ``ops`` and ``op_pairs`` count steps (``"a>b"`` keys); ``reached`` holds
    kernel function names as MODEL.md writes them.
    """

    ops: Counter[str] = field(default_factory=Counter)
    op_pairs: Counter[str] = field(default_factory=Counter)
    reached: set[str] = field(default_factory=set)
    rules: ModelRules | None = None
    #: Whether the model's lines were traced (False: no kernel functions, no rules).
    traced: bool = True

    def _rules(self) -> ModelRules:
        if self.rules is None:
            self.rules = load_model_rules()
        return self.rules

    @classmethod
    def merge(cls, reports: Iterable[Mapping[str, Any]],
              rules: ModelRules | None = None) -> CoverageReport:
        """One report of several workers' :meth:`to_json` outputs (counts summed, sets joined)."""
        merged = cls(rules=rules, traced=False)
        for report in reports:
            merged.ops.update(report["ops"]["counts"])
            merged.op_pairs.update(report["op_pairs"]["counts"])
            if report.get("kernel_functions") is not None:
                merged.traced = True
                merged.reached.update(report["kernel_functions"]["reached"])
        return merged

    def count(self, ops: list[str]) -> None:
        """Count the ops and op pairs of one scenario's steps (in order)."""
        self.ops.update(ops)
        self.op_pairs.update(f"{a}>{b}" for a, b in itertools.pairwise(ops))

    def to_json(self) -> dict[str, Any]:
        """Reached and never reached, per kind; rules with each function's state.

        A function's state: ``reached``, ``never`` (the model has code for it
        that did not run) or ``absent`` (the model has no code for it).  A
        rule is ``reached`` if any function of it was, ``absent`` if the
        model has code for none of them, else ``never``.
        """
        pairs = possible_op_pairs()
        found: dict[str, Any] = {
            "ops": {"counts": dict(sorted(self.ops.items())),
                    "reached": sum(1 for op in STEP_TYPES if self.ops[op]),
                    "possible": len(STEP_TYPES),
                    "never": [op for op in STEP_TYPES if not self.ops[op]]},
            "op_pairs": {"counts": dict(sorted(self.op_pairs.items())),
                         "reached": sum(1 for p in pairs if self.op_pairs[p]),
                         "possible": len(pairs),
                         "never": [p for p in pairs if not self.op_pairs[p]]},
            "kernel_functions": None,
            "rules": None,
        }
        if not self.traced:
            return found
        rules = self._rules()
        functions = rules.functions
        absent = set(rules.absent)

        def state(name: str) -> str:
            if name in absent:
                return "absent"
            return "reached" if name in self.reached else "never"

        rule_rows = []
        for rule in rules.rules:
            states = {f: state(f) for f in rule.functions}
            if "reached" in states.values():
                rule_state = "reached"
            elif set(states.values()) == {"absent"}:
                rule_state = "absent"
            else:
                rule_state = "never"
            rule_rows.append({"section": rule.section, "rule": rule.name,
                              "state": rule_state, "functions": states})
        found.update({
            "kernel_functions": {
                "reached": sorted(self.reached & set(functions)),
                "possible": len(functions) - len(absent),
                "never": [f for f in functions if state(f) == "never"],
                "absent": [f for f in functions if f in absent],
            },
            "rules": {
                "reached": sum(1 for r in rule_rows if r["state"] == "reached"),
                "possible": sum(1 for r in rule_rows if r["state"] != "absent"),
                "never": [f"{r['section']}: {r['rule']}" for r in rule_rows
                          if r["state"] == "never"],
                "absent": [f"{r['section']}: {r['rule']}" for r in rule_rows
                           if r["state"] == "absent"],
                "each": rule_rows,
            },
        })
        return found

    def text_lines(self) -> list[str]:
        """The summary's coverage lines: counts, then what was never reached."""
        data = self.to_json()
        ops, pairs = data["ops"], data["op_pairs"]
        functions, rules = data["kernel_functions"], data["rules"]
        head = (f"coverage: ops {ops['reached']}/{ops['possible']}, "
                f"op pairs {pairs['reached']}/{pairs['possible']}")
        lists = [("ops never run", ops["never"], ""), ("op pairs never run", pairs["never"], "")]
        if functions is None or rules is None:
            head += " (model code not traced)"
        else:
            head += (f", MODEL.md rules {rules['reached']}/{rules['possible']}, "
                     f"kernel functions {len(functions['reached'])}/{functions['possible']}")
            lists += [
                ("rules never reached", rules["never"], ""),
                ("kernel functions never reached", functions["never"], "()"),
                ("named in MODEL.md, absent from the model", functions["absent"], "()"),
            ]
        lines = [head]
        for label, names, suffix in lists:
            if names:
                lines.append(f"  {label}: {_shortlist(names, suffix)}")
        return lines


def _shortlist(names: list[str], suffix: str) -> str:
    shown = ", ".join(f"{n}{suffix}" for n in names[:TEXT_LIST_MAX])
    more = len(names) - TEXT_LIST_MAX
    return f"{shown}, ... ({more} more)" if more > 0 else shown
