"""Reports of a run: text for a kernel developer, JSON for tools.

The text form groups divergences by scenario, then step, then (field, model
value, real value), so one wrong flag on forty pages is one line listing forty
places, and different mistakes stand apart:

    FAIL fork_cow on x86_64: 3 divergences
      step 5 (check)
        kpagecount: model 2, real 1 (2 frames)
            pfn model 0x100 / real 0x3f2a1 (main:a+0, child:a+0)
            ...

The words are made here, from the typed values :func:`harness.compare.compare`
returns (:mod:`harness.differences`): :func:`describe_value` for a column,
:func:`detail` for the context, :func:`location` for the place.  The JSON form
(:func:`render_json`) carries every divergence with every field as values:
ints (PFNs, addresses, counts), lists of flag names, errno numbers and names.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.compare import CompareError, Comparison, compare_counted
from harness.compared import Compared, describe_compared
from harness.differences import (
    PSS_KB,
    ConflictRule,
    Divergence,
    EntryPair,
    FlagMismatch,
    FrameValues,
    Invalid,
    KpagemapSlot,
    KpfFlags,
    PageRange,
    PfnConflict,
    Presence,
    PssBounds,
    PssShare,
    RamTag,
    ScanRecord,
    ShortRead,
    SmapsText,
    Value,
    VmFlags,
)
from harness.observations import ObservationError, Observations, ReadResult, StepOutcome
from harness.scenario import SCAN_CATEGORIES, Scenario, ScenarioError, load_scenario
from sim.arch import UnknownArchError, get_arch
from sim.formats import PagemapEntry

__all__ = [
    "ScenarioResult",
    "Verdict",
    "compare_recorded",
    "describe_flags",
    "describe_pagemap",
    "describe_value",
    "detail",
    "divergence_lines",
    "flag_delta",
    "location",
    "main",
    "render_json",
    "render_text",
    "summary_line",
    "total_compared",
]

Verdict = Literal["agree", "diverge", "error", "skipped"]

#: Places listed under one group before "... and N more".
DEFAULT_PLACES = 4


@dataclass(frozen=True)
class ScenarioResult:
    """The outcome of one scenario on one architecture.

    ``message`` is the error (an executor failed: the one-line reason, with
    the console tail or log path if there is one) or the reason for skipping.
    ``by_step``: what compare held side by side at each step, (step, counts)
    in step order; empty when nothing was compared or nobody counted.
    """

    scenario: str
    arch: str
    status: Verdict
    divergences: tuple[Divergence, ...] = ()
    message: str = ""
    by_step: tuple[tuple[int, Compared], ...] = ()

    @classmethod
    def from_divergences(
        cls, scenario: str, arch: str, divergences: Iterable[Divergence]
    ) -> ScenarioResult:
        found = tuple(divergences)
        return cls(scenario, arch, "diverge" if found else "agree", found)

    @classmethod
    def from_comparison(cls, scenario: str, arch: str, comparison: Comparison) -> ScenarioResult:
        """The verdict of a :func:`~harness.compare.compare_counted` result, with its counts."""
        found = tuple(comparison.divergences)
        return cls(scenario, arch, "diverge" if found else "agree", found,
                   by_step=tuple(sorted(comparison.by_step.items())))

    @property
    def compared(self) -> Compared | None:
        """What the whole scenario compared; None if nobody counted."""
        return Compared.total(c for _, c in self.by_step) if self.by_step else None

    def to_json(self) -> dict[str, Any]:
        compared = self.compared
        return {
            "scenario": self.scenario,
            "arch": self.arch,
            "status": self.status,
            "message": self.message,
            "compared": None if compared is None else compared.to_json(),
            "compared_by_step": [{"step": step, **c.to_json()} for step, c in self.by_step],
            "divergences": [d.to_json() for d in self.divergences],
        }


_LABEL = {"agree": "ok  ", "diverge": "FAIL", "error": "ERR ", "skipped": "skip"}

#: Fields whose values are flag words: grouped by which flags differ, not by value,
#: so one missing flag on frames of different kinds is one group.
FLAG_FIELDS = frozenset({"kpageflags", "kpagemap.flags"})

#: Integer fields shown in hex (PFNs and swap entries); other integers are decimal.
HEX_FIELDS = frozenset({"pagemap.pfn", "pagemap.swap_type", "pagemap.swap_offset",
                        "scan.walk_end"})

Column = Literal["model", "real"]
GroupKey = tuple[object, ...]


# ---------------------------------------------------------------------------
# Values in words
# ---------------------------------------------------------------------------


def describe_pagemap(entry: PagemapEntry) -> str:
    """``present pfn=0x1234 exclusive soft_dirty``: an entry in words."""
    if entry.present:
        words = [f"present pfn={entry.pfn:#x}"]
    elif entry.swapped:
        words = [f"swapped type={entry.swap_type} offset={entry.swap_offset:#x}"]
    else:
        words = ["none"]
    words += [
        name
        for name in ("file_shared", "exclusive", "soft_dirty", "uffd_wp", "guard")
        if getattr(entry, name)
    ]
    return " ".join(words)


def describe_flags(flags: KpfFlags) -> str:
    """``0x5828 UPTODATE|LRU|MMAP|ANON|SWAPBACKED``."""
    return f"{flags.value:#x} {'|'.join(flags.names) or '(none)'}"


def flag_delta(model: KpfFlags, real: KpfFlags,
               labels: tuple[str, str] = ("model", "real")) -> str:
    """``model only: ANON; real only: KSM``: which flag names differ ('' if none)."""
    parts = []
    for label, names in ((labels[0], model.only_in_self(real)),
                         (labels[1], real.only_in_self(model))):
        if names:
            parts.append(f"{label} only: {' '.join(names)}")
    return "; ".join(parts)


def _describe_tag(tag: RamTag) -> str:
    """As harness.scenario.describe_tag words it."""
    region = tag.region if tag.region is None or tag.region.startswith("#") else repr(tag.region)
    if tag.origin == "zero":
        return "0x0 (zero: never written)"
    if tag.origin == "write":
        return f"{tag.value:#x} (write of step {tag.step}, region {region} page {tag.page})"
    if tag.origin == "file":
        return f"{tag.value:#x} (file contents, region {region} page {tag.page})"
    return f"{tag.value:#x} (not a tag)"


def describe_value(field: str, column: Column, value: Value) -> str:
    """One column of a divergence of ``field`` in words (as the report prints it)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        if field in HEX_FIELDS:
            return f"{value:#x}"
        return f"{value} bytes" if field == "pagemap.length" else str(value)
    if isinstance(value, bytes):
        return value.hex(" ")
    if isinstance(value, Presence):
        return f"no {column} frame paired" if value is Presence.UNPAIRED else value.value
    if isinstance(value, ReadResult | StepOutcome):
        return value.describe()
    if isinstance(value, ShortRead):
        return f"short read: {ReadResult.ok(value.data).describe()}"
    if isinstance(value, KpfFlags):
        return describe_flags(value)
    if isinstance(value, KpagemapSlot):
        return f"flags {describe_flags(value.flags)}, count {value.count}"
    if isinstance(value, FrameValues):
        return (f"kpageflags {describe_value(field, column, value.kpageflags)}, "
                f"kpagecount {describe_value(field, column, value.kpagecount)}, "
                f"kpagemap {describe_value(field, column, value.kpagemap)}")
    if isinstance(value, FlagMismatch):
        return (f"kpagemap.flags {describe_flags(value.kpagemap)} != "
                f"kpageflags {describe_flags(value.kpageflags)}")
    if isinstance(value, PageRange):
        return f"{value.pages} pages at {value.vaddr:#x}"
    if isinstance(value, RamTag):
        return _describe_tag(value)
    if isinstance(value, Invalid):
        if isinstance(value.raw, bytes):
            return f"invalid: {value.reason}"
        return f"invalid {value.raw:#018x}: {value.reason}"
    if isinstance(value, PagemapEntry):
        return describe_pagemap(value)
    if isinstance(value, SmapsText):
        return repr(value.text)
    if isinstance(value, VmFlags):
        return " ".join(value.words) or "(none)"
    if isinstance(value, ScanRecord):
        return _describe_scan_record(value)
    if isinstance(value, PssShare):
        return f"{value.fixed / PSS_KB:.4f} kB (exact, bytes << 12 = {value.fixed})"
    if isinstance(value, PssBounds):
        if value.low == value.high:
            return f"{value.low / PSS_KB:.4f} kB (rollup minus the other VMAs)"
        return (f"{value.low / PSS_KB:.4f} .. {value.high / PSS_KB:.4f} kB "
                "(rollup minus the other VMAs, their kB floors)")
    return (f"little_endian={int(value.little_endian)} page_shift={value.page_shift} "
            f"word_size={value.word_size} entry_size={value.entry_size}")


