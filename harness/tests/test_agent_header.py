"""The agent's protocol.h is generated from protocol.py, and the layouts pack what they say."""

from __future__ import annotations

import re

import pytest

from harness.agent.header import C_ENUMS, HEADER_PATH, main, render_header
from harness.agent.protocol import (
    LAYOUTS,
    Op,
    ProtocolError,
    Writer,
    fields,
    pack,
    unpack,
)


def test_checked_in_header_is_current() -> None:
    """Regenerating gives the same file: the C agent's numbers are protocol.py's."""
    assert HEADER_PATH.read_text(encoding="utf-8") == render_header(), (
        "harness/agent/protocol.h is stale: run python -m harness.agent.header"
    )
    assert main(["--check"]) == 0


def test_header_has_every_number_once() -> None:
    """Every op and enum member appears exactly once, with its value."""
    text = render_header()
    for op in Op:
        assert len(re.findall(rf"\bOP_{op.name} = {op.value},", text)) == 1, op
    for enum, _, prefix in C_ENUMS:
        for member in enum:
            assert len(re.findall(rf"\b{prefix}{member.name} = {member.value},", text)) == 1


def test_agent_sources_define_no_numbers_of_their_own() -> None:
    """No hand-kept copy of the protocol's numbers is left in the C sources."""
    for path in HEADER_PATH.parent.glob("*.[ch]"):
        if path == HEADER_PATH:
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\b(OP|ST)_[A-Z_]+\s*=\s*\d", text), path.name
        for _, _, prefix in C_ENUMS:
            assert not re.search(rf"\b{prefix}[A-Z_]+\s*=\s*\d", text), (path.name, prefix)


def test_every_op_has_a_layout_that_round_trips() -> None:
    assert set(LAYOUTS) == set(Op)
    samples = {"u8": 7, "u16": 700, "u32": 70_000, "u64": 1 << 40, "i64": -5, "str": "name",
               "blob": b"\x00\xff"}
    for op, layout in LAYOUTS.items():
        for part in (layout.args, layout.reply or ()):
            values: dict[str, object] = {}
            for f in part:
                if f.count is not None:
                    record = tuple(samples[r.type] for r in f.record)
                    values[f.name] = [record if len(record) > 1 else record[0]] * 3
                elif f.name not in {g.count for g in part}:
                    values[f.name] = samples[f.type]
            got = unpack(part, pack(part, values), op.name)
            for name, value in values.items():
                want = tuple(value) if isinstance(value, list) else value
                assert got[name] == want, (op, name)


def test_layouts_decode_what_writer_encodes() -> None:
    """The layout of TOUCH's reply reads the bytes the agent writes, in that order."""
    payload = Writer().u64(3).u32(11).u64(0xABC).u32(2).u64(5).u64(6).bytes()
    got = unpack(LAYOUTS[Op.TOUCH].reply or (), payload, "touch")
    assert got == {"done": 3, "signal": 11, "fault_addr": 0xABC, "n": 2, "values": (5, 6)}
    with pytest.raises(ProtocolError, match="truncated"):
        unpack(LAYOUTS[Op.TOUCH].reply or (), payload[:-1], "touch")
    with pytest.raises(ProtocolError, match="trailing"):
        unpack(LAYOUTS[Op.GETPID].reply or (), b"\x01\x00\x00\x00\x00", "getpid")


@pytest.mark.parametrize("spec", ["u65 x", "u32 n, m x u64 v", "u8", "u8 9a"])
def test_bad_layouts_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        fields(spec)
