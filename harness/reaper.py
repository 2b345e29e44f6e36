"""No QEMU outlives the Python process that started it.

Three layers:

* every QEMU child gets PR_SET_PDEATHSIG(SIGKILL), so even a SIGKILLed harness
  takes its guests along (the signal follows the *thread* that forked: start
  VMs from a thread that lives as long as they do, normally the main thread);
* live VMs register a hard-stop callback here; the callbacks run at exit
  (atexit) and on SIGTERM/SIGHUP (then the signal's default action proceeds);
* files a killed harness could not remove (its temp dir, its RAM file) carry
  its pid in their names and are swept by the next run.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

__all__ = [
    "TEMP_PREFIX",
    "make_pdeathsig_preexec",
    "register",
    "stop_all",
    "sweep_stale",
    "unregister",
]

#: Prefix of every temp dir and RAM file of the harness: pmh-<pid>-...
TEMP_PREFIX = "pmh-"
_PR_SET_PDEATHSIG = 1

_lock = threading.Lock()
_live: dict[int, Callable[[], None]] = {}
_handlers_installed = False
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl


def make_pdeathsig_preexec() -> Callable[[], None]:
    """A preexec_fn: SIGKILL this child when its parent thread exits.

    It runs in the forked child before exec, so it only calls a ctypes
    function pointer resolved beforehand (no imports, no allocation).
    """
    parent = os.getpid()

    def preexec() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def register(key: int, stop: Callable[[], None]) -> None:
    """Run ``stop`` at exit or on SIGTERM/SIGHUP unless unregistered first."""
    with _lock:
        _live[key] = stop
    _install_signal_handlers()


def unregister(key: int) -> None:
    with _lock:
        _live.pop(key, None)


def stop_all() -> None:
    """Hard-stop every registered VM (each callback runs once)."""
    with _lock:
        stops = list(_live.values())
        _live.clear()
    for stop in stops:
        with contextlib.suppress(Exception):
            stop()


_previous: dict[int, object] = {}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Stop the VMs, then do what would have happened without us."""
    stop_all()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    """SIGTERM/SIGHUP stop the VMs first (chaining to any earlier handler)."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True
    for signum in (signal.SIGTERM, signal.SIGHUP):
        _previous[signum] = signal.getsignal(signum)
        signal.signal(signum, _on_signal)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie (dead, waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # The state field follows the command name, which may itself hold ")".
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    """Wait up to ``timeout`` seconds for :func:`process_gone`; say whether it came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.05)
    return False


def _owner_pid(name: str) -> int | None:
    rest = name[len(TEMP_PREFIX) :]
    head = rest.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def sweep_stale(dirs: tuple[Path, ...]) -> list[Path]:
    """Remove pmh-<pid>-* entries in ``dirs`` whose owning process is gone."""
    removed = []
    for parent in dirs:
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            owner = _owner_pid(entry.name)
            if owner is None or owner == os.getpid() or _pid_alive(owner):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed


atexit.register(stop_all)
