"""Faults injected for real, and what the harness makes of them.

Each fault happens in a real guest on the ``--arch`` given: a kernel panic
(sysrq 'c'), init aborting, a hung agent, paused vCPUs, a frozen QEMU, QEMU
killed mid-scenario, bad frames on the agent channel, and SIGINT/SIGTERM to a
harness or pytest process while its VM runs.  Every test checks the verdict's
type and text, that it came within the bound the harness promises, that no
QEMU process, RAM file or temp directory is left, and that a new VM answers.
Every fault gets a VM of its own (never the worker's shared one, except the
test of the shared VM's replacement itself).
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import reaper
from harness.agent.protocol import (
    HEADER_SIZE,
    REQUEST_MAGIC,
    CrashKind,
    Frame,
    Op,
    Writer,
    encode_frame,
)
from harness.errors import AgentProtocolError, AgentTimeout, GuestPanic, QEMUDied, VMError
from harness.guest_executor import run_guest
from harness.scenario import load_scenario
from harness.vm import VM, ShutdownTimeouts, VMConfig, VMState

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = ROOT / "tests" / "scenarios"

#: The fault VMs' bound on one agent request: no verdict may take longer.
OP_BOUND_S = 20.0
#: The bound a test gives the request it expects to time out.
HANG_TIMEOUT_S = 2.0
#: The watchdog's slice (0.1 s) plus scheduling on a loaded host.
SLACK_S = 1.5
#: The client's grace for QEMU to be reaped after the channel closed.
HANGUP_GRACE_S = 2.0
#: The agent's wait for the rest of a frame (FRAME_BODY_TIMEOUT_MS) and for a
#: quiet line after a bad one (frame_discard_input()), harness/agent/wire.c.
FRAME_BODY_S = 3.0
DISCARD_QUIET_S = 0.2
#: Short shutdown steps, so a fallback shows within a test's time.
TIMEOUTS = ShutdownTimeouts(poweroff=10.0, after_panic=5.0, qmp_quit=3.0, sigterm=2.0, sigkill=5.0)


# -- what a VM leaves behind ---------------------------------------------------


@dataclass(frozen=True)
class Traces:
    """Where a VM's QEMU and files would linger after it ended."""

    owner: int
    name: str
    qemu_pid: int
    workdir: Path
    ram: Path

    @classmethod
    def of(cls, vm: VM) -> Traces:
        return cls(os.getpid(), vm.name, vm.pid, vm.paths.workdir, vm.paths.ram)


def _pgrep(pattern: str) -> list[int]:
    """Pids of processes whose command line matches (``pgrep -f``)."""
    found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _files_of(owner: int, vm_name: str = "") -> list[Path]:
    """Temp dirs and RAM files of harness process ``owner`` (one VM's, if named)."""
    prefix = f"{reaper.TEMP_PREFIX}{owner}-{vm_name}"
    return [
        entry
        for parent in (Path(tempfile.gettempdir()), Path("/dev/shm"))
        for entry in parent.iterdir()
        if entry.name.startswith(prefix)
    ]


def _assert_nothing_left(traces: Traces) -> None:
    assert reaper.wait_gone(traces.qemu_pid), f"QEMU {traces.qemu_pid} still runs"
    assert _pgrep(str(traces.workdir)) == [], f"a process still uses {traces.workdir}"
    assert _pgrep(str(traces.ram)) == [], f"a process still maps {traces.ram}"
    assert not traces.workdir.exists()
    assert not traces.ram.exists()
    assert _files_of(traces.owner, f"{traces.name}-") == []


def _elapsed(started: float) -> float:
    return time.monotonic() - started


# -- fixtures --------------------------------------------------------------------

_names = itertools.count()


@pytest.fixture
def fault_vm(vm_config: VMConfig) -> Iterator[Callable[[], VM]]:
    """Fresh VMs with short bounds (OP_BOUND_S, TIMEOUTS); all shut down after."""
    made: list[VM] = []
    config = dataclasses.replace(vm_config, op_timeout=OP_BOUND_S, shutdown_timeouts=TIMEOUTS)

    def make() -> VM:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        vm = VM(config, name=f"{worker}.fault{next(_names)}")
        made.append(vm)
        return vm.launch()

    yield make
    for vm in made:
        vm.shutdown()


