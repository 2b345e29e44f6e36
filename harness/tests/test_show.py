"""``--show``'s tables on the recorded guest runs: rows, collapsing, the divergent cell,
plain text off a terminal, 80 columns; and the CLIs that print them."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from harness.observations import Observations, ReadResult
from harness.report import main as report_main
from harness.run import report_format
from harness.show import PAGEMAP_LEGEND, CheckTables, _frames, pagemap_bits, region_rows
from harness.tests.test_ktap import (
    _result,
    _soft_dirty_flipped,
    kunit_parse,
    strict,
    walk,
)
from harness.tests.test_replay import replay, with_check
from sim.flags import KPF
from sim.formats import PagemapEntry, build_u64s, parse_u64s

ANSI = re.compile(r"\x1b\[")


def test_pagemap_bits_at_fixed_places() -> None:
    assert pagemap_bits(PagemapEntry()) == "-------"
    entry = PagemapEntry(present=True, pfn=5, exclusive=True, soft_dirty=True)
    assert pagemap_bits(entry) == "P--XD--"
    assert pagemap_bits(PagemapEntry(swapped=True, swap_type=1, swap_offset=2,
                                     file_shared=True, uffd_wp=True)) == "-SF--W-"


def _tables(real: Observations | None = None, name: str = "fork_cow",
            arch: str = "x86_64") -> CheckTables:
    r = replay(arch, name)
    real_obs = real or r.real
    return CheckTables([(_result(r, real_obs), r.model, real_obs)])


def test_rows_collapse_thp_and_zero_page_runs() -> None:
    """512 pages of thp_zero's last check: the zero page's runs and the THP's are one row each."""
    r = replay("x86_64", "thp_zero")
    arch = r.arch
    for check in r.real.checks:
        model = next(c for c in r.model.checks if c.step == check.step)
        assert check.frames
        for g, m in zip(check.regions, model.regions, strict=True):
            rows = region_rows(arch, g, m, _frames(arch, check), _frames(arch, model))
            assert sum(row.last - row.first + 1 for row in rows) == g.pages
            assert len(rows) <= 3, [(row.first, row.last) for row in rows]
            assert not any(row.divergent for row in rows)
            raws = parse_u64s(arch, g.pagemap.data or b"")
            for row in rows:  # a row's first page is the guest's own entry
                assert row.guest.pfn == (raws[row.first] & ((1 << 55) - 1) or None)


def test_divergent_cell_marked_with_and_without_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    r = replay("x86_64", "fork_cow")
    real, step, region = _soft_dirty_flipped(r)
    tables = _tables(real)
    plain = tables.text(terminal=False)
    assert not ANSI.search(plain)
    assert plain.startswith("pagemap: P present S swapped")
    assert all(len(line) <= 80 for line in plain.splitlines()), max(plain.splitlines(), key=len)
    title = f"fork_cow step {step} (check as uid 0): {region.proc} region {region.region}"
    assert title in plain
    # The flipped page: the row marked, the guest's bits and the model's under them.
    block = plain[plain.index(title):].split("\n\n")[0].splitlines()
    marked = [i for i, line in enumerate(block) if line.startswith("!")]
    assert len(marked) == 1, block
    line, below = block[marked[0]], block[marked[0] + 1]
    guest_bits = re.search(r" ([P-][S-][F-][X-][D-][W-][G-]) ", line)
    model_bits = re.search(r"\[([P-][S-][F-][X-][D-][W-][G-])\]", below)
    assert guest_bits and model_bits
    assert {guest_bits[1][4], model_bits[1][4]} == {"D", "-"}  # soft-dirty, and only it
    assert guest_bits[1][:4] + guest_bits[1][5:] == model_bits[1][:4] + model_bits[1][5:]
    coloured = tables.text(terminal=True)
    assert ANSI.search(coloured) and "\x1b[1;31m!" in coloured
    # Agreeing checks mark nothing.
    agreeing = _tables().text(terminal=False).splitlines()
    assert not any(line.startswith("!") for line in agreeing)


def test_kpageflags_delta_and_counts() -> None:
    """KPF_IDLE planted on one guest frame: the frame's rows say which flag differs."""
    r = replay("x86_64", "fork_cow")
    check = r.real.checks[-1]
    frame = check.frames[0]
    flags = parse_u64s(r.arch, frame.kpageflags.data or b"")[0]
    bad = replace(frame, kpageflags=ReadResult.ok(build_u64s(r.arch, [flags | 1 << KPF.IDLE])))
    real = with_check(r.real, replace(
        check, frames=tuple(bad if f.pfn == frame.pfn else f for f in check.frames)))
    tables = _tables(real)
    lines = tables.lines(_result(r, real), check.step)
    assert "[guest only: IDLE]" in "\n".join(lines)
    assert sum(line.startswith("!") for line in lines) >= 1


def test_unreadable_region_is_a_line() -> None:
    """uid 1000 is refused root's pagemap: a line with both errnos, no table."""
    tables = _tables(name="unprivileged_child")
    text = tables.text(terminal=False)
    assert "guest: pagemap error EACCES (13); model: pagemap error EACCES (13)" in " ".join(
        text.split())


def test_ktap_with_show_parses(tmp_path: Path) -> None:
    from harness.ktap import render_run

    r = replay("x86_64", "fork_cow")
    real, step, _ = _soft_dirty_flipped(r)
    tables = _tables(real)
    result = _result(r, real)
    text = render_run([result], details=tables.lines, header=[PAGEMAP_LEGEND])
    tests = strict(text)
    checks = dict(walk(tests))
    failing = checks[("pagemap_harness.x86_64", "fork_cow", f"step_{step}_check")]
    assert not failing.ok
    # Table lines are printed as they are: the header row whole, not wrapped at 100 columns.
    assert any(d.startswith("page ") and "kpageflags" in d and d.endswith(" ref")
               for d in failing.diagnostics), failing.diagnostics
    assert any(d.startswith("!") for d in failing.diagnostics)
    parsed = kunit_parse(text, tmp_path)
    assert parsed["errors"] == 0


def test_report_cli_show_and_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = replay("x86_64", "fork_cow")
    directory = Path(__file__).parent / "data" / "recorded" / "x86_64"
    model = tmp_path / "model.json"
    r.model.save(model)
    args = [str(directory / "fork_cow.scenario.json"), str(model),
            str(directory / "fork_cow.real.json")]
    assert report_main([*args, "--show"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pagemap: P present") and "ok   fork_cow on x86_64" in out
    assert "fork_cow step 9 (check as uid 0): main region a" in out
    assert report_main([*args, "--format", "ktap", "--show"]) == 0
    tests = strict(capsys.readouterr().out)
    assert tests[0].ok and tests[0].subtests[0].name == "fork_cow"
    assert report_main([*args, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["compared"]["checks"] == 4
    assert report_main([*args, "--json", "--show"]) == 2
    assert capsys.readouterr().err == (
        "error: --show prints tables: use it with --format text or ktap\n")


def test_run_format_choice() -> None:
    assert report_format(None, False, False) == "text"
    assert report_format(None, True, False) == "json"
    assert report_format("ktap", False, True) == "ktap"
    with pytest.raises(ValueError, match="--json and --format ktap ask for two forms"):
        report_format("ktap", True, False)
    with pytest.raises(ValueError, match="--show prints tables"):
        report_format("json", False, True)
