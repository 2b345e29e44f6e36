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

Argument and result layouts are :data:`LAYOUTS`, one :class:`OpLayout` per
op, which the client packs and unpacks with (:func:`pack`, :func:`unpack`).
The agent's C side gets every number and layout here from
``harness/agent/protocol.h``, which :mod:`harness.agent.header` generates from
this module (a unit test checks it is current).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "INIT",
    "LAYOUTS",
    "MAX_PAYLOAD",
    "NAME_MAX",
    "PROCESS_OPS",
    "PROTOCOL_VERSION",
    "REQUEST_MAGIC",
    "RESPONSE_MAGIC",
    "SCAN_VEC_FILL",
    "SCAN_VEC_MAX",
    "UID_KEEP",
    "BackingCode",
    "CrashKind",
    "ExitHow",
    "Field",
    "Frame",
    "MapBits",
    "Op",
    "OpLayout",
    "OpenBits",
    "ProtBits",
    "ProtocolError",
    "ReadStage",
    "Reader",
    "RemapBits",
    "ReplyStatus",
    "ScanVec",
    "SettleFlags",
    "Whence",
    "WriteBits",
    "Writer",
    "decode_header",
    "encode_frame",
    "fields",
    "pack",
    "unpack",
]

PROTOCOL_VERSION = 1
REQUEST_MAGIC = b"PMAQ"
RESPONSE_MAGIC = b"PMAR"
HEADER = struct.Struct("<4sIHHIIII")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 64 << 20
INIT = "init"
#: uid/gid value meaning "stay root" in READ_FILE and FORK.
UID_KEEP = 0xFFFF_FFFF
#: Longest process name, bytes.
NAME_MAX = 32

assert HEADER_SIZE == 28


class Op(IntEnum):
    """Operations; their arguments and results are :data:`LAYOUTS`."""

    HELLO = 0
    PING = 1
    ECHO = 2
    MMAP = 3
    MUNMAP = 4
    MPROTECT = 5
    MADVISE = 6
    TOUCH = 7
    FORK = 8
    EXIT = 9
    KILL = 10
    GETPID = 11
    CLEAR_REFS = 12
    READ_FILE = 13
    WRITE_FILE = 14
    SETTLE = 15
    POWEROFF = 16
    CRASH = 17
    LIST = 18
    PAGEMAP_SCAN = 22
    MLOCK = 20
    MUNLOCK = 21
    MREMAP = 19
    READ_FILES = 23
    EXEC_TEST = 24
    SWAPON = 25
    SWAPOFF = 26
    KSM_SCAN = 27
    UFFD_REGISTER = 28
    UFFD_WP = 29


class ReplyStatus(IntEnum):
    """The status of a reply frame."""

    OK = 0
    ERRNO = 1  # the operation failed; error holds the guest errno
    BAD_FRAME = 2  # magic, CRC, length or truncation: see the message
    BAD_REQUEST = 3  # arguments do not decode or make no sense
    UNKNOWN_OP = 4
    NO_PROCESS = 5  # no process of that name (or it died)


class ProtBits(IntFlag):
    """Protection bits on the wire; the agent maps them to PROT_*."""

    NONE = 0
    READ = 1
    WRITE = 2
    EXEC = 4


class BackingCode(IntEnum):
    """What backs an MMAP region: anonymous memory, or a file of its own on tmpfs."""

    ANON = 0
    FILE = 1
    MEMFD = 2  # memfd_create("pmh") + ftruncate(length), closed after the mmap()
    HUGETLB = 3  # MAP_ANONYMOUS | MAP_HUGETLB (the default huge page size)


class MapBits(IntFlag):
    """MMAP's mmap() flags beyond MAP_PRIVATE/MAP_SHARED and MAP_ANONYMOUS."""

    NONE = 0
    #: MAP_FIXED instead of MAP_FIXED_NOREPLACE.
    FIXED = 1
    POPULATE = 2
    LOCKED = 4


class RemapBits(IntFlag):
    """mremap() flags on the wire; the agent maps them to MREMAP_*."""

    MAYMOVE = 1
    FIXED = 2
    DONTUNMAP = 4
class SettleFlags(IntFlag):
    """What SETTLE does before it replies."""

    NONE = 0
    #: lru_add_drain() on the agent's CPU (munmap of an untouched scratch VMA).
    DRAIN_LRU = 1
    SYNC = 2
    #: From now on the process that serves this SETTLE (and every process it
    #: forks later) drains its CPU's LRU batches before each op it serves, once
    #: the request is read: nothing else runs between that drain and the op's
    #: system call, so the batches are as empty as the model assumes.
    DRAIN_BEFORE_OPS = 4


