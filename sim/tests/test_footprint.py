"""The footprint computation on synthetic sources, in every layout.

The sources are built from decoded values by RecordedSource.build(), which
encodes them with the project's formats in the layout asked for: the same
memory in little- and big-endian, 4K and 64K pages, 8- and 4-byte words,
with kpagemap and without, must give the same numbers (in pages).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.flags import KPF, kpf_value
from sim.footprint.plot import PlotUnavailable, plot
from sim.footprint.recorded import Frame, RecordedProcess, RecordedSource
from sim.footprint.render import human, shown, to_json, to_text
from sim.footprint.scan import CATEGORIES, PSS_SHIFT, SHARING, Footprint, pfn_runs, scan
from sim.footprint.select import SelectionError, Term, parse_group, parse_term, resolve
from sim.footprint.source import PageLayout, ProcessInfo
from sim.formats import PagemapEntry

REPO = Path(__file__).resolve().parents[2]

LAYOUTS = {
    "x86_64": PageLayout(little_endian=True, word_size=8, page_shift=12),
    "ppc64": PageLayout(little_endian=False, word_size=8, page_shift=16),
    "ppc64-4k": PageLayout(little_endian=False, word_size=8, page_shift=12),
    "i386": PageLayout(little_endian=True, word_size=4, page_shift=12),
}

ANON = kpf_value(KPF.ANON, KPF.SWAPBACKED, KPF.LRU, KPF.MMAP)
FILE = kpf_value(KPF.LRU, KPF.MMAP, KPF.UPTODATE)
SHMEM = kpf_value(KPF.SWAPBACKED, KPF.LRU, KPF.MMAP)
ZERO = kpf_value(KPF.ZERO_PAGE, KPF.RESERVED)
THP_HEAD = ANON | kpf_value(KPF.THP, KPF.COMPOUND_HEAD)
LOCKED_DIRTY = ANON | kpf_value(KPF.MLOCKED, KPF.UNEVICTABLE, KPF.DIRTY)

P = [ProcessInfo(pid=100 + i, ppid=100 if i else 1, uid=1000, comm=f"p{i}") for i in range(4)]


def page(pfn: int, **flags: bool) -> PagemapEntry:
    return PagemapEntry.page(pfn, **flags)


HOLE = PagemapEntry()

#: The hand-made world: PFN -> (flags, mapcount, refcount).
FRAMES = {
    10: Frame(ANON, 1, 1),  # p0 private anon
    11: Frame(ANON, 3, 3),  # p0, p1, p2 (COW after fork)
    12: Frame(SHMEM, 4, 5),  # everyone, one page-cache ref
    13: Frame(FILE, 2, 3),  # p0 and p3 (outsider)
    14: Frame(ZERO, 0, 1),  # the zero page
    15: Frame(LOCKED_DIRTY, 1, 3),  # p1 private, mlocked, dirty, pinned (+2)
    16: Frame(THP_HEAD, 2, 9),  # p1 and p2
}
VMAS: dict[ProcessInfo, dict[int, list[PagemapEntry]]] = {
    P[0]: {0x100: [page(10, exclusive=True), page(11), HOLE, page(12, file_shared=True)],
           0x200: [page(13, file_shared=True), page(14)]},
    P[1]: {0x100: [page(11), page(15, exclusive=True), page(12, file_shared=True)],
           0x300: [page(16)]},
    P[2]: {0x100: [page(11), page(12, file_shared=True), page(16)],
           0x180: [PagemapEntry.swap(1, 77)]},
    P[3]: {0x200: [page(13, file_shared=True), page(12, file_shared=True)]},
}
ROLLUPS = {p.pid: {"Swap": 4 if p is P[2] else 0, "SwapPss": 4 if p is P[2] else 0} for p in P}


def source_for(layout: PageLayout, *, kpagemap: bool = False) -> RecordedSource:
    return RecordedSource.build(
        layout, VMAS, FRAMES, with_kpagemap=kpagemap, rollups=ROLLUPS
    )


def shares(layout: PageLayout, *mapcounts: int) -> int:
    whole = layout.page_size << PSS_SHIFT
    return sum(whole // m if m >= 2 else whole for m in mapcounts)


@pytest.mark.parametrize("kpagemap", [False, True], ids=["kpageflags", "kpagemap"])
@pytest.mark.parametrize("arch", list(LAYOUTS))
def test_hand_made_world(arch: str, kpagemap: bool) -> None:
    layout = LAYOUTS[arch]
    size = layout.page_size
    result = scan(source_for(layout, kpagemap=kpagemap), {"g": P[:3], "out": [P[3]]})
    g, out = result.groups
    by_pid = {pf.pid: pf for pf in g.members}
    assert by_pid[100].rss == 4 * size  # 10, 11, 12, 13 (not the zero page)
    assert by_pid[100].pss_fixed == shares(layout, 1, 3, 4, 2)
    assert by_pid[100].pss_anon_fixed == shares(layout, 1, 3)
    assert by_pid[100].pss_shmem_fixed == shares(layout, 4)
    assert by_pid[100].pss_file_fixed == shares(layout, 2)
    assert by_pid[100].uss == size
    assert by_pid[100].zero_page == size
    assert by_pid[101].pss_fixed == shares(layout, 3, 1, 4, 2)
    # Swap from pagemap (one swap entry: a page); SwapPss from the rollup (kB).
    assert by_pid[102].swap == size and by_pid[102].swap_pss == 4 << 10
    # Union: 10, 11, 12, 13, 15, 16.
    assert g.rss == 6 * size
    assert g.private == 2 * size  # 10, 15
    assert g.shared_inside == 2 * size  # 11 (3 of 3), 16 (2 of 2)
    assert g.shared_outside == 2 * size  # 12 (3 of 4), 13 (1 of 2)
    assert g.exclusive == 4 * size
    assert g.pss_fixed == sum(by_pid[pid].pss_fixed for pid in by_pid)
    assert g.inconsistent_frames == 0
    assert g.categories is not None
    assert g.categories["anon"] == {"private": 2 * size, "shared_inside": 2 * size,
                                    "shared_outside": 0}
    assert g.categories["shmem"]["shared_outside"] == size
    assert g.categories["file"]["shared_outside"] == size
    assert sum(g.categories["thp"].values()) == size
    assert g.categories["locked"]["private"] == size
    assert g.categories["dirty"]["private"] == size
    # Pins come from the refcount: only kpagemap has it; 15 has 2 extra refs,
    # 12 (shmem) exactly its page-cache one, 16 is a large folio (not judged).
    assert sum(g.categories["pinned"].values()) == (size if kpagemap else 0)
    assert ("pinned" in " ".join(result.approximations)) != kpagemap
    assert out.rss == 2 * size and out.exclusive == 0


def test_layouts_agree_in_pages() -> None:
    def in_pages(result: Footprint) -> list[object]:
        rows: list[object] = []
        for g in result.groups:
            rows.append(((g.rss or 0) // result.page_size, g.exclusive, g.shared_inside and 1))
            rows.extend(
                (pf.rss // result.page_size, (pf.pss_fixed * 4096) // result.page_size)
                for pf in g.members
            )
        return rows

    results = [
        in_pages(scan(source_for(layout, kpagemap=k), {"g": P[:3], "o": P[3:]}))
        for layout in LAYOUTS.values()
        for k in (False, True)
    ]
    assert all(r[1:] == results[0][1:] for r in results)


@pytest.mark.parametrize("arch", ["x86_64", "ppc64", "i386"])
def test_sparse_recording_per_pfn(arch: str) -> None:
    """One slice per PFN seen, as a guest's Observations record them: same numbers."""
    layout = LAYOUTS[arch]
    whole = source_for(layout, kpagemap=True)
    word = 2 * layout.word_size

    def pick(data: bytes, size: int) -> dict[int, bytes]:
        return {pfn: data[pfn * size : (pfn + 1) * size] for pfn in FRAMES}

    recorded = RecordedSource.build(layout, VMAS, FRAMES, with_kpagemap=True, rollups=ROLLUPS)
    flags = b"".join(recorded.kpageflags([(0, max(FRAMES) + 1)]))
    counts = b"".join(recorded.kpagecount([(0, max(FRAMES) + 1)]))
    slots = b"".join(recorded.kpagemap([(0, max(FRAMES) + 1)]))
    sparse = RecordedSource(
        layout,
        [RecordedProcess(info, {start: b"".join(whole.pagemap(info.pid, [(start, len(entries))]))
                                for start, entries in vmas.items()}, ROLLUPS[info.pid])
         for info, vmas in VMAS.items()],
        pick(flags, 8),
        pick(counts, 8),
        pick(slots, word),
    )
    groups = {"g": P[:3], "out": [P[3]]}
    assert to_json(scan(sparse, groups)) == to_json(scan(whole, groups))


