"""Anonymous mTHP faults (sim/mm/mthp.py) and the THP knobs (sim/mm/settings.py).

The order a write fault takes is alloc_anon_folio()'s (mm/memory.c): the
highest allowed order whose naturally aligned range lies in the VMA and is
all pte_none(); a property test checks that against a direct reading of the
rule for random knobs, VMAs and prior faults.
"""

from __future__ import annotations

from types import MappingProxyType

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import Arch, get_arch
from sim.flags import KPF
from sim.mm import Machine
from sim.mm.settings import MthpMode, ThpSettings, anon_order_mask
from sim.mm.vma import VM_HUGEPAGE
from sim.procfs import read

X86 = get_arch("x86_64")
PPC64 = get_arch("ppc64")


def _machine(arch: Arch, **mthp: MthpMode) -> Machine:
    m = Machine(arch, ram_bytes=64 << 20)
    m.ctx.settings = ThpSettings(mthp=MappingProxyType({int(k[1:]): v for k, v in mthp.items()}))
    return m


def _base(arch: Arch) -> int:
    return 1 << 40


def _flags(m: Machine, pfn: int) -> int:
    return int.from_bytes(read(m, "/proc/kpageflags", pfn * 8, 8), "little" if
                          m.arch.little_endian else "big")


def test_boot_knobs_allow_only_the_pmd_order_with_madvise() -> None:
    boot = ThpSettings()
    assert anon_order_mask(boot, 0, 9) == set()
    assert anon_order_mask(boot, VM_HUGEPAGE, 9) == {9}
    assert anon_order_mask(ThpSettings(enabled="never"), VM_HUGEPAGE, 9) == set()
    assert anon_order_mask(ThpSettings(enabled="always"), 0, 9) == {9}


def test_write_fault_maps_a_64k_folio_exclusive_per_page() -> None:
    m = _machine(X86, o4="always")
    p = m.spawn("main")
    base = _base(X86)
    p.mmap(base, 32, kind="anon", share="private", prot="rw")
    p.touch(base + 5 * 4096, 1, write=True, tags=[7])
    mm = p.mm
    head = mm.pt.pte_table(base).pfn[0]
    assert [int(x) for x in mm.pt.pte_table(base).pfn[:16]] == list(range(head, head + 16))
    assert not mm.pt.pte_table(base).present(16)
    mem = m.mem
    assert mem.folio_nr_pages(int(head)) == 16 and mem.folio_ref_count(int(head)) == 16
    for pfn in range(int(head), int(head) + 16):
        assert mem.folio_precise_page_mapcount(pfn) == 1
        assert _flags(m, pfn) >> KPF.THP & 1 and _flags(m, pfn) >> KPF.OWNER_2 & 1


def test_read_fault_stays_4k_and_blocks_the_larger_order() -> None:
    m = _machine(X86, o4="always", o2="always")
    p = m.spawn("main")
    base = _base(X86)
    p.mmap(base, 32, kind="anon", share="private", prot="rw")
    p.touch(base + 20 * 4096, 1, write=False)
    p.touch(base + 17 * 4096, 1, write=True, tags=[1])
    table = p.mm.pt.pte_table(base)
    head = int(table.pfn[16])
    assert m.mem.folio_nr_pages(head) == 4  # [16, 20): the 16-page range held the zero page
    p.touch(base + 21 * 4096, 1, write=True, tags=[2])
    assert m.mem.folio_nr_pages(int(table.pfn[21])) == 1


def test_ppc64_orders_are_in_its_pages() -> None:
    m = _machine(PPC64, o4="always")
    p = m.spawn("main")
    base = _base(PPC64)
    p.mmap(base, 32, kind="anon", share="private", prot="rw")
    p.touch(base, 1, write=True, tags=[1])
    assert m.mem.folio_nr_pages(int(p.mm.pt.pte_table(base).pfn[0])) == 16  # 1 MiB


@settings(max_examples=80, deadline=None)
@given(
    modes=st.lists(st.sampled_from(["always", "never", "madvise", "inherit"]), min_size=7,
                   max_size=7),
    enabled=st.sampled_from(["always", "madvise", "never"]),
    madvised=st.booleans(),
    start=st.integers(0, 63),
    length=st.integers(1, 64),
    reads=st.lists(st.integers(0, 127), max_size=4),
    fault=st.integers(0, 127),
)
def test_the_order_is_the_highest_free_fitting_allowed_one(
    modes: list[str], enabled: str, madvised: bool, start: int, length: int,
    reads: list[int], fault: int,
) -> None:
    """alloc_anon_folio(): a direct reading of the rule, against the model's choice."""
    knobs = ThpSettings(enabled=enabled,  # type: ignore[arg-type]
                        mthp=MappingProxyType(dict(enumerate(modes, start=2))))  # type: ignore[arg-type]
    m = Machine(X86, ram_bytes=64 << 20)
    m.ctx.settings = knobs
    p = m.spawn("main")
    base = _base(X86)
    p.mmap(base + start * 4096, length, kind="anon", share="private", prot="rw")
    if madvised:
        p.madvise(base + start * 4096, length, "hugepage")
    pages = range(start, start + length)
    read_pages = {r for r in reads if r in pages}
    for r in sorted(read_pages):
        p.touch(base + r * 4096, 1, write=False)
    page = pages[fault % length]
    if page in read_pages:
        return
    p.touch(base + page * 4096, 1, write=True, tags=[1])
    allowed = anon_order_mask(knobs, VM_HUGEPAGE if madvised else 0, 9) - {9}
    want = 0
    for order in sorted(allowed, reverse=True):
        first = page - page % (1 << order)
        span = range(first, first + (1 << order))
        if span[0] >= start and span[-1] < start + length and not read_pages & set(span):
            want = order
            break
    got = m.mem.folio_nr_pages(m.mem.page_folio(int(p.mm.pt.pte_table(base).pfn[page])))
    assert got == 1 << want


def test_split_into_a_locked_vma_mlocks_the_remapped_pages() -> None:
    """remove_migration_pte(): a page remapped into a VM_LOCKED VMA by a split is
    mlocked (its folio is order 0 now) and never replaced by the zero page
    (try_to_map_unused_to_zeropage()); the unlocked VMA's zero pages are."""
    m = _machine(X86, o2="always")
    p = m.spawn("main")
    base = _base(X86)
    p.mmap(base, 8, kind="anon", share="private", prot="rw")
    p.touch(base, 4, write=True, tags=[0, 0, 0, 5])  # one 16 kB folio, pages 0-2 all zero
    p.mlock(base + 2 * 4096, 4)
    table = p.mm.pt.pte_table(base)
    head = int(table.pfn[0])
    assert m.mem.folio_nr_pages(head) == 4
    assert not _flags(m, head + 2) >> KPF.MLOCKED & 1  # allow_mlock_munlock(): not within
    p.madvise(base, 1, "cold")  # a part of the folio: split_folio()
    assert [int(table.pfn[i]) == m.mem.zero_pfn for i in range(4)] == [True, True, False, False]
    for i in (2, 3):
        pfn = int(table.pfn[i])
        assert m.mem.folio_nr_pages(pfn) == 1
        assert _flags(m, pfn) >> KPF.MLOCKED & 1 and _flags(m, pfn) >> KPF.UNEVICTABLE & 1
