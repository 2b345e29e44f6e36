"""The top-level ``settings`` of a scenario file (harness/scenario/settings.py).

Bad knobs, values and sizes are one line naming the file; a size that exists
on some architecture but not this one makes the scenario skip there; the
model and the guest get the same knobs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.model_executor import ModelError, ModelRun
from harness.scenario import ScenarioError, load_scenario, mthp_sizes, sysfs_writes
from sim.arch import get_arch

X86 = get_arch("x86_64")
PPC64 = get_arch("ppc64")
PPC64_4K = get_arch("ppc64-4k")
I386 = get_arch("i386")

STEPS: list[dict[str, object]] = [
    {"op": "mmap", "region": "a", "pages": 16, "kind": "anon", "share": "private", "prot": "rw"},
    {"op": "write", "region": "a", "pages": [0, 1]},
    {"op": "check"},
]


def _write(tmp_path: Path, settings: object, steps: list[dict[str, object]] = STEPS) -> Path:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "s", "settings": settings, "steps": steps}))
    return path


@pytest.mark.parametrize("settings,message", [
    ([], "settings: is not an object of knobs"),
    ({"thp_enabled": "always"}, "settings: unknown knob 'thp_enabled' (known: thp, shmem_thp, "
                                "mthp, ksm_use_zero_pages)"),
    ({"thp": "sometimes"}, "settings: thp is 'sometimes'; one of always, madvise, never"),
    ({"shmem_thp": "inherit"}, "settings: shmem_thp is 'inherit'; one of always, within_size, "
                               "advise, never, deny, force"),
    ({"mthp": {"64kB": "yes"}}, "settings: mthp '64kB' is 'yes'; one of always, inherit, "
                                "madvise, never"),
    ({"mthp": {"64k": "always"}}, "settings: mthp size '64k' is not '<N>kB', '<N>pages' or 'thp'"),
    ({"mthp": {"8kB": "always"}}, "settings: mthp size '8kB' is an mTHP size of no "
                                  "architecture"),
    ({"mthp": {"3pages": "always"}}, "settings: mthp size '3pages' is an mTHP size of no "
                                     "architecture"),
    ({"mthp": ["64kB"]}, "settings: mthp is not an object of size: mode"),
    ({"ksm_use_zero_pages": 1}, "settings: ksm_use_zero_pages is 1; true or false"),
])
def test_bad_settings_are_one_line(settings: object, message: str, tmp_path: Path) -> None:
    path = _write(tmp_path, settings)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, X86)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {message}"), text


def test_sizes_per_arch() -> None:
    """THP_ORDERS_ALL_ANON: orders 2..PMD_ORDER; none without THP."""
    assert list(mthp_sizes(X86)) == [f"{kb}kB" for kb in (16, 32, 64, 128, 256, 512, 1024,
                                                          2048)]
    assert mthp_sizes(PPC64_4K) == mthp_sizes(X86)
    assert mthp_sizes(PPC64) == {"256kB": 2, "512kB": 3, "1024kB": 4, "2048kB": 5}
    assert mthp_sizes(I386) == {}


def test_a_size_this_arch_lacks_skips_it(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, {"mthp": {"64kB": "always"}}))
    assert scenario.unsupported_reason(X86) is None
    reason = scenario.unsupported_reason(PPC64)
    assert reason == ("scenario s: mTHP size '64kB' does not exist on ppc64 (it has 256kB, "
                      "512kB, 1024kB, 2048kB)")
    assert "has no THP" in (scenario.unsupported_reason(I386) or "")


def test_symbolic_sizes_are_orders_everywhere(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, {"thp": "never", "mthp": {"16pages": "always"}}))
    assert sysfs_writes(scenario.settings, X86) == [
        ("/sys/kernel/mm/transparent_hugepage/enabled", "never"),
        ("/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled", "always"),
    ]
    assert sysfs_writes(scenario.settings, PPC64)[1] == (
        "/sys/kernel/mm/transparent_hugepage/hugepages-1024kB/enabled", "always")
    knobs = scenario.settings.resolve(PPC64)
    assert knobs.enabled == "never" and dict(knobs.mthp) == {4: "always"}


def test_without_settings_the_boot_knobs(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "s", "steps": STEPS}))
    scenario = load_scenario(path, X86)
    assert sysfs_writes(scenario.settings, X86) == []
    knobs = ModelRun(scenario, X86).machine.ctx.settings
    assert (knobs.enabled, knobs.shmem_enabled, dict(knobs.mthp)) == ("madvise", "never", {})


def test_shmem_thp_force_on_a_shmem_region_is_not_modelled(tmp_path: Path) -> None:
    """shmem_thp force (huge folios on every tmpfs file) is refused; always, within_size
    and advise are modelled (sim/mm/shmem_thp.py), but not with the steps whose huge
    shmem paths the model does not follow (mlock here)."""
    steps = [{**STEPS[0], "share": "shared"}, *STEPS[1:]]
    scenario = load_scenario(_write(tmp_path, {"shmem_thp": "force"}, steps), X86)
    with pytest.raises(ModelError, match="not modelled: shmem THP with shmem_thp 'force'"):
        ModelRun(scenario, X86)
    for mode in ("always", "within_size", "advise"):
        shared = load_scenario(_write(tmp_path, {"shmem_thp": mode}, steps), X86)
        assert ModelRun(shared, X86).machine.ctx.settings.shmem_enabled == mode
    locked: list[dict[str, object]] = [
        *steps[:2], {"op": "mlock", "region": "a", "pages": [0, 1]}, STEPS[2]
    ]
    scenario = load_scenario(_write(tmp_path, {"shmem_thp": "always"}, locked), X86)
    with pytest.raises(ModelError, match="not modelled: mlock with shmem THP"):
        ModelRun(scenario, X86)
    private = load_scenario(_write(tmp_path, {"shmem_thp": "force"}), X86)
    assert ModelRun(private, X86).machine.ctx.settings.shmem_enabled == "force"
