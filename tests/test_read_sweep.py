"""read() on the page-level proc files, swept over positions, counts and seeks: kernel vs model.

Each probe is one READ_FILE of the agent (open, a list of lseek()s, then one
pread()/read() or a loop of them until the count or end of file) and the same
sequence on the model's open file (:mod:`sim.procfs`).  For every probe the
failing stage and errno, each lseek() result, the final file position and
the number of bytes must be equal; the bytes themselves are compared where
the model can know them:

* ``/proc/PID/pagemap`` of a named process set up in the guest and in the
  model by the scenario executors (:class:`harness.guest_executor.GuestRun`,
  :class:`harness.model_executor.ModelRun`, at the addresses of
  :func:`harness.scenario.plan_layout`): every byte, with the model's PFNs
  mapped to the guest's through the bijection both sides' full reads of the
  process's regions establish (as root, before the sweep).  Nothing is masked:
  an entry whose flags differ, or a PFN that breaks the bijection, fails.
* ``/proc/kpagemap``, ``/proc/kpageflags``, ``/proc/kpagecount``: the model's
  machine has the guest's RAM ranges (``System RAM`` of /proc/iomem), so both
  end at the same get_max_dump_pfn().  The model cannot know what the guest's
  kernel does with its RAM frames; it does know the kpagemap header slot and
  every frame outside RAM (PG_reserved holes of present sections,
  init_unavailable_range() in mm/mm_init.c; NOPAGE where no section is
  present): those entries are compared byte for byte.

READ_FILE makes no read() call for a count of 0 (the agent's loop stops
first), so a zero count checks open and seeks only.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from harness.agent.client import AgentClient, ReadFileReply
from harness.agent.protocol import ReadStage, Whence
from harness.guest_executor import GuestRun, prepare_guest
from harness.model_executor import ModelRun
from harness.process import NamedProcess
from harness.scenario import Scenario, parse_scenario
from harness.vm import VM
from sim.arch import Arch
from sim.flags import PM
from sim.formats import build_u64s, parse_u64s
from sim.mm import Machine
from sim.procfs import ProcFile, ProcFs, ProcReadError, Reader, open_proc

pytestmark = pytest.mark.vm

LLONG_MAX = (1 << 63) - 1
#: A count far above any of these files' sizes that READ_FILE still accepts
#: (its payload limit is 64 MiB): the kernel must stop at the end by itself.
HUGE_COUNT = 48 << 20
#: Pages below task_size the EOF probes read; no VMA of the process may be there.
TOP_WINDOW_PAGES = 64


# ---------------------------------------------------------------------------
# Probes and their outcome in the model
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One READ_FILE: seeks, then pread() at ``offset`` or read() at the position."""

    label: str
    count: int
    offset: int | None = None
    seeks: tuple[tuple[Whence, int], ...] = ()
    loop: bool = False

    def run_guest(self, agent: AgentClient, path: str) -> ReadFileReply:
        return agent.read_file(
            path, self.count, offset=self.offset, seeks=self.seeks, loop=self.loop
        )

    def run_model(self, machine: Machine, path: str, reader: Reader) -> ReadFileReply:
        """What the agent's run_read() (harness/agent/files.c) does, on the model's file."""
        try:
            f = open_proc(machine, path, reader)
        except ProcReadError as e:
            return ReadFileReply(ReadStage.OPEN, e.errno, b"", seek_results=(), final_pos=0)
        results: list[int] = []
        for whence, offset in self.seeks:
            try:
                results.append(f.lseek(offset, int(whence)))
            except ProcReadError as e:
                results.append(-e.errno)
                return ReadFileReply(
                    ReadStage.SEEK, e.errno, b"", seek_results=tuple(results), final_pos=f.pos
                )
        data, stage, err = b"", ReadStage.NONE, 0
        while len(data) < self.count:
            try:
                chunk = self._read_once(f, len(data))
            except ProcReadError as e:
                stage, err = ReadStage.READ, e.errno
                break
            data += chunk
            if not chunk or not self.loop:
                break
        return ReadFileReply(stage, err, data, seek_results=tuple(results), final_pos=f.pos)

    def _read_once(self, f: ProcFile, got: int) -> bytes:
        if self.offset is not None:
            return f.pread(self.offset + got, self.count - got)
        return f.read(self.count - got)

    def start(self) -> int:
        """The position the first read starts at (the last seek's result, or 0)."""
        if self.offset is not None:
            return self.offset
        pos = 0
        for whence, offset in self.seeks:
            pos = offset if whence is Whence.SET else pos + offset
        return pos


