"""Image build times: warm (a cache hit) and cold (a kernel from nothing), per architecture.

    python benchmarks/bench_build.py [--arch ARCH ...] [--runs N]
    python benchmarks/bench_build.py --cold [--baseline REV] [--arch ARCH ...] [--top N]

Warm (the default): a build reads every input, hashes it and finds the
published image; it must stay far below a second so that every test session
can call it.  Arches not built yet are reported, not built.

Cold (``--cold``): ``python -m images build`` in a throw-away cache
(``XDG_CACHE_HOME`` pointed at a temp dir whose unpacked kernel sources are
symlinks to the shared cache's, so no unpacking is timed and the shared cache
is never written), with a wrapper in front of the C compilers on $PATH that
runs each under GNU time.  It prints make's wall time and the compilers' CPU
seconds (user + system) summed per source directory: unlike wall time, CPU
time does not grow when other jobs share the cores.  ``--baseline REV`` first builds
the same arch from the project as of git revision REV (``git archive``), then
the working tree, and prints the ratio: both run in one go on the same load,
since on a shared machine only the ratio means anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from images.arches import IMAGE_ARCH_NAMES, get_image_arch
from images.builder import build_image, find_image
from images.cache import default_cache_root

ROOT = Path(__file__).resolve().parents[1]

#: GNU time (Debian package ``time``) measures each compiler run's CPU time.
GNU_TIME = "/usr/bin/time"

#: Logs one line per compiler run: wall, user and system seconds, the cwd and the -o file.
_WRAPPER = """#!/bin/sh
out=
prev=
for arg in "$@"; do
    if [ "$prev" = "-o" ]; then out=$arg; fi
    prev=$arg
