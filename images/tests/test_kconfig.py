"""The fragment checker, on sample fragment and .config texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.arches import FRAGMENT_DIR, IMAGE_ARCH_NAMES, get_image_arch
from images.errors import ConfigCheckError
from images.kconfig import (
    check_config,
    defined_symbols,
    parse_config,
    parse_fragment,
    unmet_requests,
)

FRAGMENT = """\
# a comment
CONFIG_TMPFS=y
CONFIG_PANIC_TIMEOUT=-1
CONFIG_CMDLINE="console=ttyS0"
# CONFIG_SMP is not set
# CONFIG_KERNEL_XZ is not set
CONFIG_SWAP=y
CONFIG_KSM=y
CONFIG_SWAP=n
"""

CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_TMPFS=y
CONFIG_PANIC_TIMEOUT=-1
CONFIG_CMDLINE="console=ttyS0"
# CONFIG_KSM is not set
# CONFIG_SWAP is not set
CONFIG_KERNEL_XZ=y
"""


def test_parse_fragment_last_request_wins() -> None:
    requests = parse_fragment(FRAGMENT, "f.config")
    assert requests["SWAP"].value is None  # "=n" is "is not set"
    assert requests["SWAP"].origin == "f.config:9"
    assert requests["SMP"].value is None
    assert str(requests["SMP"]) == "# CONFIG_SMP is not set"
    assert requests["CMDLINE"].value == '"console=ttyS0"'


def test_parse_config() -> None:
    config = parse_config(CONFIG)
    assert config["TMPFS"] == "y"
    assert config["KSM"] is None
    assert "SMP" not in config


def test_unmet_requests_lists_each_lost_option() -> None:
    problems = unmet_requests(parse_fragment(FRAGMENT, "f.config").values(), CONFIG)
    assert problems == [
        # SMP: absent from .config counts as not set, which is what was asked;
        # SWAP=n is met by "is not set".
        "# CONFIG_KERNEL_XZ is not set requested (f.config:6), .config has '=y'",
        "CONFIG_KSM=y requested (f.config:8), .config has 'is not set'",
    ]


def test_unknown_symbol_is_reported() -> None:
    problems = unmet_requests(parse_fragment("CONFIG_PROC_KPAGEMAP=y\n", "s").values(), CONFIG)
    assert len(problems) == 1
    assert "does not mention it" in problems[0]


def test_check_config_raises_with_the_listing(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text(CONFIG)
    with pytest.raises(ConfigCheckError) as info:
        check_config(parse_fragment("CONFIG_KSM=y\nCONFIG_TMPFS=y\n", "x").values(), config)
    assert "1 requested kconfig option(s)" in str(info.value)
    assert "CONFIG_KSM=y requested (x:1), .config has 'is not set'" in str(info.value)
    check_config(parse_fragment("CONFIG_TMPFS=y\n", "x").values(), config)


def test_bad_fragment_line_is_named() -> None:
    with pytest.raises(ConfigCheckError, match=r"f.config:2: not a kconfig line"):
        parse_fragment("CONFIG_A=y\nTMPFS=y\n", "f.config")


def test_defined_symbols_from_a_patch() -> None:
    patch = (
        "--- a/fs/proc/Kconfig\n+++ b/fs/proc/Kconfig\n@@ -1,3 +1,8 @@\n"
        " config PROC_PAGE_MONITOR\n+config PROC_KPAGEMAP\n+\tbool \"kpagemap\"\n"
        "+menuconfig FOO_MENU\n-config OLD\n"
    )
    assert defined_symbols(patch) == {"PROC_KPAGEMAP", "FOO_MENU"}


@pytest.mark.parametrize("name", IMAGE_ARCH_NAMES)
def test_shipped_fragments_parse(name: str) -> None:
    arch = get_image_arch(name)
    for path in arch.fragment_paths:
        assert parse_fragment(path.read_text(), path.name), path
    assert (FRAGMENT_DIR / "series.config").is_file()
