"""Kconfig fragments: what they request, and whether .config has it.

A fragment is data only: ``CONFIG_X=value`` lines and ``# CONFIG_X is not
set`` lines; other ``#`` lines are comments.  As in kconfig, a later request
for a symbol replaces an earlier one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from images.errors import ConfigCheckError

__all__ = [
    "Request",
    "check_config",
    "defined_symbols",
    "parse_config",
    "parse_fragment",
    "unmet_requests",
]

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
#: A Kconfig symbol definition added by a patch (``+config FOO``).
_DEFINED = re.compile(r"^\+\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Request:
    """One requested option; ``value`` None means "is not set"."""

    symbol: str
    value: str | None
    origin: str  # "file:line", for the error message

    def __str__(self) -> str:
        if self.value is None:
            return f"# CONFIG_{self.symbol} is not set"
        return f"CONFIG_{self.symbol}={self.value}"


def parse_fragment(text: str, name: str) -> dict[str, Request]:
    """The requests of one fragment, by symbol (the last request wins)."""
    requests: dict[str, Request] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        origin = f"{name}:{number}"
        if not line:
            continue
        if match := _SET.match(line):
            # "=n" and "is not set" mean the same to kconfig.
            value = None if match[2] == "n" else match[2]
            requests[match[1]] = Request(match[1], value, origin)
        elif match := _UNSET.match(line):
            requests[match[1]] = Request(match[1], None, origin)
        elif line.startswith("#"):
            continue
        else:
            raise ConfigCheckError(f"{origin}: not a kconfig line: {raw!r}")
    return requests


def parse_config(text: str) -> dict[str, str | None]:
    """Symbol -> value of a .config; None for ``is not set``."""
    values: dict[str, str | None] = {}
    for line in text.splitlines():
        if match := _SET.match(line):
            values[match[1]] = match[2]
        elif match := _UNSET.match(line):
            values[match[1]] = None
    return values


def unmet_requests(requests: Iterable[Request], config_text: str) -> list[str]:
    """One message per request that .config does not honour."""
    config = parse_config(config_text)
    problems = []
    for request in requests:
        if request.symbol not in config:
            if request.value is None:
                continue  # invisible symbols are off: what was asked
            problems.append(
                f"{request} requested ({request.origin}), .config does not mention it "
                "(unknown symbol, or its dependencies are not met)"
            )
            continue
        have = config[request.symbol]
        if have != request.value:
            shown = "is not set" if have is None else f"={have}"
            problems.append(f"{request} requested ({request.origin}), .config has '{shown}'")
    return problems


def check_config(requests: Iterable[Request], config: Path) -> None:
    """Raise :class:`ConfigCheckError` listing every request ``config`` lost."""
    problems = unmet_requests(requests, config.read_text(encoding="utf-8"))
    if problems:
        listing = "\n".join(f"  {problem}" for problem in problems)
        raise ConfigCheckError(
            f"{len(problems)} requested kconfig option(s) did not survive into {config}:\n"
            f"{listing}"
        )


def defined_symbols(patch_text: str) -> set[str]:
    """Kconfig symbols a patch defines (``config X`` lines it adds)."""
    return set(_DEFINED.findall(patch_text))
