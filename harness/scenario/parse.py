"""A scenario file: JSON text -> a validated :class:`Scenario`, or one line saying why not.

The top level (name, description, settings, steps) is checked here (settings by
:func:`harness.scenario.settings.parse_settings`); each step by its
declaration (:func:`harness.scenario.schema.parse_step`); the flow of
processes and regions by :func:`harness.scenario.flow.validate_flow`; page
ranges, which depend on the architecture, by
:func:`harness.scenario.layout.plan_layout` for the architecture being
planned (``load_scenario(path, arch)`` does it at once).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.scenario.flow import Target, validate_flow
from harness.scenario.layout import plan_layout
from harness.scenario.schema import (
    STEP_TYPES,
    AnyStep,
    Check,
    Fork,
    Mlock,
    Mmap,
    Mremap,
    ScenarioError,
    StepError,
    parse_step,
)
from harness.scenario.settings import ScenarioSettings, SettingsError, parse_settings
from harness.scenario.tags import MAX_STEPS
from sim.arch import Arch

__all__ = ["Scenario", "load_scenario", "parse_scenario"]

_SCENARIO_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
#: Keys a file may carry for its readers; executors ignore them.
_NOTE_KEYS = frozenset({"description"})


@dataclass(frozen=True)
class Scenario:
    """A validated scenario, independent of the architecture.

    ``targets`` maps the index of every check step to the (process, region)
    pairs it observes, in a fixed order: processes in order of creation, and
    for each every region it has had (its own mmaps and those inherited at
    fork, including regions since unmapped, whose range then reads as holes).
    ``checked_on``: the names of the architectures whose page ranges were
    checked (by :func:`~harness.scenario.layout.plan_layout`).
    """

    name: str
    path: str
    steps: tuple[AnyStep, ...]
    targets: Mapping[int, tuple[Target, ...]] = field(compare=False)
    description: str = ""
    #: The VM boots with swap (harness.swapdisk; VMConfig.swap), the model with a
    #: swap device of the same size, swapped on (sim/mm/swapfile.py).
    swap: bool = False
    #: The top-level ``settings`` (sysfs knobs; empty: the boot values).
    settings: ScenarioSettings = field(default_factory=ScenarioSettings)
    checked_on: set[str] = field(default_factory=set, compare=False, repr=False)

    @property
    def locks_memory(self) -> bool:
        """Whether a step locks memory (mlock, MAP_LOCKED): then both executors drain
        the per-CPU LRU and mlock batches after every step (sim/MODEL.md's assumptions),
        because other guest activity drains them at moments no model can know."""
        return any(isinstance(step, Mlock) or (isinstance(step, Mmap) and step.locked)
                   for step in self.steps)

    @property
    def regions(self) -> tuple[Mmap, ...]:
        """The mmap steps, in order (moves define regions too: :attr:`region_names`)."""
        return tuple(step for step in self.steps if isinstance(step, Mmap))

    @property
    def region_numbers(self) -> dict[str, int]:
        return {name: n for n, name in enumerate(self.region_names)}

    @property
    def region_names(self) -> tuple[str, ...]:
        """Every region name in order of definition (an mmap's ``region``, a move's
        ``new_region``): region number n is ``region_names[n]``."""
        names: list[str] = []
        for step in self.steps:
            if isinstance(step, Mmap):
                names.append(step.region)
            elif isinstance(step, Mremap) and step.new_region is not None:
                names.append(step.new_region)
        return tuple(names)

    @property
    def procs(self) -> tuple[str, ...]:
        """Every process name, in order of creation (``main`` first)."""
        return ("main", *(step.child for step in self.steps if isinstance(step, Fork)))

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(step for step in self.steps if isinstance(step, Check))

    @property
    def uses_thp_counts(self) -> bool:
        return any(n.thps for step in self.steps for n in step.page_numbers())

    @property
    def uses_hugetlb(self) -> bool:
        """Whether a region is a hugetlb one or a count is hugetlb-sized (``"huge"``)."""
        return any(step.kind == "hugetlb" for step in self.regions) or any(
            n.huges for step in self.steps for n in step.page_numbers()
        )

    def unsupported_reason(self, arch: Arch) -> str | None:
        """Why this scenario cannot run on ``arch`` (None: it can)."""
        if self.uses_thp_counts and not arch.thp_pages:
            return f"scenario {self.name} uses THP-sized counts; {arch.name} has no THP"
        if self.uses_hugetlb and not arch.hugetlb_page_pages:
            return (f"scenario {self.name} uses hugetlb pages; {arch.name} has no hugetlb "
                    "pool (sim/arch: hugetlb_pages)")
        reason = self.settings.unsupported_reason(arch)
        if reason is not None:
            return f"scenario {self.name}: {reason}"
        return None

    def step_label(self, index: int) -> str:
        if 0 <= index < len(self.steps):
            return self.steps[index].label
        return f"step {index} (?)"


def parse_scenario(data: object, path: str = "<scenario>", arch: Arch | None = None) -> Scenario:
    """Validate the decoded JSON of a scenario file (see :func:`load_scenario`)."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the top level is not an object with 'name' and 'steps'")
    unknown = set(data) - {"name", "steps", "swap", "settings"} - _NOTE_KEYS
    if unknown:
        raise ScenarioError(
            f"{path}: unknown top-level key {', '.join(map(repr, sorted(unknown)))} "
            "(allowed: name, steps, swap, settings, description)"
        )
    swap = data.get("swap", False)
    if not isinstance(swap, bool):
        raise ScenarioError(f"{path}: swap is {swap!r}, not true or false")
    name = data.get("name")
    if not isinstance(name, str) or not _SCENARIO_NAME.match(name):
        raise ScenarioError(
            f"{path}: name {name!r} is not a scenario name (letters, digits, _ . -; up to 64)"
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{path}: description is not a string")
    try:
        settings = parse_settings(data.get("settings", {}))
    except SettingsError as e:
        raise ScenarioError(f"{path}: settings: {e}") from None
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(f"{path}: 'steps' is not a non-empty list")
    if len(raw_steps) > MAX_STEPS:
        raise ScenarioError(f"{path}: {len(raw_steps)} steps; at most {MAX_STEPS}")

    steps: list[AnyStep] = []
    for index, obj in enumerate(raw_steps):
        if not isinstance(obj, dict):
            raise ScenarioError(f"{path}: step {index}: not an object with an 'op'")
        op = obj.get("op")
        if not isinstance(op, str) or op not in STEP_TYPES:
            raise ScenarioError(
                f"{path}: step {index}: unknown op {op!r} "
                f"(known: {', '.join(STEP_TYPES)})"
            )
        try:
            steps.append(parse_step(index, obj))
        except StepError as e:
            raise ScenarioError(f"{path}: step {index} ({op}): {e}") from None
        if op in ("swapon", "swapoff") and not swap:
            raise ScenarioError(
                f"{path}: step {index} ({op}): needs \"swap\": true at the top level "
                "(a VM without swap has no swap device)"
            )

    targets = validate_flow(steps, path)
    scenario = Scenario(
        name=name, path=path, steps=tuple(steps), targets=targets, description=description,
        swap=swap, settings=settings,
    )
    if arch is not None and scenario.unsupported_reason(arch) is None:
        plan_layout(scenario, arch)
    return scenario


#: A scenario file larger than this is refused unread (the largest valid one, 65,536 steps, is
#: a few MB): a device such as /dev/zero would otherwise be read until memory runs out.
MAX_SCENARIO_BYTES = 64 << 20


def _read_bounded(path: Path) -> str:
    """The text of a regular file of at most MAX_SCENARIO_BYTES; OSError otherwise.

    The open is non-blocking so that a FIFO with no writer does not hang.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = handle.read(MAX_SCENARIO_BYTES + 1)
    if len(data) > MAX_SCENARIO_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_SCENARIO_BYTES >> 20} MiB")
    return data.decode("utf-8")


def load_scenario(path: str | Path, arch: Arch | None = None) -> Scenario:
    """Read and validate a scenario file; ScenarioError (one line) if it cannot run.

    With ``arch`` the page ranges are checked on that architecture too (if
    the scenario applies to it: :meth:`Scenario.unsupported_reason`);
    without, they are checked when a layout is first planned on one.
    """
    text_path = str(path)
    try:
        text = _read_bounded(Path(path))
    except OSError as e:
        raise ScenarioError(f"{text_path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{text_path}: not UTF-8 text: {e.reason} at byte {e.start}") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as e:
        raise ScenarioError(f"{text_path}: not usable JSON: {e}") from None
    except json.JSONDecodeError as e:
        raise ScenarioError(
            f"{text_path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise ScenarioError(f"{text_path}: not usable JSON: nested too deeply") from None
    except ValueError:  # an integer beyond Python's int-from-text limit
        raise ScenarioError(
            f"{text_path}: not usable JSON: a number has more than "
            f"{sys.get_int_max_str_digits()} digits"
        ) from None
    return parse_scenario(data, text_path, arch)


class _DuplicateKeyError(ValueError):
    """A JSON object names a key twice (json.loads would keep the last silently)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` for :func:`json.loads` that refuses a repeated key.

    Raises:
        _DuplicateKeyError: naming the key, because a scenario whose step says
            ``"pages"`` twice has no single meaning.
    """
    obj: dict[str, object] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKeyError(f"key {key!r} appears twice in one object")
        obj[key] = value
    return obj