def test_exited_process_is_reported() -> None:
    source = RecordedSource.build(LAYOUTS["x86_64"], VMAS, FRAMES, gone=[101])
    result = scan(source, {"g": P[:3]})
    statuses = {pf.pid: pf.status for pf in result.groups[0].members}
    assert statuses == {100: "ok", 101: "exited", 102: "ok"}
    text = to_text(result)
    assert "exited" in text


def test_hidden_pfns_fall_back_to_rollup() -> None:
    hidden = {
        info: {start: [page(0) if e.present else e for e in entries]
               for start, entries in vmas.items()}
        for info, vmas in VMAS.items()
    }
    rollups = {p.pid: {"Rss": 12, "Pss": 7, "Private_Clean": 0, "Private_Dirty": 4}
               for p in P}
    source = RecordedSource.build(LAYOUTS["x86_64"], hidden, FRAMES, rollups=rollups)
    result = scan(source, {"g": P[:3]})
    (g,) = result.groups
    assert not g.exact and g.shared_outside is None and g.categories is None
    assert g.rss == 3 * 12 * 1024 and g.pss == 3 * 7 * 1024 and g.exclusive == 3 * 4 * 1024
    assert "smaps_rollup" in result.data and result.approximations
    assert "~" in to_text(result)


def test_pfn_runs() -> None:
    pfns = np.array([1, 2, 3, 10, 200, 201, 1000], dtype=np.uint64)
    assert pfn_runs(pfns, max_gap=0) == [(1, 3), (10, 1), (200, 2), (1000, 1)]
    assert pfn_runs(pfns, max_gap=5) == [(1, 3), (10, 1), (200, 2), (1000, 1)]
    assert pfn_runs(pfns, max_gap=6) == [(1, 10), (200, 2), (1000, 1)]
    assert pfn_runs(pfns, max_gap=189) == [(1, 201), (1000, 1)]
    assert pfn_runs(pfns, max_gap=799) == [(1, 1000)]
    assert pfn_runs(np.zeros(0, dtype=np.uint64)) == []


