"""ksmd's mm list kept non-empty: a process of its own with one VM_MERGEABLE VMA.

ksmd scans only while its mm list has an entry (ksmd_should_run() in
mm/ksm.c), and a scan drops every mm in which it finds no VM_MERGEABLE VMA
(scan_get_next_rmap_item(): ``ksm_scan.address == 0``).  A ``ksm`` step must
see exactly two full scans whatever the scenario registered (nothing, or an
mm whose mergeable VMAs were unadvised), so :func:`hold_ksm` gives the list a
member that never leaves it: :data:`KSM_HOLDER_PROC` maps one private
anonymous page, advises it MERGEABLE (__ksm_enter()) and never touches it.
The VMA has no anon_vma, so ksmd skips it (``ksm_scan.address = vma->vm_end``)
and keeps the mm: the holder changes no scenario page.  The model has no
holder: a scan of an empty list and a scan of the holder decide the same.
"""

from __future__ import annotations

from harness.agent.protocol import ProtBits
from harness.scenario import layout_base
from harness.vm import VM
from sim.mm.madvise import MADV

__all__ = ["KSM_HOLDER_PROC", "hold_ksm"]

#: The named guest process that keeps ksmd's mm list non-empty.
KSM_HOLDER_PROC = "harness.ksm"


def hold_ksm(vm: VM) -> None:
    """Make sure :data:`KSM_HOLDER_PROC` exists with its mergeable VMA.

    Idempotent: a VM whose holder is alive costs one LIST round trip.
    Raises VMError/AgentOpError as the agent calls do.
    """
    agent = vm.agent
    if KSM_HOLDER_PROC in agent.list_processes():
        return
    agent.fork(KSM_HOLDER_PROC)
    arch = vm.profile.arch
    vaddr = layout_base(arch)
    agent.mmap(vaddr, arch.page_size, prot=ProtBits.READ | ProtBits.WRITE, target=KSM_HOLDER_PROC)
    agent.madvise(vaddr, arch.page_size, MADV.MERGEABLE, target=KSM_HOLDER_PROC)
