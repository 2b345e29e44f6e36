"""Scenarios: the JSON file, its steps as data, and what both executors share.

A scenario is ``{"name": ..., "steps": [...]}``; every step is an object with
an ``"op"``.  The file format is described for authors in
``harness/SCENARIOS.md``.  One module per job:

* :mod:`~harness.scenario.schema`: one declaration per op (a pydantic
  dataclass), the page numbers (``"2*thp"``), and parsing one step;
* :mod:`~harness.scenario.parse`: a file into a :class:`Scenario` (every
  problem is one :class:`ScenarioError` line naming the file, the step index
  and op);
* :mod:`~harness.scenario.flow`: which process owns which region at each
  step, and what each check observes;
* :mod:`~harness.scenario.layout`: every region's fixed virtual address on
  one architecture (:func:`plan_layout`), and the page-range checks there;
* :mod:`~harness.scenario.tags`: the 64-bit tag every write stores in a page
  and the contents of every file page, so the RAM oracle knows what each
  frame must hold;
* :mod:`~harness.scenario.dispatch`: the per-op handler tables that the flow
  and range checks and both executors use.
"""

from harness.scenario.dispatch import StepHandlers
from harness.scenario.flow import MAX_OBSERVATIONS, MAX_PROCS, Target
from harness.scenario.layout import (
    LAYOUT_SPAN,
    Layout,
    Placement,
    Span,
    layout_alignment,
    layout_base,
    plan_layout,
)
from harness.scenario.parse import Scenario, load_scenario, parse_scenario
from harness.scenario.schema import (
    ADVICES,
    BACKINGS,
    CLEAR_REFS_VALUES,
    PROTS,
    SHARES,
    STEP_TYPES,
    Advice,
    AnyStep,
    Backing,
    Check,
    ClearRefs,
    Exit,
    Fork,
    Madvise,
    Mmap,
    Mprotect,
    Munmap,
    NrPages,
    PageRange,
    Prot,
    RangeStep,
    Read,
    ScenarioError,
    ScenarioNotApplicable,
    Share,
    Step,
    Touch,
    Write,
    step_keys,
)
from harness.scenario.tags import (
    MAX_PAGES,
    MAX_REGIONS,
    MAX_STEPS,
    describe_tag,
    file_tag,
    write_tag,
)

__all__ = [
    "ADVICES",
    "BACKINGS",
    "CLEAR_REFS_VALUES",
    "LAYOUT_SPAN",
    "MAX_OBSERVATIONS",
    "MAX_PAGES",
    "MAX_PROCS",
    "MAX_REGIONS",
    "MAX_STEPS",
    "PROTS",
    "SHARES",
    "STEP_TYPES",
    "Advice",
    "AnyStep",
    "Backing",
    "Check",
    "ClearRefs",
    "Exit",
    "Fork",
    "Layout",
    "Madvise",
    "Mmap",
    "Mprotect",
    "Munmap",
    "NrPages",
    "PageRange",
    "Placement",
    "Prot",
    "RangeStep",
    "Read",
    "Scenario",
    "ScenarioError",
    "ScenarioNotApplicable",
    "Share",
    "Span",
    "Step",
    "StepHandlers",
    "Target",
    "Touch",
    "Write",
    "describe_tag",
    "file_tag",
    "layout_alignment",
    "layout_base",
    "load_scenario",
    "parse_scenario",
    "plan_layout",
    "step_keys",
    "write_tag",
]
