"""Host side of the agent protocol: typed calls over the agent's channel.

Every wait is bounded and sliced: between slices the client asks its
:class:`Watchdog` (the VM) whether QEMU is still alive and the guest has not
panicked, so a dead guest surfaces as QEMUDied/GuestPanic at once, not as a
timeout minutes later.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from harness.agent.protocol import (
    HEADER_SIZE,
    INIT,
    LAYOUTS,
    MAX_PAYLOAD,
    NAME_MAX,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    UID_KEEP,
    BackingCode,
    CrashKind,
    ExitHow,
    Frame,
    MapBits,
    Op,
    OpenBits,
    ProtBits,
    ProtocolError,
    ReadStage,
    RemapBits,
    ReplyStatus,
    ScanVec,
    SettleFlags,
    Whence,
    WriteBits,
    Writer,
    check_payload,
    decode_header,
    encode_frame,
    pack,
    unpack,
)
from harness.errors import AgentOpError, AgentProtocolError, AgentTimeout, VMError, errno_text
from sim.formats_scan import PmScanArg

__all__ = [
    "AgentClient",
    "BatchRead",
    "BatchReadReply",
    "ExitResult",
    "Hello",
    "KsmScanReply",
    "ReadFileReply",
    "Reply",
    "ScanReply",
    "TouchReply",
    "Watchdog",
]

#: How often a wait wakes up to ask the watchdog.
_SLICE_S = 0.1
#: How long a closed channel waits for QEMU to be seen exiting.
_HANGUP_GRACE_S = 2.0


class Watchdog(Protocol):
    """What the client needs from the VM it talks to."""

    def check(self) -> None:
        """Raise (QEMUDied, GuestPanic) if the VM is gone."""

    def exited(self) -> bool:
        """Whether QEMU has exited (and been reaped)."""

    def error(self, kind: type[VMError], message: str) -> VMError:
        """An exception of ``kind`` carrying the VM's command line and console."""


@dataclass(frozen=True)
class Reply:
    seq: int
    op: int
    status: ReplyStatus
    error: int
    payload: bytes

    @property
    def message(self) -> str:
        return self.payload.decode(errors="replace")


@dataclass(frozen=True)
class Hello:
    """What the agent says about itself (HELLO and PING)."""

    version: int
    pid: int
    page_size: int
    little_endian: bool
    word_size: int
    machine: str
    release: str


@dataclass(frozen=True)
class KsmScanReply:
    """KSM_SCAN's reply: full_scans before and after, and the knobs the model assumes."""

    before: int
    after: int
    smart_scan: bool
    max_page_sharing: int


@dataclass(frozen=True)
class TouchReply:
    done: int
    signal: int
    fault_addr: int
    values: tuple[int, ...]

    @property
    def faulted(self) -> bool:
        return self.signal != 0


@dataclass(frozen=True)
class BatchRead:
    """One read of a READ_FILES batch: open ``path`` read-only, read, close.

    With ``offset`` the read is pread() there, else read() from the start;
    ``loop`` keeps reading until ``count`` bytes or end of file (a seq_file
    such as smaps returns about a page per call); without it, one call.
    """

    path: str
    count: int
    offset: int | None = None
    loop: bool = False


@dataclass(frozen=True)
class BatchReadReply:
    """One READ_FILES read: the bytes, or where (open, read, creds) and why it stopped."""

    stage: ReadStage
    errno: int
    data: bytes

    @property
    def ok(self) -> bool:
        return self.stage is ReadStage.NONE

    def describe(self) -> str:
        if self.ok:
            return f"{len(self.data)} bytes"
        return f"{self.stage.name.lower()} failed: {errno_text(self.errno)}"


@dataclass(frozen=True)
class ReadFileReply(BatchReadReply):
    """Outcome of READ_FILE: as one READ_FILES read, plus each seek's result and the
    position after the read."""

    seek_results: tuple[int, ...]
    final_pos: int

    def describe(self) -> str:
        if self.ok:
            return f"{len(self.data)} bytes, position {self.final_pos}"
        return super().describe()


