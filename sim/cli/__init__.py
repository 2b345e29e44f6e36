"""Command-line tools of the reference model: ``python -m sim COMMAND``.

Every error a user can cause (bad input, unknown names, unreadable files)
ends as one line on stderr, ``sim COMMAND: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import BinaryIO, NoReturn

from sim.arch import ARCH_NAMES, UnknownArchError, get_arch, host_arch
from sim.cli.decoder import KINDS, MAX_OFFSET, InputError, decode
from sim.footprint import cli as footprint_cli
from sim.formats import ByteLayout, FormatError

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_ERROR", "main"]

EXIT_ERROR = 2
#: Output closed early (``| head``): the status of a process killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13


_HELP_WIDTH = 90


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (argparse would print the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _offset(text: str) -> int:
    shown = text if len(text) <= 40 else f"{text[:40]}..."
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad offset {shown!r}: not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"bad offset {shown!r}: negative")
    if value > MAX_OFFSET:
        raise argparse.ArgumentTypeError(
            f"bad offset {shown!r}: beyond the largest file offset {MAX_OFFSET:#x}"
        )
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sim", description="Tools of the page-level proc file model.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    kinds = "\n".join(
        textwrap.fill(
            kind.help, width=_HELP_WIDTH, initial_indent=f"  {name:<12}", subsequent_indent=" " * 14
        )
        for name, kind in KINDS.items()
    )
    summary = textwrap.fill(
        "Decode FILE, a copy (or a slice) of a page-level proc file, entry by entry: an aligned "
        "table, or one JSON object per line with --json.  The file streams: any size decodes in "
        "constant memory.  Malformed input ends with one line on stderr and exit status 2 (after "
        "the entries before the fault); a closed output (| head) ends quietly with status "
        f"{EXIT_BROKEN_PIPE}.",
        width=_HELP_WIDTH,
    )
    decode_parser = commands.add_parser(
        "decode",
        help=("print the entries of a pagemap / kpagemap / kpageflags / kpagecount file, or "
              "the page_region array of a PAGEMAP_SCAN ioctl (page-region)"),
        description=f"{summary}\n\nKINDs:\n{kinds}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    decode_parser.set_defaults(command_parser=decode_parser, run=_run_decode)
    decode_parser.add_argument("kind", metavar="KIND", choices=list(KINDS), help=", ".join(KINDS))
    decode_parser.add_argument("file", metavar="FILE", help='the bytes to decode; "-" for stdin')
    decode_parser.add_argument(
        "--arch",
        metavar="A",
        help=(
            f"byte order, word size and page size of FILE: one of {', '.join(ARCH_NAMES)} "
            "(default: this host).  kpagemap and pagemap-v1 read from offset 0 take them from "
            "their own header instead."
        ),
    )
    decode_parser.add_argument(
        "--offset",
        metavar="BYTES",
        type=_offset,
        default=0,
        help=(
            "file offset FILE's first byte was read at (decimal or 0x hex; default 0), so a "
            "slice decodes to the right addresses / PFNs.  A multiple of the entry size.  For "
            "kpagemap and pagemap-v1 an offset > 0 means the slice has no header."
        ),
    )
    decode_parser.add_argument(
        "--json", action="store_true", help="one JSON object per line (keys: see KINDs)"
    )
    footprint_cli.add_parser(commands)
    return parser


def _arch(name: str | None) -> ByteLayout | None:
    """The named arch; the host's without a name (None if the host has none)."""
    if name is not None:
        return get_arch(name)
    try:
        return host_arch()
    except UnknownArchError:
        return None


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    # Unbuffered: reads go to the file as asked (whole entries), which the
    # proc files require (pagemap_read() rejects counts that are not a
    # multiple of 8).
    return open(path, "rb", buffering=0)


def _run_decode(args: argparse.Namespace) -> int:
    arch = _arch(args.arch)
    try:
        stream = _open(args.file)
    except OSError as e:
        raise InputError(f"cannot read {args.file}: {e.strerror or e}") from None
    try:
        decode(args.kind, stream, sys.stdout, arch=arch, offset=args.offset, as_json=args.json)
        sys.stdout.flush()
    except InputError as e:
        raise InputError(f"{args.file}: {e}") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    parser = _build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # Reported by the command's parser, so the line starts "sim COMMAND:"
            # like every other error of the command.
            args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    prog = f"sim {args.command}"
    try:
        status: int = args.run(args)
        return status
    except BrokenPipeError:
        # The reader left; say nothing, and keep Python's exit-time flush of
        # stdout from raising again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # stdout without a file descriptor
            pass
        return EXIT_BROKEN_PIPE
    except (FormatError, UnknownArchError, InputError, *footprint_cli.USER_ERRORS) as e:
        return _fail(prog, str(e))
    except OSError as e:  # writing the output failed (disk full, ...)
        return _fail(prog, f"cannot write output: {e.strerror or e}")
    except KeyboardInterrupt:
        return 128 + 2


def _fail(prog: str, message: str) -> int:
    """One line on stderr, after what was decoded before the fault."""
    try:
        sys.stdout.flush()
    except OSError:
        pass
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR
