"""What an executor saw: the same types for the model and the real kernel.

Raw bytes travel; decoding happens in one place (:mod:`sim.formats`) when the
observations are compared.  At each check step an executor records:

* the kpagemap header slot (``KPMSIZE`` bytes at offset 0) and an empty read
  (count 0 at offset 0) of /proc/kpageflags and /proc/kpagecount, all as the
  reader uid: for an unprivileged reader these carry the errno of the open;
* for every (process, region) target of the check (``Scenario.targets``): the
  pagemap bytes of the region's whole range, or the errno of the open or read;
* for every PFN seen in those pagemaps (:func:`frames_seen`): the kpagemap
  slot, the kpageflags and kpagecount u64, each as bytes or an errno;
* per page with a frame, the tag the frame holds (:func:`ram_tag_pages` says
  which pages): on the real side the u64 at ``pfn << PAGE_SHIFT`` of guest RAM,
  on the model side what the model's frame holds;
* for every process of the check's targets: the whole text of
  /proc/PID/smaps and /proc/PID/smaps_rollup (or the errno), as the reader
  uid (:class:`SmapsRead`).  The model's text has only the model's VMAs; the
  kernel's also the agent's own, which compare sets apart.

And for every step its outcome (ok, a SIGSEGV at an address, or an errno).

Everything serialises to JSON (bytes as hex) so a run can be recorded and
compared offline: :meth:`Observations.to_json` / :meth:`Observations.from_json`.
"""

from __future__ import annotations

import errno as errno_module
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sim.flags import PM
from sim.formats import ByteLayout, FormatError, parse_u64s

if TYPE_CHECKING:
    from harness.scenario import Check, Layout
    from sim.arch import Arch

__all__ = [
    "FORMAT_VERSION",
    "CheckObservation",
    "CheckRecorder",
    "FileRead",
    "FrameRead",
    "ObservationError",
    "Observations",
    "ReadResult",
    "RegionRead",
    "ScanObservation",
    "SmapsRead",
    "StepOutcome",
    "errno_name",
    "frames_seen",
    "observe_check",
    "ram_tag_pages",
    "record_check",
]

#: Version of the JSON form; bumped when a field changes meaning.
FORMAT_VERSION = 1

Side = Literal["model", "real"]
#: How a step ended (:class:`StepOutcome`).
OutcomeStatus = Literal["ok", "segv", "error"]


class ObservationError(ValueError):
    """A recorded observation that does not parse; the message says where."""


def errno_name(number: int) -> str:
    """``EACCES (13)``: an errno for people (names are Linux's, numbers as seen)."""
    name = errno_module.errorcode.get(number, "E?")
    return f"{name} ({number})"


@dataclass(frozen=True)
class ReadResult:
    """One read() of a proc file: the bytes it returned, or the errno it failed with.

    ``errno`` covers the open as well as the read.  Exactly one of ``data``
    and ``errno`` is set; ``data`` may be shorter than asked (a short read).
    """

    data: bytes | None = None
    errno: int | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.errno is None):
            raise ValueError("a ReadResult holds exactly one of data and errno")

    @classmethod
    def ok(cls, data: bytes) -> ReadResult:
        return cls(data=bytes(data))

    @classmethod
    def failed(cls, errno: int) -> ReadResult:
        return cls(errno=errno)

    def describe(self) -> str:
        if self.errno is not None:
            return f"error {errno_name(self.errno)}"
        assert self.data is not None
        return f"{len(self.data)} bytes {self.data.hex()}" if self.data else "0 bytes"

    def to_json(self) -> dict[str, Any]:
        if self.errno is not None:
            return {"errno": self.errno}
        assert self.data is not None
        return {"hex": self.data.hex()}

    @classmethod
    def from_json(cls, obj: Any) -> ReadResult:
        if not isinstance(obj, dict):
            raise ObservationError(f"read result {obj!r} is not an object")
        if "errno" in obj:
            value = obj["errno"]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ObservationError(f"errno {value!r} is not a positive integer")
            return cls(errno=value)
        if "hex" in obj and isinstance(obj["hex"], str):
            try:
                return cls(data=bytes.fromhex(obj["hex"]))
            except ValueError:
                raise ObservationError(f"hex {obj['hex'][:40]!r} is not hex bytes") from None
        raise ObservationError(f"read result {obj!r} has neither 'hex' nor 'errno'")


