"""A VM's life: boot, power-off, failures, and nothing left behind."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import reaper
from harness.agent.protocol import CrashKind, Op
from harness.errors import AgentTimeout, GuestPanic, QEMUDied, VMError
from harness.vm import VM, ShutdownTimeouts, VMConfig, VMState
from sim.mm.facts import FACTS_BY_SERIES, facts_for_release

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parent.parent


def _our_leftovers(vm_name: str) -> list[Path]:
    prefix = f"{reaper.TEMP_PREFIX}{os.getpid()}-{vm_name}-"
    return [
        entry
        for parent in (Path(tempfile.gettempdir()), Path("/dev/shm"))
        for entry in parent.iterdir()
        if entry.name.startswith(prefix)
    ]


def _state(vm: VM) -> VMState:
    """The state now (a call, so type narrowing does not outlive a transition)."""
    return vm.state


def _require_sysrq(vm: VM) -> None:
    probe = vm.agent.read_file("/proc/sysrq-trigger", 1)
    if probe.errno == errno.ENOENT:
        pytest.skip("the kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ unset)")


def test_boot_ping_poweroff_leaves_nothing(fresh_vm: Callable[..., VM]) -> None:
    vm = fresh_vm()
    pid, paths = vm.pid, vm.paths
    assert vm.state is VMState.RUNNING
    assert vm.agent.ping().pid == 1
    # The RAM file's name is gone as soon as QEMU mapped it; the bytes are not.
    assert not paths.ram.exists()
    assert vm.ram.size == vm.profile.qemu.memory_mib << 20
    assert paths.workdir.is_dir()
    assert vm.shutdown() == "poweroff"
    assert _state(vm) is VMState.STOPPED
    assert reaper.process_gone(pid)
    assert not paths.workdir.exists()
    assert _our_leftovers(vm.name) == []
    assert vm.shutdown() == "poweroff"  # a second call changes nothing


def test_state_rules(vm_config: VMConfig) -> None:
    vm = VM(vm_config, name="states")
    assert vm.state is VMState.NEW
    with pytest.raises(VMError, match="no agent"):
        vm.agent.ping()
    assert vm.shutdown() == "never-started"
    with pytest.raises(VMError, match="launch"):
        vm.launch()


def test_command_line_is_printed_before_qemu_runs(vm_config: VMConfig) -> None:
    printed: list[str] = []
    config = dataclasses.replace(vm_config, echo=printed.append)
    with VM(config, name="echo") as vm:
        assert printed == [f"+ {vm.command_text}"]
        assert vm.command_line[0] == vm.profile.qemu.binary


def test_kernel_panic_is_detected(fresh_vm: Callable[..., VM]) -> None:
    vm = fresh_vm()
    _require_sysrq(vm)
    pid = vm.pid
    vm.agent.crash(CrashKind.PANIC)
    with pytest.raises(GuestPanic) as caught:
        vm.agent.ping()
    assert "sysrq triggered crash" in str(caught.value)
    assert vm.command_text in str(caught.value)
    assert vm.state is VMState.FAILED
    vm.shutdown()
    assert reaper.process_gone(pid)
    assert _state(vm) is VMState.FAILED


def test_init_dying_panics_the_guest(fresh_vm: Callable[..., VM]) -> None:
    vm = fresh_vm()
    vm.agent.crash(CrashKind.ABORT)
    with pytest.raises(GuestPanic, match="Attempted to kill init"):
        vm.agent.ping()


def test_panic_during_boot_is_reported(fresh_vm: Callable[..., VM]) -> None:
    vm = fresh_vm(launch=False, extra_cmdline=("rdinit=/nonexistent",))
    with pytest.raises(GuestPanic, match="Kernel panic"):
        vm.launch()
    assert vm.state is VMState.FAILED
    assert reaper.process_gone(vm.pid)
    assert _our_leftovers(vm.name) == []


def test_qemu_death_is_reported(fresh_vm: Callable[..., VM]) -> None:
    vm = fresh_vm()
    os.kill(vm.pid, signal.SIGKILL)
    with pytest.raises(QEMUDied) as caught:
        vm.agent.ping()
    assert vm.command_text in str(caught.value)
    assert vm.state is VMState.FAILED
    assert vm.shutdown() == "exited"


def test_silent_agent_times_out_then_recovers(fresh_vm: Callable[..., VM]) -> None:
    vm = fresh_vm()
    vm.qmp_execute("stop")
    with pytest.raises(AgentTimeout, match="no progress"):
        vm.agent.request(Op.PING, timeout=1.0)
    vm.qmp_execute("cont")
    assert vm.agent.ping().pid == 1  # the late reply to the first ping is skipped


def test_shutdown_falls_back_to_qmp_quit(vm_config: VMConfig) -> None:
    timeouts = ShutdownTimeouts(poweroff=1.0, qmp_quit=10.0)
    vm = VM(dataclasses.replace(vm_config, shutdown_timeouts=timeouts), name="quit")
    vm.launch()
    pid = vm.pid
    vm.qmp_execute("stop")  # a paused guest cannot power itself off
    assert vm.shutdown() == "qmp-quit"
    assert reaper.process_gone(pid)
    assert _our_leftovers(vm.name) == []


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from harness.arches import get_profile
    from harness.image import BootImage
    from harness.vm import VM, VMConfig

    image = BootImage(Path(sys.argv[2]), Path(sys.argv[3]))
    vm = VM(VMConfig(get_profile(sys.argv[1]), image, echo=lambda line: None), name="orphan")
    vm.launch()
    print(vm.pid, vm.paths.workdir, flush=True)
    time.sleep(600)
    """
)