done
exec {time} -a -o "{log}" -f "%e %U %S $PWD $out" "{real}" "$@"
"""


def warm(arches: list[str], runs: int) -> None:
    """Best-of-``runs`` cache-hit times, in process and through the CLI (printed)."""
    for arch in arches:
        if find_image(arch) is None:
            print(f"{arch}: not built for the current inputs; skipped")
            continue
        in_process = []
        for _ in range(runs):
            started = time.perf_counter()
            build_image(arch)
            in_process.append(time.perf_counter() - started)
        command = [sys.executable, "-m", "images", "build", "--arch", arch]
        cli = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            cli.append(time.perf_counter() - started)
        print(
            f"{arch}: warm build_image() best {min(in_process) * 1000:.1f} ms, "
            f"`python -m images build` best {min(cli) * 1000:.0f} ms "
            f"(ratio {min(cli) / min(in_process):.1f}x: interpreter start-up and imports)"
        )


def _directory(build_dir: Path, cwd: str, output: str, depth: int) -> str:
    """The source directory (``depth`` components, relative to the build dir) of one output."""
    path = Path(cwd, output or "-")
    try:
        parts = path.resolve().relative_to(build_dir.resolve()).parts[:-1]
    except ValueError:
        return "(outside the build dir)"
    return "/".join(parts[:depth]) or "."


Figures = tuple[float, dict[str, float], dict[str, int]]


def cold_build(project: Path, arch: str, work: Path) -> Figures:
    """One cold build of ``arch`` from the checkout ``project``, in a fresh cache under ``work``.

    Returns make's wall seconds, compiler seconds per directory and compiler
    runs per directory.  Raises SystemExit with the build's last lines when
    the build fails.
    """
    cache_home = work / "xdg"
    images_root = cache_home / "pagemap-harness" / "images"
    images_root.mkdir(parents=True)
    shared = default_cache_root()
    for name in ("source", "sources"):
        if (shared / name).is_dir():
            (images_root / name).symlink_to(shared / name)
    if not Path(GNU_TIME).is_file():
        raise SystemExit(f"{GNU_TIME} is missing: apt-get install time")
    wrappers = work / "bin"
    wrappers.mkdir()
    log = work / "cc.log"
    spec = get_image_arch(arch)
    for compiler in {"gcc", spec.kernel.compiler}:
        real = shutil.which(compiler)
        if real is None:
            raise SystemExit(
                f"{arch}: {compiler} is not on $PATH (python -m images setup --arch {arch})"
            )
        wrapper = wrappers / compiler
        wrapper.write_text(_WRAPPER.format(time=GNU_TIME, real=real, log=log), encoding="utf-8")
        wrapper.chmod(0o755)
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(cache_home),
        "PATH": f"{wrappers}{os.pathsep}{os.environ['PATH']}",
        "PAGEMAP_HARNESS_ROOT": str(project),
    }
    done = subprocess.run(
        [sys.executable, "-m", "images", "build", "--arch", arch],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{arch}: cold build from {project} failed:\n{done.stderr[-3000:]}")
    metas = list((images_root / "kernels" / arch).glob("*/meta.json"))
    meta = json.loads(metas[0].read_text(encoding="utf-8"))
    make_seconds = float(meta["kernel_seconds"]["make"])
    build_dir = next((images_root / "trees").glob(f"{arch}-*/build"))
    seconds: dict[str, float] = defaultdict(float)
    runs: dict[str, int] = defaultdict(int)
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split(" ", 4)
        try:
            cpu = float(fields[1]) + float(fields[2])
        except (IndexError, ValueError):
            continue  # GNU time's "Command exited with non-zero status" lines
        if len(fields) < 4:
            continue
        directory = _directory(build_dir, fields[3], fields[4] if len(fields) > 4 else "", 2)
        seconds[directory] += cpu
        runs[directory] += 1
    return make_seconds, dict(seconds), dict(runs)


def _report(label: str, figures: Figures, top: int) -> None:
    make_seconds, seconds, runs = figures
    total = sum(seconds.values())
    print(
        f"{label}: make {make_seconds:.0f} s wall; "
        f"compiler CPU {total:.0f} s in {sum(runs.values())} runs"
    )
    for directory, spent in sorted(seconds.items(), key=lambda item: -item[1])[:top]:
        share = 100 * spent / total
        print(f"    {spent:7.1f} s {share:5.1f} % {runs[directory]:5d} runs  {directory}")


def cold(arches: list[str], baseline: str | None, top: int) -> None:
    """Cold builds of each arch (after ``baseline``'s when given), per-directory figures printed."""
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        base_tree = None
        if baseline is not None:
            base_tree = Path(tmp, "baseline")
            base_tree.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", baseline], check=True, capture_output=True
            )
            subprocess.run(["tar", "-x", "-C", str(base_tree)], input=archive.stdout, check=True)
        for arch in arches:
            before = None
            if base_tree is not None:
                work = Path(tmp, f"{arch}-baseline")
                work.mkdir()
                before = cold_build(base_tree, arch, work)
                _report(f"{arch} at {baseline}", before, top)
            work = Path(tmp, f"{arch}-now")
            work.mkdir()
            now = cold_build(ROOT, arch, work)
            _report(f"{arch} now", now, top)
            if before is not None:
                print(
                    f"{arch}: make now/{baseline} {now[0] / before[0]:.2f}, "
                    f"compiler CPU seconds {sum(now[1].values()) / sum(before[1].values()):.2f}"
                )
            sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--arch", action="append", choices=IMAGE_ARCH_NAMES)
    parser.add_argument("--runs", type=int, default=5, help="warm: builds timed per arch")
    parser.add_argument("--cold", action="store_true", help="time cold kernel builds instead")
    parser.add_argument(
        "--baseline", metavar="REV", help="cold: also build git revision REV, first"
    )
    parser.add_argument("--top", type=int, default=15, help="cold: directories listed")
    args = parser.parse_args()
    arches = args.arch or list(IMAGE_ARCH_NAMES)
    if args.cold:
        cold(arches, args.baseline, args.top)
    else:
        warm(arches, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