@dataclass(frozen=True)
class RegionRead:
    """The pagemap of one region of one process at one check.

    ``pagemap`` covers ``pages`` pages from ``vaddr`` (file offset
    ``(vaddr >> PAGE_SHIFT) * 8``).  ``ram_tags`` has one item per page: the
    tag in the page's frame, or None where :func:`ram_tag_pages` names no frame
    or the executor could not look; ``ram_tags`` itself is None when the
    executor observes no tags at all.
    """

    proc: str
    region: str
    vaddr: int
    pages: int
    pagemap: ReadResult
    ram_tags: tuple[int | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.ram_tags is not None and len(self.ram_tags) != self.pages:
            raise ValueError(
                f"{self.proc}/{self.region}: {len(self.ram_tags)} RAM tags for {self.pages} pages"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "proc": self.proc,
            "region": self.region,
            "vaddr": f"{self.vaddr:#x}",
            "pages": self.pages,
            "pagemap": self.pagemap.to_json(),
            "ram_tags": None
            if self.ram_tags is None
            else [None if t is None else f"{t:#x}" for t in self.ram_tags],
        }

    @classmethod
    def from_json(cls, obj: Any) -> RegionRead:
        o = _object(obj, "region read")
        tags = o.get("ram_tags")
        if tags is not None and not isinstance(tags, list):
            raise ObservationError("ram_tags is not a list")
        return cls(
            proc=_str(o, "proc"),
            region=_str(o, "region"),
            vaddr=_hexint(o, "vaddr"),
            pages=_int(o, "pages"),
            pagemap=ReadResult.from_json(o.get("pagemap")),
            ram_tags=None if tags is None else tuple(_hexint_or_none(t) for t in tags),
        )


@dataclass(frozen=True)
class FrameRead:
    """The kpage* files at one PFN: kpagemap slot, kpageflags u64, kpagecount u64."""

    pfn: int
    kpagemap: ReadResult
    kpageflags: ReadResult
    kpagecount: ReadResult

    def to_json(self) -> dict[str, Any]:
        return {
            "pfn": f"{self.pfn:#x}",
            "kpagemap": self.kpagemap.to_json(),
            "kpageflags": self.kpageflags.to_json(),
            "kpagecount": self.kpagecount.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> FrameRead:
        o = _object(obj, "frame read")
        return cls(
            pfn=_hexint(o, "pfn"),
            kpagemap=ReadResult.from_json(o.get("kpagemap")),
            kpageflags=ReadResult.from_json(o.get("kpageflags")),
            kpagecount=ReadResult.from_json(o.get("kpagecount")),
        )


def _text_json(result: ReadResult) -> dict[str, Any]:
    """A text file's read as ``{"text": ...}`` (half the size of hex), else as ReadResult does."""
    if result.data is not None:
        try:
            return {"text": result.data.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return result.to_json()


def _text_from_json(obj: Any) -> ReadResult:
    if isinstance(obj, dict) and "text" in obj:
        if not isinstance(obj["text"], str):
            raise ObservationError("text is not a string")
        return ReadResult.ok(obj["text"].encode("utf-8"))
    return ReadResult.from_json(obj)


@dataclass(frozen=True)
class SmapsRead:
    """/proc/PID/smaps and /proc/PID/smaps_rollup of one process at one check.

    Each is the file's whole text (read() until end of file) or the errno of
    the open or read.  ``pss_fixed``: only the model can say it: the exact sums
    of the rollup's fixed-point fields (``{"Pss": bytes << PSS_SHIFT, ...}``)
    behind the kB floors the text shows.
    """

    proc: str
    smaps: ReadResult
    rollup: ReadResult
    pss_fixed: Mapping[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "proc": self.proc, "smaps": _text_json(self.smaps), "rollup": _text_json(self.rollup)
        }
        if self.pss_fixed is not None:
            obj["pss_fixed"] = dict(self.pss_fixed)
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> SmapsRead:
        o = _object(obj, "smaps read")
        fixed = o.get("pss_fixed")
        if fixed is not None and not (
            isinstance(fixed, dict)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in fixed.values())
        ):
            raise ObservationError("pss_fixed is not an object of integers")
        return cls(
            proc=_str(o, "proc"),
            smaps=_text_from_json(o.get("smaps")),
            rollup=_text_from_json(o.get("rollup")),
            pss_fixed=fixed,
        )


@dataclass(frozen=True)
class CheckObservation:
    """Everything one check step read, as ``reader_uid``."""

    step: int
    reader_uid: int
    kpagemap_header: ReadResult
    kpageflags_probe: ReadResult
    kpagecount_probe: ReadResult
    regions: tuple[RegionRead, ...]
    frames: tuple[FrameRead, ...]
    #: One per observed process, in order of creation; None in recordings
    #: made before checks read smaps (compare then has nothing to compare).
    smaps: tuple[SmapsRead, ...] | None = None

    def __post_init__(self) -> None:
        pfns = [frame.pfn for frame in self.frames]
        if len(set(pfns)) != len(pfns):
            raise ValueError(f"check at step {self.step}: a PFN is read twice")
        keys = [(r.proc, r.region) for r in self.regions]
        if len(set(keys)) != len(keys):
            raise ValueError(f"check at step {self.step}: a (process, region) is read twice")

    def frame(self, pfn: int) -> FrameRead | None:
        for frame in self.frames:
            if frame.pfn == pfn:
                return frame
        return None

    def region(self, proc: str, region: str) -> RegionRead | None:
        for read in self.regions:
            if (read.proc, read.region) == (proc, region):
                return read
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "reader_uid": self.reader_uid,
            "kpagemap_header": self.kpagemap_header.to_json(),
            "kpageflags_probe": self.kpageflags_probe.to_json(),
            "kpagecount_probe": self.kpagecount_probe.to_json(),
            "regions": [r.to_json() for r in self.regions],
            "frames": [f.to_json() for f in self.frames],
            **({} if self.smaps is None else {"smaps": [s.to_json() for s in self.smaps]}),
        }

    @classmethod
    def from_json(cls, obj: Any) -> CheckObservation:
        o = _object(obj, "check")
        return cls(
            step=_int(o, "step"),
            reader_uid=_int(o, "reader_uid"),
            kpagemap_header=ReadResult.from_json(o.get("kpagemap_header")),
            kpageflags_probe=ReadResult.from_json(o.get("kpageflags_probe")),
            kpagecount_probe=ReadResult.from_json(o.get("kpagecount_probe")),
            regions=tuple(RegionRead.from_json(r) for r in _list(o, "regions")),
            frames=tuple(FrameRead.from_json(f) for f in _list(o, "frames")),
            smaps=None if o.get("smaps") is None
            else tuple(SmapsRead.from_json(x) for x in _list(o, "smaps")),
        )


@dataclass(frozen=True)
class ScanObservation:
    """What a PAGEMAP_SCAN ioctl left behind, beyond its errno (harness/SCENARIOS.md).

    ``ret``: the ioctl's value, page_region records written (>= 0) or -errno;
    ``walk_end``: the pm_scan_arg's walk_end afterwards (bytes, an address);
    ``vec``: the whole output buffer afterwards, ``vec_len`` records of 24
    bytes in the guest's byte order, SCAN_VEC_FILL bytes where nothing was
    written.  Addresses only, no PFNs: both sides must be equal byte for byte.
    """

    ret: int
    walk_end: int
    vec: bytes

    def describe(self) -> str:
        return f"ret {self.ret}, walk_end {self.walk_end:#x}, vec {len(self.vec)} bytes"

    def to_json(self) -> dict[str, Any]:
        return {"ret": self.ret, "walk_end": f"{self.walk_end:#x}", "vec": self.vec.hex()}

    @classmethod
    def from_json(cls, obj: Any) -> ScanObservation:
        o = _object(obj, "scan")
        ret = o.get("ret")
        if isinstance(ret, bool) or not isinstance(ret, int):
            raise ObservationError(f"scan ret {ret!r} is not an integer")
        try:
            vec = bytes.fromhex(_str(o, "vec"))
        except ValueError:
            raise ObservationError("scan vec is not hex bytes") from None
        return cls(ret=ret, walk_end=_hexint(o, "walk_end"), vec=vec)


@dataclass(frozen=True)
class StepOutcome:
    """How one step ended.

    ``ok``; ``segv`` with the faulting ``vaddr`` (a touch the kernel refused);
    or ``error`` with the ``errno`` of the system call (mmap, madvise, ...).
    A ``pagemap_scan`` step that reached its ioctl also carries ``scan``
    (ok or error alike).
    """

    step: int
    status: OutcomeStatus
    vaddr: int | None = None
    errno: int | None = None
    scan: ScanObservation | None = None

    def __post_init__(self) -> None:
        if self.status not in ("ok", "segv", "error"):
            raise ValueError(f"step {self.step}: status {self.status!r}")
        if (self.vaddr is not None) != (self.status == "segv"):
            raise ValueError(f"step {self.step}: vaddr is given exactly for segv")
        if (self.errno is not None) != (self.status == "error"):
            raise ValueError(f"step {self.step}: errno is given exactly for error")

    def describe(self) -> str:
        scan = "" if self.scan is None else f" ({self.scan.describe()})"
        if self.status == "segv":
            assert self.vaddr is not None
            return f"SIGSEGV at {self.vaddr:#x}"
        if self.status == "error":
            assert self.errno is not None
            return f"error {errno_name(self.errno)}{scan}"
        return f"ok{scan}"

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"step": self.step, "status": self.status}
        if self.vaddr is not None:
            obj["vaddr"] = f"{self.vaddr:#x}"
        if self.errno is not None:
            obj["errno"] = self.errno
        if self.scan is not None:
            obj["scan"] = self.scan.to_json()
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> StepOutcome:
        o = _object(obj, "outcome")
        status = o.get("status")
        if status not in ("ok", "segv", "error"):
            raise ObservationError(f"outcome status {status!r} is not ok, segv or error")
        return cls(
            step=_int(o, "step"),
            status=status,
            vaddr=_hexint(o, "vaddr") if "vaddr" in o else None,
            errno=_int(o, "errno") if "errno" in o else None,
            scan=ScanObservation.from_json(o["scan"]) if "scan" in o else None,
        )


