"""Exceptions of the harness.

A :class:`VMError` carries what a reader needs to see what went wrong: the
exact QEMU command line and the tail of the guest console (and of QEMU's own
output), plus where the logs were kept, if they were.
"""

from __future__ import annotations

import errno as errno_module
import os

__all__ = [
    "AgentOpError",
    "AgentProtocolError",
    "AgentTimeout",
    "GuestPanic",
    "QEMUDied",
    "VMError",
    "errno_text",
]


class VMError(Exception):
    """A VM failed; the message includes the command line and console tail."""

    def __init__(
        self,
        message: str,
        *,
        command_line: str = "",
        console_tail: str = "",
        qemu_output_tail: str = "",
        kept_logs: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.command_line = command_line
        self.console_tail = console_tail
        self.qemu_output_tail = qemu_output_tail
        self.kept_logs = kept_logs

    def __str__(self) -> str:
        parts = [self.message]
        if self.command_line:
            parts.append(f"QEMU command line:\n  {self.command_line}")
        if self.qemu_output_tail.strip():
            parts.append("QEMU output (tail):\n" + _indent(self.qemu_output_tail))
        if self.console_tail.strip():
            parts.append("guest console (tail):\n" + _indent(self.console_tail))
        if self.kept_logs:
            parts.append(f"logs kept in {self.kept_logs}")
        return "\n".join(parts)


class QEMUDied(VMError):
    """QEMU exited while the harness still needed it."""


class GuestPanic(VMError):
    """The guest kernel panicked (console text or the GUEST_PANICKED event)."""


class AgentTimeout(VMError):
    """The agent did not answer (or did not come up) in time."""


class AgentProtocolError(VMError):
    """The agent's channel carried something that is not a valid frame, or closed."""


class AgentOpError(Exception):
    """An operation the agent performed failed in the guest (not a VM failure)."""

    def __init__(self, op: str, target: str, status: str, errno: int, message: str) -> None:
        self.op = op
        self.target = target
        self.status = status
        self.errno = errno
        self.message = message
        what = f"{op} in '{target}' failed ({status}"
        if errno:
            what += f", {errno_text(errno)}"
        super().__init__(f"{what}): {message}")


def errno_text(number: int) -> str:
    """``EACCES (13)``: the symbolic name of a guest errno.

    The guests here (x86_64, powerpc) use the asm-generic errno numbers, as
    does the host, so the host's table names them.
    """
    name = errno_module.errorcode.get(number, "E?")
    return f"{name} ({number}: {os.strerror(number)})"


def _indent(text: str) -> str:
    return "\n".join("  | " + line for line in text.rstrip("\n").splitlines())
