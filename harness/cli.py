"""``python -m harness``: boot a guest, use it, power it off.

    python -m harness read --arch ppc64 /proc/kpagemap --offset 0 --count 64
    python -m harness read --arch x86_64 /proc/kpageflags --count 8 --uid 1000
    python -m harness run --arch x86_64 tests/scenarios/*.json   (see harness.run)
    python -m harness fuzz --arch x86_64 --seconds 60            (see harness.fuzz.cli)

``read`` prints a hex dump of the bytes read and, for the page-level proc
files, the entries decoded by the model's decoder (``sim decode``).  Any
error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from harness.arches import ArchProfile, get_profile
from harness.errors import AgentOpError, VMError
from harness.image import ImageUnavailable, find_image
from harness.scenario.schema import MAX_UID
from harness.vm import VM, VMConfig
from sim.arch import ARCH_NAMES, ArchError

__all__ = ["main"]

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


class CommandError(Exception):
    """What went wrong, as one line."""


def _number(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="Boot a test kernel in QEMU and use it.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser(
        "run",
        help="run scenarios in a guest and in the model, report divergences (see: run --help)",
        add_help=False,
    )
    commands.add_parser(
        "fuzz",
        help="random scenarios, model against kernel, findings shrunk (see: fuzz --help)",
        add_help=False,
    )
    read = commands.add_parser(
        "read",
        help="boot a fresh guest, read a file at (offset, count), print it, power off",
        description=(
            "Boot a fresh guest, read COUNT bytes of PATH at OFFSET (pread, as root or as "
            "--uid), print a hex dump and, for pagemap / kpagemap / kpageflags / kpagecount, "
            "the decoded entries; then power the guest off."
        ),
    )
    read.add_argument("path", metavar="PATH", help="file in the guest, e.g. /proc/kpagemap")
    read.add_argument("--arch", default="x86_64", choices=ARCH_NAMES)
    read.add_argument("--offset", type=_number, default=0, help="file offset (default 0)")
    read.add_argument("--count", type=_number, default=64, help="bytes to read (default 64)")
    read.add_argument("--uid", type=_number, help="read as this unprivileged uid (gid = uid)")
    read.add_argument("--kernel", type=Path, help="kernel image (default: images build)")
    read.add_argument("--initramfs", type=Path, help="initramfs with the agent as /init")
    read.add_argument(
        "--keep-logs", type=Path, metavar="DIR", help="keep the logs of a failed VM under DIR"
    )
    return parser


def hex_dump(data: bytes, base: int) -> str:
    """16 bytes a line: file offset, hex, printable ASCII."""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{base + at:08x}  {hexes:<47}  {text}")
    return "\n".join(lines)


def _decoder_kind(path: str) -> str | None:
    """The ``sim decode`` kind of a guest path, if it is a page-level proc file."""
    if path in ("/proc/kpagemap", "/proc/kpageflags", "/proc/kpagecount"):
        return path.rsplit("/", 1)[1]
    if re.fullmatch(r"/proc/(self|\d+)/pagemap", path):
        return "pagemap"
    return None


def decoded_view(path: str, data: bytes, offset: int, profile: ArchProfile) -> str | None:
    """The entries as the model's decoder prints them; None for other files."""
    kind = _decoder_kind(path)
    if kind is None or not data:
        return None
    from sim.cli.decoder import decode
    from sim.formats import FormatError

    out = io.StringIO()
    try:
        decode(kind, io.BytesIO(data), out, arch=profile.arch, offset=offset)
    except FormatError as e:
        out.write(f"(decoding stopped: {e})\n")
    return out.getvalue()


def _run_read(args: argparse.Namespace) -> int:
    profile = get_profile(args.arch)
    image = find_image(profile, args.kernel, args.initramfs)
    config = VMConfig(profile, image, keep_logs_dir=args.keep_logs)
    with VM(config, name="read") as vm:
        result = vm.agent.read_file(args.path, args.count, offset=args.offset, uid=args.uid)
    who = f"uid {args.uid}" if args.uid is not None else "root"
    if not result.ok:
        raise CommandError(f"{args.path} at {args.offset} as {who}: {result.describe()}")
    print(
        f"# {args.path} on {profile.name} ({vm.hello.release if vm.hello else '?'}), "
        f"offset {args.offset}, count {args.count}, as {who}: {len(result.data)} bytes"
    )
    if result.data:
        print(hex_dump(result.data, args.offset))
    view = decoded_view(args.path, result.data, args.offset, profile)
    if view:
        print()
        print(view, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["fuzz"]:
        from harness.fuzz.cli import main as fuzz_main  # hypothesis: load on demand

        return fuzz_main(args_list[1:])
    if args_list[:1] == ["run"]:
        from harness.run import main as run_main  # the model and comparison: load on demand

        return run_main(args_list[1:])
    parser = _build_parser()
    argv = args_list
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    if args.uid is not None and not 0 <= args.uid <= MAX_UID:
        # (uid_t)-1 would mean "unchanged" to setresuid(): the read would run as root.
        return _fail(f"--uid {args.uid} is not a uid (0..{MAX_UID})")
    try:
        return _run_read(args)
    except VMError as e:
        message = e.message + (f" (logs kept in {e.kept_logs})" if e.kept_logs else "")
        return _fail(message)
    except (CommandError, ImageUnavailable, ArchError, AgentOpError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return 128 + 2


def _fail(message: str) -> int:
    print(f"harness: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR
