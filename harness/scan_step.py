"""The ``pagemap_scan`` step's argument and outcome, the same for both executors.

:func:`scan_arg` turns a step and its resolved span into the struct
pm_scan_arg both sides pass (the model to :meth:`sim.procfs.ProcFile.pagemap_scan`,
the guest through the agent's PAGEMAP_SCAN); :func:`scan_outcome` turns the
ioctl's result into the step's :class:`~harness.observations.StepOutcome`.
"""

from __future__ import annotations

from harness.agent.protocol import SCAN_VEC_FILL
from harness.observations import ScanObservation, StepOutcome
from harness.scenario import PagemapScan, Span
from sim.arch import Arch
from sim.formats_scan import PAGE_REGION_BYTES, PmScanArg

__all__ = ["MODEL_VEC_ADDR", "scan_arg", "scan_outcome", "unwritten_vec"]

#: The user address the model gives ``vec``: any address access_ok() accepts
#: does (the guest's is a heap buffer of the agent, replaced by the agent).
MODEL_VEC_ADDR = 0x10000


def scan_arg(step: PagemapScan, span: Span, arch: Arch) -> PmScanArg:
    """The pm_scan_arg of ``step`` on ``arch``: [vaddr, vaddr + pages * page size), walk_end 0."""
    return PmScanArg(
        flags=step.flags,
        start=span.vaddr,
        end=span.vaddr + span.pages * arch.page_size,
        vec=MODEL_VEC_ADDR,
        vec_len=step.vec_len,
        max_pages=step.max_pages.resolve(arch),
        category_inverted=step.inverted,
        category_mask=step.categories,
        category_anyof_mask=step.anyof,
        return_mask=step.return_mask,
    )


def unwritten_vec(vec_len: int) -> bytes:
    """The output buffer as the agent fills it before the ioctl."""
    return bytes([SCAN_VEC_FILL]) * (vec_len * PAGE_REGION_BYTES)


def scan_outcome(step: PagemapScan, ret: int, walk_end: int, vec: bytes) -> StepOutcome:
    """ok (ret >= 0) or error (ret = -errno), with what the ioctl left in the argument and vec."""
    scan = ScanObservation(ret=ret, walk_end=walk_end, vec=vec)
    if ret < 0:
        return StepOutcome(step.index, "error", errno=-ret, scan=scan)
    return StepOutcome(step.index, "ok", scan=scan)