# ---------------------------------------------------------------------------
# Properties on random consistent worlds (mapcount = mappings in all processes)
# ---------------------------------------------------------------------------

_KINDS = [ANON, FILE, SHMEM, THP_HEAD, LOCKED_DIRTY]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[PageLayout, dict[ProcessInfo, dict[int, list[PagemapEntry]]],
                                     dict[int, Frame], list[ProcessInfo]]:
    layout = draw(st.sampled_from(list(LAYOUTS.values())))
    nproc = draw(st.integers(1, 5))
    infos = [ProcessInfo(pid=10 + i, ppid=1, uid=0, comm=f"q{i}") for i in range(nproc)]
    nframes = draw(st.integers(1, 30))
    pfns = draw(st.lists(st.integers(1, 1 << 20), min_size=nframes, max_size=nframes,
                         unique=True))
    mappings: dict[int, int] = {}
    vmas: dict[ProcessInfo, dict[int, list[PagemapEntry]]] = {}
    for info in infos:
        chosen = draw(st.lists(st.sampled_from(pfns), max_size=20))
        for pfn in chosen:
            mappings[pfn] = mappings.get(pfn, 0) + 1
        vmas[info] = {0x400: [page(pfn) for pfn in chosen]}
    frames = {
        pfn: Frame(draw(st.sampled_from(_KINDS)), mappings.get(pfn, 0), mappings.get(pfn, 0) + 1)
        for pfn in pfns
    }
    members = draw(st.lists(st.sampled_from(infos), min_size=1, unique=True))
    return layout, vmas, frames, members