#: Compares the bytes of one probe (model's, guest's); a message if they differ.
DataCheck = Callable[[Probe, bytes, bytes], str | None]


def _sweep(
    probes: Sequence[Probe],
    guest: Callable[[Probe], ReadFileReply],
    model: Callable[[Probe], ReadFileReply],
    check_data: DataCheck,
) -> None:
    """Run every probe on both sides; fail listing every probe that differs."""
    labels = [p.label for p in probes]
    assert len(set(labels)) == len(labels), "probe labels must be unique"
    failures = []
    for probe in probes:
        real, want = guest(probe), model(probe)
        problems = []
        if (real.stage, real.errno) != (want.stage, want.errno):
            problems.append(f"kernel {real.describe()}, model {want.describe()}")
        if real.seek_results != want.seek_results:
            problems.append(f"seeks: kernel {real.seek_results}, model {want.seek_results}")
        if real.final_pos != want.final_pos:
            problems.append(f"position: kernel {real.final_pos:#x}, model {want.final_pos:#x}")
        if len(real.data) != len(want.data):
            problems.append(f"length: kernel {len(real.data)}, model {len(want.data)}")
        else:
            message = check_data(probe, want.data, real.data)
            if message:
                problems.append(message)
        if problems:
            failures.append(f"{probe.label}: " + "; ".join(problems))
    if failures:
        pytest.fail(
            f"{len(failures)} of {len(probes)} probes differ:\n" + "\n".join(failures),
            pytrace=False,
        )