def _describe_scan_record(record: ScanRecord) -> str:
    """``record 2: [0x10000000000, 0x10000004000) WRITTEN|PRESENT``."""
    if not record.written:
        return f"record {record.index}: not written"
    names = [name for name, bit in SCAN_CATEGORIES.items() if record.categories & bit]
    unknown = record.categories & ~sum(SCAN_CATEGORIES.values())
    if unknown:
        names.append(f"{unknown:#x}")
    return (f"record {record.index}: [{record.start:#x}, {record.end:#x}) "
            f"{'|'.join(names) or '(no category)'}")


def _conflict(d: Divergence, c: PfnConflict) -> str:
    m = f"{d.model_pfn:#x}" if d.model_pfn is not None else "-"
    r = f"{d.real_pfn:#x}" if d.real_pfn is not None else "-"
    if c.rule is ConflictRule.MODEL_SHARES:
        return (f"model PFN {m} is real PFN {c.partner:#x} at {c.first_seen} but real PFN {r} "
                "here: the model shares a frame the kernel does not")
    if c.rule is ConflictRule.KERNEL_SHARES:
        return (f"real PFN {r} is model PFN {c.partner:#x} at {c.first_seen} but model PFN {m} "
                "here: the kernel shares a frame the model does not")
    if c.rule is ConflictRule.MODEL_KEPT:
        return (f"model PFN {m} was real PFN {c.partner:#x} (bound at step {c.bound_at}), "
                f"here real PFN {r}: the model kept the frame, the kernel did not")
    return (f"real PFN {r} was model PFN {c.partner:#x} (bound at step {c.bound_at}), "
            f"here model PFN {m}")