def _next_vm_answers(make: Callable[[], VM]) -> None:
    """After a fault, a new VM boots and answers, and leaves nothing either."""
    vm = make()
    traces = Traces.of(vm)
    assert vm.agent.ping().pid == 1
    assert vm.shutdown() == "poweroff"
    _assert_nothing_left(traces)


def _require_sysrq(vm: VM) -> None:
    probe = vm.agent.read_file("/proc/sysrq-trigger", 1)
    if probe.errno == errno.ENOENT:
        pytest.skip("the kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ unset)")


def _state(vm: VM) -> VMState:
    """The state now (a call, so type narrowing does not outlive a transition)."""
    return vm.state


# -- 1, 4: the guest kernel panics -----------------------------------------------


#: init's abort(): SIGABRT with the default action is never delivered to init
#: (sig_task_ignored(), kernel/signal.c: SIGNAL_UNKILLABLE), so glibc's abort()
#: goes on to a faulting instruction, whose signal is forced
#: (force_sig_info_to_task() clears SIGNAL_UNKILLABLE): SIGSEGV from ``hlt`` on
#: x86_64, SIGILL or SIGTRAP elsewhere.  do_exit() then panics "Attempted to
#: kill init! exitcode=0x%08x" (kernel/exit.c) with that signal in the code.
_INIT_KILLED = (
    r"Kernel panic - not syncing: Attempted to kill init! "
    rf"exitcode=0x0000000({'|'.join(f'{s:x}' for s in (4, 5, 6, 11))})"
)


@pytest.mark.parametrize(
    ("kind", "panic_text"),
    [
        (CrashKind.PANIC, re.escape("Kernel panic - not syncing: sysrq triggered crash")),
        (CrashKind.ABORT, _INIT_KILLED),
    ],
    ids=["sysrq-c", "init-aborts"],
)
def test_guest_panic_is_reported_with_the_console_tail(
    fault_vm: Callable[[], VM], kind: CrashKind, panic_text: str
) -> None:
    vm = fault_vm()
    if kind is CrashKind.PANIC:
        _require_sysrq(vm)
    traces = Traces.of(vm)
    vm.agent.crash(kind)
    started = time.monotonic()
    with pytest.raises(GuestPanic) as caught:
        vm.agent.ping()
    took = _elapsed(started)
    assert took < OP_BOUND_S, f"the panic was reported after {took:.1f} s"
    failure = caught.value
    head = re.escape(f"VM {vm.name} ({vm.profile.name}): guest kernel panicked: ")
    assert re.fullmatch(head + panic_text, failure.message), failure.message
    # The console tail is the guest's last lines, up to and with the panic.
    tail = failure.console_tail.splitlines()
    assert any(re.search(panic_text, line) for line in tail)
    assert len(tail) > 5
    report = str(failure)
    assert "guest console (tail):" in report and vm.command_text in report
    assert vm.state is VMState.FAILED
    started = time.monotonic()
    # panic=-1 reboots and -no-reboot makes QEMU exit by itself.
    assert vm.shutdown() == "exited"
    assert _elapsed(started) < TIMEOUTS.after_panic + SLACK_S
    _assert_nothing_left(traces)
    _next_vm_answers(fault_vm)


# -- 2: the guest stops answering ------------------------------------------------


def _expect_timeout(vm: VM) -> AgentTimeout:
    started = time.monotonic()
    with pytest.raises(AgentTimeout) as caught:
        vm.agent.request(Op.PING, timeout=HANG_TIMEOUT_S)
    took = _elapsed(started)
    assert HANG_TIMEOUT_S <= took < HANG_TIMEOUT_S + SLACK_S, f"timed out after {took:.2f} s"
    assert caught.value.message == (
        f"VM {vm.name} ({vm.profile.name}): agent: no progress waiting for a reply"
    )
    assert "guest console (tail):" in str(caught.value)
    return caught.value


