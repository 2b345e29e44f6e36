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
* :mod:`~harness.scenario.settings`: the top-level ``settings`` (THP, mTHP,
  shmem THP and KSM sysfs knobs), per architecture;
* :mod:`~harness.scenario.dispatch`: the per-op handler tables that the flow
  and range checks and both executors use.
"""

from harness.scenario import dispatch, flow, layout, parse, schema, settings, tags
from harness.scenario.dispatch import *  # noqa: F403
from harness.scenario.flow import *  # noqa: F403
from harness.scenario.layout import *  # noqa: F403
from harness.scenario.parse import *  # noqa: F403
from harness.scenario.schema import *  # noqa: F403
from harness.scenario.settings import *  # noqa: F403
from harness.scenario.tags import *  # noqa: F403

#: Every public name of the modules above.
__all__: list[str] = []
__all__ += dispatch.__all__
__all__ += flow.__all__
__all__ += layout.__all__
__all__ += parse.__all__
__all__ += schema.__all__
__all__ += settings.__all__
__all__ += tags.__all__