class CrashKind(IntEnum):
    """How CRASH breaks the target (or the kernel)."""

    PANIC = 1  # echo c > /proc/sysrq-trigger
    ABORT = 2  # abort() in the target process
    HANG = 3  # the target stops serving for good (signals blocked, pause())


class Whence(IntEnum):
    """lseek() whence of a READ_FILE seek, mapped to SEEK_* by the agent."""

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
    """How a reaped process ended (EXIT, KILL): exit code or signal."""

    EXITED = 1
    SIGNALED = 2


class OpenBits(IntFlag):
    """READ_FILE's open flags."""

    NONBLOCK = 1


class ScanVec(IntEnum):
    """Where PAGEMAP_SCAN's ``vec`` points: the given value, or a buffer of the agent."""

    RAW = 0  # pm_scan_arg.vec = the request's vec (0, or an address to probe EFAULT)
    BUFFER = 1  # vec_len records of the agent's, each byte SCAN_VEC_FILL before the call


#: The byte PAGEMAP_SCAN's output buffer holds before the ioctl, so bytes the
#: kernel did not write are seen as such.
SCAN_VEC_FILL = 0xA5
#: The most page_region records PAGEMAP_SCAN's buffer may have (1.5 MiB).
SCAN_VEC_MAX = 1 << 16


class WriteBits(IntFlag):
    """WRITE_FILE's flags."""

    CREATE = 1


# ---------------------------------------------------------------------------
# Argument and result layouts
# ---------------------------------------------------------------------------

#: Fixed-size field types (little-endian), and the two length-prefixed ones:
#: ``str`` (u16 length + UTF-8 bytes) and ``blob`` (u32 length + bytes).
_SCALARS = {"u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q", "i64": "<q"}
_TYPES = frozenset({*_SCALARS, "str", "blob"})
#: A Field type name (Writer and Reader have methods called ``str``).
_TypeName = str
_ARRAY = re.compile(r"(\w+) x \((.*)\) (\w+)\Z|(\w+) x (\w+) (\w+)\Z")


@dataclass(frozen=True)
class Field:
    """One field of a layout: ``type`` and ``name``; or an array of records.

    An array (``count`` set) repeats ``record`` as many times as the earlier
    u32 field named ``count`` says.
    """

    type: str
    name: str
    count: str | None = None
    record: tuple[Field, ...] = ()

    def __str__(self) -> str:
        if self.count is None:
            return f"{self.type} {self.name}"
        inner = ", ".join(map(str, self.record))
        if len(self.record) == 1:
            return f"{self.count} x {self.record[0].type} {self.name}"
        return f"{self.count} x ({inner}) {self.name}"


