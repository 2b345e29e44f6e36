"""The guest console as QEMU logs it to a file: tail, and panic detection."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PANIC_MARKERS", "LogFile"]

#: Console text that means the kernel panicked (panic() in kernel/panic.c
#: prints "Kernel panic - not syncing: ...").
PANIC_MARKERS: tuple[bytes, ...] = (b"Kernel panic - not syncing",)

_TAIL_BYTES = 64 * 1024


class LogFile:
    """A log another process appends to; read incrementally and by tail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scanned = 0
        self._carry = b""
        self._panic_line: str | None = None

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines (empty if there is no file yet)."""
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - _TAIL_BYTES))
                data = f.read()
        except FileNotFoundError:
            return ""
        text = data.decode(errors="replace").replace("\r\n", "\n")
        return "\n".join(text.splitlines()[-lines:])

    def panic_line(self) -> str | None:
        """The console line announcing a kernel panic, if one appeared so far."""
        if self._panic_line is not None:
            return self._panic_line
        try:
            with self.path.open("rb") as f:
                f.seek(self._scanned)
                new = f.read()
        except FileNotFoundError:
            return None
        self._scanned += len(new)
        # Keep a partial line so a marker split across reads is still found.
        data = self._carry + new
        for marker in PANIC_MARKERS:
            at = data.find(marker)
            if at >= 0:
                end = data.find(b"\n", at)
                line = data[at : end if end >= 0 else len(data)]
                self._panic_line = line.decode(errors="replace").strip()
                return self._panic_line
        keep = max(len(m) for m in PANIC_MARKERS)
        self._carry = data[-keep:]
        return None