def _start_harness_process(vm_config: VMConfig) -> tuple[subprocess.Popen[str], int, Path]:
    """A separate Python that boots a VM and then idles; its QEMU pid and workdir."""
    child = subprocess.Popen(
        [
            sys.executable, "-c", _ORPHAN_SCRIPT, vm_config.profile.name,
            str(vm_config.image.kernel), str(vm_config.image.initramfs),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 180)
    line = child.stdout.readline() if ready else ""
    if not line:
        child.kill()
        child.wait()
        pytest.fail("the harness process did not boot its VM within 180 s")
    pid, workdir = line.split()
    return child, int(pid), Path(workdir)


def test_killed_harness_takes_its_qemu_along(vm_config: VMConfig) -> None:
    """PR_SET_PDEATHSIG: SIGKILL of the harness ends QEMU; the next run sweeps its files."""
    child, qemu_pid, workdir = _start_harness_process(vm_config)
    child.kill()
    child.wait()
    assert reaper.wait_gone(qemu_pid), f"QEMU {qemu_pid} outlived its harness"
    assert workdir.exists()  # nobody could clean up after SIGKILL ...
    reaper.sweep_stale((workdir.parent,))
    assert not workdir.exists()  # ... until the next run swept it


def test_terminated_harness_stops_its_qemu_and_cleans_up(vm_config: VMConfig) -> None:
    child, qemu_pid, workdir = _start_harness_process(vm_config)
    child.terminate()
    assert child.wait(30) == -signal.SIGTERM
    assert reaper.wait_gone(qemu_pid)
    assert not workdir.exists()


def test_qemu_refusing_to_start_is_reported_with_its_output(
    vm_config: VMConfig, tmp_path: Path
) -> None:
    # Zeros, and (sparse) more of them than the guest has RAM: no machine can load
    # that.  A small file is not enough everywhere: arm's virt machine boots any
    # file it does not recognise as a raw image (hw/arm/boot.c), into the weeds.
    # A small guest keeps the file small (QEMU reads all of it, looking for gzip).
    profile = vm_config.profile
    small = dataclasses.replace(profile, qemu=dataclasses.replace(profile.qemu, memory_mib=64))
    junk = tmp_path / "not-a-kernel"
    with junk.open("wb") as file:
        file.truncate((small.qemu.memory_mib + 1) << 20)
    image = dataclasses.replace(vm_config.image, kernel=junk)
    vm = VM(dataclasses.replace(vm_config, image=image, profile=small), name="junk")
    with pytest.raises(QEMUDied) as caught:
        vm.launch()
    report = str(caught.value)
    assert "QEMU exited with status" in report
    assert str(junk) in report  # in the command line, and in QEMU's complaint
    assert "QEMU output (tail)" in report
    assert vm.state is VMState.FAILED
    assert _our_leftovers(vm.name) == []


def test_booted_kernel_selects_the_model_facts(
    fresh_vm: Callable[..., VM], kernel_version: str | None
) -> None:
    """The guest's release picks the facts: those of the series the image was built from."""
    vm = fresh_vm()
    assert vm.hello is not None
    assert vm.facts is facts_for_release(vm.hello.release)
    if kernel_version is not None:
        assert vm.facts is FACTS_BY_SERIES[kernel_version]


def test_facts_of_another_kernel_refuse_the_boot(
    vm_config: VMConfig, kernel_version: str | None
) -> None:
    """Facts for a kernel other than the booted one: VMError before any scenario, nothing left."""
    if kernel_version is None:
        pytest.skip("--kernel: the booted series is known only after the boot")
    other = next(f for f in FACTS_BY_SERIES.values() if f.series != kernel_version)
    vm = VM(dataclasses.replace(vm_config, facts=other), name="facts")
    with pytest.raises(VMError, match=(
        rf"model facts in use are for kernel {re.escape(other.series)} "
        rf"\({re.escape(other.release)}\), but the guest runs {re.escape(kernel_version)}\."
    )):
        vm.launch()
    assert vm.state is not VMState.RUNNING
    vm.shutdown()
    assert _our_leftovers(vm.name) == []
