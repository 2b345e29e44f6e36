"""The cache key changes when any input changes, and only then."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from images.arches import get_image_arch
from images.initramfs import LAYOUT, Entry
from images.key import BuildInputs, cache_key, kernel_key

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
