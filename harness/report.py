"""Reports of a run: text for a kernel developer, JSON for tools.

The text form groups divergences by scenario, then step, then (field, model
value, real value), so one wrong flag on forty pages is one line listing forty
places, and different mistakes stand apart:

    FAIL fork_cow on x86_64: 3 divergences
      step 5 (check)
        kpagecount: model 2, real 1 (2 frames)
            pfn model 0x100 / real 0x3f2a1 (main:a+0, child:a+0)
            ...

The JSON form (:func:`render_json`) carries every divergence with every field.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.compare import CompareError, Divergence, compare
from harness.observations import ObservationError, Observations
from harness.scenario import ScenarioError, load_scenario
from sim.arch import UnknownArchError, get_arch

__all__ = [
    "ScenarioResult",
    "Status",
    "compare_recorded",
    "main",
    "render_json",
    "render_text",
    "summary_line",
]

Status = Literal["agree", "diverge", "error", "skipped"]

#: Places listed under one group before "... and N more".
DEFAULT_PLACES = 4


@dataclass(frozen=True)
class ScenarioResult:
    """The outcome of one scenario on one architecture.

    ``message`` is the error (an executor failed: the one-line reason, with
    the console tail or log path if there is one) or the reason for skipping.
    """

    scenario: str
    arch: str
    status: Status
    divergences: tuple[Divergence, ...] = ()
    message: str = ""

    @classmethod
    def from_divergences(
        cls, scenario: str, arch: str, divergences: Iterable[Divergence]
    ) -> ScenarioResult:
        found = tuple(divergences)
        return cls(scenario, arch, "diverge" if found else "agree", found)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "arch": self.arch,
            "status": self.status,
            "message": self.message,
            "divergences": [d.to_json() for d in self.divergences],
        }


_LABEL = {"agree": "ok  ", "diverge": "FAIL", "error": "ERR ", "skipped": "skip"}

#: Fields whose values are flag words: grouped by which flags differ, not by value,
#: so one missing flag on frames of different kinds is one group.
FLAG_FIELDS = frozenset({"kpageflags", "kpagemap.flags"})

GroupKey = tuple[str, ...]


def _group_key(d: Divergence) -> GroupKey:
    if d.kind == "value" and d.field in FLAG_FIELDS and d.detail:
        return (d.kind, d.field, d.detail)
    return (d.kind, d.field, d.model, d.real, d.side or "")


def _what(group: Sequence[Divergence]) -> str:
    frames = any(x.model_pfn is not None or x.real_pfn is not None for x in group)
    return f"{len(group)} {'frame' if frames else 'place'}{'s' * (len(group) != 1)}"


def _heading(group: Sequence[Divergence]) -> str:
    d = group[0]
    count = f" ({_what(group)})" if len(group) > 1 else ""
    if d.kind == "consistency":
        value = d.real if d.side == "real" else d.model
        return f"{d.field} inconsistent on the {d.side} side: {value}{count}"
    if d.kind == "value" and d.field in FLAG_FIELDS and d.detail:
        return f"{d.field}: {d.detail}{count}"
    kind = {"identity": " identity", "missing": " missing"}.get(d.kind, "")
    return f"{d.field}{kind}: model {d.model}, real {d.real}{count}"


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _summary(divergences: Sequence[Divergence]) -> list[str]:
    """One line per kind of difference across all steps, most frequent first."""
    groups: dict[GroupKey, list[Divergence]] = {}
    for d in divergences:
        groups.setdefault(_group_key(d), []).append(d)
    lines = []
    for group in sorted(groups.values(), key=lambda g: -len(g)):
        steps = sorted({d.step for d in group})
        where = ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "")
        head = _heading(group[:1])
        lines.append(f"  {len(group):4d} x {_short(head)}  [step{'s' * (len(steps) > 1)} {where}]")
    return lines


def _render_result(result: ScenarioResult, places: int) -> list[str]:
    head = f"{_LABEL[result.status]} {result.scenario} on {result.arch}"
    if result.status == "agree":
        return [head]
    if result.status in ("error", "skipped"):
        return [f"{head}: {result.message}"]
    n = len(result.divergences)
    lines = [f"{head}: {n} divergence{'s' * (n != 1)}"]
    lines += _summary(result.divergences)
    by_step: dict[tuple[int, str], list[Divergence]] = {}
    for d in result.divergences:
        by_step.setdefault((d.step, d.op), []).append(d)
    for (step, op), items in sorted(by_step.items()):
        lines.append(f"  step {step} ({op})")
        groups: dict[GroupKey, list[Divergence]] = {}
        for d in items:
            groups.setdefault(_group_key(d), []).append(d)
        for group in groups.values():
            first = group[0]
            lines.append(f"    {_heading(group)}")
            if first.kind == "value" and first.field in FLAG_FIELDS and first.detail:
                lines.append(f"        e.g. model {first.model}, real {first.real}")
            elif first.detail:
                lines.append(f"        {first.detail}")
            for d in group[:places]:
                if d.location != "-":
                    lines.append(f"        at {d.location}")
            if len(group) > places:
                lines.append(f"        ... and {len(group) - places} more")
    return lines


def summary_line(results: Sequence[ScenarioResult]) -> str:
    """``12 runs: 9 agree, 2 diverge (31 divergences), 1 skipped``."""
    counts = Counter(r.status for r in results)
    total = sum(len(r.divergences) for r in results)
    parts = []
    for status in ("agree", "diverge", "error", "skipped"):
        if counts[status]:
            text = f"{counts[status]} {status}"
            if status == "diverge":
                text += f" ({total} divergence{'s' * (total != 1)})"
            parts.append(text)
    return f"{len(results)} run{'s' * (len(results) != 1)}: {', '.join(parts) or 'none'}"


def render_text(results: Sequence[ScenarioResult], *, places: int = DEFAULT_PLACES) -> str:
    """The human report: one block per run, a summary line last."""
    lines: list[str] = []
    for result in results:
        lines.extend(_render_result(result, places))
    lines.append(summary_line(results))
    return "\n".join(lines) + "\n"


def render_json(results: Sequence[ScenarioResult]) -> str:
    """Every run and every divergence with all its fields."""
    counts = Counter(r.status for r in results)
    obj = {
        "summary": {
            "runs": len(results),
            **{status: counts[status] for status in ("agree", "diverge", "error", "skipped")},
            "divergences": sum(len(r.divergences) for r in results),
        },
        "results": [r.to_json() for r in results],
    }
    return json.dumps(obj, indent=1) + "\n"


def compare_recorded(scenario_path: str | Path, model_path: str | Path,
                     real_path: str | Path) -> ScenarioResult:
    """Compare two recorded runs (:meth:`Observations.save`) of one scenario, offline.

    Raises ScenarioError, ObservationError or CompareError (one line each).
    """
    scenario = load_scenario(scenario_path)
    model = Observations.load(model_path)
    real = Observations.load(real_path)
    arch = get_arch(model.arch)
    return ScenarioResult.from_divergences(
        scenario.name, arch.name, compare(model, real, scenario, arch)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.report SCENARIO MODEL.json REAL.json [--json]``.

    Exit status 0 when the runs agree, 1 when they diverge, 2 on bad input.
    """
    parser = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Compare two recorded runs of a scenario and report the divergences.",
    )
    parser.add_argument("scenario", help="the scenario file both runs ran")
    parser.add_argument("model", help="the model's recorded observations (JSON)")
    parser.add_argument("real", help="the kernel's recorded observations (JSON)")
    parser.add_argument("--json", action="store_true", help="print the JSON form")
    args = parser.parse_args(argv)
    try:
        result = compare_recorded(args.scenario, args.model, args.real)
    except (ScenarioError, ObservationError, CompareError, UnknownArchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(render_json([result]) if args.json else render_text([result]))
    return 0 if result.status == "agree" else 1


if __name__ == "__main__":
    sys.exit(main())
