"""A scenario's sysfs knobs in the guest: written before its first step, restored after.

:func:`apply_settings` writes each knob :func:`harness.scenario.settings.sysfs_writes`
names, reads it back (the bracketed choice must be the value written), and
returns what :func:`restore_settings` writes back, in reverse order, however the
run ended.

khugepaged: a setting that leaves no PMD order enabled for anonymous memory
(hugepage_pmd_enabled() in mm/khugepaged.c: ``enabled`` = never with the PMD
size ``inherit``, or the PMD size ``never``) makes start_stop_khugepaged()
stop the thread; restoring the boot knobs starts a new one, which scans its
mm list at once (khugepaged() calls khugepaged_do_scan() before its first
sleep).  The only mm left then is the holder's (:mod:`harness.khugepaged`),
whose region that thread's first pass collapsed long ago; the restore waits
for the pass (``full_scans`` moves) so that it never overlaps the next run.
"""

from __future__ import annotations

import time

from harness.agent.client import AgentClient
from harness.khugepaged import full_scans
from harness.scenario.settings import ScenarioSettings, sysfs_writes
from harness.vm import VM
from sim.mm.settings import ThpSettings

__all__ = ["GuestSettingsError", "apply_settings", "khugepaged_stops", "restore_settings"]

#: Seconds to wait for the restarted khugepaged's first pass.
_PASS_TIMEOUT_S = 10.0


class GuestSettingsError(RuntimeError):
    """A knob that could not be read, written, or did not take its value (one line)."""


def _selected(text: str) -> str:
    """``always [madvise] never`` -> ``madvise``; a plain value as it is."""
    if "[" in text and "]" in text:
        return text[text.index("[") + 1 : text.index("]")]
    return text


def _read(agent: AgentClient, path: str) -> str:
    got = agent.read_file(path, 4096)
    if not got.ok:
        raise GuestSettingsError(f"cannot read {path}: {got.describe()}")
    return _selected(got.data.decode(errors="replace").strip())


def _write(agent: AgentClient, path: str, value: str) -> None:
    agent.write_file(path, f"{value}\n")
    now = _read(agent, path)
    if now != value:
        raise GuestSettingsError(f"{path} is {now!r} after writing {value!r}")


def khugepaged_stops(settings: ThpSettings, pmd_order: int) -> bool:
    """Whether these knobs stop khugepaged: not hugepage_pmd_enabled() (6.12,
    without READ_ONLY_THP_FOR_FS: only the anonymous PMD order counts)."""
    mode = settings.mthp_mode(pmd_order, pmd_order)
    enabled = mode in ("always", "madvise") or (mode == "inherit" and settings.enabled != "never")
    return not enabled


def apply_settings(vm: VM, settings: ScenarioSettings) -> list[tuple[str, str]]:
    """Write the scenario's knobs; the (path, old value) pairs to restore, in restore order.

    Knobs already written are in the list even when a later one fails
    (GuestSettingsError, AgentOpError): the caller restores them.
    """
    agent, arch = vm.agent, vm.profile.arch
    restore: list[tuple[str, str]] = []
    try:
        for path, value in sysfs_writes(settings, arch):
            old = _read(agent, path)
            restore.insert(0, (path, old))
            if old != value:
                _write(agent, path, value)
    except BaseException:
        restore_settings(vm, restore, wait_khugepaged=False)
        raise
    return restore


def restore_settings(vm: VM, restore: list[tuple[str, str]], wait_khugepaged: bool) -> None:
    """Write the old values back (in the order given); with ``wait_khugepaged``, wait
    for the pass of the khugepaged thread the restore restarts."""
    if not restore:
        return
    agent = vm.agent
    before = full_scans(vm) if wait_khugepaged else None
    for path, old in restore:
        _write(agent, path, old)
    if before is None:
        return
    deadline = time.monotonic() + _PASS_TIMEOUT_S
    while full_scans(vm) == before:
        if time.monotonic() > deadline:
            raise GuestSettingsError(
                f"khugepaged made no pass in {_PASS_TIMEOUT_S:.0f} s after the THP knobs "
                "were restored"
            )
        time.sleep(0.02)