def _flag_pair(d: Divergence) -> tuple[KpfFlags, KpfFlags] | None:
    """The two flag words of a flag-valued difference, if both sides read one."""
    if d.kind == "value" and d.field in FLAG_FIELDS and isinstance(d.model, KpfFlags) \
            and isinstance(d.real, KpfFlags):
        return d.model, d.real
    return None


def detail(d: Divergence) -> str:
    """The context of a divergence in words: flag delta, both entries, bijection history."""
    pair = _flag_pair(d)
    if pair is not None:
        return flag_delta(*pair)
    mismatch = d.real if d.side == "real" else d.model
    if d.kind == "consistency" and isinstance(mismatch, FlagMismatch):
        return flag_delta(mismatch.kpagemap, mismatch.kpageflags, ("kpagemap", "kpageflags"))
    if isinstance(d.context, PfnConflict):
        return _conflict(d, d.context)
    if isinstance(d.context, EntryPair):
        text = (f"model: {describe_pagemap(d.context.model)}; "
                f"real: {describe_pagemap(d.context.real)}")
        if d.field == "pagemap.pfn":
            text = f"PFN 0 names no frame (hidden from an unprivileged reader); {text}"
        return text
    if d.kind == "missing" and d.field == "outcome":
        return "the step did not run on one side"
    return ""


def location(d: Divergence) -> str:
    """``main a+2 @0x10002000`` or ``pfn model 0x12 / real 0x3456 (main:a+0)``; ``-``: none."""
    parts = []
    if d.proc is not None:
        parts.append(d.proc)
    if d.region is not None:
        parts.append(d.region if d.page is None else f"{d.region}+{d.page}")
    if d.vaddr is not None:
        parts.append(f"@{d.vaddr:#x}")
    if d.model_pfn is not None or d.real_pfn is not None:
        m = "-" if d.model_pfn is None else f"{d.model_pfn:#x}"
        r = "-" if d.real_pfn is None else f"{d.real_pfn:#x}"
        parts.append(f"pfn model {m} / real {r}")
    if d.places:
        parts.append(f"({', '.join(map(str, d.places))})")
    return " ".join(parts) if parts else "-"


