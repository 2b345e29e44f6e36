"""Report formatting: grouped text and complete JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.compare import Divergence, compare
from harness.differences import KpfFlags
from harness.observations import ReadResult, StepOutcome
from harness.report import (
    ScenarioResult,
    compare_recorded,
    main,
    render_json,
    render_text,
    summary_line,
)
from harness.tests import synth
from harness.tests.test_compare import ARCH, SCENARIO, model_observations, real_observations
from sim.flags import KPF, kpf_value
from sim.formats import build_u64s


def diverging_result() -> ScenarioResult:
    """The real side sets KSM on every frame of check 5 and counts one mapping less."""
    real = real_observations()
    c5 = real.checks[1]
    ksm = synth.ANON_FLAGS | kpf_value(KPF.KSM)
    frames = tuple(
        replace(f, kpageflags=ReadResult.ok(build_u64s(ARCH, [ksm]))) for f in c5.frames
    )
    real = replace(real, checks=(real.checks[0], replace(c5, frames=frames), *real.checks[2:]))
    found = compare(model_observations(), real, SCENARIO, ARCH)
    return ScenarioResult.from_divergences("t", ARCH.name, found)


def test_text_groups_by_step_and_value() -> None:
    result = diverging_result()
    assert result.status == "diverge"
    n = len(result.divergences)
    text = render_text([result], places=2)
    lines = text.splitlines()
    assert lines[0] == f"FAIL t on ppc64: {n} divergences"
    # The summary: one line per kind of difference, most frequent first.
    assert lines[1] == "     3 x kpageflags: real only: KSM  [step 5]"
    assert lines[2].startswith("     3 x kpagemap.flags inconsistent on the real side: ")
    assert lines[3] == "  step 5 (check)"
    # One group for the three frames with the same wrong flag, their places under it.
    i = lines.index("    kpageflags: real only: KSM (3 frames)")
    assert lines[i + 1] == (
        "        e.g. model 0x5828 UPTODATE|LRU|MMAP|ANON|SWAPBACKED, "
        "real 0x205828 UPTODATE|LRU|MMAP|ANON|SWAPBACKED|KSM")
    assert lines[i + 2] == "        at pfn model 0x64 / real 0x3f000 (main:a+0, c:a+0)"
    assert lines[i + 4] == "        ... and 1 more"
    consistency = [line for line in lines if line.startswith("    kpagemap.flags inconsistent")]
    assert len(consistency) == 1 and consistency[0].endswith("(3 frames)")
    assert lines[-1] == f"1 run: 1 diverge ({n} divergences)"


def test_flag_groups_merge_frames_of_different_kinds() -> None:
    """A missing flag on anonymous and on file frames is one group (grouped by the delta)."""
    def flags(pfn: int, model: int, real: int) -> Divergence:
        return Divergence("t", "x86_64", 3, "check", "value", "kpageflags", KpfFlags(model),
                          KpfFlags(real), model_pfn=pfn, real_pfn=pfn + 1)
    group = [flags(1, 0x205828, 0x5828), flags(2, 0x200868, 0x868)]
    text = render_text([ScenarioResult.from_divergences("t", "x86_64", group)])
    assert "    kpageflags: model only: KSM (2 frames)\n" in text
    assert "     2 x kpageflags: model only: KSM  [step 3]\n" in text


def test_text_other_statuses() -> None:
    results = [
        ScenarioResult("a", "x86_64", "agree"),
        ScenarioResult("thp", "i386", "skipped", message="scenario thp uses THP-sized counts"),
        ScenarioResult("b", "ppc64", "error", message="guest agent: timeout after 30 s"),
    ]
    text = render_text(results)
    assert text.splitlines() == [
        "ok   a on x86_64",
        "skip thp on i386: scenario thp uses THP-sized counts",
        "ERR  b on ppc64: guest agent: timeout after 30 s",
        "3 runs: 1 agree, 1 error, 1 skipped",
    ]
    assert summary_line([]) == "0 runs: none"


def test_json_has_every_field() -> None:
    result = diverging_result()
    obj = json.loads(render_json([result, ScenarioResult("a", "x86_64", "agree")]))
    assert obj["summary"] == {"runs": 2, "agree": 1, "diverge": 1, "error": 0, "skipped": 0,
                              "divergences": len(result.divergences), "compared": None}
    first = obj["results"][0]["divergences"][0]
    assert set(first) == {
        "scenario", "arch", "step", "op", "kind", "field", "model", "real", "proc", "region",
        "page", "vaddr", "model_pfn", "real_pfn", "side", "places", "context"}
    # Values, not prose: PFNs are ints, flags are lists of names, places are records.
    assert (first["field"], first["model_pfn"], first["real_pfn"]) == (
        "kpageflags", 100, 0x3F000)
    assert first["model"] == {"value": synth.ANON_FLAGS,
                              "flags": ["UPTODATE", "LRU", "MMAP", "ANON", "SWAPBACKED"]}
    assert first["real"]["flags"][-1] == "KSM"
    assert first["places"] == [{"proc": "main", "region": "a", "page": 0},
                               {"proc": "c", "region": "a", "page": 0}]
    divergences = obj["results"][0]["divergences"]
    consistency = next(d for d in divergences if d["kind"] == "consistency")
    assert consistency["model"] is None and consistency["side"] == "real"
    assert "KSM" in consistency["real"]["kpageflags"]["flags"]
    assert "KSM" not in consistency["real"]["kpagemap"]["flags"]


def test_compare_recorded_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "t.json"
    scenario.write_text(json.dumps(synth.FORK_MUNMAP_SCENARIO))
    model, real = tmp_path / "model.json", tmp_path / "real.json"
    model_observations().save(model)
    real_observations().save(real)
    assert compare_recorded(scenario, model, real).status == "agree"
    assert main([str(scenario), str(model), str(real)]) == 0
    assert capsys.readouterr().out == (
        "ok   t on ppc64\n"
        "     compared 4 checks: 32 pagemap entries (10 PFNs paired), 9 frames (kpageflags,\n"
        "       kpagecount, kpagemap), 18 kpagemap = kpageflags flag words, 10 RAM tags, 11 step\n"
        "       outcomes, 3 errnos\n"
        "1 run: 1 agree\n")
    outcomes = list(real_observations().outcomes)
    outcomes[1] = StepOutcome(1, "error", errno=12)
    replace(real_observations(), outcomes=tuple(outcomes)).save(real)
    assert main([str(scenario), str(model), str(real), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["results"][0]["divergences"][0]["real"] == {
        "status": "error", "errno": 12, "errno_name": "ENOMEM"}
    assert out["results"][0]["divergences"][0]["model"] == {"status": "ok"}
    assert main([str(scenario), str(model), str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.json: cannot read" in err and err.count("\n") == 1


def test_recordings_of_another_scenario_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs of another scenario, swapped sides or extra steps: exit 2, one line naming the file."""
    scenario = tmp_path / "t.json"
    scenario.write_text(json.dumps(synth.FORK_MUNMAP_SCENARIO))
    model, real = tmp_path / "model.json", tmp_path / "real.json"
    model_observations().save(model)
    real_observations().save(real)
    cases = [
        (replace(real_observations(), scenario="other"), "a run of scenario 'other', not 't'"),
        (replace(real_observations(), side="model"), "a model run where the real run belongs"),
        (replace(real_observations(), outcomes=real_observations().outcomes * 9),
         "step outcomes for a scenario of"),
        (replace(real_observations(), arch="x86_64"), "recorded on x86_64, the model run on ppc64"),
    ]
    for bad, message in cases:
        bad.save(real)
        assert main([str(scenario), str(model), str(real)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "real.json: " in err and message in err, err