#: Most reads of one READ_FILES request (the agent's MAX_BATCH_READS).
MAX_BATCH_READS = 1024


def _batches(reads: Sequence[BatchRead]) -> list[list[BatchRead]]:
    """``reads`` in order, cut into requests the agent accepts (count and bytes)."""
    batches: list[list[BatchRead]] = [[]]
    total = 0
    for read in reads:
        room = MAX_PAYLOAD - 4096 - 9 * (len(batches[-1]) + 1)
        if batches[-1] and (len(batches[-1]) == MAX_BATCH_READS or total + read.count > room):
            batches.append([])
            total = 0
        batches[-1].append(read)
        total += read.count
    return batches


@dataclass(frozen=True)
class ScanReply:
    """Outcome of PAGEMAP_SCAN: where it stopped (open, creds) or the ioctl's result.

    ``ret``: the ioctl's return value (page_region records written) or -errno;
    ``walk_end``: the argument's walk_end afterwards; ``vec``: the agent's
    output buffer afterwards (SCAN_VEC_FILL where the kernel wrote nothing;
    empty when ``vec`` was passed raw).
    """

    stage: ReadStage
    errno: int
    ret: int
    walk_end: int
    vec: bytes

    @property
    def opened(self) -> bool:
        return self.stage is ReadStage.NONE


@dataclass(frozen=True)
class ExitResult:
    pid: int
    how: ExitHow
    value: int

    @property
    def exited(self) -> bool:
        return self.how is ExitHow.EXITED


def _hello(values: dict[str, Any]) -> Hello:
    values["little_endian"] = bool(values["little_endian"])
    return Hello(**values)


def _exit(values: dict[str, Any]) -> ExitResult:
    return ExitResult(pid=values["pid"], how=ExitHow(values["how"]), value=values["value"])


