"""One VM's life: launch, QMP, console log, agent channel, guest RAM, shutdown.

State: NEW -> RUNNING -> STOPPED, or -> FAILED from anywhere something broke
(QEMU died, the guest panicked, the agent stopped answering).  Shutdown is
soft first, then hard: the agent powers the guest off; failing that, QMP
``quit``; then SIGTERM; then SIGKILL, each bounded.

Files: one private directory per VM (QMP and agent sockets, console.log,
qemu.log), removed at shutdown (copied to ``keep_logs_dir`` first if the VM
failed and that is set), and the guest-RAM file in /dev/shm, unlinked as soon
as QEMU has mapped it (the harness keeps a descriptor to read it).
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from harness import reaper
from harness.agent.client import AgentClient, Hello
from harness.arches import ArchProfile
from harness.console import LogFile
from harness.errors import AgentOpError, AgentTimeout, GuestPanic, QEMUDied, VMError
from harness.image import BootImage
from harness.qemu_command import VMPaths, qemu_command
from harness.qmp import QMPSession, QMPSessionError
from harness.swapdisk import SWAP_DEVICE, write_swap_disk
from sim.mm.facts import KernelFacts, UnknownKernelError, facts_for_release

__all__ = ["VM", "GuestRAM", "ShutdownTimeouts", "VMConfig", "VMSource", "VMState"]

_SLICE_S = 0.1
_SHM_DIR = Path("/dev/shm")
#: vm.page-cluster: log2 of the swap readahead window (0: the faulting slot only).
PAGE_CLUSTER = "/proc/sys/vm/page-cluster"


class VMState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class ShutdownTimeouts:
    """Seconds each shutdown step may take before the next, harder one."""

    poweroff: float = 30.0
    #: A panicked guest reboots, which ends QEMU (-no-reboot): wait for that.
    after_panic: float = 5.0
    qmp_quit: float = 5.0
    sigterm: float = 5.0
    sigkill: float = 5.0


def _echo_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class VMConfig:
    profile: ArchProfile
    image: BootImage
    extra_cmdline: tuple[str, ...] = ()
    #: None: the profile's boot timeout.
    boot_timeout: float | None = None
    #: Default bound of one agent request.
    op_timeout: float = 120.0
    #: If set, a failed VM's logs are copied to a directory under this one.
    keep_logs_dir: Path | None = None
    shutdown_timeouts: ShutdownTimeouts = field(default_factory=ShutdownTimeouts)
    #: Where the QEMU command line is printed before it runs.
    echo: Callable[[str], None] = _echo_stderr
    #: The model facts scenarios are judged by; None: chosen by the guest's
    #: release (sim.mm.facts.facts_for_release).  Either way they must be of
    #: the booted kernel's series, or the boot is refused.
    facts: KernelFacts | None = None
    #: Boot with swap: a swap disk (harness.swapdisk) attached and swapped on
    #: (and vm.page-cluster 0) before the VM counts as running.  Off by default:
    #: scenarios that need swap ask for it (Scenario.swap).
    swap: bool = False


class GuestRAM:
    """The guest's RAM through the memory-backend file.

    QEMU maps the backend at the machine's RAM base, so the byte at
    guest-physical address ``ram_base + off`` is at file offset ``off``; the
    frame with PFN ``pfn`` starts at ``(pfn << page_shift) - ram_base``.  That
    holds for RAM in one block: all of it on pseries (base 0), and on x86 below
    the PCI hole (3 GiB), which 1 GiB stays under.
    """

    def __init__(self, fd: int, page_shift: int, ram_base: int = 0) -> None:
        """``fd``: the open backend file; ``ram_base``: guest-physical address of its byte 0."""
        self._fd: int | None = fd
        self.page_shift = page_shift
        self.ram_base = ram_base

    @property
    def size(self) -> int:
        """Bytes of guest RAM (the backend file's size; 0 until QEMU has sized it)."""
        return os.fstat(self._require()).st_size

    def _require(self) -> int:
        if self._fd is None:
            raise VMError("guest RAM file is closed (the VM was shut down)")
        return self._fd

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at file ``offset`` (ValueError outside the file, VMError if closed)."""
        fd = self._require()
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"guest RAM read {offset:#x}+{size:#x} is outside 0..{self.size:#x}")
        return os.pread(fd, size, offset)

    def frame_offset(self, pfn: int) -> int:
        """The file offset of the first byte of frame ``pfn`` (may be outside the file)."""
        return (pfn << self.page_shift) - self.ram_base

    def frame_bytes(self, pfn: int, size: int) -> bytes | None:
        """The first ``size`` bytes of frame ``pfn``; None when the frame is not in this RAM."""
        offset = self.frame_offset(pfn)
        if offset < 0 or offset + size > self.size:
            return None
        return self.read(offset, size)

    def page(self, pfn: int) -> bytes:
        """Every byte of frame ``pfn`` (ValueError when it is not in this RAM)."""
        return self.read(self.frame_offset(pfn), 1 << self.page_shift)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _hard_stop(popen: subprocess.Popen[bytes], workdir: Path, ram: Path) -> None:
    """Last resort (exit, signal, garbage collection): kill QEMU, remove files."""
    if popen.poll() is None:
        popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5)
    shutil.rmtree(workdir, ignore_errors=True)
    with contextlib.suppress(OSError):
        ram.unlink()


def _exit_text(code: int) -> str:
    """How QEMU ended, from its wait status (negative: the signal that killed it)."""
    if code >= 0:
        return f"QEMU exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "an unknown signal"
    return f"QEMU was killed by signal {-code} ({name})"


def _wait_exit(popen: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


class VM:
    """A guest of one architecture in QEMU (TCG), with its agent."""

    def __init__(self, config: VMConfig, name: str = "vm") -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.]{1,24}", name):
            raise ValueError(f"VM name {name!r}: use 1-24 letters, digits, '_' or '.'")
        self.config = config
        self.profile = config.profile
        self.name = name
        self.command_line: tuple[str, ...] = ()
        self.hello: Hello | None = None
        #: The model facts for the booted kernel (set once the agent said hello).
        self.facts: KernelFacts | None = None
        self.boot_seconds: float | None = None
        #: Seconds from launch() to each step: qemu-started, qmp-ready, agent-ready.
        self.launch_timings: dict[str, float] = {}
        self.shutdown_how: str | None = None
        self.kept_logs: Path | None = None
        self._state = VMState.NEW
        self._stopping = False
        self._closed = False
        self._paths: VMPaths | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._qmp: QMPSession | None = None
        self._agent: AgentClient | None = None
        self._ram: GuestRAM | None = None
        self._console: LogFile | None = None
        self._qemu_log: LogFile | None = None
        self._listeners: dict[str, socket.socket] = {}
        self._finalizer: weakref.finalize[Any, VM] | None = None

    # -- introspection --------------------------------------------------------

    @property
    def state(self) -> VMState:
        return self._state

    @property
    def paths(self) -> VMPaths:
        if self._paths is None:
            raise VMError(f"VM {self.name} was never launched")
        return self._paths

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise VMError(f"VM {self.name} was never launched")
        return self._popen.pid

    def cpu_seconds(self) -> float:
        """CPU time QEMU has used so far (user + system, all its threads), in seconds.

        From /proc/PID/stat (utime, stime); VMError once QEMU is gone.  Unlike
        wall time, other jobs on the machine do not inflate it: benchmarks use it.
        """
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError as e:
            raise VMError(f"VM {self.name}: cannot read QEMU's CPU time: {e.strerror}") from None
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def command_text(self) -> str:
        return shlex.join(self.command_line)

    @property
    def agent(self) -> AgentClient:
        if self._agent is None or self._state is not VMState.RUNNING:
            if self._state is VMState.FAILED:
                # Why it failed (QEMUDied, GuestPanic) is the error to report: a
                # caller that swallowed the first one (a cleanup path) asks again.
                self.check()
            raise VMError(f"VM {self.name} is {self._state.value}: no agent to talk to")
        return self._agent

    @property
    def ram(self) -> GuestRAM:
        if self._ram is None:
            raise VMError(f"VM {self.name} has no guest RAM file (not launched or closed)")
        return self._ram

    def console_tail(self, lines: int = 40) -> str:
        return self._console.tail(lines) if self._console else ""

    def qmp_execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> object:
        if self._qmp is None or self._state is not VMState.RUNNING:
            raise VMError(f"VM {self.name} is {self._state.value}: no QMP")
        try:
            return self._qmp.execute(command, arguments, timeout)
        except QMPSessionError as e:
            self.check()
            raise self.error(VMError, str(e)) from e

    def qmp_events(self) -> list[str]:
        return self._qmp.event_names() if self._qmp else []

    # -- watchdog (used by the agent client) ---------------------------------

    def error(self, kind: type[VMError], message: str) -> VMError:
        # Logs are kept for a VM that ends failed; an error while launching does.
        failing = self._state in (VMState.FAILED, VMState.NEW)
        kept = self._planned_kept_logs() if failing else None
        return kind(
            f"VM {self.name} ({self.profile.name}): {message}",
            command_line=self.command_text,
            console_tail=self.console_tail(),
            qemu_output_tail=self._qemu_output(15),
            kept_logs=str(kept) if kept else "",
        )

    def check(self) -> None:
        """Raise GuestPanic or QEMUDied (and mark the VM failed) if it is gone."""
        panic = self._panic_reason()
        if panic is not None:
            self._state = VMState.FAILED
            raise self.error(GuestPanic, f"guest kernel panicked: {panic}")
        if self._stopping or self._popen is None:
            return
        code = self._popen.poll()
        if code is not None:
            self._state = VMState.FAILED
            last = self._qemu_output(1)
            raise self.error(QEMUDied, _exit_text(code) + (f": {last}" if last else ""))

    def _qemu_output(self, lines: int) -> str:
        """The tail of QEMU's own output (without the command line logged first)."""
        if self._qemu_log is None:
            return ""
        output = [
            line
            for line in self._qemu_log.tail(lines + 1).splitlines()
            if line.strip() and not line.startswith("+ ")
        ]
        return "\n".join(output[-lines:])

    def exited(self) -> bool:
        return self._popen is not None and self._popen.poll() is not None

    def _panic_reason(self) -> str | None:
        line = self._console.panic_line() if self._console else None
        if line is not None:
            return line
        if self._qmp is not None and self._qmp.panicked.is_set():
            return "QMP event GUEST_PANICKED"
        return None

    # -- launch ---------------------------------------------------------------

    def launch(self) -> VM:
        """Start QEMU and wait until the agent says HELLO."""
        if self._state is not VMState.NEW:
            raise VMError(f"VM {self.name}: launch() on a VM that is {self._state.value}")
        started = time.monotonic()

        def step(name: str) -> None:
            self.launch_timings[name] = time.monotonic() - started

        try:
            self._prepare_files()
            self._start_qemu()
            step("qemu-started")
            self._connect_qmp()
            step("qmp-ready")
            self._connect_agent()
            self._wait_for_agent()
            step("agent-ready")
            if self.config.swap:
                self._swap_on()
                step("swap-on")
        except BaseException as e:
            self._state = VMState.FAILED
            failure = e if isinstance(e, VMError) or not isinstance(e, Exception) else None
            if failure is None:
                failure = self.error(VMError, f"launch failed: {type(e).__name__}: {e}")
            self._stop_and_clean(graceful=False)
            if failure is e:
                raise
            raise failure from e
        self.boot_seconds = time.monotonic() - started
        self._state = VMState.RUNNING
        return self

    def _prepare_files(self) -> None:
        reaper.sweep_stale((Path(tempfile.gettempdir()), _SHM_DIR))
        prefix = f"{reaper.TEMP_PREFIX}{os.getpid()}-{self.name}-"
        workdir = Path(tempfile.mkdtemp(prefix=prefix))
        ram = _SHM_DIR / f"{prefix}{secrets.token_hex(4)}.ram"
        self._paths = VMPaths(workdir=workdir, ram=ram)
        self._console = LogFile(self._paths.console_log)
        self._qemu_log = LogFile(self._paths.qemu_log)
        # Created here (empty; QEMU sizes it) so the harness holds a descriptor
        # and can unlink the name as soon as QEMU has mapped it.
        if self.config.swap:
            write_swap_disk(self._paths.swap_disk, self.profile.arch)
        fd = os.open(ram, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._ram = GuestRAM(fd, self.profile.page_shift, self.profile.arch.ram_base)
        for what, path in (("qmp", self._paths.qmp_socket), ("agent", self._paths.agent_socket)):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            listener.bind(str(path))
            listener.listen(1)
            listener.settimeout(_SLICE_S)
            self._listeners[what] = listener

    def _start_qemu(self) -> None:
        paths = self.paths
        cmd = qemu_command(
            self.profile, self.config.image, paths, extra_cmdline=self.config.extra_cmdline,
            swap=self.config.swap,
        )
        self.command_line = tuple(cmd)
        self.config.echo(f"+ {self.command_text}")
        with paths.qemu_log.open("wb") as log:
            log.write(f"+ {self.command_text}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    process_group=0,  # a terminal's ^C goes to the harness, not QEMU
                    preexec_fn=reaper.make_pdeathsig_preexec(),
                )
            except OSError as e:
                raise self.error(VMError, f"cannot start {cmd[0]}: {e}") from e
        self._finalizer = weakref.finalize(self, _hard_stop, self._popen, paths.workdir, paths.ram)
        reaper.register(id(self), self._finalizer)

    def _accept(self, what: str, timeout: float) -> socket.socket:
        """QEMU connects to each socket at start-up: accept it (bounded)."""
        listener = self._listeners[what]
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise self.error(
                        VMError, f"QEMU did not connect to the {what} socket in {timeout:g} s"
                    ) from None
                continue
            conn.settimeout(None)
            listener.close()
            del self._listeners[what]
            return conn

    def _connect_qmp(self) -> None:
        sock = self._accept("qmp", 30.0)
        self._qmp = QMPSession(f"{self.name}-qmp")
        try:
            self._qmp.connect(sock, 30.0)
            # Commands run once the machine is built: the RAM file is mapped.
            self._qmp.execute("query-status", timeout=30.0)
        except QMPSessionError as e:
            self.check()
            raise self.error(VMError, str(e)) from e
        with contextlib.suppress(FileNotFoundError):
            self.paths.ram.unlink()

    def _connect_agent(self) -> None:
        sock = self._accept("agent", 30.0)
        self._agent = AgentClient(sock, self, self.config.op_timeout)

    def _wait_for_agent(self) -> None:
        assert self._agent is not None
        timeout = self.config.boot_timeout or self.profile.qemu.boot_timeout_s
        try:
            self.hello = self._agent.wait_hello(timeout)
        except AgentTimeout as e:
            raise self.error(AgentTimeout, f"agent not ready within {timeout:g} s") from e
        arch = self.profile.arch
        facts = (self.hello.page_size, self.hello.little_endian, self.hello.word_size)
        if facts != (arch.page_size, arch.little_endian, arch.word_size):
            raise self.error(
                VMError,
                f"the guest is not {arch.name}: page size {self.hello.page_size}, "
                f"little-endian {self.hello.little_endian}, word size {self.hello.word_size}"
                f" (machine {self.hello.machine}, kernel {self.hello.release})",
            )
        self.facts = self._facts_for(self.hello.release)

    def _swap_on(self) -> None:
        """The boot-time swapon, one step whose result is checked (VMError if it fails).

        swapon(2) of the swap disk, then ``vm.page-cluster`` 0: no swap
        readahead (swapin_nr_pages() is 1, so swap_cluster_readahead() and
        swap_vma_readahead() read only the faulting slot), which the model
        assumes (sim/mm/swapfile.py).
        """
        assert self._agent is not None
        try:
            self._agent.swapon(SWAP_DEVICE)
            self._agent.write_file(PAGE_CLUSTER, "0\n")
        except AgentOpError as e:
            raise self.error(VMError, f"swap on {SWAP_DEVICE}: {e}") from e

    def _facts_for(self, release: str) -> KernelFacts:
        """The configured facts, or the release's; VMError if they are not of this kernel."""
        try:
            chosen = facts_for_release(release)
        except UnknownKernelError as e:
            raise self.error(VMError, f"the guest's kernel cannot be judged: {e}") from None
        wanted = self.config.facts
        if wanted is None:
            return chosen
        if wanted.series != chosen.series:
            raise self.error(
                VMError,
                f"the model facts in use are for kernel {wanted.series} ({wanted.release}), "
                f"but the guest runs {release}",
            )
        return wanted

    # -- shutdown -------------------------------------------------------------

    def shutdown(self) -> str:
        """Stop the guest (soft, then hard) and remove its files.

        Returns how it ended: ``poweroff`` (the agent powered it off),
        ``qmp-quit``, ``sigterm``, ``sigkill``, ``exited`` (it was already
        gone) or ``never-started``.  Never raises for a guest that misbehaves
        on the way out; a second call returns the first answer.
        """
        if self._closed:
            return self.shutdown_how or "never-started"
        if self._state is VMState.NEW:
            self._closed = True
            self._state = VMState.STOPPED
            self.shutdown_how = "never-started"
            return self.shutdown_how
        how = self._stop_and_clean(graceful=self._state is VMState.RUNNING)
        if self._state is VMState.RUNNING:
            self._state = VMState.STOPPED
        return how

    def kill(self) -> str:
        """Stop at once (no power-off request) and remove the files."""
        if self._state is VMState.RUNNING:
            self._state = VMState.STOPPED
        return self._stop_and_clean(graceful=False)

    def _stop_and_clean(self, graceful: bool) -> str:
        self._stopping = True
        how = "never-started"
        if self._popen is not None:
            how = self._stop_qemu(graceful)
        self._release()
        self.shutdown_how = how
        self._closed = True
        return how

    def _stop_qemu(self, graceful: bool) -> str:
        popen = self._popen
        assert popen is not None
        timeouts = self.config.shutdown_timeouts
        if popen.poll() is not None:
            return "exited"
        if self._panic_reason() is not None and _wait_exit(popen, timeouts.after_panic):
            # panic=-1 reboots and -no-reboot ends QEMU: let the panic's
            # report reach the console log first.
            return "exited"
        # Each step has one deadline for asking and for QEMU to exit, so a
        # guest that ignores the request costs the step's bound, not twice it.
        # An agent whose last request timed out is not asked at all.
        if graceful and self._agent is not None and not self._agent.stalled:
            deadline = time.monotonic() + timeouts.poweroff
            with contextlib.suppress(VMError, AgentOpError):
                self._agent.poweroff(timeout=timeouts.poweroff)
            if _wait_exit(popen, max(deadline - time.monotonic(), 0.0)):
                return "poweroff"
        if self._qmp is not None:
            deadline = time.monotonic() + timeouts.qmp_quit
            with contextlib.suppress(QMPSessionError):
                self._qmp.execute("quit", timeout=timeouts.qmp_quit)
            if _wait_exit(popen, max(deadline - time.monotonic(), 0.0)):
                return "qmp-quit"
        popen.terminate()
        if _wait_exit(popen, timeouts.sigterm):
            return "sigterm"
        popen.kill()
        _wait_exit(popen, timeouts.sigkill)
        return "sigkill"

    def _planned_kept_logs(self) -> Path | None:
        if self.config.keep_logs_dir is None or self._paths is None:
            return None
        return self.config.keep_logs_dir / self._paths.workdir.name

    def _release(self) -> None:
        """Close every channel and remove every file (keeping logs of a failure)."""
        if self._agent is not None:
            self._agent.close()
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        for listener in self._listeners.values():
            listener.close()
        self._listeners.clear()
        if self._ram is not None:
            self._ram.close()
            self._ram = None
        if self._paths is None:
            return
        kept = self._planned_kept_logs()
        if kept is not None and self._state is VMState.FAILED:
            kept.mkdir(parents=True, exist_ok=True)
            for log in (self._paths.console_log, self._paths.qemu_log):
                if log.exists():
                    shutil.copy2(log, kept / log.name)
            self.kept_logs = kept
        if self._finalizer is not None:
            self._finalizer()  # removes the directory and the RAM file name
            reaper.unregister(id(self))

    # -- context manager -----------------------------------------------------

    def __enter__(self) -> VM:
        if self._state is VMState.NEW:
            self.launch()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


class VMSource(Protocol):
    """Hands out a running VM, with a swap device swapped on or without (VMConfig.swap):
    the test suite's one VM per worker (tests/conftest.py ``shared_vm``), rebooted
    when a test asks for the other kind."""

    def get(self, *, swap: bool = False) -> VM:
        """The running VM, with swap iff ``swap``."""
        ...