@dataclass(frozen=True)
class Observations:
    """One executor's run of one scenario on one architecture.

    ``outcomes`` has one item per step executed, in order (a run that stopped
    early has fewer); ``checks`` one per check step executed.
    ``stable_pfns``: the executor never reuses a PFN within the run, so a PFN
    names one frame throughout (a model with a monotonic allocator can say so;
    a real kernel cannot), and compare holds its PFN bindings across checks.
    """

    scenario: str
    arch: str
    side: Side
    outcomes: tuple[StepOutcome, ...]
    checks: tuple[CheckObservation, ...]
    stable_pfns: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "scenario": self.scenario,
            "arch": self.arch,
            "side": self.side,
            "stable_pfns": self.stable_pfns,
            "outcomes": [o.to_json() for o in self.outcomes],
            "checks": [c.to_json() for c in self.checks],
        }

    @classmethod
    def from_json(cls, obj: Any) -> Observations:
        o = _object(obj, "observations")
        if o.get("format") != FORMAT_VERSION:
            raise ObservationError(
                f"format {o.get('format')!r}; this version reads format {FORMAT_VERSION}"
            )
        side = o.get("side")
        if side not in ("model", "real"):
            raise ObservationError(f"side {side!r} is not 'model' or 'real'")
        return cls(
            scenario=_str(o, "scenario"),
            arch=_str(o, "arch"),
            side=side,
            stable_pfns=bool(o.get("stable_pfns", False)),
            outcomes=tuple(StepOutcome.from_json(x) for x in _list(o, "outcomes")),
            checks=tuple(CheckObservation.from_json(x) for x in _list(o, "checks")),
        )

    def save(self, path: str | Path) -> None:
        """Write the JSON form (atomically: a reader never sees half a file)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path) -> Observations:
        """Read a recorded run; ObservationError (one line) if it does not parse."""
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ObservationError(f"{path}: cannot read: {e.strerror or e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ObservationError(f"{path}: not a JSON file: {e}") from None
        try:
            return cls.from_json(obj)
        except (ObservationError, ValueError) as e:
            raise ObservationError(f"{path}: {e}") from None


# ---------------------------------------------------------------------------
# Which frames a check reads: one rule for both executors
# ---------------------------------------------------------------------------


def _frame_pfn(raw: int) -> int | None:
    """The PFN of a pagemap u64 that names a frame, else None.

    Present, not swapped, and a nonzero PFN: a reader without CAP_SYS_ADMIN
    gets PFN 0 for every page (pagemap_read() in fs/proc/task_mmu.c clears
    pm.show_pfn), and no user page lives at PFN 0.
    """
    if not raw >> PM.PRESENT & 1 or raw >> PM.SWAP & 1:
        return None
    pfn = raw & PM.PFN_MASK
    return pfn or None


def ram_tag_pages(arch: ByteLayout, pagemap: ReadResult) -> list[tuple[int, int]]:
    """(page index, pfn) of every page of a region read whose frame is named.

    An executor reads the RAM tag of exactly these pages.  A pagemap that
    failed, or bytes that are not whole u64s, name none.
    """
    if pagemap.data is None:
        return []
    usable = len(pagemap.data) - len(pagemap.data) % PM.ENTRY_BYTES
    try:
        raws = parse_u64s(arch, pagemap.data[:usable])
    except FormatError:  # pragma: no cover - the length is made whole above
        return []
    pages = []
    for index, raw in enumerate(raws):
        pfn = _frame_pfn(raw)
        if pfn is not None:
            pages.append((index, pfn))
    return pages


def frames_seen(arch: ByteLayout, pagemaps: Iterable[ReadResult]) -> list[int]:
    """The PFNs a check reads the kpage* files at: every frame its pagemaps name, sorted."""
    pfns: set[int] = set()
    for pagemap in pagemaps:
        pfns.update(pfn for _, pfn in ram_tag_pages(arch, pagemap))
    return sorted(pfns)


# ---------------------------------------------------------------------------
# A check's reads: one definition for both executors
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRead:
    """One open + pread + close of a proc file, as the check's reader uid.

    ``whole``: instead, read() from the start until end of file (at most
    ``count`` bytes): a seq_file such as smaps returns at most its buffer
    (a page or more) per read() call.
    """

    path: str
    offset: int
    count: int
    whole: bool = False


#: Most bytes of one smaps or smaps_rollup text a check reads (far above what
#: the agent and a catalog scenario map: about 1 KiB per VMA).
SMAPS_READ_BYTES = 1 << 20


#: Executes reads, in order, as the check's reader uid; one result per read.
ReadBatch = Callable[[Sequence[FileRead]], Sequence[ReadResult]]
#: The tag each frame holds (None: cannot look); absent: tags not observed.
TagReader = Callable[[Sequence[int]], Sequence[int | None]]


def observe_check(
    check: Check,
    targets: Sequence[tuple[str, str, int]],
    layout: Layout,
    arch: Arch,
    read: ReadBatch,
    frame_tags: TagReader | None,
) -> CheckObservation:
    """Everything a check reads, in two batches of reads.

    ``targets``: (process, region, pid) for each of ``Scenario.targets[check.index]``.
    First batch: the kpagemap header slot, the empty kpageflags and kpagecount
    probes, and every target's pagemap range.  Second batch: for the frames
    those pagemaps name (:func:`frames_seen`), grouped into runs of consecutive
    PFNs (a THP is one run), one read of each file per run: kpagemap slots from
    ``(pfn + 1) * KPMSIZE``, kpageflags and kpagecount from ``pfn * 8``.  Each
    frame gets its own slice of the run's bytes (or the run's errno).
    ``frame_tags`` then gives the tag of each page's frame
    (:func:`ram_tag_pages`).  The first batch also reads, once per process of
    ``targets`` (in their order), the whole smaps_rollup, smaps and
    smaps_rollup texts (:func:`_stable_smaps`).
    """
    entry_size = arch.kpagemap_entry_size
    first = [
        FileRead("/proc/kpagemap", 0, entry_size),
        FileRead("/proc/kpageflags", 0, 0),
        FileRead("/proc/kpagecount", 0, 0),
    ]
    for _, region, pid in targets:
        placement = layout[region]
        first.append(FileRead(
            f"/proc/{pid}/pagemap",
            (placement.vaddr >> arch.page_shift) * PM.ENTRY_BYTES,
            placement.observed_pages * PM.ENTRY_BYTES,
        ))
    procs: dict[str, int] = {}
    for proc, _, pid in targets:
        procs.setdefault(proc, pid)
    for pid in procs.values():
        first += _smaps_reads(pid)
    results = _run(read, first)
    header, flags_probe, count_probe = results[:3]
    pagemaps = results[3 : 3 + len(targets)]
    texts = results[3 + len(targets) :]
    smaps = _stable_smaps(procs, texts, read)
    pfns = frames_seen(arch, pagemaps)
    runs = _pfn_runs(pfns)
    second = []
    for first_pfn, n in runs:
        second += [
            FileRead("/proc/kpagemap", (first_pfn + 1) * entry_size, n * entry_size),
            FileRead("/proc/kpageflags", first_pfn * PM.ENTRY_BYTES, n * PM.ENTRY_BYTES),
            FileRead("/proc/kpagecount", first_pfn * PM.ENTRY_BYTES, n * PM.ENTRY_BYTES),
        ]
    run_results = _run(read, second) if second else []
    frame_list: list[FrameRead] = []
    for i, (first_pfn, n) in enumerate(runs):
        kpagemap, kpageflags, kpagecount = run_results[3 * i : 3 * i + 3]
        for j in range(n):
            frame_list.append(FrameRead(
                first_pfn + j,
                _slice(kpagemap, j, entry_size),
                _slice(kpageflags, j, PM.ENTRY_BYTES),
                _slice(kpagecount, j, PM.ENTRY_BYTES),
            ))
    frames = tuple(frame_list)
    tags_of: dict[int, int | None] = {}
    if frame_tags is not None and pfns:
        found = list(frame_tags(pfns))
        if len(found) != len(pfns):
            raise ValueError(f"{len(found)} frame tags for {len(pfns)} frames")
        tags_of = dict(zip(pfns, found, strict=True))
    regions = []
    for (proc, region, _), pagemap in zip(targets, pagemaps, strict=True):
        placement = layout[region]
        tags: tuple[int | None, ...] | None = None
        if frame_tags is not None:
            by_page: list[int | None] = [None] * placement.observed_pages
            for page, pfn in ram_tag_pages(arch, pagemap):
                if page < placement.observed_pages:
                    by_page[page] = tags_of.get(pfn)
            tags = tuple(by_page)
        regions.append(
            RegionRead(proc, region, placement.vaddr, placement.observed_pages, pagemap, tags)
        )
    return CheckObservation(
        check.index, check.reader_uid, header, flags_probe, count_probe, tuple(regions), frames,
        smaps,
    )


#: Reads of one process's smaps texts: rollup, smaps, rollup again.
_SMAPS_TRIPLE = 3
#: How often a check reads a process's triple before it takes a changing one as it is.
SMAPS_ATTEMPTS = 4


def _smaps_reads(pid: int) -> list[FileRead]:
    rollup = FileRead(f"/proc/{pid}/smaps_rollup", 0, SMAPS_READ_BYTES, whole=True)
    return [rollup, FileRead(f"/proc/{pid}/smaps", 0, SMAPS_READ_BYTES, whole=True), rollup]


def _stable_smaps(
    procs: Mapping[str, int], texts: Sequence[ReadResult], read: ReadBatch
) -> tuple[SmapsRead, ...]:
    """Each process's smaps with a rollup of the same moment.

    The kernel's texts include the agent's own VMAs, whose pages the agent's
    reader (a CLONE_VM child of its init) can take out of COW sharing
    between two reads.  A rollup read before and after the smaps read that
    agree say nothing changed in between (nothing forks during a check, so
    counts only move one way); otherwise the triple is read again, up to
    SMAPS_ATTEMPTS times, and the last one is kept.
    """
    triples = {
        proc: list(texts[_SMAPS_TRIPLE * i : _SMAPS_TRIPLE * (i + 1)])
        for i, proc in enumerate(procs)
    }
    for _ in range(SMAPS_ATTEMPTS - 1):
        unsettled = [p for p, (before, _, after) in triples.items() if before != after]
        if not unsettled:
            break
        again = _run(read, [r for p in unsettled for r in _smaps_reads(procs[p])])
        for i, proc in enumerate(unsettled):
            triples[proc] = again[_SMAPS_TRIPLE * i : _SMAPS_TRIPLE * (i + 1)]
    return tuple(SmapsRead(proc, smaps, after) for proc, (_, smaps, after) in triples.items())


class CheckRecorder(Protocol):
    """An executor's run as far as checks go: how it observes one, and what it kept."""

    checks: list[CheckObservation]

    def check(self, step: Check) -> CheckObservation:
        """Everything ``step`` reads (by :func:`observe_check`)."""
        ...


