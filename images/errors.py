"""The errors the image builder reports: each carries a message for the user."""

from __future__ import annotations

from pathlib import Path


class ImageError(Exception):
    """Something the user can act on; ``str()`` is the message to show."""


class CommandError(ImageError):
    """An external command failed; the message holds the command and its output's tail."""

    def __init__(
        self, command: str, returncode: int, log: Path | None, tail: str, output: str = ""
    ) -> None:
        where = f"; full output in {log}" if log is not None else ""
        super().__init__(
            f"command failed with exit status {returncode}{where}:\n  {command}\n"
            f"--- last lines of its output ---\n{tail}"
        )
        self.command = command
        self.returncode = returncode
        self.log = log
        self.tail = tail
        #: The whole output, when it was captured in memory (else see ``log``).
        self.output = output or tail


class SourceError(ImageError):
    """The kernel source package is missing or is not the one the series is for."""


class PatchError(ImageError):
    """A patch of the series does not apply."""


class ConfigCheckError(ImageError):
    """Requested kconfig options did not survive into .config."""


class AgentError(ImageError):
    """The guest agent's source is missing, or its binary is not what the arch needs."""


class MissingToolsError(ImageError):
    """Host tools or packages the build needs are not installed."""
