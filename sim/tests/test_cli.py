"""``python -m sim decode``: fixtures, offsets, errors, streaming, fuzzing."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import ARCH_NAMES, get_arch
from sim.cli import EXIT_BROKEN_PIPE, EXIT_ERROR, main
from sim.cli import decoder as decode_module
from sim.cli.decoder import KINDS, decode, flag_names
from sim.flags import KPF, kpf_names
from sim.formats import (
    FormatError,
    PagemapEntry,
    build_kpagemap,
    build_pagemap_entries,
    build_u64s,
)

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
FIXTURES: list[dict[str, Any]] = json.loads((DATA / "fixtures.json").read_text())


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def run_subprocess(
    argv: list[str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sim", *argv],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def decode_fixture(fixture: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    status, out, err = run(
        [
            "decode",
            fixture["kind"],
            str(DATA / fixture["file"]),
            "--arch",
            fixture["arch"],
            "--offset",
            str(fixture["offset"]),
            "--json",
        ],
        capsys,
    )
    assert (status, err) == (0, "")
    return out


# --- fixtures ---------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", [f for f in FIXTURES if f.get("hand_built")], ids=lambda f: f["file"]
)
def test_hand_built_fixture(fixture: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Decoding equals the expectation written by hand, key order included."""
    out = decode_fixture(fixture, capsys)
    expected_file = DATA / fixture["file"].replace(".bin", ".expected.jsonl")
    expected = json_lines(expected_file.read_text())
    got = json_lines(out)
    assert got == expected
    assert [list(line) for line in got] == [list(line) for line in expected]


def _real(kind: str, name: str) -> dict[str, Any]:
    return next(f for f in FIXTURES if f["file"] == f"x86_64-{kind}-{name}.bin")


def test_real_x86_64_slices_are_consistent(capsys: pytest.CaptureFixture[str]) -> None:
    """The saved slices of a real x86_64 host (see data/capture_x86_64.py).

    Pages 0, 2, 3 were written (private anon), page 5 only read (the shared
    zero page), the rest never touched.
    """
    pagemap = json_lines(decode_fixture(_real("pagemap", "slice"), capsys))
    assert len(pagemap) == 8
    first = pagemap[0]
    assert first["index"] == _real("pagemap", "slice")["offset"] // 8
    assert [p["vaddr"] for p in pagemap] == [(first["index"] + i) << 12 for i in range(8)]
    assert [p["present"] for p in pagemap] == [True, False, True, True, False, True, False, False]
    for page in (0, 2, 3):
        entry = pagemap[page]
        assert entry["exclusive"] and not entry["file_shared"] and entry["pfn"] > 0
        flags = json_lines(decode_fixture(_real("kpageflags", f"pfn{entry['pfn']:#x}"), capsys))
        count = json_lines(decode_fixture(_real("kpagecount", f"pfn{entry['pfn']:#x}"), capsys))
        assert flags[0]["pfn"] == count[0]["pfn"] == entry["pfn"]
        assert "ANON" in flags[0]["flags"] and "NOPAGE" not in flags[0]["flags"]
        assert count[0]["count"] >= 1
    zero = pagemap[5]
    assert not zero["exclusive"]
    flags = json_lines(decode_fixture(_real("kpageflags", f"pfn{zero['pfn']:#x}"), capsys))
    count = json_lines(decode_fixture(_real("kpagecount", f"pfn{zero['pfn']:#x}"), capsys))
    assert "ZERO_PAGE" in flags[0]["flags"]
    assert count[0]["count"] == 0  # the zero page is never counted as mapped

    head_flags = json_lines(decode_fixture(_real("kpageflags", "first64"), capsys))
    head_count = json_lines(decode_fixture(_real("kpagecount", "first64"), capsys))
    assert [f["pfn"] for f in head_flags] == [c["pfn"] for c in head_count] == list(range(64))
    for f in head_flags:
        assert f["raw"] == sum(1 << _bit(name) for name in f["flags"])


