"""The agent's wire protocol, end to end with the real agent in a real guest.

Bad frames get a clear BAD_FRAME reply and leave the agent serving; the
host side rejects bad frames with a message too (pure tests at the end).
"""

from __future__ import annotations

import os
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.agent.protocol import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    Frame,
    Op,
    ProtocolError,
    ReplyStatus,
    Writer,
    check_payload,
    decode_header,
    encode_frame,
)
from harness.errors import AgentOpError
from harness.vm import VM
from sim.mm.facts import kernel_series


def _request(op: int, payload: bytes, seq: int = 7) -> bytes:
    return encode_frame(Frame(REQUEST_MAGIC, seq, op, 0, 0, payload))


def _reseal(frame: bytes) -> bytes:
    """The frame with its header CRC recomputed (after a deliberate change)."""
    return frame[:24] + struct.pack("<I", zlib.crc32(frame[:24])) + frame[HEADER_SIZE:]


def _ping_payload() -> bytes:
    return Writer().str("init").bytes()


@pytest.mark.vm
class TestAgentProtocol:
    def test_hello_and_ping_describe_the_guest(self, vm: VM, kernel_version: str | None) -> None:
        arch = vm.profile.arch
        assert vm.hello is not None
        assert vm.hello.version == PROTOCOL_VERSION
        hello = vm.agent.ping()
        assert hello.pid == 1
        assert hello.page_size == arch.page_size
        assert hello.little_endian == arch.little_endian
        assert hello.word_size == arch.word_size
        if kernel_version is not None:
            # The image was built from linux-patch/<series>: it boots that series.
            assert kernel_series(hello.release) == kernel_version

    def test_echo_is_binary_safe(self, vm: VM) -> None:
        every_byte = bytes(range(256)) * 3
        assert vm.agent.echo(every_byte) == every_byte
        assert vm.agent.echo(b"") == b""
        big = os.urandom(1 << 20)
        assert vm.agent.echo(big) == big

    @pytest.mark.parametrize(
        ("damage", "reason"),
        [
            (lambda f: _reseal(f[:20] + bytes([f[20] ^ 1]) + f[21:]), "payload CRC mismatch"),
            (lambda f: f[:4] + bytes([f[4] ^ 0x80]) + f[5:], "header CRC mismatch"),
            (lambda f: b"XXXX" + f[4:], "bad magic"),
            (lambda f: f[:-1] + bytes([f[-1] ^ 0xFF]), "payload CRC mismatch"),
        ],
        ids=["payload-crc-field", "header-bit", "magic", "payload-byte"],
    )
    def test_corrupted_frame_gets_bad_frame_then_agent_serves(
        self, vm: VM, damage: object, reason: str
    ) -> None:
        frame = _request(Op.PING, _ping_payload())
        assert callable(damage)
        vm.agent.send_raw(damage(frame))
        reply = vm.agent.receive()
        assert reply.status is ReplyStatus.BAD_FRAME
        assert reason in reply.message
        assert vm.agent.ping().pid == 1

    def test_truncated_frame_is_reported_after_its_body_timeout(self, vm: VM) -> None:
        frame = _request(Op.ECHO, Writer().str("init").blob(b"x" * 100).bytes())
        vm.agent.send_raw(frame[: HEADER_SIZE + 10])
        reply = vm.agent.receive(timeout=30)
        assert reply.status is ReplyStatus.BAD_FRAME
        assert "truncated frame: payload has 10 of" in reply.message
        assert vm.agent.ping().pid == 1

    def test_oversized_length_is_refused(self, vm: VM) -> None:
        head = REQUEST_MAGIC + struct.pack("<IHHIII", 9, Op.PING, 0, 0, MAX_PAYLOAD + 1, 0)
        vm.agent.send_raw(head + struct.pack("<I", zlib.crc32(head)))
        reply = vm.agent.receive()
        assert reply.status is ReplyStatus.BAD_FRAME
        assert "exceeds the limit" in reply.message
        assert vm.agent.ping().pid == 1

    def test_unknown_op(self, vm: VM) -> None:
        reply = vm.agent.request(Op.HELLO)  # HELLO is only ever sent by the agent
        assert reply.status is ReplyStatus.UNKNOWN_OP

    def test_unknown_target(self, vm: VM) -> None:
        with pytest.raises(AgentOpError) as caught:
            vm.agent.ping("nobody")
        assert caught.value.status == "NO_PROCESS"
        assert "nobody" in caught.value.message

    @pytest.mark.parametrize(
        "args", [b"", b"\x01\x02", Writer().u64(0).u64(1).bytes() + b"\x00" * 20 + b"extra"]
    )
    def test_malformed_arguments_are_bad_requests(self, vm: VM, args: bytes) -> None:
        reply = vm.agent.request(Op.MMAP, args=args)
        assert reply.status is ReplyStatus.BAD_REQUEST
        assert "arguments" in reply.message


class TestFramesOnTheHost:
    """The host side's own checks (no guest needed)."""

    @given(
        seq=st.integers(0, 2**32 - 1),
        op=st.integers(0, 2**16 - 1),
        status=st.integers(0, 2**16 - 1),
        error=st.integers(0, 2**32 - 1),
        payload=st.binary(max_size=300),
    )
    def test_round_trip(self, seq: int, op: int, status: int, error: int, payload: bytes) -> None:
        data = encode_frame(Frame(RESPONSE_MAGIC, seq, op, status, error, payload))
        header = decode_header(data[:HEADER_SIZE], RESPONSE_MAGIC)
        assert (header.seq, header.op, header.status, header.error) == (seq, op, status, error)
        check_payload(header, data[HEADER_SIZE:])

    @given(payload=st.binary(min_size=1, max_size=64), bit=st.integers(0, 8 * (HEADER_SIZE + 64)))
    def test_any_flipped_bit_is_detected(self, payload: bytes, bit: int) -> None:
        data = bytearray(encode_frame(Frame(RESPONSE_MAGIC, 1, 2, 0, 0, payload)))
        bit %= 8 * len(data)
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ProtocolError):
            header = decode_header(bytes(data[:HEADER_SIZE]), RESPONSE_MAGIC)
            check_payload(header, bytes(data[HEADER_SIZE : HEADER_SIZE + header.length]))

    def test_truncation_is_named(self) -> None:
        data = encode_frame(Frame(RESPONSE_MAGIC, 1, 2, 0, 0, b"abcdef"))
        with pytest.raises(ProtocolError, match="truncated frame: header has 10 of 28"):
            decode_header(data[:10], RESPONSE_MAGIC)
        header = decode_header(data[:HEADER_SIZE], RESPONSE_MAGIC)
        with pytest.raises(ProtocolError, match="truncated frame: payload has 3 of 6"):
            check_payload(header, data[HEADER_SIZE : HEADER_SIZE + 3])

    def test_wire_is_little_endian(self) -> None:
        data = encode_frame(Frame(REQUEST_MAGIC, 0x01020304, 0x0506, 0, 0, b""))
        assert data[:4] == b"PMAQ"
        assert data[4:8] == bytes([4, 3, 2, 1])
        assert data[8:10] == bytes([6, 5])
