"""The wire protocol between the host and the guest agent, defined once.

Frames (both directions) are a 28-byte header and a payload; every integer
is little-endian on the wire whatever the guest's byte order (the agent
converts byte by byte, harness/agent/wire.c)::

    offset size field
     0     4    magic          b"PMAQ" request, b"PMAR" response
     4     4    seq            u32, chosen by the host, echoed in the reply
     8     2    op             u16, :class:`Op` (echoed in the reply)
    10     2    status         u16, :class:`ReplyStatus` (0 in requests)
    12     4    error          u32, the guest errno when status is ERRNO
    16     4    length         u32, payload bytes (at most MAX_PAYLOAD)
    20     4    payload_crc    CRC-32 (IEEE, as zlib.crc32) of the payload
    24     4    header_crc     CRC-32 of bytes 0-23
    28     ...  payload

A request payload starts with the target process name (u16 length, bytes;
empty means ``init``, the agent itself), then the op's arguments.  A reply
with status OK carries the op's result; any other status carries a UTF-8
message saying what went wrong.  A frame that fails a check gets a reply with
status BAD_FRAME and the reason; the agent then drops input until the line is
quiet.  The unsolicited HELLO (seq 0, status OK, response magic) says the
agent is ready.

Argument and result layouts are in the docstrings of the :class:`Op` members
(types: u8/u16/u32/u64, i64 two's complement, ``str`` = u16 length + bytes,
``blob`` = u32 length + bytes).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum, IntFlag

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "INIT",
    "MAX_PAYLOAD",
    "PROTOCOL_VERSION",
    "REQUEST_MAGIC",
    "RESPONSE_MAGIC",
    "UID_KEEP",
    "AdviceCode",
    "BackingCode",
    "CrashKind",
    "Frame",
    "Op",
    "ProtBits",
    "ProtocolError",
    "ReadStage",
    "Reader",
    "ReplyStatus",
    "SettleFlags",
    "Whence",
    "Writer",
    "decode_header",
    "encode_frame",
]

PROTOCOL_VERSION = 1
REQUEST_MAGIC = b"PMAQ"
RESPONSE_MAGIC = b"PMAR"
HEADER = struct.Struct("<4sIHHIIII")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 64 << 20
INIT = "init"
#: uid/gid value meaning "stay root" in READ_FILE.
UID_KEEP = 0xFFFF_FFFF
NAME_MAX = 32

assert HEADER_SIZE == 28


class Op(IntEnum):
    """Operations.  Arguments -> result (after the target name)."""

    HELLO = 0
    """Unsolicited -> u32 version, u32 pid, u32 page size, u8 little-endian, u8 word size,
    str machine, str release."""
    PING = 1
    """() -> as HELLO."""
    ECHO = 2
    """blob -> the same blob."""
    MMAP = 3
    """u64 addr, u64 length, u8 kind, u8 shared, u8 prot, u64 file tag -> u64 addr.
    MAP_FIXED_NOREPLACE at addr.  A FILE region is backed by a file of its own on
    tmpfs (unlinked at once): the first 8 bytes of file page i hold file_tag + i
    (u64, guest byte order), the rest of the page is zero."""
    MUNMAP = 4
    """u64 addr, u64 length -> ()."""
    MPROTECT = 5
    """u64 addr, u64 length, u8 prot -> ()."""
    MADVISE = 6
    """u64 addr, u64 length, u16 advice -> ()."""
    TOUCH = 7
    """u64 addr, u64 pages, u8 write, u64 tag -> u64 done, u32 signal, u64 fault addr,
    u32 n, u64 values[n].  Pages are touched in order; a write stores tag + k (u64,
    guest byte order) at the start of page k, a read returns the u64 there.  A fault
    stops the touch and is reported (signal, address), not fatal."""
    FORK = 8
    """str name, u32 uid, u32 gid -> u32 pid.  The target forks; the new process takes
    the uid and gid (UID_KEEP: unchanged), is named and served."""
    EXIT = 9
    """u32 code -> u32 pid, u8 how, u32 value.  The target exits; init reaps it."""
    KILL = 10
    """u32 signal -> u32 pid, u8 how, u32 value.  init signals the target, reaps it."""
    GETPID = 11
    """() -> u32 pid."""
    CLEAR_REFS = 12
    """u32 value -> ().  Written to the target's /proc/self/clear_refs."""
    READ_FILE = 13
    """blob path, u32 uid, u32 gid, u32 open bits, u32 n, n x (u8 whence, i64 offset),
    u8 pread, i64 pread offset, u64 count, u8 loop -> u8 failed stage, u32 errno,
    u32 m, i64 seek results[m], i64 final position, blob data."""
    WRITE_FILE = 14
    """blob path, blob data, u32 flags -> u64 written (one write() call)."""
    SETTLE = 15
    """u32 flags -> ()."""
    POWEROFF = 16
    """() -> () then reboot(RB_POWER_OFF).  init only."""
    CRASH = 17
    """u8 kind -> no reply (the target or the kernel is gone)."""
    LIST = 18
    """() -> u32 n, n x (str name, u32 pid): init's named processes."""