def _bit(name: str) -> int:
    return int(KPF[name])


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(
        [
            "decode",
            "pagemap",
            str(DATA / "ppc64-pagemap-slice.bin"),
            "--arch",
            "ppc64",
            "--offset",
            "0x8000",
        ],
        capsys,
    )
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("# pagemap: big-endian, PAGE_SHIFT 16")
    assert lines[1].split() == ["INDEX", "VADDR", "FLAGS", "PFN/SWAP"]
    assert lines[2:] == [
        "       4096  0x0000000010000000  P--X---  0x1234",
        "       4097  0x0000000010010000  -------",
        "       4098  0x0000000010020000  -S--D--  swap 2:0x10",
        "       4099  0x0000000010030000  P-F----  0xabcde",
    ]
    status, out, _ = run(["decode", "kpagemap", str(DATA / "i386-kpagemap.bin")], capsys)
    assert status == 0
    assert out.splitlines()[2:] == [
        "         0x0  0x00000400       0  BUDDY",
        "         0x1  0x00005868       1  UPTODATE,LRU,ACTIVE,MMAP,ANON,SWAPBACKED",
        "         0x2  0x00100000       0  NOPAGE",
    ]
    assert "little-endian, PAGE_SHIFT 12, 4-byte words, 8-byte entries (from header)" in out


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_has_table_and_json(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arch = get_arch("ppc64-4k")
    data = {
        "kpagemap": build_kpagemap(arch, [(0x20, 1)]),
        "pagemap-v1": b"\x00\x0c\x08\x08" + bytes(4) + bytes(7) + b"\x01",
        "page-region": build_u64s(arch, [0x10000, 0x13000, 0x10A]),
    }.get(kind, build_u64s(arch, [1 << 63 | 5]))
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    status, table, _ = run(["decode", kind, str(path), "--arch", "ppc64-4k"], capsys)
    assert status == 0 and table.startswith(f"# {kind}: big-endian")
    assert len(table.splitlines()) == 3
    status, out, _ = run(["decode", kind, str(path), "--arch", "ppc64-4k", "--json"], capsys)
    assert status == 0
    assert json_lines(out)[-1] == {
        "pagemap": {
            "index": 0, "vaddr": 0, "present": True, "swapped": False, "file_shared": False,
            "exclusive": False, "soft_dirty": False, "uffd_wp": False, "guard": False,
            "pfn": 5, "swap_type": None, "swap_offset": None,
        },
        "pagemap-v1": {"index": 0, "vaddr": 0, "present": True, "pfn": 1},
        "kpagemap": {"pfn": 0, "raw_flags": 0x20, "flags": ["LRU"], "count": 1},
        "kpageflags": {"pfn": 0, "raw": 1 << 63 | 5, "flags": ["LOCKED", "REFERENCED", "BIT63"]},
        "kpagecount": {"pfn": 0, "count": 1 << 63 | 5},
        "page-region": {"index": 0, "start": 0x10000, "end": 0x13000, "pages": 3, "raw": 0x10A,
                        "categories": ["WRITTEN", "PRESENT", "BIT8"]},
    }[kind]


# --- offsets ----------------------------------------------------------------


def test_offset_gives_addresses_and_pfns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x86 = get_arch("x86_64")
    path = tmp_path / "slice.bin"
    path.write_bytes(build_pagemap_entries(x86, [PagemapEntry.page(7), PagemapEntry()]))
    offset = (0x7F00_0000_0000 >> 12) * 8
    status, out, _ = run(
        ["decode", "pagemap", str(path), "--arch", "x86_64", "--offset", hex(offset), "--json"],
        capsys,
    )
    lines = json_lines(out)
    assert status == 0
    assert [(p["index"], p["vaddr"]) for p in lines] == [
        (offset // 8, 0x7F00_0000_0000),
        (offset // 8 + 1, 0x7F00_0000_1000),
    ]
    status, out, _ = run(
        ["decode", "kpagecount", str(path), "--arch", "x86_64", "--offset", "800", "--json"],
        capsys,
    )
    assert [c["pfn"] for c in json_lines(out)] == [100, 101]


def test_kpagemap_slice_takes_layout_from_arch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    i386 = get_arch("i386")
    path = tmp_path / "slice.bin"
    path.write_bytes(build_kpagemap(i386, [(1, 2), (3, 4)])[8:])
    status, out, _ = run(
        ["decode", "kpagemap", str(path), "--arch", "i386", "--offset", "8", "--json"], capsys
    )
    assert status == 0
    assert [(e["pfn"], e["raw_flags"], e["count"]) for e in json_lines(out)] == [
        (0, 1, 2),
        (1, 3, 4),
    ]
    argv = ["decode", "kpagemap", str(path), "--arch", "i386", "--offset", "8"]
    status, out, _ = run(argv, capsys)
    assert "(from --arch (no header at this offset))" in out


# --- errors -----------------------------------------------------------------

ERRORS = [
    # (argv after "decode", stdin bytes, message fragment)
    (["pagemap", "{bad_length}", "--arch", "x86_64"], None, "not a multiple of the 8-byte"),
    (["kpagemap", "{bad_header}"], None, "byte 0 (byte order) is 7"),
    (["kpagemap", "{good_kpagemap}", "--arch", "x86_64", "--offset", "24"], None, "bad offset 24"),
    (["pagemap", "{good_pagemap}", "--offset", "4"], None, "bad offset 4"),
    (["pagemap", "{good_pagemap}", "--offset", "-8"], None, "bad offset"),
    (["pagemap", "{good_pagemap}", "--offset", "zero"], None, "not an integer"),
    (["pagemap", "{good_pagemap}", "--arch", "vax"], None, "unknown architecture 'vax'"),
    (["pagemap", "{missing}"], None, "No such file or directory"),
    (["pagemap", "{directory}"], None, "Is a directory"),
    (["pagemap", "{bad_pagemap}", "--arch", "ppc64"], None, "reserved bits 59-60"),
    (["swapmap", "{good_pagemap}"], None, "invalid choice: 'swapmap'"),
    (["kpageflags", "-", "--arch", "i386"], b"\x00" * 9, "length 9 bytes"),
    (["kpagemap", "-"], b"", "shorter than the 4-byte header"),
]


def _error_paths(tmp_path: Path) -> dict[str, str]:
    x86 = get_arch("x86_64")
    files = {
        "bad_length": bytes(12),
        "bad_header": b"\x07\x0c\x08\x10" + bytes(12),
        "good_kpagemap": build_kpagemap(x86, [(0, 0)]),
        "good_pagemap": bytes(16),
        "bad_pagemap": bytes(8) + (1 << 60).to_bytes(8, "big"),
    }
    paths = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths[name] = str(tmp_path / name)
    paths["missing"] = str(tmp_path / "missing")
    paths["directory"] = str(tmp_path)
    return paths


def _fill(argv: list[str], paths: dict[str, str]) -> list[str]:
    return [arg.format(**paths) for arg in argv]


@pytest.mark.parametrize(("argv", "stdin", "message"), ERRORS)
def test_error_in_process(
    argv: list[str],
    stdin: bytes | None,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    status, _, err = run(["decode", *_fill(argv, _error_paths(tmp_path))], capsys)
    assert status == EXIT_ERROR
    _assert_one_line(err, message)


def _assert_one_line(err: str, message: str) -> None:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("sim decode: error: "), err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "stdin", "message"), ERRORS[:3] + ERRORS[6:8] + ERRORS[-2:])
def test_error_subprocess(
    argv: list[str], stdin: bytes | None, message: str, tmp_path: Path
) -> None:
    result = run_subprocess(["decode", *_fill(argv, _error_paths(tmp_path))], stdin)
    assert result.returncode == EXIT_ERROR
    _assert_one_line(result.stderr.decode(), message)


def test_error_after_output_keeps_entries_before_it(tmp_path: Path) -> None:
    """A fault past the first chunk: what came before is printed, then the error."""
    x86 = get_arch("x86_64")
    entries = decode_module.CHUNK_BYTES // 8 + 2
    data = bytes(8 * (entries - 1)) + (1 << 59).to_bytes(8, "little")
    (tmp_path / "late.bin").write_bytes(data)
    result = run_subprocess(["decode", "pagemap", str(tmp_path / "late.bin"), "--arch", x86.name])
    assert result.returncode == EXIT_ERROR
    assert result.stdout.count(b"\n") == 2 + decode_module.CHUNK_BYTES // 8
    _assert_one_line(result.stderr.decode(), f"pagemap entry {entries - 1} ")


def test_malformed_from_the_start_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "odd.bin").write_bytes(bytes(20))
    status, out, _ = run(["decode", "kpageflags", str(tmp_path / "odd.bin")], capsys)
    assert (status, out) == (EXIT_ERROR, "")


def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(4 << 20))
    process = subprocess.Popen(
        [sys.executable, "-m", "sim", "decode", "kpageflags", str(path), "--arch", "i386"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    head = [process.stdout.readline() for _ in range(3)]
    process.stdout.close()
    err = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert head[2].split() == [b"0x0", b"0x0000000000000000", b"-"]
    assert err == b""


def test_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    data = build_u64s(get_arch("ppc64"), [3, 4])
    result = run_subprocess(["decode", "kpagecount", "-", "--arch", "ppc64", "--json"], data)
    assert result.returncode == 0
    assert json_lines(result.stdout.decode()) == [{"pfn": 0, "count": 3}, {"pfn": 1, "count": 4}]


def test_help_documents_kinds_and_keys() -> None:
    result = run_subprocess(["decode", "--help"])
    assert result.returncode == 0
    text = " ".join(result.stdout.decode().split())
    for kind in KINDS:
        assert kind in text
    for key in ("swap_offset", "raw_flags", "header_size", "the slice has no header", "--arch"):
        assert key in text


# --- streaming --------------------------------------------------------------


class WatchedStream:
    """A binary stream that notes the read sizes and how much was printed by then."""

    def __init__(self, data: bytes, out: io.StringIO) -> None:
        self.data = io.BytesIO(data)
        self.out = out
        self.read_sizes: list[int] = []
        self.printed_at_read: list[int] = []

    def read(self, size: int) -> bytes:
        self.read_sizes.append(size)
        self.printed_at_read.append(len(self.out.getvalue()))
        return self.data.read(min(size, 1000))  # short reads, like a pipe


@pytest.mark.parametrize("kind", list(KINDS))
def test_output_streams(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_module, "CHUNK_BYTES", 4096)
    arch = get_arch("x86_64")
    # 48000 bytes: whole entries of every kind (8-byte u64s, 24-byte page_regions).
    data = build_kpagemap(arch, [(0, 1)] * 2000) if kind == "kpagemap" else bytes(24 * 2000)
    if kind == "pagemap-v1":
        data = b"\x01\x0c\x08\x08" + bytes(4) + data[8:]
    out = io.StringIO()
    stream = WatchedStream(data, out)
    decode(kind, cast(BinaryIO, stream), out, arch=arch, as_json=True)
    assert max(stream.read_sizes) <= 4096
    # Output had begun long before the input ended.
    assert stream.printed_at_read[len(stream.read_sizes) // 2] > 0
    assert len(out.getvalue().splitlines()) >= 2000


def test_large_file_decodes_in_constant_memory(tmp_path: Path) -> None:
    """16 MiB of kpageflags through a pipe: the child's peak RSS stays far below
    what holding the input and its 2M decoded values would take."""
    size = 16 << 20
    baseline = _peak_rss_kib(["decode", "kpageflags", "-", "--arch", "x86_64"], bytes(8))
    source = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    try:
        assert source.stdout is not None
        peak = _peak_rss_kib(["decode", "kpageflags", "-", "--arch", "x86_64"], source.stdout)
    finally:
        assert source.stdout is not None
        source.stdout.close()
        source.wait(timeout=60)
    # Holding the input alone would add 16 MiB, its decoded values ~80 MiB more.
    assert peak - baseline < 48 * 1024, f"peak RSS {peak} KiB, {baseline} KiB idle"


def _peak_rss_kib(argv: list[str], stdin: bytes | IO[bytes]) -> int:
    """Peak RSS (KiB) of the CLI decoding ``stdin``; its output is checked too."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv],
        cwd=REPO,
        input=stdin if isinstance(stdin, bytes) else None,
        stdin=None if isinstance(stdin, bytes) else stdin,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.count(b"\n")
    assert lines > 2
    peak_kib = int(result.stderr.decode().split()[-1])
    return peak_kib


# Runs the CLI, then prints the process's own peak RSS (KiB) on stderr.
_MEASURE = (
    "import resource, sys\n"
    "from sim.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "raise SystemExit(status)\n"
)


# --- fuzzing ----------------------------------------------------------------


#: Pieces that make plausible files: empty and full words, valid headers.
_PIECES = [b"\x00" * 8, b"\xff" * 8, b"\x01\x0c\x08\x10", b"\x00\x10\x04\x08", b"\x01\x0c\x04\x04"]


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(list(KINDS)),
    data=st.binary(max_size=96) | st.lists(st.sampled_from(_PIECES)).map(b"".join),
    offset=st.sampled_from([0, 4, 8, 16, 24, 1 << 40]),
    arch=st.sampled_from([None, *ARCH_NAMES]),
    as_json=st.booleans(),
)
def test_decoder_fuzz(
    kind: str, data: bytes, offset: int, arch: str | None, as_json: bool
) -> None:
    """Any input either decodes or fails with FormatError, nothing else."""
    out = io.StringIO()
    try:
        decode(
            kind,
            io.BytesIO(data),
            out,
            arch=None if arch is None else get_arch(arch),
            offset=offset,
            as_json=as_json,
        )
    except FormatError as e:
        assert str(e) and "\n" not in str(e)
        return
    if as_json:
        json_lines(out.getvalue())


@settings(deadline=None)  # a busy machine can be slow
@given(raw=st.integers(0, 2**64 - 1))
def test_flag_names_equal_flags_module(raw: int) -> None:
    names = kpf_names(raw)
    assert flag_names(raw) == (",".join(names) or "-", json.dumps(names))
