"""The memory model: frames and folios, page tables, VMAs, processes and their operations.

Start with :class:`Machine` (sim/MODEL.md lists the kernel rules and where they
come from).
"""

from sim.mm.facts import PINNED, UNPATCHED_6_12, KernelFacts
from sim.mm.machine import ALL_CAPS, Credentials, Machine, Process, TouchResult, parse_prot
from sim.mm.memmap import FrameState, OutOfMemory
from sim.mm.mm_struct import MmStruct
from sim.mm.shmem import ShmemFile
from sim.mm.syscall import MmError

__all__ = [
    "ALL_CAPS",
    "PINNED",
    "UNPATCHED_6_12",
    "Credentials",
    "FrameState",
    "KernelFacts",
    "Machine",
    "MmError",
    "MmStruct",
    "OutOfMemory",
    "Process",
    "ShmemFile",
    "TouchResult",
    "parse_prot",
]
