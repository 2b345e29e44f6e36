"""How long a warm image build (a cache hit) takes, per architecture.

    python benchmarks/bench_build.py [--arch ARCH ...] [--runs N]

A warm build reads every input, hashes it and finds the published image; it
must stay far below a second so that every test session can call it.  Arches
not built yet are reported, not built (a cold build takes minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from images.arches import IMAGE_ARCH_NAMES
from images.builder import build_image, find_image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=IMAGE_ARCH_NAMES)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for arch in args.arch or IMAGE_ARCH_NAMES:
        if find_image(arch) is None:
            print(f"{arch}: not built for the current inputs; skipped")
            continue
        in_process = []
        for _ in range(args.runs):
            started = time.perf_counter()
            build_image(arch)
            in_process.append(time.perf_counter() - started)
        command = [sys.executable, "-m", "images", "build", "--arch", arch]
        cli = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            cli.append(time.perf_counter() - started)
        print(
            f"{arch}: warm build_image() best {min(in_process) * 1000:.1f} ms, "
            f"`python -m images build` best {min(cli) * 1000:.0f} ms "
            f"(ratio {min(cli) / min(in_process):.1f}x: interpreter start-up and imports)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
