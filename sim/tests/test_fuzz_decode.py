"""Fuzzing ``python -m sim decode``: mutated fixtures, odd arguments, huge files.

The contract under test: every input either decodes (exit 0, nothing on
stderr, valid JSON lines with --json) or ends with exactly one line
``sim decode: error: ...`` on stderr and exit status 2; never a traceback,
a hang, or memory that grows with the input.

Inputs start from the real and hand-built fixtures in ``data/`` and are
mutated (bit flips, truncation, extension, header bytes, emptiness) and run
under every KIND, every --arch, odd offsets, table and JSON.  Most run in
process through :func:`sim.cli.main`; a sample runs as a subprocess.
``benchmarks/fuzz_campaign.py`` runs the same checks for longer.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.arch import ARCH_NAMES, get_arch
from sim.cli import EXIT_BROKEN_PIPE, EXIT_ERROR, main
from sim.cli.decoder import KINDS, MAX_OFFSET, decode, flag_names
from sim.formats import FormatError

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
ERROR_PREFIX = "sim decode: error: "
#: Seconds any one subprocess decode of a small input may take.
SUBPROCESS_TIMEOUT = 60

#: Seed inputs: every fixture, plus valid headers of each layout.
SEEDS: tuple[bytes, ...] = (
    *(path.read_bytes() for path in sorted(DATA.glob("*.bin"))),
    b"\x01\x0c\x08\x10" + bytes(12) + bytes(range(32)),  # kpagemap, LE 64-bit
    b"\x00\x10\x04\x08" + bytes(4) + bytes(range(16)),  # kpagemap, BE 32-bit
    b"\x01\x0c\x08\x08" + bytes(4) + b"\xff" * 8 + bytes(8),  # pagemap-v1, LE 64-bit
    b"\x00\x0c\x04\x04" + b"\xff" * 4 + bytes(4),  # pagemap-v1, BE 32-bit
)
#: Offsets: aligned for every entry size, misaligned, large, the largest.
OFFSETS = ("0", "4", "8", "12", "16", "24", "1", "7", "0x10", "1099511627776", str(MAX_OFFSET))
ARCH_CHOICES: tuple[str | None, ...] = (None, *ARCH_NAMES)


# --- mutations ---------------------------------------------------------------

#: A mutation: (name, position, value); position and value are reduced to the
#: input at hand, so any random numbers make a valid mutation.
Mutation = tuple[str, int, int]
MUTATION_NAMES = ("flip", "truncate", "extend", "header", "set", "empty", "splice")
#: Byte values that matter to the formats (header fields, all ones, flags).
INTERESTING = (0, 1, 4, 8, 10, 12, 16, 24, 25, 0x7F, 0x80, 0xFE, 0xFF)


def mutate(data: bytes, mutations: Sequence[Mutation]) -> bytes:
    """``data`` with each mutation applied in turn."""
    buf = bytearray(data)
    for name, position, value in mutations:
        if name == "flip" and buf:
            bit = position % (8 * len(buf))
            buf[bit // 8] ^= 1 << bit % 8
        elif name == "truncate":
            del buf[position % (len(buf) + 1) :]
        elif name == "extend":
            buf += bytes([value % 256]) * (position % 40)
        elif name == "header" and buf:
            buf[position % min(8, len(buf))] = INTERESTING[value % len(INTERESTING)]
        elif name == "set" and buf:
            buf[position % len(buf)] = value % 256
        elif name == "empty":
            buf.clear()
        elif name == "splice" and buf:
            at = position % len(buf)
            buf[at:at] = buf[: value % (len(buf) + 1)]
    return bytes(buf)


def random_mutations(rng: random.Random) -> list[Mutation]:
    return [
        (rng.choice(MUTATION_NAMES), rng.randrange(1 << 16), rng.randrange(1 << 16))
        for _ in range(rng.randint(1, 4))
    ]


mutations_strategy = st.lists(
    st.tuples(
        st.sampled_from(MUTATION_NAMES), st.integers(0, 1 << 16), st.integers(0, 1 << 16)
    ),
    min_size=0,
    max_size=4,
)


# --- the contract ------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: int
    out: str
    err: str


def decode_argv(
    kind: str, path: str, arch: str | None, offset: str | None, as_json: bool
) -> list[str]:
    argv = ["decode", kind, path]
    if arch is not None:
        argv += ["--arch", arch]
    if offset is not None:
        argv += ["--offset", offset]
    if as_json:
        argv.append("--json")
    return argv


def run_in_process(argv: Sequence[str]) -> Outcome:
    """``main(argv)`` with stdout and stderr captured; any exception escapes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return Outcome(status, out.getvalue(), err.getvalue())