# ---------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------


def _group_key(d: Divergence) -> GroupKey:
    pair = _flag_pair(d)
    if pair is not None:
        model, real = pair
        return (d.kind, d.field, model.only_in_self(real), real.only_in_self(model))
    return (d.kind, d.field, d.model, d.real, d.side or "")


def _what(group: Sequence[Divergence]) -> str:
    frames = any(x.model_pfn is not None or x.real_pfn is not None for x in group)
    return f"{len(group)} {'frame' if frames else 'place'}{'s' * (len(group) != 1)}"


def _heading(group: Sequence[Divergence]) -> str:
    d = group[0]
    count = f" ({_what(group)})" if len(group) > 1 else ""
    if d.kind == "consistency":
        side: Column = "real" if d.side == "real" else "model"
        value = describe_value(d.field, side, d.real if side == "real" else d.model)
        return f"{d.field} inconsistent on the {d.side} side: {value}{count}"
    if _flag_pair(d) is not None:
        return f"{d.field}: {detail(d)}{count}"
    kind = {"identity": " identity", "missing": " missing"}.get(d.kind, "")
    model = describe_value(d.field, "model", d.model)
    real = describe_value(d.field, "real", d.real)
    return f"{d.field}{kind}: model {model}, real {real}{count}"


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


def _compared_line(compared: Compared | None, indent: str = "     ",
                   hang: str = "       ") -> list[str]:
    """``compared 3 checks: ...`` after ``indent``, wrapped at 88 columns onto ``hang``."""
    if compared is None:
        return []
    text = textwrap.fill(f"compared {describe_compared(compared)}", width=88,
                         initial_indent=indent, subsequent_indent=hang,
                         break_on_hyphens=False)
    return text.splitlines()


def _render_result(result: ScenarioResult, places: int) -> list[str]:
    head = f"{_LABEL[result.status]} {result.scenario} on {result.arch}"
    if result.status == "agree":
        return [head, *_compared_line(result.compared)]
    if result.status in ("error", "skipped"):
        return [f"{head}: {result.message}"]
    n = len(result.divergences)
    lines = [f"{head}: {n} divergence{'s' * (n != 1)}", *_compared_line(result.compared)]
    lines += _summary(result.divergences)
    by_step: dict[tuple[int, str], list[Divergence]] = {}
    for d in result.divergences:
        by_step.setdefault((d.step, d.op), []).append(d)
    for (step, op), items in sorted(by_step.items()):
        lines.append(f"  step {step} ({op})")
        lines += ["    " + line for line in divergence_lines(items, places)]
    return lines


def divergence_lines(items: Sequence[Divergence], places: int = DEFAULT_PLACES) -> list[str]:
    """Divergences grouped by (field, values): a heading, the detail, up to ``places`` places.

    Lines of details and places are indented by four spaces under their heading.
    """
    lines = []
    groups: dict[GroupKey, list[Divergence]] = {}
    for d in items:
        groups.setdefault(_group_key(d), []).append(d)
    for group in groups.values():
        first = group[0]
        lines.append(_heading(group))
        if _flag_pair(first) is not None:
            model = describe_value(first.field, "model", first.model)
            real = describe_value(first.field, "real", first.real)
            lines.append(f"    e.g. model {model}, real {real}")
        elif text := detail(first):
            lines.append(f"    {text}")
        for d in group[:places]:
            if (where := location(d)) != "-":
                lines.append(f"    at {where}")
        if len(group) > places:
            lines.append(f"    ... and {len(group) - places} more")
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


def total_compared(results: Sequence[ScenarioResult]) -> Compared | None:
    """What every counted result compared, summed; None if none was counted."""
    counted = [c for r in results if (c := r.compared) is not None]
    return Compared.total(counted) if counted else None