def test_hung_agent_times_out_and_is_not_asked_to_power_off(fault_vm: Callable[[], VM]) -> None:
    """The kernel runs on, the agent answers nothing: a timeout, then QMP quit."""
    vm = fault_vm()
    traces = Traces.of(vm)
    vm.agent.crash(CrashKind.HANG)
    _expect_timeout(vm)
    assert vm.state is VMState.RUNNING  # the guest lives: only the agent is silent
    assert vm.agent.stalled
    assert vm.qmp_execute("query-status") == {"status": "running", "singlestep": False,
                                              "running": True}  # fmt: skip
    started = time.monotonic()
    # No power-off request to a silent agent: straight to QMP quit.
    assert vm.shutdown() == "qmp-quit"
    assert _elapsed(started) < TIMEOUTS.qmp_quit + SLACK_S
    _assert_nothing_left(traces)
    _next_vm_answers(fault_vm)


def test_paused_vcpus_time_out_then_the_late_reply_is_skipped(fault_vm: Callable[[], VM]) -> None:
    vm = fault_vm()
    traces = Traces.of(vm)
    vm.qmp_execute("stop")
    _expect_timeout(vm)
    vm.qmp_execute("cont")
    assert vm.agent.ping().pid == 1  # the first ping's late reply is skipped
    assert not vm.agent.stalled
    assert vm.shutdown() == "poweroff"
    _assert_nothing_left(traces)


def test_frozen_qemu_times_out_and_is_killed_within_the_shutdown_bound(
    fault_vm: Callable[[], VM],
) -> None:
    """SIGSTOP to QEMU: neither the agent nor QMP answers; SIGTERM waits; SIGKILL ends it."""
    vm = fault_vm()
    traces = Traces.of(vm)
    os.kill(vm.pid, signal.SIGSTOP)
    try:
        _expect_timeout(vm)
        with pytest.raises(VMError, match="QMP query-status: no answer within 1 s"):
            vm.qmp_execute("query-status", timeout=1.0)
        started = time.monotonic()
        assert vm.shutdown() == "sigkill"
        bound = TIMEOUTS.qmp_quit + TIMEOUTS.sigterm + TIMEOUTS.sigkill
        assert _elapsed(started) < bound + SLACK_S
    finally:
        if not reaper.process_gone(traces.qemu_pid):
            os.kill(traces.qemu_pid, signal.SIGCONT)
    _assert_nothing_left(traces)
    _next_vm_answers(fault_vm)


def test_shared_vm_left_hung_is_replaced(shared_vm: Any) -> None:
    """A test that leaves the worker's VM deaf does not poison the next tests."""
    vm = shared_vm.get()
    traces = Traces.of(vm)
    vm.agent.crash(CrashKind.HANG)
    started = time.monotonic()
    replacement = shared_vm.get()
    assert replacement is not vm
    assert replacement.agent.ping().pid == 1
    assert _elapsed(started) < 10.0 + TIMEOUTS.qmp_quit + 60.0  # ping bound, shutdown, boot
    assert _state(vm) is VMState.STOPPED
    _assert_nothing_left(traces)


# -- 3: QEMU dies ----------------------------------------------------------------


def test_qemu_killed_mid_scenario_is_reported(fault_vm: Callable[[], VM]) -> None:
    vm = fault_vm()
    traces = Traces.of(vm)
    scenarios = [load_scenario(path) for path in sorted(SCENARIO_DIR.glob("*.json"))]
    runnable = [s for s in scenarios if s.unsupported_reason(vm.profile.arch) is None]
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        os.kill(traces.qemu_pid, signal.SIGKILL)

    killer = threading.Timer(0.5, kill)
    killer.start()
    done = []
    try:
        with pytest.raises(QEMUDied) as caught:
            for scenario in runnable:
                run_guest(scenario, vm)
                done.append(scenario.name)
    finally:
        killer.cancel()
    assert killed_at, f"the scenarios ({len(done)}) finished before QEMU was killed"
    took = _elapsed(killed_at[0])
    assert took < HANGUP_GRACE_S + SLACK_S, f"QEMU's death was reported after {took:.1f} s"
    failure = caught.value
    killed = "QEMU was killed by signal 9 (SIGKILL)"
    assert failure.message == f"VM {vm.name} ({vm.profile.name}): {killed}"
    assert failure.console_tail.strip(), "no console tail in the verdict"
    assert failure.console_tail.splitlines()[-1] in vm.console_tail()
    assert "guest console (tail):" in str(failure)
    assert vm.state is VMState.FAILED
    assert vm.shutdown() == "exited"