def run_subprocess(argv: Sequence[str]) -> Outcome:
    """``python -m sim ARGV``; TimeoutExpired if it hangs."""
    result = subprocess.run(
        [sys.executable, "-m", "sim", *argv],
        cwd=REPO,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    return Outcome(
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


def check_outcome(argv: Sequence[str], outcome: Outcome) -> None:
    """AssertionError unless ``outcome`` keeps the contract (see module doc)."""
    where = f"argv {list(argv)}"
    assert "Traceback" not in outcome.err, f"{where}: {outcome.err}"
    if outcome.status == 0:
        assert outcome.err == "", f"{where}: exit 0 with stderr {outcome.err!r}"
    else:
        assert outcome.status == EXIT_ERROR, f"{where}: exit {outcome.status}: {outcome.err!r}"
        assert outcome.err.startswith(ERROR_PREFIX), f"{where}: {outcome.err!r}"
        assert outcome.err.count("\n") == 1 and outcome.err.endswith("\n"), (
            f"{where}: not one line: {outcome.err!r}"
        )
    if "--json" in argv:
        for line in outcome.out.splitlines():
            json.loads(line)


def check_input(
    tmp: Path, data: bytes, kind: str, arch: str | None, offset: str | None, as_json: bool
) -> Outcome:
    """Decode ``data`` (written to a file under ``tmp``) in process and check it."""
    path = tmp / "input.bin"
    path.write_bytes(data)
    argv = decode_argv(kind, str(path), arch, offset, as_json)
    outcome = run_in_process(argv)
    check_outcome(argv, outcome)
    return outcome


# --- in process --------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    mutations=mutations_strategy,
    kind=st.sampled_from(list(KINDS)),
    arch=st.sampled_from(ARCH_CHOICES),
    offset=st.sampled_from((None, *OFFSETS)),
    as_json=st.booleans(),
)
def test_mutated_fixtures_decode_or_fail_in_one_line(
    scratch: Path,
    seed: bytes,
    mutations: list[Mutation],
    kind: str,
    arch: str | None,
    offset: str | None,
    as_json: bool,
) -> None:
    check_input(scratch, mutate(seed, mutations), kind, arch, offset, as_json)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_arch_and_output_on_mutants(kind: str, scratch: Path) -> None:
    """Every KIND x --arch x table/JSON on the same mutants: some decode, some fail."""
    rng = random.Random(f"fuzz-{kind}")
    statuses: set[int] = set()
    for arch in ARCH_CHOICES:
        for as_json in (False, True):
            for _ in range(4):
                data = mutate(rng.choice(SEEDS), random_mutations(rng))
                offset = rng.choice(OFFSETS)
                statuses.add(check_input(scratch, data, kind, arch, offset, as_json).status)
            # The unmutated seeds too, from offset 0.
            for seed in SEEDS[-4:]:
                statuses.add(check_input(scratch, seed, kind, arch, "0", as_json).status)
    assert statuses == {0, EXIT_ERROR}


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(list(KINDS)) | st.text(max_size=12),
    arch=st.sampled_from(ARCH_CHOICES) | st.text(max_size=12),
    offset=st.sampled_from(OFFSETS)
    | st.integers(-(1 << 70), 1 << 70).map(str)
    | st.integers(0, 1 << 80).map(hex)
    | st.text(max_size=20),
    as_json=st.booleans(),
    extra=st.lists(st.sampled_from(["--json", "--offset", "--arch", "-x", "--", "-"]), max_size=2),
)
def test_odd_arguments_fail_in_one_line(
    scratch: Path, kind: str, arch: str | None, offset: str, as_json: bool, extra: list[str]
) -> None:
    path = scratch / "args.bin"
    path.write_bytes(SEEDS[-4])
    argv = decode_argv(kind, str(path), arch, offset, as_json) + extra
    check_outcome(argv, run_in_process(argv))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", bytes(7), bytes(9), b"\xff" * 4, b"\x01\x0c\x08\xff", b"\x01\x0c\x04\x04"],
    ids=["empty", "1", "7", "9", "ones4", "entry255", "v1-32bit-short"],
)
def test_short_inputs_every_kind(data: bytes, scratch: Path) -> None:
    for kind in KINDS:
        for arch in ARCH_CHOICES:
            for as_json in (False, True):
                check_input(scratch, data, kind, arch, None, as_json)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.bin", tmp_path):
        argv = decode_argv("kpageflags", str(path), "x86_64", None, False)
        outcome = run_in_process(argv)
        check_outcome(argv, outcome)
        assert outcome.status == EXIT_ERROR and "cannot read" in outcome.err


