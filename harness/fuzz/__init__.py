"""Differential fuzzing: random valid scenarios, model against kernel, shrunk divergences.

One module per job:

* :mod:`~harness.fuzz.generate`: a hypothesis strategy that builds scenarios
  step by step, each step valid for the state the steps before it reached
  (processes alive, regions owned, pages still mapped), with every op, key
  and value taken from the scenario language's declarations
  (:data:`harness.scenario.STEP_TYPES`);
* :mod:`~harness.fuzz.engine`: one worker's campaign: a warm VM reused and
  reset between examples, each example run in the model and the guest and
  compared as ``harness run`` does, divergences shrunk by hypothesis to a
  minimal scenario that diverges the same way and written under ``--out``;
* :mod:`~harness.fuzz.cli`: ``python -m harness fuzz``, fanning out over
  pytest-xdist workers (:mod:`~harness.fuzz.xdist_worker`) with ``--workers``.
"""
