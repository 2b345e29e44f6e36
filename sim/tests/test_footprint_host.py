"""The footprint of a real process group on this host, against smaps_rollup.

A static program (data/footprint_group.c) maps private and shared anonymous
memory, a file privately and shared, the zero page and a THP region, forks
three members and an outsider; the test freezes them all (SIGSTOP) and reads
the footprint as root through the same code as ``python -m sim footprint``.

The exact equality tested, per member process: the kernel keeps Pss as
``sum over mappings of (PAGE_SIZE << 12) / mapcount`` and smaps_rollup
prints ``sum >> 12 >> 10``; our ``pss_fixed`` is that sum, so
``pss_fixed >> 22 == Pss`` (and the same for Pss_Anon, Pss_File,
Pss_Shmem), ``rss >> 10 == Rss`` and ``uss >> 10 == Private_Clean +
Private_Dirty``.  Members share no library pages with this reader (static
build); the vdso's mapcount still moves as other processes come and go, so
the rollups are read before and after the scan and the test retries until
they agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.cli import main
from sim.footprint.live import LiveProc, freeze
from sim.footprint.scan import PSS_SHIFT, Footprint, scan
from sim.tests import footprint_group


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        return "not root: PFNs read as 0"
    if not os.path.exists("/proc/kpagecount"):
        return "no /proc/kpagecount (CONFIG_PROC_PAGE_MONITOR off?)"
    return footprint_group.build_skip_reason()


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

ANON_PAGES = 64


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[footprint_group.Group]:
    directory = tmp_path_factory.mktemp("footprint")
    binary = footprint_group.build(directory)
    with footprint_group.running(binary, directory, ANON_PAGES) as running:
        with freeze(running.all):
            yield running


def _rollups(pids: list[int]) -> dict[int, dict[str, int]]:
    source = LiveProc()
    return {pid: source.smaps_rollup(pid) for pid in pids}


def _scan_stable(
    pids: list[int], outsider: list[int]
) -> tuple[Footprint, dict[int, dict[str, int]]]:
    source = LiveProc()
    members = [source.process(pid) for pid in pids]
    outsiders = [source.process(pid) for pid in outsider]
    for _ in range(20):
        before = _rollups(pids)
        result = scan(source, {"group": members, "outsider": outsiders})
        if _rollups(pids) == before:
            return result, before
    pytest.fail("smaps_rollup kept changing while the group was frozen")


def test_per_process_numbers_equal_smaps_rollup(group: footprint_group.Group) -> None:
    result, rollups = _scan_stable(group.members, [group.outsider])
    assert result.data == "pagemap + kpageflags + kpagecount" or "kpagemap" in result.data
    shift = PSS_SHIFT + 10
    for pf in result.groups[0].members:
        rollup = rollups[pf.pid]
        assert pf.status == "ok"
        ours = {
            "Rss": pf.rss >> 10,
            "Pss": pf.pss_fixed >> shift,
            "Pss_Anon": pf.pss_anon_fixed >> shift,
            "Pss_File": pf.pss_file_fixed >> shift,
            "Pss_Shmem": pf.pss_shmem_fixed >> shift,
            "Private": pf.uss >> 10,
        }
        theirs = {key: rollup[key] for key in ours if key != "Private"}
        theirs["Private"] = rollup["Private_Clean"] + rollup["Private_Dirty"]
        assert ours == theirs, f"pid {pf.pid}"
        assert pf.zero_page == 8 * os.sysconf("SC_PAGE_SIZE") or pf.pid != group.parent


def test_group_sharing(group: footprint_group.Group) -> None:
    result, _ = _scan_stable(group.members, [group.outsider])
    members, outsider = result.groups
    page = result.page_size
    assert members.rss is not None and members.exclusive is not None
    assert members.rss < sum(pf.rss for pf in members.members)
    assert members.rss == members.exclusive + (members.shared_outside or 0)
    # The outsider reads 16 shared anonymous, 16 shared-file and 8 private-file
    # pages the members map too: those are shared with outsiders (and frames
    # the static binary's text, which every process of it maps).
    assert members.shared_outside is not None and members.shared_outside >= 40 * page
    assert members.shared_inside is not None and members.shared_inside > 0
    assert members.categories is not None
    split = {name: sum(kinds.values()) for name, kinds in members.categories.items()}
    assert split["anon"] + split["file"] + split["shmem"] == members.rss
    assert split["shmem"] == 32 * page  # the shared anonymous region, mapped by all
    assert outsider.rss is not None and outsider.exclusive is not None
    assert outsider.exclusive < outsider.rss


def test_process_gone_is_reported(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "60"])
    source = LiveProc()
    info = source.process(child.pid)
    child.kill()
    child.wait()
    result = scan(source, {"g": [info]})
    assert [pf.status for pf in result.groups[0].members] == ["exited"]


def test_command_on_the_group(
    group: footprint_group.Group, capsys: pytest.CaptureFixture[str]
) -> None:
    members = ",".join(map(str, group.members))
    argv = ["footprint", "--json", "--freeze", "--group", f"app=pid:{members}",
            "--group", f"family=tree:{group.parent}", "--group", f"out=pid:{group.outsider}"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)
    app, family, outsider = doc["groups"]
    assert doc["data"].startswith("pagemap + ")
    assert [p["pid"] for p in family["processes"]] == sorted(group.all)
    assert family["shared_outside"] < app["shared_outside"]
    assert outsider["exclusive"] + outsider["shared_outside"] == outsider["rss"]
    rollups = _rollups(group.members)
    for process in app["processes"]:
        assert process["rss"] >> 10 == rollups[process["pid"]]["Rss"]
    assert main(["footprint", "--bytes", "--group", f"app=pid:{members}"]) == 0
    text = capsys.readouterr().out
    assert "app total " in text and str(app["rss"]) in text
