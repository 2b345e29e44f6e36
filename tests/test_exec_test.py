"""EXEC_TEST in a real guest: a program's exit status and output, exec errors, bad requests.

The default initramfs holds one program, the agent itself (/init): run as a
child it is not pid 1 and without a socket argument it prints its usage and
exits 2 (agent.c main()).  The selftests envs run the kernel's programs.
"""

from __future__ import annotations

import errno

import pytest

from harness.agent.protocol import LAYOUTS, ExitHow, Op, ReplyStatus, pack
from harness.errors import AgentOpError
from harness.vm import VM

pytestmark = pytest.mark.vm


def _exec(vm: VM, path: str, argv: list[str], timeout_ms: int = 20_000) -> dict[str, object]:
    return vm.agent.call_op(Op.EXEC_TEST, timeout=60, path=path.encode(), argv=argv,
                            timeout_ms=timeout_ms, output_max=1 << 16)


def test_exit_status_and_output(vm: VM) -> None:
    got = _exec(vm, "/init", ["init"])
    ended = (got["how"], got["value"], got["timed_out"], got["truncated"])
    assert ended == (ExitHow.EXITED, 2, 0, 0)
    assert b"usage: init UNIX-SOCKET" in got["output"]  # type: ignore[operator]


def test_output_is_cut_at_output_max(vm: VM) -> None:
    got = vm.agent.call_op(Op.EXEC_TEST, timeout=60, path=b"/init", argv=["init"],
                           timeout_ms=20_000, output_max=5)
    assert (got["output"], got["truncated"]) == (b"usage", 1)


def test_missing_program_is_its_errno(vm: VM) -> None:
    with pytest.raises(AgentOpError) as caught:
        _exec(vm, "/selftests/no-such-program", ["x"])
    assert caught.value.errno == errno.ENOENT


def test_empty_argv_is_a_bad_request(vm: VM) -> None:
    args = pack(LAYOUTS[Op.EXEC_TEST].args, {"path": b"/init", "argv": [], "timeout_ms": 1000,
                                             "output_max": 10})
    reply = vm.agent.request(Op.EXEC_TEST, args=args)
    assert reply.status is ReplyStatus.BAD_REQUEST
    assert "argv is empty" in reply.message
    # The agent still serves.
    assert vm.agent.getpid() == 1