def test_agent_of_a_dead_vm_names_the_death(fault_vm: Callable[[], VM]) -> None:
    """Asking a VM that QEMU's death failed for its agent raises QEMUDied again.

    A cleanup path (killing a run's processes) swallows the first QEMUDied; the
    next use of the agent must still say why, not just "failed" (CI saw a plain
    VMError when the kill landed during that cleanup).
    """
    vm = fault_vm()
    traces = Traces.of(vm)
    os.kill(traces.qemu_pid, signal.SIGKILL)
    while not vm.exited():
        time.sleep(0.05)
    with pytest.raises(QEMUDied):
        vm.agent.ping()
    assert vm.state is VMState.FAILED
    with pytest.raises(QEMUDied, match="killed by signal 9"):
        vm.agent.ping()
    assert vm.shutdown() == "exited"
    _assert_nothing_left(traces)
    _next_vm_answers(fault_vm)


# -- 5: bad frames on the agent channel -------------------------------------------


def _frame(op: Op, payload: bytes, seq: int = 7) -> bytes:
    return encode_frame(Frame(REQUEST_MAGIC, seq, op, 0, 0, payload))


def _ping_frame() -> bytes:
    return _frame(Op.PING, Writer().str("init").bytes())


def _echo_frame() -> bytes:
    return _frame(Op.ECHO, Writer().str("init").blob(b"x" * 100).bytes())


#: (bad bytes, what the agent must say, the bound on the protocol error).
_BAD_FRAMES: list[tuple[str, bytes, str, float]] = [
    ("payload byte flipped", _echo_frame()[:-1] + b"\xff", "payload CRC mismatch", 0.0),
    ("header byte changed", _ping_frame()[:5] + b"\x80" + _ping_frame()[6:],
     "header CRC mismatch", 0.0),
    ("noise", b"\x00" * 40, "bad magic 00000000 (expected PMAQ)", 0.0),
    # The next request's bytes complete the header (magic sound, CRC not).
    ("truncated header", _ping_frame()[:10], "header CRC mismatch", 0.0),
    # The next request is too short to complete it: the body timeout ends it.
    ("truncated payload", _echo_frame()[: HEADER_SIZE + 10], "truncated frame: payload has",
     FRAME_BODY_S),
]  # fmt: skip


def test_bad_frames_give_a_protocol_error_and_the_agent_recovers(
    fault_vm: Callable[[], VM],
) -> None:
    vm = fault_vm()
    traces = Traces.of(vm)
    for what, data, reason, wait in _BAD_FRAMES:
        vm.agent.send_raw(data)
        started = time.monotonic()
        # The next request meets the agent's BAD_FRAME reply (and is dropped
        # with the rest of the bad frame).
        with pytest.raises(AgentProtocolError) as caught:
            vm.agent.ping()
        took = _elapsed(started)
        assert took < wait + DISCARD_QUIET_S + SLACK_S, f"{what}: error after {took:.2f} s"
        assert "status BAD_FRAME" in caught.value.message, what
        assert reason in caught.value.message, f"{what}: {caught.value.message}"
        assert vm.state is VMState.RUNNING
        assert vm.agent.ping().pid == 1, what
        assert vm.agent.echo(what.encode()) == what.encode()
    assert vm.shutdown() == "poweroff"
    _assert_nothing_left(traces)


# -- 6: SIGINT / SIGTERM to a harness process ------------------------------------


