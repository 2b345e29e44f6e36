"""A scenario's sysfs knobs in the guest: written before its first step, restored after.

:func:`apply_settings` writes each knob :func:`harness.scenario.settings.sysfs_writes`
names, reads it back (the bracketed choice must be the value written), and
returns what :func:`restore_settings` writes back, in reverse order, however the
run ended.

khugepaged: a setting that leaves no PMD order enabled for anonymous memory
(hugepage_pmd_enabled() in mm/khugepaged.c: ``enabled`` = never with the PMD
size ``inherit``, or the PMD size ``never``) makes start_stop_khugepaged()
stop the thread; enabling one again starts a new thread, which scans its mm
list at once (khugepaged() calls khugepaged_do_scan() before its first
sleep), under the knobs of that moment.  So the knobs are written in an order
that stops and restarts the thread only when the end state needs it, and
restarts it as the last write of a restore (under the boot knobs, when only
the holder's mm of :mod:`harness.khugepaged` is left, collapsed long ago), and
each restart is waited for (``full_scans`` moves), so that it never overlaps
a run.  (Found by harness fuzz: ``thp`` never and the PMD size always, written
in that order, stopped and restarted the thread, whose pass under ``always``
collapsed a range the holder's process had not advised.)
"""

from __future__ import annotations

import time

from harness.agent.client import AgentClient
from harness.khugepaged import full_scans
from harness.scenario.settings import SYSFS_THP, ScenarioSettings, sysfs_writes
from harness.vm import VM

__all__ = ["GuestSettingsError", "apply_settings", "restore_settings", "write_knobs"]

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


def _thread_runs(enabled: str, pmd: str) -> bool:
    """hugepage_pmd_enabled() (mm/khugepaged.c, 6.12 without READ_ONLY_THP_FOR_FS: only
    the anonymous PMD order counts): whether khugepaged's thread runs under these
    values of ``enabled`` and ``hugepages-<PMD size>kB/enabled``."""
    return pmd in ("always", "madvise") or (pmd == "inherit" and enabled != "never")


def write_knobs(vm: VM, writes: list[tuple[str, str]]) -> None:
    """Write the (path, value) pairs, ordered so that khugepaged's thread is not stopped
    or restarted on the way unless the end state asks for it, and then as late as
    possible (the other knobs first; of ``enabled`` and the PMD size's knob, the one
    that keeps the thread's state first).  When a write restarts the thread, wait for
    the pass it makes at once (``full_scans`` moves) before returning."""
    if not writes:
        return
    agent, arch = vm.agent, vm.profile.arch
    if not arch.thp_pages or not any(path.startswith(SYSFS_THP) for path, _ in writes):
        # No THP knob among them (ksm_use_zero_pages alone; an arch without THP,
        # such as i386, has no transparent_hugepage directory): khugepaged is untouched.
        for path, value in writes:
            _write(agent, path, value)
        return
    pmd_kb = (arch.page_size * arch.thp_pages) >> 10
    e_path = f"{SYSFS_THP}/enabled"
    p_path = f"{SYSFS_THP}/hugepages-{pmd_kb}kB/enabled"
    state = {e_path: _read(agent, e_path), p_path: _read(agent, p_path)}

    def runs(knobs: dict[str, str]) -> bool:
        return _thread_runs(knobs[e_path], knobs[p_path])

    others = [w for w in writes if w[0] not in state]
    relevant = [w for w in writes if w[0] in state]
    if len(relevant) == 2 and runs({**state, relevant[0][0]: relevant[0][1]}) != runs(state):
        relevant.reverse()
    before: int | None = None
    for path, value in [*others, *relevant]:
        if path in state:
            new = {**state, path: value}
            if before is None and not runs(state) and runs(new):
                before = full_scans(vm)
            state = new
        _write(agent, path, value)
    if before is None:
        return
    deadline = time.monotonic() + _PASS_TIMEOUT_S
    while full_scans(vm) == before:
        if time.monotonic() > deadline:
            raise GuestSettingsError(
                f"khugepaged made no pass in {_PASS_TIMEOUT_S:.0f} s after its thread was "
                "started again"
            )
        time.sleep(0.02)


def apply_settings(vm: VM, settings: ScenarioSettings) -> list[tuple[str, str]]:
    """Write the scenario's knobs (:func:`write_knobs`); the (path, old value) pairs
    that :func:`restore_settings` writes back.

    When a write fails (GuestSettingsError, AgentOpError) what was written is
    restored before the error goes on.
    """
    agent, arch = vm.agent, vm.profile.arch
    writes = sysfs_writes(settings, arch)
    restore = [(path, _read(agent, path)) for path, _ in writes]
    try:
        write_knobs(vm, [(p, v) for (p, v), (_, old) in zip(writes, restore, strict=True)
                         if v != old])
    except BaseException:
        restore_settings(vm, restore)
        raise
    return restore


def restore_settings(vm: VM, restore: list[tuple[str, str]]) -> None:
    """Write the old values back (:func:`write_knobs`)."""
    write_knobs(vm, restore)