# --- regressions found by fuzzing -------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_offset_beyond_loff_t_is_one_line(kind: str, scratch: Path) -> None:
    """A --offset of thousands of hex digits once reached the decimal printing of
    the index and ended in a traceback (Python's int-to-text digit limit)."""
    path = scratch / "zeros.bin"
    path.write_bytes(bytes(16))
    huge = "0x" + "f" * 4400 + "0"
    for offset in (huge, hex(MAX_OFFSET + 1), "9" * 5000):
        argv = decode_argv(kind, str(path), "x86_64", offset, True)
        outcome = run_in_process(argv)
        check_outcome(argv, outcome)
        assert outcome.status == EXIT_ERROR and "--offset" in outcome.err
        assert len(outcome.err) < 200
    with pytest.raises(FormatError, match="bad offset"):
        decode(kind, io.BytesIO(bytes(16)), io.StringIO(), arch=get_arch("x86_64"),
               offset=MAX_OFFSET + 1)


def test_unknown_option_names_the_command(scratch: Path) -> None:
    """An unknown option after the command was reported by the top-level
    parser as "sim: error: ..." instead of "sim decode: error: ..."."""
    path = scratch / "zeros.bin"
    path.write_bytes(bytes(8))
    for extra in (["-x"], ["--bogus", "1"], ["extra-file"]):
        argv = [*decode_argv("kpagecount", str(path), "x86_64", None, False), *extra]
        outcome = run_in_process(argv)
        check_outcome(argv, outcome)
        assert outcome.err == f"{ERROR_PREFIX}unrecognized arguments: {' '.join(extra)}\n"


def test_largest_offset_decodes(scratch: Path) -> None:
    path = scratch / "zeros.bin"
    path.write_bytes(bytes(8))
    argv = decode_argv("pagemap", str(path), "x86_64", hex(MAX_OFFSET - 7), True)
    outcome = run_in_process(argv)
    check_outcome(argv, outcome)
    assert json.loads(outcome.out)["index"] == (MAX_OFFSET - 7) // 8


def test_flag_name_cache_is_small() -> None:
    """Random kpageflags filled a 65536-entry cache of long name strings
    (~80 MB of RSS on a 64 MB random file); real files need a few values."""
    flag_names.cache_clear()
    rng = random.Random(0)
    for _ in range(20_000):
        flag_names(rng.getrandbits(64))
    info = flag_names.cache_info()
    assert info.currsize <= 4096
    assert flag_names(1 << 4) == ("DIRTY", '["DIRTY"]')


# --- subprocess --------------------------------------------------------------