@settings(max_examples=60, deadline=None)
@given(worlds())
def test_pss_of_all_sharers_is_the_frame(
    world: tuple[PageLayout, Mapping[ProcessInfo, Mapping[int, Sequence[PagemapEntry]]],
                 dict[int, Frame], list[ProcessInfo]],
) -> None:
    layout, vmas, frames, members = world
    source = RecordedSource.build(layout, vmas, frames)
    everyone = list(vmas)
    result = scan(source, {"all": everyone, "some": members})
    whole = layout.page_size << PSS_SHIFT
    mapped = [f for f in frames.values() if f.mapcount]
    # Each frame's PSS over all its mappings: m * floor(whole / m), which is
    # the frame's size less under one byte per mapping (the kernel's rounding).
    expected = sum(f.mapcount * (whole // f.mapcount) for f in mapped)
    assert result.groups[0].pss_fixed == expected
    assert 0 <= len(mapped) * whole - expected < sum(f.mapcount for f in mapped) + 1
    all_group, some = result.groups
    assert all_group.rss == len(mapped) * layout.page_size
    assert all_group.shared_outside == 0 and all_group.exclusive == all_group.rss
    for group in result.groups:
        assert group.categories is not None and group.rss is not None
        assert group.private is not None and group.shared_inside is not None
        assert group.private + group.shared_inside + (group.shared_outside or 0) == group.rss
        split = {c: sum(group.categories[c][s] for s in SHARING) for c in CATEGORIES}
        assert split["anon"] + split["file"] + split["shmem"] == group.rss
        assert group.rss <= sum(pf.rss for pf in group.members)
        assert group.pss <= group.rss
    assert some.exclusive is not None and all_group.exclusive is not None
    assert some.exclusive <= all_group.exclusive


# ---------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------


def test_selectors() -> None:
    infos = [
        ProcessInfo(1, 0, 0, "init", "/sbin/init"),
        ProcessInfo(5, 1, 0, "web", "nginx: master"),
        ProcessInfo(6, 5, 33, "web", "nginx: worker"),
        ProcessInfo(7, 6, 33, "helper", "helper --x"),
        ProcessInfo(9, 1, 1000, "bash", "-bash"),
    ]

    def pick(*terms: Term) -> list[int]:
        return [i.pid for i in resolve(list(terms), infos)]

    assert pick(parse_term("tree", "5")) == [5, 6, 7]
    assert pick(parse_term("name", "worker|^init$")) == [1, 6]
    assert pick(parse_term("uid", "33")) == [6, 7]
    assert pick(parse_term("pid", "9,1"), parse_term("uid", "33")) == [1, 6, 7, 9]
    assert pick(parse_term("uid", "root")) == [1, 5]
    assert parse_group("web=name:nginx") == ("web", parse_term("name", "nginx"))
    for bad, message in [
        ("web", "expected NAME=KIND:VALUE"),
        ("web=foo:1", "unknown selector kind"),
        ("web=pid:x", "not a process id"),
        ("web=name:(", "bad regular expression"),
        ("web=uid:no-such-user-here", "no such user"),
    ]:
        with pytest.raises(SelectionError, match=message):
            parse_group(bad)
    with pytest.raises(SelectionError, match="no process 4"):
        resolve([parse_term("pid", "4")], infos)
    with pytest.raises(SelectionError, match="selects no process"):
        resolve([parse_term("name", "postgres")], infos)


def test_name_never_selects_the_launching_shell() -> None:
    """``bash -c 'footprint --name sleep'``: the bash holds 'sleep' in its command line."""
    me = os.getpid()
    infos = [
        ProcessInfo(1, 0, 0, "init", "/sbin/init"),
        ProcessInfo(100, 1, 0, "bash", "bash -c python -m sim footprint --name sleep"),
        ProcessInfo(me, 100, 0, "python", "python -m sim footprint --name sleep"),
        ProcessInfo(200, 1, 0, "sleep", "sleep 60"),
    ]
    assert [i.pid for i in resolve([parse_term("name", "sleep")], infos)] == [200]
    # By pid the launching shell stays selectable: only name patterns skip it.
    assert [i.pid for i in resolve([parse_term("pid", "100")], infos)] == [100]
    with pytest.raises(SelectionError, match="selects no process"):
        resolve([parse_term("name", "footprint")], infos)


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def test_names_are_shown_literally_never_as_markup_or_escape_codes() -> None:
    """A comm or group name like "[/]" or with ESC is data: shown as is, control chars escaped."""
    result = scan(source_for(LAYOUTS["ppc64"], kpagemap=True), {"[/]": P[:3], "[bold]x": [P[3]]})
    text = to_text(result)
    assert "[/] total" in text and "[bold]x total" in text
    assert shown("\x1b[31mRED\x1b[0m\n") == "\\x1b[31mRED\\x1b[0m\\x0a"
    assert "\x1b" not in to_text(
        scan(source_for(LAYOUTS["ppc64"], kpagemap=True), {"\x1b[31m": P[:1]})
    )


def test_human_units() -> None:
    assert [human(n) for n in (0, 1023, 1024, 1536, 5 << 20, 3 << 30, None)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB", "-",
    ]


def test_text_and_json() -> None:
    result = scan(source_for(LAYOUTS["ppc64"], kpagemap=True), {"g": P[:3], "out": [P[3]]})
    text = to_text(result)
    assert "g total" in text and "(RSS: union, USS: excl.)" in text
    assert "384.0 KiB" in text  # 6 pages of 64K
    assert all(line == line.rstrip() for line in text.splitlines())
    in_bytes = to_text(result, in_bytes=True)
    assert str(6 << 16) in in_bytes
    doc = json.loads(to_json(result))
    g = doc["groups"][0]
    assert g["rss"] == 6 << 16 and g["exclusive"] == 4 << 16
    assert g["processes"][0]["pss_fixed_point"] == shares(LAYOUTS["ppc64"], 1, 3, 4, 2)
    assert g["processes"][0]["pss"] == g["processes"][0]["pss_fixed_point"] >> PSS_SHIFT
    assert doc["page_size"] == 1 << 16


def test_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = scan(source_for(LAYOUTS["x86_64"]), {"g": P[:3], "out": [P[3]]})
    plot(result, tmp_path / "f.svg")
    plot(result, tmp_path / "f.png")
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:400]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(PlotUnavailable, match=r"must end in \.svg or \.png"):
        plot(result, tmp_path / "f.pdf")


# ---------------------------------------------------------------------------
# The command: every user error is one line and exit 2
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--group", "nonsense"], "expected NAME=KIND:VALUE"),
        (["--name", "("], "bad regular expression"),
        (["--tree", "0"], "not a process id"),
        (["999999999"], "no process 999999999"),
        (["--name", "no-process-has-this-name-xyz"], "selects no process"),
        ([str(os.getpid()), "--plot", "out.pdf"], "must end in .svg or .png"),
        (["--freeze"], "--freeze needs a selection"),
    ],
)
def test_cli_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["footprint", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("sim footprint: error: ") and message in err
    assert err.count("\n") == 1


def _run_cli(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    program = f"{code}; from sim.cli import main; raise SystemExit(main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def test_plot_without_matplotlib_is_one_line(tmp_path: Path) -> None:
    # An interpreter where matplotlib cannot be imported (as if not installed).
    done = _run_cli("footprint", str(os.getpid()), "--plot", str(tmp_path / "x.svg"),
                    code="import sys; sys.modules['matplotlib'] = None")
    assert done.returncode == 2, done.stderr
    assert done.stderr == "sim footprint: error: --plot needs matplotlib: pip install " \
        "'pagemap-harness[plot]'\n"


def _main_as(uid: int, *args: str) -> tuple[int, str, str]:
    """main(args) in a forked child that dropped to ``uid``: (status, stdout, stderr).

    Forked, not exec'd: the interpreter and the imported modules may live
    where the other user cannot read.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 70
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            status = main(list(args))
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)
    os.close(out_w)
    os.close(err_w)
    with open(out_r) as out, open(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status), stdout, stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_unprivileged_reader() -> None:
    nobody = 65534
    # Another user's process: its files may not be read.
    status, out, err = _main_as(nobody, "footprint", str(os.getpid()))
    assert status == 2 and out == ""
    assert err.startswith(f"sim footprint: error: cannot read /proc/{os.getpid()}/")
    assert "Permission denied (needs root or the process's own user)" in err
    assert err.count("\n") == 1
    # Its own processes: PFNs are hidden, the numbers come from smaps_rollup.
    child = subprocess.Popen(["sleep", "30"], user=nobody, group=nobody, extra_groups=[])
    try:
        status, out, err = _main_as(nobody, "footprint", str(child.pid), "--json")
        assert status == 0, err
        doc = json.loads(out)
        assert "smaps_rollup" in doc["data"] and doc["approximations"]
        assert doc["groups"][0]["processes"][0]["rss"] > 0
        assert doc["groups"][0]["exact"] is False
    finally:
        child.kill()
        child.wait()
