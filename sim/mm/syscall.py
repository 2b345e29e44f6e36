"""What the mm syscalls and faults give back when the kernel refuses; their shared range check."""

from __future__ import annotations

import errno
from typing import Literal

from sim.arch import Arch

__all__ = ["MmError", "NotModelled", "Signal", "user_range_end"]

#: The signal a user access raises: the arch fault handler's SIGSEGV, or
#: VM_FAULT_SIGBUS from a fault handler (mm_fault_error()).
Signal = Literal["SIGSEGV", "SIGBUS"]


class MmError(OSError):
    """A syscall the kernel would fail: carries the errno and a one-line reason."""

    errno: int

    def __init__(self, err: int, reason: str) -> None:
        super().__init__(err, f"{errno.errorcode.get(err, err)}: {reason}")
        self.reason = reason


class NotModelled(Exception):
    """A kernel path the model does not follow (the message names it); no prediction is made."""


def user_range_end(
    arch: Arch, addr: int, nr_pages: int, what: str, beyond: int = errno.ENOMEM
) -> int:
    """The end (bytes) of [addr, addr + nr_pages pages), or the syscall's error.

    EINVAL for an unaligned ``addr`` or a length that is not positive; past
    TASK_SIZE the syscall's own errno (``beyond``: mmap, mprotect and madvise
    give ENOMEM, munmap EINVAL).  Raises :class:`MmError`.
    """
    if addr % arch.page_size:
        raise MmError(errno.EINVAL, f"{what}: address {addr:#x} is not page aligned")
    if nr_pages <= 0:
        raise MmError(errno.EINVAL, f"{what}: {nr_pages} pages is not a positive length")
    end = addr + nr_pages * arch.page_size
    if end > arch.task_size:
        raise MmError(beyond, f"{what}: [{addr:#x}, {end:#x}) passes the task size")
    return end