def _split(spec: str) -> list[str]:
    """Top-level comma-separated items (commas inside parentheses stay)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            items.append(spec[start:i].strip())
            start = i + 1
    last = spec[start:].strip()
    return [*items, last] if last else items


def fields(spec: str) -> tuple[Field, ...]:
    """``"u64 addr, u32 n, n x (u8 whence, i64 offset) seeks"`` as Fields; ValueError if bad."""
    out: list[Field] = []
    for item in _split(spec):
        array = _ARRAY.match(item)
        if array is not None:
            count, inner, name = array.group(1, 2, 3) if array.group(1) else (
                array.group(4), f"{array.group(5)} item", array.group(6)
            )
            if count not in {f.name for f in out if f.type == "u32"}:
                raise ValueError(f"{item!r}: {count} is not an earlier u32 field")
            out.append(Field("array", name, count, fields(inner)))
            continue
        type_, _, name = item.partition(" ")
        if type_ not in _TYPES or not name.isidentifier():
            raise ValueError(f"{item!r} is not 'TYPE name' (types: {', '.join(sorted(_TYPES))})")
        out.append(Field(type_, name))
    return tuple(out)


@dataclass(frozen=True)
class OpLayout:
    """What an op carries after the target name, and what its OK reply carries.

    ``reply`` None: no reply ever comes (the target or the kernel is gone).
    ``note``: what the op does, for both sides' readers.
    """

    args: tuple[Field, ...]
    reply: tuple[Field, ...] | None
    note: str = ""


def _layout(args: str, reply: str | None, note: str = "") -> OpLayout:
    return OpLayout(fields(args), None if reply is None else fields(reply), note)




_HELLO = "u32 version, u32 pid, u32 page_size, u8 little_endian, u8 word_size, str machine, " \
    "str release"
_WAIT = "u32 pid, u8 how, u32 value"

#: Every op's arguments and reply, defined once (the client packs with these;
#: harness/agent/protocol.h shows them to the C side).
LAYOUTS: dict[Op, OpLayout] = {
    Op.HELLO: _layout("", _HELLO, "unsolicited, sent once when the agent is ready"),
    Op.PING: _layout("", _HELLO),
    Op.ECHO: _layout("blob data", "blob data"),
    Op.MMAP: _layout(
        "u64 addr, u64 length, u8 backing, u8 shared, u8 prot, u64 file_tag, u8 map_bits",
        "u64 addr",
        "MAP_FIXED_NOREPLACE at addr (MAP_FIXED with MapBits.FIXED); a FILE region is backed "
        "by a file of its own on tmpfs (unlinked at once): the first 8 bytes of file page i "
        "hold file_tag + i (u64, guest byte order), the rest of the page is zero; a MEMFD "
        "region by memfd_create(\"pmh\") of length bytes, no page written; a HUGETLB region "
        "is MAP_ANONYMOUS | MAP_HUGETLB (pages of the default huge page size)",
    ),
    Op.MUNMAP: _layout("u64 addr, u64 length", ""),
    Op.MPROTECT: _layout("u64 addr, u64 length, u8 prot", ""),
    Op.MADVISE: _layout(
        "u64 addr, u64 length, i64 advice", "",
        "advice is the kernel's MADV_* number (asm-generic, the same on x86 and powerpc), "
        "passed on as a C int: any value the kernel refuses is its errno",
    ),
    Op.TOUCH: _layout(
        "u64 addr, u64 pages, u8 write, u64 tag",
        "u64 done, u32 signal, u64 fault_addr, u32 n, n x u64 values",
        "pages in order; write 1 stores tag + k (u64, guest byte order) at the start of page "
        "k, write 2 (fill) sets every byte of each page to tag's low byte, a read returns the "
        "u64 there; a fault stops the touch and is reported, not fatal",
    ),
    Op.FORK: _layout(
        "str name, u32 uid, u32 gid", "u32 pid",
        "the target forks; the child takes uid and gid (UID_KEEP: unchanged), is named and "
        "served",
    ),
    Op.EXIT: _layout("u32 code", _WAIT, "the target exits; init reaps it"),
    Op.KILL: _layout("u32 signal", _WAIT, "init signals the target and reaps it"),
    Op.GETPID: _layout("", "u32 pid"),
    Op.CLEAR_REFS: _layout("u32 value", "", "written to the target's /proc/self/clear_refs"),
    Op.READ_FILE: _layout(
        "blob path, u32 uid, u32 gid, u32 open_bits, u32 n, n x (u8 whence, i64 offset) seeks, "
        "u8 pread, i64 pread_offset, u64 count, u8 loop",
        "u8 stage, u32 errno, u32 m, m x i64 seek_results, i64 final_pos, blob data",
    ),
    Op.WRITE_FILE: _layout("blob path, blob data, u32 flags", "u64 written",
                           "one write() call"),
    Op.SETTLE: _layout("u32 flags", ""),
    Op.POWEROFF: _layout("", "", "then reboot(RB_POWER_OFF); init only"),
    Op.CRASH: _layout("u8 kind", None, "the target or the kernel is gone"),
    Op.LIST: _layout("", "u32 n, n x (str name, u32 pid) procs", "init's named processes"),
    Op.PAGEMAP_SCAN: _layout(
        "blob path, u32 uid, u32 gid, u8 arg_null, u64 size, u64 flags, u64 start, u64 end, "
        "u64 walk_end, u8 vec_mode, u64 vec, u64 vec_len, u64 max_pages, u64 category_inverted, "
        "u64 category_mask, u64 category_anyof_mask, u64 return_mask",
        "u8 stage, u32 errno, i64 ret, u64 walk_end, blob vec",
        "open path as uid/gid (as READ_FILE), ioctl(PAGEMAP_SCAN) with a struct pm_scan_arg of "
        "these fields (arg_null: pass NULL instead); ret is the ioctl's value or -errno, "
        "walk_end the struct's afterwards, vec the BUFFER's bytes afterwards (empty for RAW)",
    ),
    Op.READ_FILES: _layout(
        "u32 uid, u32 gid, u32 settle, u32 n, n x (blob path, u8 pread, i64 offset, u64 count, "
        "u8 loop) reads",
        "u32 m, m x (u8 stage, u32 errno, blob data) results",
        "SETTLE with the settle flags, then each read as READ_FILE makes it (no seeks, no open "
        "bits), all as uid/gid in one child; the counts may sum to MAX_PAYLOAD - 4096 - 9n",
    ),
    Op.MLOCK: _layout("u64 addr, u64 length, u8 onfault", "",
                      "mlock(), or mlock2(MLOCK_ONFAULT) when onfault is 1"),
    Op.MUNLOCK: _layout("u64 addr, u64 length", ""),
    Op.MREMAP: _layout(
        "u64 addr, u64 old_length, u64 new_length, u8 flags, u64 new_addr", "u64 addr",
        "mremap(addr, old_length, new_length, flags (RemapBits -> MREMAP_*), new_addr); "
        "the reply is the range's address afterwards",
    ),
    Op.UFFD_REGISTER: _layout(
        "u64 addr, u64 length, u64 features", "u64 features",
        "UFFDIO_REGISTER_MODE_WP over the range with this process's userfaultfd "
        "(uffd.c), which the first call in the process opens (O_CLOEXEC|O_NONBLOCK) with "
        "UFFDIO_API asking the wanted features the kernel has (a probe fd's UFFDIO_API "
        "with 0 tells them); the reply: the features the userfaultfd has",
    ),
    Op.UFFD_WP: _layout(
        "u64 addr, u64 length, u8 enable", "",
        "UFFDIO_WRITEPROTECT (mode WP if enable, else 0) over the range with this "
        "process's userfaultfd (ENOENT from the agent when the process has none)",
    ),
    Op.KSM_SCAN: _layout(
        "u32 scans, u8 use_zero_pages, u32 timeout_ms",
        "u64 before, u64 after, u8 smart_scan, u32 max_page_sharing",
        "ksmd (run 0) runs exactly `scans` more full scans and stops (run 0, merged pages stay "
        "merged): pages_to_scan UINT_MAX so every ksm_do_scan() is one whole scan, "
        "sleep_millisecs a day so ksmd sleeps after each, woken for the next by a change of "
        "sleep_millisecs once full_scans moved and ksmd sleeps (/proc/PID/stat 'S'); "
        "use_zero_pages 0/1 set meanwhile (2: left); the knobs are restored; timeout_ms bounds "
        "the wait (ETIMEDOUT); before/after are full_scans",
    ),
    Op.EXEC_TEST: _layout(
        "blob path, u32 argc, argc x str argv, u32 timeout_ms, u32 output_max",
        "u8 how, u32 value, u8 timed_out, u8 truncated, u64 elapsed_ms, blob output",
        "fork and execve(path, argv) (exec.c) in a session of its own in path's directory, "
        "stdout and stderr one pipe; at its end or timeout_ms its process group is killed; "
        "how/value as ExitHow, output its first output_max bytes",
    ),
    Op.SWAPON: _layout(
        "blob path, u32 flags", "",
        "swapon(path, flags) (swap.c); a failure is its errno",
    ),
    Op.SWAPOFF: _layout("blob path", "", "swapoff(path) (swap.c); a failure is its errno"),
}
#: Ops about named processes and power, which init and procs.c handle; every
#: other op is performed by any agent process on itself, by the C function
#: ``op_<name>`` (ops.c, files.c; protocol.h lists them in AGENT_COMMON_OPS).
PROCESS_OPS = frozenset({Op.HELLO, Op.FORK, Op.EXIT, Op.KILL, Op.POWEROFF, Op.LIST})


def pack(layout: Sequence[Field], values: Mapping[str, Any]) -> bytes:
    """The payload for ``values`` (by field name; an array's count is its length)."""
    w = Writer()
    counts = {f.count: len(values[f.name]) for f in layout if f.count is not None}
    for f in layout:
        if f.count is not None:
            for item in values[f.name]:
                record = item if len(f.record) > 1 else (item,)
                w.raw(pack(f.record, dict(zip((r.name for r in f.record), record, strict=True))))
        else:
            w.put(f.type, counts.get(f.name, values.get(f.name)))
    return w.bytes()


def unpack(layout: Sequence[Field], payload: bytes, what: str) -> dict[str, Any]:
    """The values of a payload, by field name; ProtocolError if it does not fit."""
    r = Reader(payload, what)
    values = _read(r, layout)
    r.end()
    return values


def _read(r: Reader, layout: Sequence[Field]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in layout:
        if f.count is None:
            values[f.name] = r.get(f.type)
            continue
        items = [_read(r, f.record) for _ in range(values[f.count])]
        values[f.name] = tuple(
            item[f.record[0].name] if len(f.record) == 1 else tuple(item.values())
            for item in items
        )
    return values


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

    def raw(self, data: bytes) -> Writer:
        self._parts.append(data)
        return self

    def put(self, type_: _TypeName, value: Any) -> Writer:
        """A field of ``type_`` (a :class:`Field` type name)."""
        if type_ in _SCALARS:
            self._parts.append(struct.pack(_SCALARS[type_], value))
            return self
        return self.str(value) if type_ == "str" else self.blob(value)

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

    def get(self, type_: _TypeName) -> Any:
        """A field of ``type_`` (a :class:`Field` type name)."""
        if type_ in _SCALARS:
            fmt = _SCALARS[type_]
            return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]
        return self.str() if type_ == "str" else self.blob()

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ProtocolError(
                f"{self._what}: {len(self._data) - self._pos} unexpected trailing bytes"
            )
