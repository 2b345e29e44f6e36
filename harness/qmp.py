"""QMP from synchronous code: a qemu.qmp QMPClient on an event loop thread of its own.

The rest of the harness stays synchronous; each call hands a coroutine to the
private loop and waits for it with a timeout.  Events are collected as they
arrive; GUEST_PANICKED sets :attr:`QMPSession.panicked`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from qemu.qmp import QMPClient

__all__ = ["QMPSession", "QMPSessionError"]

T = TypeVar("T")


class QMPSessionError(Exception):
    """A QMP call failed or timed out; the message says which and why."""


class QMPSession:
    """One QMP connection, driven from any thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.panicked = threading.Event()
        self._events_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"qmp-{name}", daemon=True
        )
        self._thread.start()
        self._client: QMPClient | None = None
        self._pump: asyncio.Task[None] | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise QMPSessionError(f"QMP {what}: no answer within {timeout:g} s") from None
        except Exception as e:
            raise QMPSessionError(f"QMP {what}: {type(e).__name__}: {e}") from e

    def connect(self, sock: socket.socket, timeout: float) -> None:
        """Speak QMP over an accepted socket: greeting and capabilities."""

        async def _connect() -> None:
            client = QMPClient(self.name)
            await client.connect(sock)
            self._client = client
            self._pump = asyncio.ensure_future(self._pump_events(client))

        self._run(_connect(), timeout, "connect")

    async def _pump_events(self, client: QMPClient) -> None:
        async for event in client.events:
            with self._events_lock:
                self.events.append(dict(event))
            if event.get("event") == "GUEST_PANICKED":
                self.panicked.set()

    def event_names(self) -> list[str]:
        with self._events_lock:
            return [str(e.get("event")) for e in self.events]

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> object:
        client = self._client
        if client is None:
            raise QMPSessionError(f"QMP {command}: not connected")
        result: object = self._run(client.execute(command, arguments), timeout, command)
        return result

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect (errors ignored: QEMU may be gone) and stop the loop thread."""
        client = self._client
        self._client = None
        if client is not None:
            try:
                self._run(client.disconnect(), timeout, "disconnect")
            except QMPSessionError:
                pass
        pump = self._pump
        self._pump = None
        if pump is not None:

            async def _stop_pump() -> None:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

            with contextlib.suppress(QMPSessionError):
                self._run(_stop_pump(), timeout, "stop event pump")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