def record_check(run: CheckRecorder, step: Check) -> None:
    """The handler of a check step in both executors: observe, and keep the observation."""
    run.checks.append(run.check(step))


#: Most frames one kpage* read covers (a THP is 512 on x86_64).
MAX_FRAMES_PER_READ = 4096


def _pfn_runs(pfns: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted PFNs as (first, count) runs of consecutive PFNs, each at most MAX_FRAMES_PER_READ."""
    runs: list[tuple[int, int]] = []
    for pfn in pfns:
        if runs and runs[-1][0] + runs[-1][1] == pfn and runs[-1][1] < MAX_FRAMES_PER_READ:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((pfn, 1))
    return runs


def _slice(result: ReadResult, index: int, size: int) -> ReadResult:
    """Entry ``index`` of a read covering several frames (short if the read was short)."""
    if result.data is None:
        return result
    return ReadResult.ok(result.data[index * size : (index + 1) * size])


def _run(read: ReadBatch, reads: Sequence[FileRead]) -> list[ReadResult]:
    results = list(read(reads))
    if len(results) != len(reads):
        raise ValueError(f"{len(results)} results for {len(reads)} reads")
    return results


# ---------------------------------------------------------------------------
# JSON helpers
# ---------------------------------------------------------------------------


def _object(obj: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise ObservationError(f"{what} {str(obj)[:60]!r} is not an object")
    return obj


def _list(o: Mapping[str, Any], key: str) -> list[Any]:
    value = o.get(key)
    if not isinstance(value, list):
        raise ObservationError(f"{key} is not a list")
    return value


def _str(o: Mapping[str, Any], key: str) -> str:
    value = o.get(key)
    if not isinstance(value, str):
        raise ObservationError(f"{key} {value!r} is not a string")
    return value


def _int(o: Mapping[str, Any], key: str) -> int:
    value = o.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ObservationError(f"{key} {value!r} is not an integer")
    return value


def _hexint(o: Mapping[str, Any], key: str) -> int:
    value = _hexint_or_none(o.get(key))
    if value is None:
        raise ObservationError(f"{key} is missing")
    return value


def _hexint_or_none(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise ObservationError(f"{value!r} is not a hex integer")
