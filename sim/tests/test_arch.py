"""The architecture registry, and a RAM base other than 0 in the model's PFN space."""

from __future__ import annotations

import pkgutil
from dataclasses import replace
from pathlib import Path

import pytest

import sim.arch
from sim.arch import (
    ARCH_NAMES,
    Arch,
    ArchSpec,
    MissingPartError,
    UnknownArchError,
    get_arch,
    get_spec,
    names_with,
)
from sim.flags import KPF
from sim.formats import parse_kpagemap_entries
from sim.mm.machine import Machine
from sim.procfs import kpage_values, pagemap_entries, read

ARM_VIRT_RAM = 0x4000_0000  # QEMU's arm "virt" machine puts RAM at 1 GiB


def test_names_are_the_data_files_present() -> None:
    modules = {
        info.name
        for info in pkgutil.iter_modules(sim.arch.__path__)
        if info.name != "schema"
    }
    assert modules == {name.replace("-", "_") for name in ARCH_NAMES}
    for name in ARCH_NAMES:
        spec = get_spec(name)
        assert spec.name == name and get_arch(name) is spec.model


def test_unknown_name_is_one_line_listing_the_choices() -> None:
    with pytest.raises(UnknownArchError) as info:
        get_arch("arm65")
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "unknown architecture 'arm65'; known: x86_64, ppc64, ppc64-4k, i386, arm64, arm64-64k"
    )


def test_model_only_arch_has_no_build_or_boot_parts() -> None:
    # Every data file boots today; an arch that exists only in the model is a
    # spec with the model part alone.
    model_only = ArchSpec(model=replace(get_arch("i386"), name="model-only"))
    assert (model_only.kernel, model_only.agent, model_only.qemu, model_only.host) == (
        None, None, None, ()
    )
    bootable = names_with(lambda spec: spec.qemu)
    assert bootable == ARCH_NAMES
    message = str(MissingPartError("model-only", "QEMU machine", bootable))
    assert message == (
        "architecture 'model-only' has no QEMU machine (it exists only in the model); "
        "with one: x86_64, ppc64, ppc64-4k, i386, arm64, arm64-64k"
    )


def test_kernel_and_agent_come_together() -> None:
    x86 = get_spec("x86_64")
    with pytest.raises(ValueError, match="both kernel and agent"):
        replace(x86, agent=None)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"ram_base": 0x1234}, "not page aligned"),
        ({"thp_level": "p4d"}, "not a table level"),
        ({"hugetlb_levels": ("pte",)}, "not a table level"),
    ],
)
def test_inconsistent_model_facts_are_refused(change: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        replace(get_arch("x86_64"), **change)  # type: ignore[arg-type]


def test_huge_page_sizes_follow_the_geometry() -> None:
    assert get_arch("x86_64").hugetlb_sizes == (2 << 20,)
    assert get_arch("ppc64").hugetlb_sizes == (2 << 20, 1 << 30)
    assert get_arch("ppc64").thp_pages == 32
    assert get_arch("i386").hugetlb_sizes == (4 << 20,)


# ---------------------------------------------------------------------------
# A synthetic architecture whose RAM starts at 1 GiB (arm64 on QEMU virt)
# ---------------------------------------------------------------------------

#: x86_64's geometry with RAM at 1 GiB: SPARSEMEM, sections of 128 MiB.
HIGH_RAM = replace(get_arch("x86_64"), name="high-ram", ram_base=ARM_VIRT_RAM)
#: i386's geometry (FLATMEM) with RAM at 1 GiB: ARCH_PFN_OFFSET is not 0.
HIGH_RAM_FLAT = replace(get_arch("i386"), name="high-ram-flat", ram_base=ARM_VIRT_RAM)


@pytest.mark.parametrize("arch", [HIGH_RAM, HIGH_RAM_FLAT], ids=lambda a: a.name)
def test_model_pfns_start_at_the_ram_base(arch: Arch) -> None:
    ram = 64 << 20
    m = Machine(arch, ram_bytes=ram)
    first = arch.ram_base_pfn
    assert first == ARM_VIRT_RAM >> 12
    assert m.max_pfn == first + (ram >> arch.page_shift)
    assert first <= m.zero_pfn < m.max_pfn
    p = m.spawn("main")
    base = 0x1000_0000
    p.mmap(base, 4)
    p.touch(base, 4, write=True, tags=[11, 12, 13, 14])
    entries = pagemap_entries(m, p, base, 4)
    pfns = [e.pfn for e in entries]
    assert all(e.present for e in entries)
    assert all(pfn is not None and first <= pfn < m.max_pfn for pfn in pfns)
    assert [m.frame_tag(pfn) for pfn in pfns if pfn is not None] == [11, 12, 13, 14]
    # Below the RAM base there is no struct page: KPF_NOPAGE, count 0.
    for pfn in (0, first - 1):
        assert kpage_values(m, "/proc/kpageflags", pfn) == 1 << KPF.NOPAGE
        assert kpage_values(m, "/proc/kpagecount", pfn) == 0
    assert kpage_values(m, "/proc/kpageflags", first) & (1 << KPF.RESERVED)


@pytest.mark.parametrize("name", ["i386", "x86_64"])
def test_x86_pfn_0_is_a_reserved_page_outside_system_ram(name: str) -> None:
    """The PC's RAM as /proc/iomem lists it (System RAM from 0x1000: trim_bios_range()
    made the BIOS page reserved) still gives PFN 0 a struct page: PG_reserved, count 1
    (memmap_init()'s hole from PFN 0; FLATMEM's ARCH_PFN_OFFSET is 0 on i386):
    kpageflags KPF_RESERVED, mapcount 0, page_count() 1 in kpagemap's slot 1."""
    arch = get_arch(name)
    m = Machine(arch, ram=[(0x1000, 0x9F000), (0x10_0000, 64 << 20)])
    assert kpage_values(m, "/proc/kpageflags", 0) == 1 << KPF.RESERVED
    assert kpage_values(m, "/proc/kpagecount", 0) == 0
    slot = arch.kpagemap_entry_size
    pfn_0 = parse_kpagemap_entries(arch, read(m, "/proc/kpagemap", slot, slot))
    # KPF_RESERVED is bit 32: beyond a 4-byte kpagemap flags word (the patch's choice).
    word_mask = (1 << (8 * arch.word_size)) - 1
    assert pfn_0 == [((1 << KPF.RESERVED) & word_mask, 1)]
    # The 640K-1M hole between the ranges is reserved memmap too.
    assert kpage_values(m, "/proc/kpageflags", 0xA0) == 1 << KPF.RESERVED


def test_explicit_ram_ranges_still_win() -> None:
    m = Machine(HIGH_RAM, ram=[(0, 64 << 20)])
    assert m.max_pfn == (64 << 20) >> 12
    assert m.zero_pfn < m.max_pfn


def test_data_files_hold_only_data() -> None:
    """A data file defines SPEC and imports only the schema (or another data file)."""
    root = Path(sim.arch.__file__).parent
    for name in ARCH_NAMES:
        text = (root / f"{name.replace('-', '_')}.py").read_text(encoding="utf-8")
        imports = [line for line in text.splitlines() if line.startswith(("import", "from"))]
        assert all(
            line.startswith(("from sim.arch.", "from dataclasses import replace"))
            for line in imports
        ), imports
        assert isinstance(get_spec(name), ArchSpec)
