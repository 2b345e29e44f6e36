"""``python -m harness.record``: record a real guest's observations for replay tests.

    python -m harness.record --arch x86_64 [--out DIR] SCENARIO.json ...

Boots the arch's image (as ``harness run`` does), runs each scenario in the
guest and in the model, and writes, for each scenario that agrees:

* ``DIR/NAME.real.json``: the guest's :class:`~harness.observations.Observations`
  (the JSON form of :meth:`Observations.save`, so :meth:`Observations.load`
  reads it back);
* ``DIR/NAME.scenario.json``: a copy of the scenario file, so the replay stays
  the scenario that was recorded when the catalog changes.

The model side is not recorded: the replay tests
(harness/tests/test_replay.py) recompute it from the scenario copy, so they
test today's model and compare against yesterday's kernel.  ``DIR`` defaults
to ``harness/tests/data/recorded/ARCH``.

A scenario that does not agree, cannot run or does not apply is not written;
it is reported on stderr and the exit status is 1 (2 when nothing could boot).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from harness.arches import PROFILE_NAMES, UnknownProfileError, get_profile
from harness.errors import VMError
from harness.image import ImageUnavailable, find_image
from harness.report import render_text
from harness.run import run_scenarios
from harness.scenario import ScenarioError, load_scenario
from harness.vm import VMConfig

__all__ = ["RECORDED_DIR", "main", "recorded_dir"]

#: Where the replay tests find the recordings: one directory per arch.
RECORDED_DIR = Path(__file__).parent / "tests" / "data" / "recorded"

EXIT_OK = 0
EXIT_NOT_RECORDED = 1
EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def recorded_dir(arch: str) -> Path:
    """The directory holding ``arch``'s recordings (it may not exist)."""
    return RECORDED_DIR / arch


def main(argv: Sequence[str] | None = None) -> int:
    """Record the scenarios given; the exit status (0: every one recorded)."""
    parser = _Parser(
        prog="python -m harness.record",
        description="Run scenarios in a guest and record its observations for replay tests.",
    )
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO.json", type=Path)
    parser.add_argument("--arch", default="x86_64", choices=PROFILE_NAMES)
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where to write (default: harness/tests/data/recorded/ARCH)")
    parser.add_argument("--kernel", type=Path, help="kernel image (default: images build)")
    parser.add_argument("--initramfs", type=Path, help="initramfs with the agent as /init")
    args = parser.parse_args(argv)
    try:
        scenarios = [(path, load_scenario(path)) for path in args.scenarios]
        profile = get_profile(args.arch)
        image = find_image(profile, args.kernel, args.initramfs)
    except (ScenarioError, UnknownProfileError, ImageUnavailable) as e:
        return _fail(str(e))
    out: Path = args.out or recorded_dir(profile.name)
    try:
        outcomes = run_scenarios([s for _, s in scenarios], VMConfig(profile, image), _progress)
    except VMError as e:
        return _fail(e.message)
    status = EXIT_OK
    for (path, scenario), outcome in zip(scenarios, outcomes, strict=True):
        if outcome.result.status != "agree" or outcome.real is None:
            sys.stderr.write(render_text([outcome.result]))
            status = EXIT_NOT_RECORDED
            continue
        out.mkdir(parents=True, exist_ok=True)
        outcome.real.save(out / f"{scenario.name}.real.json")
        shutil.copyfile(path, out / f"{scenario.name}.scenario.json")
        _progress(f"recorded {scenario.name} on {profile.name} in {out}")
    return status


def _progress(line: str) -> None:
    print(f"harness record: {line}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"harness record: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