def test_subprocess_sample(scratch: Path) -> None:
    """A few mutants through ``python -m sim``: the same contract, and no hang."""
    rng = random.Random("subprocess")
    path = scratch / "sub.bin"
    statuses = set()
    for i in range(8):
        path.write_bytes(mutate(rng.choice(SEEDS), random_mutations(rng)))
        kind = list(KINDS)[i % len(KINDS)]
        argv = decode_argv(kind, str(path), rng.choice(ARCH_NAMES), rng.choice(OFFSETS), i % 2 == 0)
        outcome = run_subprocess(argv)
        check_outcome(argv, outcome)
        statuses.add(outcome.status)
    assert EXIT_ERROR in statuses


# --- huge and sparse input ---------------------------------------------------


@dataclass(frozen=True)
class Measured:
    status: int
    lines: int
    stderr: str
    peak_rss_kib: int


def vm_hwm_kib(pid: int) -> int:
    """Peak RSS (VmHWM, KiB) of a running process; 0 once it is gone.

    Not wait4()'s ru_maxrss: after fork and exec that counts the parent's
    memory too (the pre-exec high-water mark is kept), so a child of a large
    pytest process would report pytest's size.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0  # a zombie has no memory left to report


def measure_decode(argv: Sequence[str], stop_after_lines: int | None = None) -> Measured:
    """Run ``python -m sim ARGV``, count its output lines (closing the pipe after
    ``stop_after_lines``, like ``| head``), and return its peak RSS, sampled
    every 4096 lines and before the pipe closes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sim", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    lines = 0
    peak = 0
    try:
        for _ in process.stdout:
            lines += 1
            if lines % 4096 == 0:
                peak = max(peak, vm_hwm_kib(process.pid))
            if stop_after_lines is not None and lines >= stop_after_lines:
                break
        peak = max(peak, vm_hwm_kib(process.pid))
    finally:
        process.stdout.close()
        stderr = process.stderr.read().decode("utf-8", "replace")
        process.stderr.close()
        process.wait(timeout=SUBPROCESS_TIMEOUT)
    return Measured(process.returncode, lines, stderr, peak)


def sparse_file(directory: Path, size: int) -> Path:
    """A file of ``size`` zero bytes taking no disk space (``truncate -s``)."""
    path = directory / f"sparse-{size}.bin"
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_one_gigabyte_sparse_file_streams(tmp_path: Path) -> None:
    """1 GiB through a reader that leaves after 10000 lines: output starts at
    once, the decoder ends quietly, and memory stays far below the input's size."""
    path = sparse_file(tmp_path, 1 << 30)
    try:
        for kind in ("kpagemap", "pagemap-v1"):
            got = measure_decode(
                ["decode", kind, str(path), "--arch", "x86_64", "--offset", "16", "--json"],
                stop_after_lines=10_000,
            )
            assert got.status == EXIT_BROKEN_PIPE and got.stderr == "", got
            assert got.lines == 10_000
            assert got.peak_rss_kib < 200 * 1024, got
    finally:
        path.unlink()


@pytest.mark.parametrize("kind", ["kpagecount", "pagemap-v1"])
def test_memory_does_not_grow_with_size(kind: str, tmp_path: Path) -> None:
    """Whole 4 MiB and 16 MiB sparse files decoded: the peaks differ by far less
    than the 12 MiB more input (its decoded values would take ~5x that)."""
    peaks = []
    for size in (4 << 20, 16 << 20):
        path = sparse_file(tmp_path, size)
        argv = ["decode", kind, str(path), "--arch", "x86_64", "--offset", "8", "--json"]
        got = measure_decode(argv)
        path.unlink()
        assert got.status == 0 and got.stderr == "", got
        assert got.lines == size // 8
        peaks.append(got.peak_rss_kib)
    assert peaks[1] - peaks[0] < 8 * 1024, f"peak RSS {peaks[0]} KiB, then {peaks[1]} KiB"
    assert peaks[1] < 200 * 1024
