"""``python -m images``: build, path, setup."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from images.arches import IMAGE_ARCH_NAMES, get_image_arch
from images.builder import build_image, find_image
from images.cache import Cache
from images.errors import AgentError, ImageError, MissingToolsError, PatchError, SourceError
from images.hostsetup import setup_host
from images.project import (
    AGENT_DIR_ENV,
    DEFAULT_KERNEL_VERSION,
    KERNEL_VERSION_ENV,
    find_project,
)
from images.source import prepare_source
from sim.arch import ARCH_NAMES, ArchError
from sim.cli.argtypes import positive_int

#: Exit status when the inputs are wrong (no usable kernel source or series, an unknown
#: kernel version or architecture, a missing agent source, tools missing).
EXIT_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m images",
        description="Build the patched guest kernels and initramfs images (cached).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("build", "build the image of ARCH unless the cache has it; print its paths"),
        ("path", "print the kernel and initramfs paths of ARCH's image (exit 1 if not built)"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        # Every name is a choice: one without a kernel build gets a one-line reason.
        command.add_argument("--arch", required=True, choices=ARCH_NAMES)
        command.add_argument(
            "--agent-dir",
            type=Path,
            help=f"guest agent source directory (default: ${AGENT_DIR_ENV} or harness/agent)",
        )
        if name == "build":
            command.add_argument("-j", "--jobs", type=positive_int, metavar="N",
                                 help="make -j N (default: CPUs)")
        command.add_argument(
            "--tree", type=Path, metavar="PATH",
            help="build this kernel source tree (never modified) instead of the pinned Debian "
            "source; the series of its version (or the nearest older one) is applied unless "
            "the tree has /proc/kpagemap",
        )
        _kernel_version_option(command)
    setup = commands.add_parser(
        "setup",
        help="check (and as root install) the host tools and packages",
        description="Check the tools the builds and boots need; as root on Debian, install "
        "what is missing with apt-get, else print the command.",
    )
    setup.add_argument(
        "--arch", action="append", choices=ARCH_NAMES,
        help="only what this arch needs (repeatable; default: all)",
    )
    _kernel_version_option(setup)
    return parser


def _kernel_version_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernel-version", metavar="X.Y",
        help=f"kernel series: a directory of linux-patch/ (default: ${KERNEL_VERSION_ENV} "
        f"or {DEFAULT_KERNEL_VERSION})",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "setup":
            arches = tuple(args.arch or IMAGE_ARCH_NAMES)
            for name in arches:
                get_image_arch(name)  # only arches that build an image need host tools
            patch_set = find_project().patch_set(args.kernel_version)  # bad input before apt
            series = patch_set.read_series()
            setup_host(arches)
            prepare_source(Cache.default(), patch_set.base_file,
                           () if series is None else series.patches)
            return 0
        if args.command == "build":
            image = build_image(args.arch, agent_dir=args.agent_dir, jobs=args.jobs,
                                kernel_version=args.kernel_version, tree=args.tree)
        else:
            found = find_image(args.arch, agent_dir=args.agent_dir,
                               kernel_version=args.kernel_version, tree=args.tree)
            if found is None:
                again = ["python", "-m", "images", "build", "--arch", args.arch]
                if args.kernel_version:
                    again += ["--kernel-version", args.kernel_version]
                if args.tree is not None:
                    again += ["--tree", str(args.tree)]
                print(
                    f"images: {args.arch} is not built for the current inputs "
                    f"({shlex.join(again)})",
                    file=sys.stderr,
                )
                return 1
            image = found
    except (SourceError, MissingToolsError, AgentError, PatchError, ArchError) as exc:
        print(f"images: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_INPUT
    except ImageError as exc:
        print(f"images: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the cache or a file the build needs (e.g. XDG_CACHE_HOME unwritable)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"images: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("images: interrupted", file=sys.stderr)
        return 130
    # Two lines, kernel first: easy to read from a shell.
    try:
        print(image.kernel)
        print(image.initramfs, flush=True)
    except BrokenPipeError:
        # The reader went away (``| head -1``): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError as exc:  # stdout is full or broken (/dev/full)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"images: error: writing the paths: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