class ReplyStatus(IntEnum):
    OK = 0
    ERRNO = 1
    BAD_FRAME = 2
    BAD_REQUEST = 3
    UNKNOWN_OP = 4
    NO_PROCESS = 5


class ProtBits(IntFlag):
    NONE = 0
    READ = 1
    WRITE = 2
    EXEC = 4


class BackingCode(IntEnum):
    ANON = 0
    FILE = 1


class AdviceCode(IntEnum):
    """madvise() advice, mapped to the kernel's numbers by the agent."""

    DONTNEED = 1
    HUGEPAGE = 2
    NOHUGEPAGE = 3
    COLD = 4
    PAGEOUT = 5
    WILLNEED = 6
    FREE = 7
    COLLAPSE = 8


class SettleFlags(IntFlag):
    #: lru_add_drain() on the agent's CPU (munmap of an untouched scratch VMA).
    DRAIN_LRU = 1
    SYNC = 2


class CrashKind(IntEnum):
    PANIC = 1  # echo c > /proc/sysrq-trigger
    ABORT = 2  # abort() in the target process
    HANG = 3  # the target stops serving for good (signals blocked, pause())


class Whence(IntEnum):
    SET = 0
    CUR = 1
    END = 2
    DATA = 3
    HOLE = 4


class ReadStage(IntEnum):
    """Where READ_FILE stopped (NONE: it did not fail)."""

    NONE = 0
    OPEN = 1
    SEEK = 2
    READ = 3
    CREDS = 4


class ExitHow(IntEnum):
    EXITED = 1
    SIGNALED = 2


OPEN_NONBLOCK = 1
WRITE_CREATE = 1


class ProtocolError(Exception):
    """Bytes that are not a valid frame or payload; the message says why."""


@dataclass(frozen=True)
class Frame:
    magic: bytes
    seq: int
    op: int
    status: int
    error: int
    payload: bytes


def encode_frame(frame: Frame) -> bytes:
    if len(frame.payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    head = HEADER.pack(
        frame.magic,
        frame.seq,
        frame.op,
        frame.status,
        frame.error,
        len(frame.payload),
        zlib.crc32(frame.payload),
        0,
    )[:24]
    return head + struct.pack("<I", zlib.crc32(head)) + frame.payload


@dataclass(frozen=True)
class Header:
    magic: bytes
    seq: int
    op: int
    status: int
    error: int
    length: int
    payload_crc: int


def decode_header(data: bytes, magic: bytes) -> Header:
    """Check and split a received header; ProtocolError says what is wrong."""
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"truncated frame: header has {len(data)} of {HEADER_SIZE} bytes")
    got_magic, seq, op, status, error, length, payload_crc, header_crc = HEADER.unpack(data)
    if got_magic != magic:
        raise ProtocolError(f"bad magic {got_magic.hex()} (expected {magic!r})")
    if zlib.crc32(data[:24]) != header_crc:
        raise ProtocolError(
            f"header CRC mismatch: frame says {header_crc:08x}, "
            f"computed {zlib.crc32(data[:24]):08x}"
        )
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"payload length {length} exceeds the limit {MAX_PAYLOAD}")
    return Header(got_magic, seq, op, status, error, length, payload_crc)


def check_payload(header: Header, payload: bytes) -> None:
    if len(payload) != header.length:
        raise ProtocolError(f"truncated frame: payload has {len(payload)} of {header.length} bytes")
    if zlib.crc32(payload) != header.payload_crc:
        raise ProtocolError(
            f"payload CRC mismatch: frame says {header.payload_crc:08x}, "
            f"computed {zlib.crc32(payload):08x}"
        )


class Writer:
    """Builds a payload, little-endian."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> Writer:
        self._parts.append(struct.pack("<B", v))
        return self

    def u16(self, v: int) -> Writer:
        self._parts.append(struct.pack("<H", v))
        return self

    def u32(self, v: int) -> Writer:
        self._parts.append(struct.pack("<I", v))
        return self

    def u64(self, v: int) -> Writer:
        self._parts.append(struct.pack("<Q", v))
        return self

    def i64(self, v: int) -> Writer:
        self._parts.append(struct.pack("<q", v))
        return self

    def str(self, s: str) -> Writer:
        data = s.encode()
        self._parts.append(struct.pack("<H", len(data)) + data)
        return self

    def blob(self, data: bytes) -> Writer:
        self._parts.append(struct.pack("<I", len(data)) + data)
        return self

    def bytes(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Takes a result payload apart, little-endian; ProtocolError on a short one."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise ProtocolError(
                f"{self._what}: result truncated at byte {self._pos} "
                f"(needs {n} more, has {len(self._data) - self._pos})"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self) -> int:
        return int(self._take(1)[0])

    def u16(self) -> int:
        value: int = struct.unpack("<H", self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("<I", self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack("<Q", self._take(8))[0]
        return value

    def i64(self) -> int:
        value: int = struct.unpack("<q", self._take(8))[0]
        return value

    def str(self) -> str:
        return self._take(self.u16()).decode(errors="replace")

    def blob(self) -> bytes:
        return self._take(self.u32())

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ProtocolError(
                f"{self._what}: {len(self._data) - self._pos} unexpected trailing bytes"
            )