def render_text(results: Sequence[ScenarioResult], *, places: int = DEFAULT_PLACES) -> str:
    """The human report: one block per run, a summary line last (and what all compared)."""
    lines: list[str] = []
    for result in results:
        lines.extend(_render_result(result, places))
    lines.append(summary_line(results))
    if len(results) > 1:
        lines += _compared_line(total_compared(results), "  in total: ", "    ")
    return "\n".join(lines) + "\n"


def render_json(results: Sequence[ScenarioResult]) -> str:
    """Every run and every divergence with all its fields, and what was compared."""
    counts = Counter(r.status for r in results)
    compared = total_compared(results)
    obj = {
        "summary": {
            "runs": len(results),
            **{status: counts[status] for status in ("agree", "diverge", "error", "skipped")},
            "divergences": sum(len(r.divergences) for r in results),
            "compared": None if compared is None else compared.to_json(),
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
    _check_recording(scenario, model, model_path, "model")
    _check_recording(scenario, real, real_path, "real")
    if model.arch != real.arch:
        raise ObservationError(
            f"{real_path}: recorded on {real.arch}, the model run on {model.arch}"
        )
    arch = get_arch(model.arch)
    return ScenarioResult.from_comparison(
        scenario.name, arch.name, compare_counted(model, real, scenario, arch)
    )


def _check_recording(scenario: Scenario, obs: Observations, path: str | Path, side: str) -> None:
    """ObservationError unless ``obs`` is a ``side`` run of ``scenario``.

    A recording of another scenario, or of an edited version of this one,
    would otherwise be compared step by step against the wrong steps.
    """
    if obs.side != side:
        raise ObservationError(f"{path}: a {obs.side} run where the {side} run belongs")
    if obs.scenario != scenario.name:
        raise ObservationError(
            f"{path}: a run of scenario {obs.scenario!r}, not {scenario.name!r}"
        )
    steps = scenario.steps
    if len(obs.outcomes) > len(steps):
        raise ObservationError(
            f"{path}: {len(obs.outcomes)} step outcomes for a scenario of {len(steps)} steps"
        )
    for outcome in obs.outcomes:
        if not 0 <= outcome.step < len(steps):
            raise ObservationError(
                f"{path}: an outcome of step {outcome.step}, which does not exist"
            )
    for check in obs.checks:
        if not 0 <= check.step < len(steps) or steps[check.step].op != "check":
            raise ObservationError(f"{path}: check observations for step {check.step}, "
                                   "which is not a check step of the scenario")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.report SCENARIO MODEL.json REAL.json [--format F] [--show]``.

    ``--format``: text (default), json (also ``--json``) or ktap; ``--show``:
    each check's decoded observations as tables (text; KTAP diagnostics).
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
    parser.add_argument("--format", choices=("text", "json", "ktap"), help="default text")
    parser.add_argument("--show", action="store_true",
                        help="print each check's decoded observations (text and ktap)")
    args = parser.parse_args(argv)
    if args.json and args.format not in (None, "json"):
        print(f"error: --json and --format {args.format} ask for two forms", file=sys.stderr)
        return 2
    form = "json" if args.json else args.format or "text"
    if args.show and form == "json":
        print("error: --show prints tables: use it with --format text or ktap", file=sys.stderr)
        return 2
    try:
        result = compare_recorded(args.scenario, args.model, args.real)
        observations = (Observations.load(args.model), Observations.load(args.real))
    except (ScenarioError, ObservationError, CompareError, UnknownArchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(_render_replay(form, result, *observations, show=args.show))
    return 0 if result.status == "agree" else 1


def _render_replay(form: str, result: ScenarioResult, model: Observations,
                   real: Observations, *, show: bool) -> str:
    if form == "json":
        return render_json([result])
    from harness.ktap import render_run  # they import this module: loaded on demand
    from harness.show import PAGEMAP_LEGEND, CheckTables

    tables = CheckTables([(result, model, real)]) if show else None
    if form == "ktap":
        return render_run([result], details=None if tables is None else tables.lines,
                          header=[PAGEMAP_LEGEND] if show else ())
    return (tables.text() if tables is not None else "") + render_text([result])


if __name__ == "__main__":
    sys.exit(main())
