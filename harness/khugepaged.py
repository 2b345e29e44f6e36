"""khugepaged kept asleep while scenarios run: its wake-ups spent before the first one.

With THP ``enabled`` = madvise, khugepaged sleeps until an mm registers
(MADV_HUGEPAGE on a VMA with an anon_vma: khugepaged_enter_vma() ->
__khugepaged_enter() in mm/khugepaged.c wakes it when its mm list was
empty) and then scans at once (khugepaged_do_scan()) before it sleeps for
``scan_sleep_millisecs``.  So the first scenario of a VM that advises
hugepage on populated pages could be collapsed under it, a result the model
cannot predict (the fuzzer found this).

:func:`hold_khugepaged` spends that wake-up on a process of its own
(:data:`HOLDER_PROC`): it maps a THP-sized region, populates one page,
advises hugepage and waits for khugepaged's pass (``full_scans`` moves).
The holder lives as long as the VM: its mm slot keeps khugepaged's list
non-empty, so khugepaged stays in its timed sleep (a day, set by
:func:`harness.guest_executor.prepare_guest`) and no scenario's
MADV_HUGEPAGE wakes it; killing the holder would free the slot
(__khugepaged_exit()) and the next registration would wake it again.
"""

from __future__ import annotations

import time

from harness.agent.protocol import ProtBits
from harness.scenario import layout_base
from harness.vm import VM
from sim.mm.madvise import MADV

__all__ = ["HOLDER_PROC", "hold_khugepaged"]

#: The named guest process that holds khugepaged's mm list non-empty.
#: Test fixtures and resets that kill "every process" spare it.
HOLDER_PROC = "harness.khugepaged"
_KHUGEPAGED = "/sys/kernel/mm/transparent_hugepage/khugepaged"
#: Seconds to wait for the one pass the holder's registration causes.
_PASS_TIMEOUT_S = 10.0


def full_scans(vm: VM) -> int | None:
    """khugepaged's ``full_scans`` counter; None on a kernel without THP."""
    got = vm.agent.read_file(f"{_KHUGEPAGED}/full_scans", 64)
    return int(got.data) if got.ok else None


def hold_khugepaged(vm: VM) -> None:
    """Make sure :data:`HOLDER_PROC` exists and khugepaged's wake-up is spent.

    Idempotent: a VM whose holder is alive costs one LIST round trip.
    Raises VMError/AgentOpError as the agent calls do.
    """
    agent = vm.agent
    if HOLDER_PROC in agent.list_processes():
        return
    before = full_scans(vm)
    if before is None:
        return  # no THP: no khugepaged
    agent.fork(HOLDER_PROC)
    arch = vm.profile.arch
    vaddr, length = layout_base(arch), arch.thp_pages * arch.page_size
    agent.mmap(vaddr, length, prot=ProtBits.READ | ProtBits.WRITE, target=HOLDER_PROC)
    agent.touch(vaddr, 1, write=True, target=HOLDER_PROC)
    agent.madvise(vaddr, length, MADV.HUGEPAGE, target=HOLDER_PROC)
    deadline = time.monotonic() + _PASS_TIMEOUT_S
    while full_scans(vm) == before and time.monotonic() < deadline:
        time.sleep(0.05)
