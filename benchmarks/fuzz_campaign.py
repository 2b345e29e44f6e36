"""A longer fuzz campaign over the decode CLI and the scenario loader.

    python benchmarks/fuzz_campaign.py [--seconds N] [--only NAME ...] [--save DIR]
                                       [--huge-mib M | --no-huge]

Runs each fuzzer for N seconds (default 60) and prints, per fuzzer, the
inputs tried, how they ended (decoded / refused in one line / crashed) and
the time taken.  The checks are those of the tests
(``sim/tests/test_fuzz_decode.py``, ``harness/tests/test_fuzz_scenario.py``),
with a per-input alarm so a hang counts as a crash:

* ``decode``: mutated fixtures through ``sim.cli.main`` in process, every
  KIND x --arch x table/JSON, odd offsets;
* ``decode-subprocess``: the same through ``python -m sim decode``;
* ``decode-atheris``: coverage-guided (libFuzzer via atheris), when the
  ``atheris`` package is installed (optional), in a child process;
* ``scenario``: random JSON, mutated catalog scenarios and damaged file text
  through ``load_scenario``.

Then ``huge``: a sparse file of M MiB (default 1024; made with truncate and
removed after) decoded in full to /dev/null, and 4 MiB of random kpageflags,
each with the child's peak RSS (VmHWM).  Crashing inputs are written under
``--save DIR`` when given.  Exit status 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _imports_for(argv: list[str]) -> contextlib.AbstractContextManager[object]:
    """The coverage-guided child imports the project instrumented for libFuzzer."""
    if argv[1:2] == ["--atheris-child"]:
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

        context: contextlib.AbstractContextManager[object] = atheris.instrument_imports(
            include=["sim"]
        )
        return context
    return contextlib.nullcontext()


with _imports_for(sys.argv):
    from harness.tests.test_fuzz_scenario import (
        CATALOG,
        CATALOG_DATA,
        OPS,
        STEP_KEYS,
        check_load,
        mutate_scenario,
        mutate_text,
        write_json,
    )
    from sim.cli.decoder import KINDS
    from sim.tests.test_fuzz_decode import (
        ARCH_CHOICES,
        OFFSETS,
        SEEDS,
        Outcome,
        check_outcome,
        decode_argv,
        mutate,
        random_mutations,
        run_in_process,
        run_subprocess,
        vm_hwm_kib,
    )

#: Seconds one input may take before it counts as a hang.
INPUT_TIMEOUT = 20


class Hang(BaseException):
    """Raised by the alarm: an input took longer than INPUT_TIMEOUT."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"no result after {INPUT_TIMEOUT} s")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Tally:
    """What one fuzzer did."""

    name: str
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    crashes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    def line(self) -> str:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        return (
            f"{self.name:<18} {self.seconds:7.1f} s {self.inputs:9d} inputs "
            f"({rate:7.1f}/s)  accepted {self.accepted:8d}  refused {self.refused:8d}  "
            f"crashes {len(self.crashes):3d}  {self.note}"
        )


