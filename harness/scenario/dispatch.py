"""One handler per step type, found by the step's class: the registry every layer uses.

The loader's flow and range checks, the model executor and the guest
executor each keep one :class:`StepHandlers` table and register a function
per step type with :meth:`StepHandlers.on`.  A step is handled by the entry
of its own class or, failing that, of its nearest base class (so one entry
for :class:`~harness.scenario.schema.RangeStep` serves every range op that
needs nothing of its own).  :meth:`StepHandlers.missing` lists the declared
ops a table has no entry for: a unit test asserts every executor handles
every op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from harness.scenario.schema import Step

__all__ = ["StepHandlers"]

C = TypeVar("C")  # what the handler works on (a run, a validation state)
R = TypeVar("R")  # what it returns
S = TypeVar("S", bound=Step)


class StepHandlers(Generic[C, R]):
    """Step class -> ``handler(context, step) -> R``; named for error messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._table: dict[type[Step], Callable[[C, Any], R]] = {}
        self._resolved: dict[type[Step], Callable[[C, Any], R] | None] = {}

    def on(self, step_type: type[S]) -> Callable[[Callable[[C, S], R]], Callable[[C, S], R]]:
        """Decorator: the handler of ``step_type`` (and of subclasses without their own)."""

        def register(handler: Callable[[C, S], R]) -> Callable[[C, S], R]:
            if step_type in self._table:
                raise ValueError(f"{self.name}: {step_type.__name__} has two handlers")
            self._table[step_type] = handler
            self._resolved.clear()
            return handler

        return register

    def find(self, step_type: type[Step]) -> Callable[[C, Any], R] | None:
        """The handler of ``step_type`` (own or inherited), None if there is none."""
        if step_type not in self._resolved:
            self._resolved[step_type] = next(
                (self._table[cls] for cls in step_type.__mro__ if cls in self._table), None
            )
        return self._resolved[step_type]

    def __call__(self, context: C, step: Step) -> R:
        """Run the handler of ``step``; LookupError names the op if there is none."""
        handler = self.find(type(step))
        if handler is None:
            raise LookupError(f"{self.name} has no handler for op {step.op!r}")
        return handler(context, step)

    def missing(self, step_types: Iterable[type[Step]]) -> list[str]:
        """The ops of ``step_types`` this table cannot handle."""
        return [t.op for t in step_types if self.find(t) is None]
