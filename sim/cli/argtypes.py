"""argparse value types shared by the project's command lines (sim, images, harness)."""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


def positive_int(text: str) -> int:
    """A whole number >= 1 (a count of workers, jobs, examples).

    Raises argparse.ArgumentTypeError (argparse prints it as one line) for
    anything else, e.g. ``-j -3`` that make would misread.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return value