class Saver:
    """Writes each crashing input under DIR (or nowhere)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.count = 0

    def save(self, tally: Tally, data: bytes, what: str) -> None:
        tally.crashes.append(what)
        print(f"  CRASH [{tally.name}] {what}", flush=True)
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count += 1
        stem = self.directory / f"{tally.name}-{self.count}"
        stem.with_suffix(".bin").write_bytes(data)
        stem.with_suffix(".txt").write_text(what + "\n")


# --- decode ------------------------------------------------------------------


def _decode_case(rng: random.Random, path: Path) -> tuple[list[str], bytes]:
    data = mutate(rng.choice(SEEDS), random_mutations(rng))
    path.write_bytes(data)
    argv = decode_argv(
        rng.choice(list(KINDS)),
        str(path),
        rng.choice(ARCH_CHOICES),
        rng.choice((None, *OFFSETS)),
        rng.random() < 0.5,
    )
    return argv, data


def _tally_outcome(tally: Tally, outcome: Outcome) -> None:
    if outcome.status == 0:
        tally.accepted += 1
    else:
        tally.refused += 1


def fuzz_decode(seconds: float, work: Path, saver: Saver, rng: random.Random) -> Tally:
    tally = Tally("decode")
    path = work / "decode.bin"
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        argv, data = _decode_case(rng, path)
        tally.inputs += 1
        try:
            with time_limit(INPUT_TIMEOUT):
                outcome = run_in_process(argv)
            check_outcome(argv, outcome)
        except (Exception, Hang) as e:
            saver.save(tally, data, f"{argv}: {type(e).__name__}: {e}")
            continue
        _tally_outcome(tally, outcome)
    tally.seconds = time.monotonic() - started
    tally.note = f"peak RSS of this process {_self_rss_mib():.0f} MiB"
    return tally


def fuzz_decode_subprocess(
    seconds: float, work: Path, saver: Saver, rng: random.Random
) -> Tally:
    tally = Tally("decode-subprocess")
    path = work / "decode-sub.bin"
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        argv, data = _decode_case(rng, path)
        tally.inputs += 1
        try:
            outcome = run_subprocess(argv)
            check_outcome(argv, outcome)
        except (Exception, subprocess.TimeoutExpired) as e:
            saver.save(tally, data, f"{argv}: {type(e).__name__}: {e}")
            continue
        _tally_outcome(tally, outcome)
    tally.seconds = time.monotonic() - started
    return tally


# Coverage-guided, in a child process (libFuzzer owns its process): this
# file run with --atheris-child.
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


def fuzz_decode_atheris(seconds: float, work: Path, saver: Saver) -> Tally:
    tally = Tally("decode-atheris")
    if importlib.util.find_spec("atheris") is None:
        tally.note = "skipped: atheris is not installed (pip install atheris)"
        return tally
    artifacts = work / "atheris"
    artifacts.mkdir()
    command = [
        sys.executable, str(Path(__file__).resolve()), "--atheris-child",
        f"-max_total_time={int(seconds)}", f"-timeout={INPUT_TIMEOUT}", "-rss_limit_mb=1024",
        f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
    ]
    print("  $ " + " ".join(command), flush=True)
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=work, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    tally.seconds = time.monotonic() - started
    log = result.stdout + result.stderr
    done = _DONE.search(log)
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    tally.inputs = int(done.group(1)) if done else int(runs.group(1)) if runs else 0
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    if cov:
        tally.note = f"libFuzzer coverage: {cov[-1][0]} edges, {cov[-1][1]} features"
    for crash in sorted(artifacts.iterdir()):
        tail = "\n".join(log.splitlines()[-15:])
        saver.save(tally, crash.read_bytes(), f"atheris {crash.name}; log tail:\n{tail}")
    if result.returncode != 0 and not tally.crashes:
        tail = "\n".join(log.splitlines()[-15:])
        saver.save(tally, b"", f"atheris exited {result.returncode}; log tail:\n{tail}")
    return tally


def _atheris_child(argv: list[str]) -> None:
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    from sim.cli import main  # instrumented: imported first under _imports_for()

    kinds = list(KINDS)
    path = Path(tempfile.mkdtemp(prefix="atheris-", dir=".")) / "input.bin"

    def one_input(raw: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(raw)
        kind = kinds[fdp.ConsumeIntInRange(0, len(kinds) - 1)]
        arch = ARCH_CHOICES[fdp.ConsumeIntInRange(0, len(ARCH_CHOICES) - 1)]
        offset = (None, *OFFSETS)[fdp.ConsumeIntInRange(0, len(OFFSETS))]
        as_json = fdp.ConsumeBool()
        path.write_bytes(fdp.ConsumeBytes(fdp.remaining_bytes()))
        args = decode_argv(kind, str(path), arch, offset, as_json)
        err = io.StringIO()
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            with contextlib.redirect_stderr(err):
                status = main(args)
        check_outcome(args, Outcome(status, "", err.getvalue()))

    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()


# --- scenario ----------------------------------------------------------------


def _random_json(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(9 if depth < 4 else 6)
    scalars: list[object] = [
        None, True, False, rng.randrange(-(1 << 70), 1 << 70), rng.random() * 1e300,
        rng.choice(["", "a", "main", "thp", "2*thp-1", "anon", "rw", "é\u202e", *OPS]),
    ]
    if choice < 6:
        return scalars[choice]
    if choice == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if choice == 7:
        return {
            rng.choice(STEP_KEYS): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))
        }
    return {
        "name": rng.choice(["t", "x", _random_json(rng, depth + 1)]),
        "steps": [
            {"op": rng.choice(OPS), **(_random_json(rng, depth + 1) or {})}  # type: ignore[dict-item]
            if rng.random() < 0.8 else _random_json(rng, depth + 1)
            for _ in range(rng.randrange(6))
        ],
    }


def fuzz_scenario(seconds: float, work: Path, saver: Saver, rng: random.Random) -> Tally:
    tally = Tally("scenario")
    path = work / "scenario.json"
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        roll = rng.random()
        data: object = None
        try:
            if roll < 0.45:
                data = mutate_scenario(rng.choice(CATALOG_DATA)[1], rng)
            elif roll < 0.75:
                data = _random_json(rng)
                if isinstance(data, dict) and not isinstance(data.get("steps", []), list):
                    data["steps"] = []
            if data is not None:
                write_json(work, data)
            else:
                path.write_bytes(mutate_text((CATALOG / rng.choice(CATALOG_DATA)[0])
                                             .read_bytes(), rng))
        except (TypeError, ValueError):  # not expressible as JSON: not an input
            continue
        tally.inputs += 1
        try:
            with time_limit(INPUT_TIMEOUT):
                result = check_load(path, data)
        except (Exception, Hang) as e:
            saver.save(tally, path.read_bytes(), f"{type(e).__name__}: {e}")
            continue
        if result is None:
            tally.refused += 1
        else:
            tally.accepted += 1
    tally.seconds = time.monotonic() - started
    tally.note = f"peak RSS of this process {_self_rss_mib():.0f} MiB"
    return tally


# --- huge input --------------------------------------------------------------


@dataclass(frozen=True)
class Huge:
    what: str
    status: int
    seconds: float
    peak_rss_mib: float
    mib: int

    def line(self) -> str:
        rate = self.mib / self.seconds if self.seconds else 0.0
        return (
            f"{self.what:<44} exit {self.status:3d}  {self.seconds:7.1f} s "
            f"({rate:6.2f} MiB/s)  peak RSS {self.peak_rss_mib:6.1f} MiB"
        )


def decode_to_devnull(argv: list[str], what: str, mib: int) -> Huge:
    command = [sys.executable, "-m", "sim", *argv]
    print("  $ " + " ".join(command) + " > /dev/null", flush=True)
    started = time.monotonic()
    peak = 0
    with open(os.devnull, "wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, stdout=sink)
        while process.poll() is None:  # VmHWM: see vm_hwm_kib()
            peak = max(peak, vm_hwm_kib(process.pid))
            time.sleep(0.2)
    return Huge(what, process.returncode, time.monotonic() - started, peak / 1024, mib)


def huge_inputs(work: Path, mib: int) -> list[Huge]:
    results = []
    sparse = work / "sparse.bin"
    with open(sparse, "wb") as f:
        f.truncate(mib << 20)
    try:
        results.append(decode_to_devnull(
            ["decode", "kpagecount", str(sparse), "--arch", "x86_64", "--json"],
            f"{mib} MiB sparse, kpagecount --json", mib))
    finally:
        sparse.unlink()
    noise = work / "random.bin"
    noise.write_bytes(random.Random(0).randbytes(4 << 20))
    try:
        results.append(decode_to_devnull(
            ["decode", "kpageflags", str(noise), "--arch", "ppc64"],
            "4 MiB random, kpageflags (table)", 4))
    finally:
        noise.unlink()
    return results


def _self_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- main --------------------------------------------------------------------

FUZZERS = ("decode", "decode-subprocess", "decode-atheris", "scenario")
PARTS = (*FUZZERS, "huge")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--atheris-child":
        _atheris_child(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per fuzzer (default 60)")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these")
    parser.add_argument("--save", type=Path, metavar="DIR", help="write crashing inputs here")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed")
    parser.add_argument("--huge-mib", type=int, default=1024, help="sparse file size (MiB)")
    parser.add_argument("--no-huge", action="store_true", help="skip the huge-input run")
    args = parser.parse_args()
    saver = Saver(args.save)
    chosen = args.only or list(PARTS)
    print(f"fuzz campaign: {args.seconds:.0f} s per fuzzer, seed {args.seed}", flush=True)
    tallies: list[Tally] = []
    huge: list[Huge] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-campaign-") as tmp:
        work = Path(tmp)
        runners: dict[str, Callable[[], Tally]] = {
            "decode": lambda: fuzz_decode(args.seconds, work, saver, random.Random(args.seed)),
            "decode-subprocess": lambda: fuzz_decode_subprocess(
                args.seconds, work, saver, random.Random(args.seed + 1)),
            "decode-atheris": lambda: fuzz_decode_atheris(args.seconds, work, saver),
            "scenario": lambda: fuzz_scenario(
                args.seconds, work, saver, random.Random(args.seed + 2)),
        }
        for name in (n for n in chosen if n in runners):
            print(f"{name}: running for {args.seconds:.0f} s", flush=True)
            tallies.append(runners[name]())
            print("  " + tallies[-1].line(), flush=True)
        if "huge" in chosen and not args.no_huge:
            print(f"huge: decoding a {args.huge_mib} MiB sparse file to /dev/null", flush=True)
            huge = huge_inputs(work, args.huge_mib)
    print(f"\nfuzz campaign done in {time.monotonic() - started:.0f} s (seed {args.seed})")
    for tally in tallies:
        print(tally.line())
    for result in huge:
        print(result.line())
    crashed = sum(len(t.crashes) for t in tallies) + sum(r.status != 0 for r in huge)
    total = sum(t.inputs for t in tallies)
    print(f"total: {total} inputs, {crashed} crashes")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