class AgentClient:
    """Requests to the agent and its named processes; one request at a time."""

    def __init__(
        self, sock: socket.socket, watchdog: Watchdog, default_timeout: float = 60.0
    ) -> None:
        self._sock = sock
        self._sock.setblocking(False)
        self._watchdog = watchdog
        self._timeout = default_timeout
        self._seq = 0
        self._pending = b""
        self._closed = False
        #: The last wait for the agent timed out and no frame came since: it
        #: may be hung, so shutdown does not wait for it to power off.
        self.stalled = False

    # -- transport -----------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    def send_raw(self, data: bytes, timeout: float | None = None) -> None:
        """Bytes onto the channel as they are (the protocol tests send bad frames)."""
        deadline = time.monotonic() + (timeout or self._timeout)
        view = memoryview(data)
        while view:
            self._wait(deadline, write=True, what="sending a request")
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                continue
            except OSError as e:
                self._explain_hangup()
                raise self._watchdog.error(
                    AgentProtocolError, f"agent channel: send failed: {e}"
                ) from e
            view = view[sent:]

    def _wait(self, deadline: float, *, write: bool, what: str) -> None:
        """Until the socket is ready; the watchdog is asked every slice."""
        while True:
            self._watchdog.check()
            left = deadline - time.monotonic()
            if left <= 0:
                self.stalled = True
                raise self._watchdog.error(AgentTimeout, f"agent: no progress {what}")
            rlist, wlist = ([], [self._sock]) if write else ([self._sock], [])
            ready = select.select(rlist, wlist, [], min(left, _SLICE_S))
            if ready[0] or ready[1]:
                return

    def _recv_exact(self, n: int, deadline: float, what: str) -> bytes:
        while len(self._pending) < n:
            self._wait(deadline, write=False, what=what)
            try:
                chunk = self._sock.recv(max(65536, n - len(self._pending)))
            except BlockingIOError:
                continue
            except OSError as e:
                chunk = b""
                reason = str(e)
            else:
                reason = "the agent closed its channel"
            if not chunk:
                self._explain_hangup()
                raise self._watchdog.error(
                    AgentProtocolError,
                    f"{reason} while {what} ({len(self._pending)} of {n} bytes)",
                )
            self._pending += chunk
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def _explain_hangup(self) -> None:
        """The channel closed: if QEMU is dying, let the watchdog say so.

        QEMU's sockets close while it exits, a moment before it can be reaped;
        give it that moment so the error names the cause (QEMUDied,
        GuestPanic) rather than the symptom.
        """
        deadline = time.monotonic() + _HANGUP_GRACE_S
        while not self._watchdog.exited() and time.monotonic() < deadline:
            self._watchdog.check()
            time.sleep(_SLICE_S / 2)
        self._watchdog.check()

    def receive(self, timeout: float | None = None) -> Reply:
        """The next response frame, whatever its sequence number."""
        deadline = time.monotonic() + (timeout or self._timeout)
        head = self._recv_exact(HEADER_SIZE, deadline, "waiting for a reply")
        try:
            header = decode_header(head, RESPONSE_MAGIC)
            payload = self._recv_exact(header.length, deadline, "reading a reply payload")
            check_payload(header, payload)
        except ProtocolError as e:
            raise self._watchdog.error(AgentProtocolError, f"bad reply from the agent: {e}") from e
        self.stalled = False
        try:
            status = ReplyStatus(header.status)
        except ValueError:
            raise self._watchdog.error(
                AgentProtocolError, f"reply with unknown status {header.status}"
            ) from None
        return Reply(header.seq, header.op, status, header.error, payload)

    def request(
        self, op: Op, target: str = INIT, args: bytes = b"", timeout: float | None = None
    ) -> Reply:
        """Send one request and return its reply (any status)."""
        if len(target.encode()) > NAME_MAX:
            raise ValueError(f"process name {target!r} is longer than {NAME_MAX} bytes")
        self._seq = (self._seq + 1) & 0xFFFF_FFFF or 1
        seq = self._seq
        payload = Writer().str(target).bytes() + args
        self.send_raw(encode_frame(Frame(REQUEST_MAGIC, seq, op, 0, 0, payload)), timeout)
        deadline = time.monotonic() + (timeout or self._timeout)
        while True:
            reply = self.receive(max(deadline - time.monotonic(), 0.001))
            if reply.seq == seq and reply.op == op:
                return reply
            if reply.status is ReplyStatus.BAD_FRAME or reply.seq > seq:
                raise self._watchdog.error(
                    AgentProtocolError,
                    f"{op.name}: unexpected reply seq {reply.seq} op {reply.op} "
                    f"status {reply.status.name}: {reply.message}",
                )
            # A reply to an earlier request that timed out: skip it.

    def call(
        self, op: Op, target: str = INIT, args: bytes = b"", timeout: float | None = None
    ) -> bytes:
        """A request that must succeed; its result payload."""
        reply = self.request(op, target, args, timeout)
        if reply.status is not ReplyStatus.OK:
            raise AgentOpError(
                op.name.lower(), target, reply.status.name, reply.error, reply.message
            )
        return reply.payload

    def call_op(
        self, op: Op, target: str = INIT, timeout: float | None = None, **args: Any
    ) -> dict[str, Any]:
        """A request that must succeed, packed and unpacked by ``LAYOUTS[op]``; its values."""
        layout = LAYOUTS[op]
        payload = self.call(op, target, pack(layout.args, args), timeout)
        return unpack(layout.reply or (), payload, op.name.lower())

    # -- operations ----------------------------------------------------------

    def wait_hello(self, timeout: float) -> Hello:
        """The agent's unsolicited HELLO: it is up and serving."""
        reply = self.receive(timeout)
        if reply.op != Op.HELLO or reply.status is not ReplyStatus.OK:
            raise self._watchdog.error(
                AgentProtocolError, f"expected HELLO, got op {reply.op} ({reply.message})"
            )
        return _hello(unpack(LAYOUTS[Op.HELLO].reply or (), reply.payload, "hello"))

    def ping(self, target: str = INIT) -> Hello:
        return _hello(self.call_op(Op.PING, target))

    def echo(self, data: bytes, target: str = INIT) -> bytes:
        out: bytes = self.call_op(Op.ECHO, target, data=data)["data"]
        return out

    def mmap(
        self,
        addr: int,
        length: int,
        *,
        backing: BackingCode = BackingCode.ANON,
        shared: bool = False,
        prot: ProtBits = ProtBits.READ | ProtBits.WRITE,
        file_tag: int = 0,
        target: str = INIT,
        map_bits: MapBits = MapBits.NONE,
    ) -> int:
        placed: int = self.call_op(
            Op.MMAP, target, addr=addr, length=length, backing=backing, shared=int(shared),
            prot=prot, file_tag=file_tag, map_bits=map_bits,
        )["addr"]
        return placed

    def munmap(self, addr: int, length: int, target: str = INIT) -> None:
        self.call_op(Op.MUNMAP, target, addr=addr, length=length)

    def mprotect(self, addr: int, length: int, prot: ProtBits, target: str = INIT) -> None:
        self.call_op(Op.MPROTECT, target, addr=addr, length=length, prot=prot)

    def madvise(self, addr: int, length: int, advice: int, target: str = INIT) -> None:
        """madvise(addr, length, advice) in ``target``; ``advice`` is the raw MADV_* number."""
        self.call_op(Op.MADVISE, target, addr=addr, length=length, advice=advice)

    def mlock(self, addr: int, length: int, *, onfault: bool = False, target: str = INIT) -> None:
        """mlock(addr, length), or mlock2(addr, length, MLOCK_ONFAULT); AgentOpError on failure."""
        self.call_op(Op.MLOCK, target, addr=addr, length=length, onfault=int(onfault))

    def munlock(self, addr: int, length: int, target: str = INIT) -> None:
        """munlock(addr, length); AgentOpError on failure."""
        self.call_op(Op.MUNLOCK, target, addr=addr, length=length)
    def mremap(
        self, addr: int, old_length: int, new_length: int, flags: RemapBits, new_addr: int = 0,
        target: str = INIT,
    ) -> int:
        """mremap() in the target (lengths in bytes); the range's address afterwards."""
        got = self.call_op(Op.MREMAP, target, addr=addr, old_length=old_length,
                           new_length=new_length, flags=flags, new_addr=new_addr)
        return int(got["addr"])

    def touch(
        self, addr: int, pages: int, *, write: bool, tag: int = 0, target: str = INIT,
        fill: int | None = None,
    ) -> TouchReply:
        """Touch ``pages`` pages from ``addr``: a write stores ``tag + k`` in page k, or with
        ``fill`` (a byte) sets every byte of every page to it."""
        mode = (2 if fill is not None else 1) if write else 0
        got = self.call_op(Op.TOUCH, target, addr=addr, pages=pages, write=mode,
                           tag=tag if fill is None else fill)
        return TouchReply(got["done"], got["signal"], got["fault_addr"], got["values"])

    def ksm_scan(
        self, scans: int = 2, use_zero_pages: bool | None = None, timeout_s: float = 60.0,
        target: str = INIT,
    ) -> KsmScanReply:
        """Run ksmd for exactly ``scans`` more full scans and stop it (KSM_SCAN);
        ``use_zero_pages`` set meanwhile (None: left).  AgentOpError (ETIMEDOUT, ...) if
        ksmd does not finish within ``timeout_s``."""
        got = self.call_op(
            Op.KSM_SCAN, target, timeout=timeout_s + 30.0, scans=scans,
            use_zero_pages=2 if use_zero_pages is None else int(use_zero_pages),
            timeout_ms=int(timeout_s * 1000),
        )
        return KsmScanReply(got["before"], got["after"], bool(got["smart_scan"]),
                            got["max_page_sharing"])

    def fork(
        self, name: str, target: str = INIT, *, uid: int | None = None, gid: int | None = None
    ) -> int:
        """The target forks a child named ``name``; its pid.

        With ``uid``/``gid`` the child takes them (real, effective, saved; no
        supplementary groups, no capabilities once the uid is not 0) and stays
        dumpable; unset ones stay as they were.  A process of any uid can fork
        named children; an unprivileged one can only keep its own uid/gid.
        """
        pid: int = self.call_op(
            Op.FORK, target, name=name, uid=UID_KEEP if uid is None else uid,
            gid=UID_KEEP if gid is None else gid,
        )["pid"]
        return pid

    def exit(self, target: str, code: int = 0) -> ExitResult:
        return _exit(self.call_op(Op.EXIT, target, code=code))

    def kill(self, target: str, signal: int = 9) -> ExitResult:
        return _exit(self.call_op(Op.KILL, target, signal=signal))

    def getpid(self, target: str = INIT) -> int:
        pid: int = self.call_op(Op.GETPID, target)["pid"]
        return pid

    def list_processes(self) -> dict[str, int]:
        """The named processes (name -> pid), init not included."""
        return dict(self.call_op(Op.LIST)["procs"])

    def clear_refs(self, value: int, target: str = INIT) -> None:
        self.call_op(Op.CLEAR_REFS, target, value=value)

    def swapon(self, path: str, flags: int = 0) -> None:
        """swapon(path, flags) in init (swap.c); AgentOpError with the errno on failure."""
        self.call_op(Op.SWAPON, INIT, path=path.encode(), flags=flags)

    def swapoff(self, path: str) -> None:
        """swapoff(path) in init (swap.c); AgentOpError with the errno on failure."""
        self.call_op(Op.SWAPOFF, INIT, path=path.encode())

    def read_file(
        self,
        path: str,
        count: int,
        *,
        offset: int | None = None,
        seeks: Sequence[tuple[Whence, int]] = (),
        uid: int | None = None,
        gid: int | None = None,
        loop: bool = True,
        nonblock: bool = False,
        target: str = INIT,
        timeout: float | None = None,
    ) -> ReadFileReply:
        """Open ``path`` read-only (as ``uid`` if given), seek, then read.

        With ``offset`` the read is pread() there; otherwise read() at the
        position the seeks left.  ``loop`` keeps reading until ``count``
        bytes or end of file; without it, exactly one call is made.
        """
        got = self.call_op(
            Op.READ_FILE, target, timeout,
            path=path.encode(), uid=UID_KEEP if uid is None else uid,
            gid=UID_KEEP if gid is None else gid,
            open_bits=OpenBits.NONBLOCK if nonblock else 0, seeks=seeks,
            pread=int(offset is not None), pread_offset=offset or 0, count=count, loop=int(loop),
        )
        return ReadFileReply(
            ReadStage(got["stage"]), got["errno"], got["data"],
            seek_results=got["seek_results"], final_pos=got["final_pos"],
        )

    def read_files(
        self,
        reads: Sequence[BatchRead],
        *,
        uid: int | None = None,
        gid: int | None = None,
        settle: SettleFlags = SettleFlags.NONE,
        target: str = INIT,
        timeout: float | None = None,
    ) -> list[BatchReadReply]:
        """Every read, in order, as ``uid``/``gid`` (default: stay root): one reply each.

        One READ_FILES request (the agent settles with ``settle`` first, then
        makes the reads in one child when a uid is given), or more when the
        reads' counts outgrow a frame (the settle then comes before the first).
        ValueError: a read's count alone does not fit a frame.
        """
        replies: list[BatchReadReply] = []
        for batch in _batches(reads):
            for read in batch:
                if read.count > MAX_PAYLOAD - 4096 - 9:
                    raise ValueError(f"read of {read.path}: {read.count} bytes do not fit a frame")
            got = self.call_op(
                Op.READ_FILES, target, timeout,
                uid=UID_KEEP if uid is None else uid, gid=UID_KEEP if gid is None else gid,
                settle=settle,
                reads=[
                    (r.path.encode(), int(r.offset is not None), r.offset or 0, r.count,
                     int(r.loop))
                    for r in batch
                ],
            )
            settle = SettleFlags.NONE
            results = got["results"]
            if len(results) != len(batch):
                raise self._watchdog.error(
                    AgentProtocolError,
                    f"read_files: {len(results)} results for {len(batch)} reads",
                )
            replies += [
                BatchReadReply(ReadStage(stage), errno, data) for stage, errno, data in results
            ]
        return replies

    def pagemap_scan(
        self,
        path: str,
        arg: PmScanArg,
        *,
        vec_buffer: bool = True,
        arg_null: bool = False,
        uid: int | None = None,
        gid: int | None = None,
        target: str = INIT,
    ) -> ScanReply:
        """Open ``path`` (as ``uid`` if given) and ioctl(PAGEMAP_SCAN) with ``arg``.

        ``vec_buffer``: ``arg.vec`` is replaced by a buffer of the agent's of
        ``arg.vec_len`` records (1..SCAN_VEC_MAX); otherwise ``arg.vec`` is
        passed as it is.  ``arg_null``: the ioctl gets a NULL argument pointer.
        """
        got = self.call_op(
            Op.PAGEMAP_SCAN, target,
            path=path.encode(), uid=UID_KEEP if uid is None else uid,
            gid=UID_KEEP if gid is None else gid, arg_null=int(arg_null),
            size=arg.size, flags=arg.flags, start=arg.start, end=arg.end,
            walk_end=arg.walk_end, vec_mode=ScanVec.BUFFER if vec_buffer else ScanVec.RAW,
            vec=arg.vec, vec_len=arg.vec_len, max_pages=arg.max_pages,
            category_inverted=arg.category_inverted, category_mask=arg.category_mask,
            category_anyof_mask=arg.category_anyof_mask, return_mask=arg.return_mask,
        )
        return ScanReply(ReadStage(got["stage"]), got["errno"], got["ret"], got["walk_end"],
                         got["vec"])

    def write_file(
        self, path: str, data: bytes | str, *, create: bool = False, target: str = INIT
    ) -> int:
        raw = data.encode() if isinstance(data, str) else data
        written: int = self.call_op(
            Op.WRITE_FILE, target, path=path.encode(), data=raw,
            flags=WriteBits.CREATE if create else 0,
        )["written"]
        return written

    def settle(self, flags: SettleFlags = SettleFlags.DRAIN_LRU, target: str = INIT) -> None:
        self.call_op(Op.SETTLE, target, flags=flags)

    def poweroff(self, timeout: float | None = None) -> None:
        """Ask init to power off; returns once it acknowledged (or the line closed)."""
        try:
            self.call(Op.POWEROFF, INIT, b"", timeout)
        except AgentProtocolError:
            pass  # the guest went away before the reply got out: what was asked

    def crash(self, kind: CrashKind, target: str = INIT) -> Reply | None:
        """Make the target (or, for PANIC, the kernel) crash, or (HANG) go silent.

        init crashing takes the guest with it, so nothing answers: the request
        is only sent; so it is for HANG, which answers nothing, ever.  A named
        process is init's child: init answers for it (NO_PROCESS, with how it
        died), and that reply is returned.
        """
        args = pack(LAYOUTS[Op.CRASH].args, {"kind": kind})
        if target != INIT and kind is CrashKind.ABORT:
            return self.request(Op.CRASH, target, args)
        self._seq = (self._seq + 1) & 0xFFFF_FFFF or 1
        payload = Writer().str(target).bytes() + args
        self.send_raw(encode_frame(Frame(REQUEST_MAGIC, self._seq, Op.CRASH, 0, 0, payload)))
        return None