def _wait_for_text(path: Path, text: str, child: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if child.poll() is not None:
            output = path.read_text()
            pytest.fail(f"the child ended ({child.returncode}) before {text!r}:\n{output}")
        time.sleep(0.05)
    child.kill()
    child.wait()
    pytest.fail(f"no {text!r} within {timeout:g} s:\n{path.read_text()}")


def _qemu_of(owner: int) -> list[int]:
    """QEMU processes of harness process ``owner`` (its paths carry its pid)."""
    return _pgrep(f"{reaper.TEMP_PREFIX}{owner}-")


def _interrupt_and_check(
    child: subprocess.Popen[bytes], signum: int, expected_status: int, log: Path
) -> float:
    qemus = _qemu_of(child.pid)
    assert len(qemus) == 1, f"QEMU processes of {child.pid}: {qemus}"
    time.sleep(0.3)  # mid-work
    started = time.monotonic()
    child.send_signal(signum)
    try:
        status = child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        pytest.fail(f"{signal.Signals(signum).name}: the child did not end within 60 s")
    took = _elapsed(started)
    output = log.read_text(errors="replace")
    assert status == expected_status, output
    assert "Traceback" not in output, output
    assert reaper.wait_gone(qemus[0]), f"QEMU {qemus[0]} outlived its harness"
    assert _qemu_of(child.pid) == []
    assert _files_of(child.pid) == []
    return took


_SIGNALS = [
    pytest.param(signal.SIGINT, 128 + signal.SIGINT, id="SIGINT"),
    pytest.param(signal.SIGTERM, -signal.SIGTERM, id="SIGTERM"),
]


def _image_args(vm_config: VMConfig) -> list[str]:
    image = vm_config.image
    return ["--kernel", str(image.kernel), "--initramfs", str(image.initramfs)]


@pytest.mark.parametrize(("signum", "status"), _SIGNALS)
def test_signal_to_harness_run_leaves_nothing(
    vm_config: VMConfig, tmp_path: Path, signum: int, status: int
) -> None:
    log = tmp_path / "run.log"
    scenarios = [str(p) for p in sorted(SCENARIO_DIR.glob("*.json"))]
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "harness", "run", "--arch", vm_config.profile.name,
             *_image_args(vm_config), *scenarios],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    _wait_for_text(log, "harness run: booted", child, 180)
    took = _interrupt_and_check(child, signum, status, log)
    # SIGINT: a graceful shutdown; SIGTERM: the hard stop.
    bound = ShutdownTimeouts().poweroff if signum == signal.SIGINT else ShutdownTimeouts().sigkill
    assert took < bound + SLACK_S


_PYTEST_CHILD = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from harness.arches import get_profile
    from harness.image import BootImage
    from harness.vm import VM, VMConfig

    def test_works_with_a_vm():
        image = BootImage(Path(os.environ["FAULT_KERNEL"]), Path(os.environ["FAULT_INITRAMFS"]))
        config = VMConfig(get_profile(os.environ["FAULT_ARCH"]), image)
        with VM(config, name="sig") as vm:
            print("VM running", flush=True)
            while True:
                vm.agent.ping()
                time.sleep(0.02)
    """
)


@pytest.mark.parametrize(("signum", "status"), [
    pytest.param(signal.SIGINT, pytest.ExitCode.INTERRUPTED, id="SIGINT"),
    pytest.param(signal.SIGTERM, -signal.SIGTERM, id="SIGTERM"),
])  # fmt: skip
def test_signal_to_pytest_leaves_nothing(
    vm_config: VMConfig, tmp_path: Path, signum: int, status: int
) -> None:
    test_file = tmp_path / "test_child.py"
    test_file.write_text(_PYTEST_CHILD)
    log = tmp_path / "pytest.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FAULT_ARCH": vm_config.profile.name,
        "FAULT_KERNEL": str(vm_config.image.kernel),
        "FAULT_INITRAMFS": str(vm_config.image.initramfs),
    }
    env.pop("PYTEST_XDIST_WORKER", None)
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider",
             "--rootdir", str(tmp_path), str(test_file)],
            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    _wait_for_text(log, "VM running", child, 180)
    took = _interrupt_and_check(child, signum, int(status), log)
    bound = ShutdownTimeouts().poweroff if signum == signal.SIGINT else ShutdownTimeouts().sigkill
    assert took < bound + SLACK_S
