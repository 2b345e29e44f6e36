"""The cache key changes when any input changes, and only then."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import pytest

import sim.arch
from images.arches import IMAGE_ARCH_NAMES, ImageArch, get_image_arch
from images.initramfs import LAYOUT, Entry
from images.key import BuildInputs, cache_key, kernel_key
from sim.arch import ArchSpec, HostNeed, MissingPartError, get_spec

BASE = BuildInputs(
    arch=get_image_arch("x86_64"),
    source_version="6.12.117-1~deb12u1",
    source_sha256="ab" * 32,
    series_file=b"0001-a.patch\n",
    patches=(("0001-a.patch", b"--- a/x\n+++ b/x\n"),),
    fragments=(("common.config", b"CONFIG_A=y\n"), ("x86_64.config", b"CONFIG_B=y\n")),
    agent_sources=(("agent.c", b"int main(void){return 0;}\n"), ("agent.h", b"#define X 1\n")),
    compilers=(("gcc", "gcc (Debian 12.2.0-14) 12.2.0\n"),),
)

CHANGES: dict[str, Any] = {
    "arch": get_image_arch("ppc64"),
    "source_version": "6.12.118-1~deb12u1",
    "source_sha256": "cd" * 32,
    "series_file": b"0001-a.patch\n# comment\n",
    "patches": (("0001-a.patch", b"--- a/x\n+++ b/x\n@@\n"),),
    "fragments": (("common.config", b"CONFIG_A=n\n"), ("x86_64.config", b"CONFIG_B=y\n")),
    "agent_sources": (("agent.c", b"int main(void){return 1;}\n"), ("agent.h", b"#define X 1\n")),
    "compilers": (("gcc", "gcc (Debian 12.2.0-15) 12.2.0\n"),),
    "layout": (*LAYOUT, Entry("dir", "/root", 0o700)),
    "recipe_version": BASE.recipe_version + 1,
}


def test_key_is_stable() -> None:
    again = dataclasses.replace(BASE)
    assert cache_key(again) == cache_key(BASE)
    assert len(cache_key(BASE)) == 16


def test_every_field_has_a_change() -> None:
    fields = {field.name for field in dataclasses.fields(BuildInputs)}
    assert fields == set(CHANGES)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_key_changes_with_each_input(name: str) -> None:
    changed = dataclasses.replace(BASE, **{name: CHANGES[name]})
    assert cache_key(changed) != cache_key(BASE)


@pytest.mark.parametrize(
    "variant",
    [
        # A missing series differs from an empty one.
        {"series_file": None, "patches": ()},
        {"series_file": b"", "patches": ()},
        # Renaming a file (same contents) or moving bytes between fields changes the key.
        {"agent_sources": (("main.c", BASE.agent_sources[0][1]), BASE.agent_sources[1])},
        {"fragments": (("common.config", b"CONFIG_A=y\nCONFIG_B=y\n"), ("x86_64.config", b""))},
        {"patches": ()},
    ],
)
def test_key_separates_near_inputs(variant: dict[str, Any]) -> None:
    keys = {cache_key(BASE), cache_key(dataclasses.replace(BASE, **variant))}
    assert len(keys) == 2


def test_missing_and_empty_series_differ() -> None:
    missing = dataclasses.replace(BASE, series_file=None, patches=())
    empty = dataclasses.replace(BASE, series_file=b"", patches=())
    assert cache_key(missing) != cache_key(empty)


IMAGE_ONLY = {"agent_sources", "layout"}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_kernel_key_covers_all_but_the_initramfs(name: str) -> None:
    changed = dataclasses.replace(BASE, **{name: CHANGES[name]})
    if name in IMAGE_ONLY:
        # An agent change reuses the built kernel.
        assert kernel_key(changed) == kernel_key(BASE)
    else:
        assert kernel_key(changed) != kernel_key(BASE)


def test_only_kernel_build_facts_reach_the_kernel_key() -> None:
    """An edit to the QEMU machine or host packages changes no key; the agent's only the image's."""
    spec = get_spec("x86_64")
    assert spec.qemu is not None and spec.agent is not None
    edited = replace(
        spec,
        qemu=replace(spec.qemu, cpu="max", memory_mib=2048),
        host=(*spec.host, HostNeed("ovmf", "ovmf")),
    )
    # What the builder and the keys see of an arch: its kernel and agent parts only.
    assert {f.name for f in dataclasses.fields(ImageArch)} == {
        "name", "kernel", "agent", "big_endian"
    }
    view = ImageArch(edited.name, edited.kernel, edited.agent, big_endian=False)  # type: ignore[arg-type]
    assert view == BASE.arch
    agent_edit = dataclasses.replace(
        BASE, arch=replace(BASE.arch, agent=replace(spec.agent, cflags=("-static", "-O0")))
    )
    assert kernel_key(agent_edit) == kernel_key(BASE)
    assert cache_key(agent_edit) != cache_key(BASE)
    kernel_edit = dataclasses.replace(
        BASE, arch=replace(BASE.arch, kernel=replace(BASE.arch.kernel, make_target="vmlinux"))
    )
    assert kernel_key(kernel_edit) != kernel_key(BASE)


def test_agent_compiler_version_is_not_a_kernel_input() -> None:
    """A compiler only the agent runs (none today) reaches the image key, not the kernel's."""
    musl = dataclasses.replace(
        BASE,
        arch=replace(BASE.arch, agent=replace(BASE.arch.agent, cc="musl-gcc")),
        compilers=(*BASE.compilers, ("musl-gcc", "musl 1.2.3\n")),
    )
    newer = dataclasses.replace(musl, compilers=(*BASE.compilers, ("musl-gcc", "musl 1.2.4\n")))
    assert kernel_key(newer) == kernel_key(musl) == kernel_key(BASE)
    assert cache_key(newer) != cache_key(musl)


def test_image_view_of_a_model_only_arch_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No data file is model-only today: register one for the test.
    model_only = ArchSpec(model=replace(get_spec("i386").model, name="model-only"))
    monkeypatch.setitem(sim.arch._SPECS, "model-only", model_only)
    with pytest.raises(MissingPartError) as info:
        get_image_arch("model-only")
    assert str(info.value) == (
        "architecture 'model-only' has no kernel build (it exists only in the model); "
        f"with one: {', '.join(IMAGE_ARCH_NAMES)}"
    )
