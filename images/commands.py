"""Running external commands: printed first, output to a log, progress while long.

Every command is shown on stderr as a copy-pasteable shell line (``+ ...``)
before it runs.  Output goes to a log file when one is given (appended, so one
build's log holds every step); a failure raises :class:`CommandError` with the
command and the tail of its output.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from images.errors import CommandError

__all__ = ["TAIL_LINES", "format_command", "note", "run", "run_captured"]

#: Lines of output shown when a command fails.
TAIL_LINES = 40

#: Seconds between progress lines of a long command.
PROGRESS_INTERVAL = 15.0


def note(message: str) -> None:
    """A status line for the user (stderr, so stdout stays machine-readable)."""
    print(message, file=sys.stderr, flush=True)


def format_command(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: Path | None = None,
) -> str:
    """``argv`` as one shell line that reproduces the run."""
    parts = []
    if cwd is not None:
        parts.append(f"cd {shlex.quote(str(cwd))} &&")
    parts.extend(f"{name}={shlex.quote(value)}" for name, value in (env or {}).items())
    parts.append(shlex.join(argv))
    if stdout is not None:
        parts.append(f"> {shlex.quote(str(stdout))}")
    return " ".join(parts)


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    # Tools' messages in a language the failure parsers understand.
    merged["LC_ALL"] = "C"
    merged.update(env or {})
    return merged


def run_captured(
    argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Run a short command and return its output (stdout and stderr together)."""
    command = format_command(argv, env, cwd)
    note(f"+ {command}")
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            env=_child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(command, 127, None, f"{argv[0]}: not found ({exc.strerror})") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-TAIL_LINES:])
        raise CommandError(command, proc.returncode, None, tail, proc.stdout)
    return proc.stdout


def run(
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: Path | None = None,
    progress: str | None = None,
) -> None:
    """Run ``argv`` with its output appended to ``log``.

    ``stdout``: send standard output to this file instead (stderr still goes
    to the log).  ``progress``: a label; while the command runs, a line
    ``[label] N lines, 1m30s (last: ...)`` appears every
    :data:`PROGRESS_INTERVAL` seconds.
    """
    command = format_command(argv, env, cwd, stdout)
    note(f"+ {command}")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    counter = [0]
    with open(log, "a", encoding="utf-8", errors="replace") as log_file:
        log_file.write(f"+ {command}\n")
        log_file.flush()
        out_file = open(stdout, "wb") if stdout is not None else None
        try:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    cwd=cwd,
                    env=_child_env(env),
                    stdin=subprocess.DEVNULL,
                    stdout=out_file if out_file is not None else subprocess.PIPE,
                    stderr=subprocess.PIPE if out_file is not None else subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    # Its own process group, so an interruption ends make's children too.
                    process_group=0,
                )
            except FileNotFoundError as exc:
                raise CommandError(
                    command, 127, log, f"{argv[0]}: not found ({exc.strerror})"
                ) from None
            stream = proc.stderr if out_file is not None else proc.stdout
            assert stream is not None

            def pump() -> None:
                for line in stream:
                    log_file.write(line)
                    tail.append(line.rstrip("\n"))
                    counter[0] += 1

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            started = time.monotonic()
            try:
                while True:
                    try:
                        proc.wait(timeout=PROGRESS_INTERVAL)
                        break
                    except subprocess.TimeoutExpired:
                        if progress is not None:
                            last = tail[-1].strip() if tail else ""
                            note(
                                f"[{progress}] {counter[0]} lines, "
                                f"{_duration(time.monotonic() - started)}"
                                + (f" (last: {last[:70]})" if last else "")
                            )
            except BaseException:
                # Interrupted (Ctrl-C): end the command and its children first.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            reader.join()
        finally:
            if out_file is not None:
                out_file.close()
    if proc.returncode != 0:
        raise CommandError(command, proc.returncode, log, "\n".join(tail))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