def _unaligned_and_seek_probes(entry: int, inside: int, end: int) -> list[Probe]:
    """Probes every file shares: ``entry`` bytes per entry, ``inside`` an aligned
    position with data, ``end`` the file's end (task_size or max_dump_pfn)."""
    return [
        Probe("offset+1", entry, offset=inside + 1),
        Probe("offset+half", entry, offset=inside + entry // 2),
        Probe("offset+4 count+4", entry + 4, offset=inside + 4),
        Probe("count-1", entry - 1, offset=inside),
        Probe("count+1", entry + 1, offset=inside),
        Probe("count+half", entry + entry // 2, offset=inside),
        Probe("count 0", 0, offset=inside),
        Probe("count 0 unaligned", 0, offset=inside + 3),
        Probe("one entry", entry, offset=inside),
        Probe("negative offset", entry, offset=-entry),
        Probe("end-2 to end", 2 * entry, offset=end - 2 * entry),
        Probe("end-2 past end", 8 * entry, offset=end - 2 * entry),
        Probe("end-2 past end, loop", 8 * entry, offset=end - 2 * entry, loop=True),
        Probe("at end", entry, offset=end),
        Probe("at end, unaligned", entry, offset=end + 1),
        Probe("end+1 entry", entry, offset=end + entry),
        Probe("end+1000 entries", entry, offset=end + 1000 * entry),
        Probe("far past end 2^62", entry, offset=1 << 62),
        Probe("far past end LLONG_MAX-15", entry, offset=(LLONG_MAX - 15) // entry * entry),
        Probe("offset+count overflows loff_t", 2 * entry, offset=LLONG_MAX // entry * entry),
        Probe("huge count 3 before end", HUGE_COUNT, offset=end - 3 * entry),
        Probe("huge count at end", HUGE_COUNT, offset=end),
        Probe("SEEK_SET then read", 2 * entry, seeks=((Whence.SET, inside),)),
        Probe(
            "SEEK_SET, SEEK_CUR +, SEEK_CUR - then read",
            entry,
            seeks=((Whence.SET, inside), (Whence.CUR, 3 * entry), (Whence.CUR, -entry)),
        ),
        Probe("SEEK_CUR 0 then read", entry, seeks=((Whence.CUR, 0),)),
        Probe("SEEK_SET unaligned then read", entry, seeks=((Whence.SET, inside + 2),)),
        Probe("SEEK_END", entry, seeks=((Whence.END, 0),)),
        Probe("SEEK_END -entry", entry, seeks=((Whence.SET, inside), (Whence.END, -entry))),
        Probe("SEEK_DATA", entry, seeks=((Whence.DATA, 0),)),
        Probe("SEEK_HOLE", entry, seeks=((Whence.HOLE, 0),)),
        Probe("SEEK_SET LLONG_MAX then read", entry, seeks=((Whence.SET, LLONG_MAX),)),
        Probe("SEEK_SET 2^62 then read", entry, seeks=((Whence.SET, 1 << 62),)),
        Probe("SEEK_SET end-1 then read across", 4 * entry,
              seeks=((Whence.SET, end - entry),)),
        Probe("SEEK_SET end-1 then loop to EOF", 4 * entry,
              seeks=((Whence.SET, end - entry),), loop=True),
        Probe("SEEK_SET past end then read", entry, seeks=((Whence.SET, end + 64 * entry),)),
        Probe("SEEK_CUR past end then read", entry,
              seeks=((Whence.SET, end - entry), (Whence.CUR, 2 * entry))),
    ]  # fmt: skip


# ---------------------------------------------------------------------------
# The guest's RAM, for the model's machine
# ---------------------------------------------------------------------------


def guest_ram(agent: AgentClient, arch: Arch) -> list[tuple[int, int]]:
    """The guest's RAM as page-aligned byte ranges: the top-level ``System RAM`` of /proc/iomem.

    Partial pages are left out as memblock does (PFN_UP of the start,
    PFN_DOWN of the end: for_each_mem_pfn_range()).
    """
    result = agent.read_file("/proc/iomem", 1 << 16, loop=True)
    assert result.ok, f"/proc/iomem: {result.describe()}"
    ranges = []
    for line in result.data.decode().splitlines():
        match = re.fullmatch(r"([0-9a-f]+)-([0-9a-f]+) : System RAM", line)
        if match:
            start = -(-int(match[1], 16) >> arch.page_shift) << arch.page_shift
            end = (int(match[2], 16) + 1) >> arch.page_shift << arch.page_shift
            if start < end:
                ranges.append((start, end))
    assert ranges, "/proc/iomem lists no System RAM"
    return ranges


def _file_bytes(agent: AgentClient, path: str, entry: int) -> int:
    """The size of ``path``: the bytes read() gives from 0 until it returns 0."""
    result = agent.read_file(path, HUGE_COUNT, offset=0, loop=True)
    assert result.ok and len(result.data) < HUGE_COUNT, f"{path}: {result.describe()}"
    assert len(result.data) % entry == 0
    return len(result.data)


# ---------------------------------------------------------------------------
# /proc/kpagemap, /proc/kpageflags, /proc/kpagecount
# ---------------------------------------------------------------------------


def _kpage_known(
    machine: Machine, ram: Sequence[tuple[int, int]], kind: str
) -> Callable[[int], bool]:
    """Whether the model knows the entry in slot ``slot`` of the file."""
    shift = machine.arch.page_shift
    ram_pfns = [(start >> shift, end >> shift) for start, end in ram]

    def known(slot: int) -> bool:
        if kind == "kpagemap":
            if slot == 0:
                return True  # the header
            slot -= 1
        return not any(lo <= slot < hi for lo, hi in ram_pfns)

    return known


@pytest.mark.parametrize("kind", ["kpagemap", "kpageflags", "kpagecount"])
def test_kpage_reads_agree(vm: VM, kind: str) -> None:
    arch = vm.profile.arch
    agent = vm.agent
    path = f"/proc/{kind}"
    probe_open = agent.read_file(path, 0)
    if kind == "kpagemap" and probe_open.stage is ReadStage.OPEN:
        pytest.skip(f"the kernel has no /proc/kpagemap: {probe_open.describe()}")
    ram = guest_ram(agent, arch)
    machine = Machine(arch, ram=ram)
    entry = arch.kpagemap_entry_size if kind == "kpagemap" else 8
    end = _file_bytes(agent, path, entry)
    slots = machine.max_dump_pfn + (1 if kind == "kpagemap" else 0)
    assert end == slots * entry, (
        f"{path} ends at {end:#x}; the model with the guest's RAM {ram} at "
        f"{slots * entry:#x} (max_dump_pfn {machine.max_dump_pfn:#x})"
    )
    known = _kpage_known(machine, ram, kind)
    compared = [0]

    def check_data(probe: Probe, want: bytes, real: bytes) -> str | None:
        first = probe.start() // entry
        for i in range(len(want) // entry):
            if known(first + i):
                compared[0] += 1
                a, b = want[i * entry : (i + 1) * entry], real[i * entry : (i + 1) * entry]
                if a != b:
                    return f"slot {first + i:#x}: kernel {b.hex()}, model {a.hex()}"
        return None

    probes = [
        *_unaligned_and_seek_probes(entry, 4 * entry, end),
        Probe("start", 4 * entry, offset=0),
        Probe("whole file, huge count", HUGE_COUNT, offset=0),
        Probe("whole file, huge count, loop", HUGE_COUNT, offset=0, loop=True),
        Probe("read() from 0, loop to EOF", end + 8 * entry, loop=True),
        Probe("middle", 16 * entry, offset=(slots // 2) * entry),
        Probe("last sections' tail", 64 * entry, offset=end - 64 * entry),
    ]
    _sweep(
        probes,
        lambda p: p.run_guest(agent, path),
        lambda p: p.run_model(machine, path, Reader.root()),
        check_data,
    )
    # The header slot, and on x86 the holes below 1 MiB and above max_pfn, were compared.
    if kind == "kpagemap" or any(known(s) for s in (0, slots - 1)):
        assert compared[0] > 0


# ---------------------------------------------------------------------------
# /proc/PID/pagemap
# ---------------------------------------------------------------------------

#: Regions that put different entries on both sides of a page-table (PMD)
#: boundary, i.e. of pagemap_read()'s PAGEMAP_WALK_SIZE chunks: anonymous pages
#: (written, and read: the zero page), a THP, a shared file.
SWEEP_SCENARIO = {
    "name": "read_sweep",
    "steps": [
        {"op": "mmap", "region": "a", "pages": "thp+4", "kind": "anon", "share": "private",
         "prot": "rw"},
        {"op": "write", "region": "a", "pages": [0, 1]},
        {"op": "read", "region": "a", "pages": [1, 2]},
        {"op": "write", "region": "a", "pages": ["thp-2", "thp+2"]},
        {"op": "read", "region": "a", "pages": ["thp+2", "thp+3"]},
        {"op": "mmap", "region": "h", "pages": "thp", "kind": "anon", "share": "private",
         "prot": "rw"},
        {"op": "madvise", "region": "h", "pages": [0, "thp"], "advice": "hugepage"},
        {"op": "write", "region": "h", "pages": [0, 1]},
        {"op": "mmap", "region": "f", "pages": 4, "kind": "file", "share": "shared",
         "prot": "rw"},
        {"op": "read", "region": "f", "pages": [0, 2]},
        {"op": "write", "region": "f", "pages": [3, 4]},
    ],
}  # fmt: skip


@dataclass
class SweepProcess:
    """The sweep's process on both sides, and the PFN bijection between them."""

    scenario: Scenario
    guest_run: GuestRun
    model_run: ModelRun
    guest_pid: int
    model_pid: int
    pfn_map: dict[int, int]


def _set_up(vm: VM, guest: NamedProcess) -> SweepProcess:
    arch = vm.profile.arch
    scenario = parse_scenario(SWEEP_SCENARIO, "tests/test_read_sweep.py")
    reason = scenario.unsupported_reason(arch)
    if reason is not None:
        pytest.skip(reason)
    prepare_guest(vm)
    real = GuestRun(scenario, vm)
    real.names["main"], real.pids["main"] = guest.name, guest.pid
    model = ModelRun(scenario, arch)
    for step in scenario.steps:
        outcomes = (real.step(step), model.step(step))
        assert all(o.status == "ok" for o in outcomes), f"{step.label}: {outcomes}"
    model_pid = model.procs["main"].pid
    pfn_map: dict[int, int] = {}
    for placement in real.layout.values():
        offset = (placement.vaddr >> arch.page_shift) * PM.ENTRY_BYTES
        count = placement.pages * PM.ENTRY_BYTES
        got = guest.agent.read_file(f"/proc/{guest.pid}/pagemap", count, offset=offset)
        assert got.ok and len(got.data) == count, got.describe()
        want = ProcFs(model.machine).read(f"/proc/{model_pid}/pagemap", offset, count)
        pairs = zip(parse_u64s(arch, want), parse_u64s(arch, got.data), strict=True)
        for page, (m, r) in enumerate(pairs):
            m_pfn, r_pfn = _frame(m), _frame(r)
            if m_pfn is None or r_pfn is None:
                continue
            where = f"{placement.region} page {page}"
            assert pfn_map.setdefault(m_pfn, r_pfn) == r_pfn, (
                f"{where}: model PFN {m_pfn:#x} is guest PFN {pfn_map[m_pfn]:#x} and {r_pfn:#x}"
            )
    assert len(set(pfn_map.values())) == len(pfn_map), "two model PFNs map to one guest PFN"
    assert pfn_map, "the sweep's process has no frames"
    return SweepProcess(scenario, real, model, guest.pid, model_pid, pfn_map)


def _frame(raw: int) -> int | None:
    """The PFN field of a present, not swapped entry (None otherwise)."""
    if raw >> PM.PRESENT & 1 and not raw >> PM.SWAP & 1:
        return raw & PM.PFN_MASK
    return None


def _to_guest_pfns(arch: Arch, data: bytes, pfn_map: dict[int, int]) -> bytes | str:
    """The model's pagemap bytes with the guest's PFNs; a message if a PFN has no match."""
    values = []
    for index, raw in enumerate(parse_u64s(arch, data)):
        pfn = _frame(raw)
        if pfn:
            if pfn not in pfn_map:
                return f"entry {index}: model PFN {pfn:#x} is not in the reference reads"
            raw = raw & ~PM.PFN_MASK | pfn_map[pfn]
        values.append(raw)
    return build_u64s(arch, values)


def test_pagemap_reads_agree(vm: VM, guest: NamedProcess) -> None:
    arch = vm.profile.arch
    shift = arch.page_shift
    sweep = _set_up(vm, guest)
    layout = sweep.guest_run.layout
    a, h, f = layout["a"], layout["h"], layout["f"]
    thp = arch.thp_pages
    e = PM.ENTRY_BYTES

    def at(vaddr: int, page: int = 0) -> int:
        return ((vaddr >> shift) + page) * e

    top = arch.task_size >> shift
    end = top * e
    window = (arch.task_size - (TOP_WINDOW_PAGES << shift), arch.task_size)
    maps = guest.agent.read_file(f"/proc/{guest.pid}/maps", 1 << 16, loop=True)
    assert maps.ok, maps.describe()
    for line in maps.data.decode().splitlines():
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo < window[1] and window[0] < hi:
            pytest.skip(f"a VMA of the process lies below task_size ({line.strip()}): "
                        "the model has no such VMA")

    boundary = at(a.vaddr, thp)  # the PMD boundary inside region a
    probes = [
        *_unaligned_and_seek_probes(e, boundary, end),
        Probe("vaddr 0", 2 * e, offset=0),
        Probe("region a whole, with neighbours", (a.pages + 4) * e, offset=at(a.vaddr) - 2 * e),
        Probe("a: across the PMD boundary", 4 * e, offset=boundary - 2 * e),
        Probe("a: ends at the PMD boundary", 2 * e, offset=boundary - 2 * e),
        Probe("a: starts at the PMD boundary", 3 * e, offset=boundary),
        Probe("a: 1 before boundary to 1 after", 2 * e, offset=boundary - e),
        Probe("a: two chunks and a bit, one read()", (thp + 3) * e, offset=at(a.vaddr) + e),
        Probe("a: read() across the boundary, loop", 5 * e,
              seeks=((Whence.SET, boundary - 3 * e),), loop=True),
        Probe("a: read() with SEEK_CUR back", 3 * e,
              seeks=((Whence.SET, boundary), (Whence.CUR, -2 * e))),
        Probe("h: whole THP", thp * e, offset=at(h.vaddr)),
        Probe("h: starts inside the THP", 4 * e, offset=at(h.vaddr, 5)),
        Probe("h: last THP page into the next chunk", 3 * e, offset=at(h.vaddr, thp - 1)),
        Probe("h: before the THP into it", 3 * e, offset=at(h.vaddr) - e),
        Probe("f: shared file pages", 6 * e, offset=at(f.vaddr) - e),
        Probe("f: one entry, written page", e, offset=at(f.vaddr, 3)),
        Probe("top: last 64 pages", TOP_WINDOW_PAGES * e, offset=end - TOP_WINDOW_PAGES * e),
        Probe("top: svpfn = ULONG_MAX >> PAGE_SHIFT", e,
              offset=((1 << (8 * arch.word_size - shift)) - 1) * e),
        Probe("top: svpfn just past ULONG_MAX >> PAGE_SHIFT", e,
              offset=(1 << (8 * arch.word_size - shift)) * e),
        Probe("top: huge count 5 below task_size, loop", HUGE_COUNT, offset=end - 5 * e,
              loop=True),
    ]  # fmt: skip

    def check_data(probe: Probe, want: bytes, real: bytes) -> str | None:
        mapped = _to_guest_pfns(arch, want, sweep.pfn_map)
        if isinstance(mapped, str):
            return mapped
        if mapped == real:
            return None
        wants, reals = parse_u64s(arch, mapped), parse_u64s(arch, real)
        index = next(i for i, (x, y) in enumerate(zip(wants, reals, strict=True)) if x != y)
        vpage = probe.start() // e + index
        return (f"entry {index} (vaddr {vpage << shift:#x}): kernel {reals[index]:#018x}, "
                f"model {wants[index]:#018x} (PFN mapped)")

    guest_path = f"/proc/{sweep.guest_pid}/pagemap"
    model_path = f"/proc/{sweep.model_pid}/pagemap"
    _sweep(
        probes,
        lambda p: p.run_guest(guest.agent, guest_path),
        lambda p: p.run_model(sweep.model_run.machine, model_path, Reader.root()),
        check_data,
    )


def test_pagemap_of_an_exited_process(vm: VM, guest: NamedProcess) -> None:
    """The path of a reaped process: ENOENT at open on both sides."""
    pid = guest.pid
    guest.agent.exit(guest.name)
    machine = Machine(vm.profile.arch)
    gone = machine.spawn("gone")
    gone.exit()
    real = Probe("reaped", 8, offset=0).run_guest(guest.agent, f"/proc/{pid}/pagemap")
    want = Probe("reaped", 8, offset=0).run_model(
        machine, f"/proc/{gone.pid}/pagemap", Reader.root()
    )
    assert (real.stage, real.errno) == (want.stage, want.errno) == (ReadStage.OPEN, errno.ENOENT)
