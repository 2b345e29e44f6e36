"""The KSM model (sim/mm/ksm.py): what full scans decide, and what they never change."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arch import get_arch
from sim.flags import KPF
from sim.mm import Machine, Process
from sim.mm.pagetable import PteTable
from sim.mm.pte import PTE_PRESENT, PTE_WRITE

ARCH = get_arch("x86_64")
BASE = 1 << 40
PAGE = ARCH.page_size


def _pte(p: Process, page: int) -> tuple[int, int] | None:
    table = p.mm.pt.get_pmd(BASE + page * PAGE)
    if not isinstance(table, PteTable):
        return None
    i = p.mm.pt.pte_index(BASE + page * PAGE)
    bits = int(table.bits[i])
    return (int(table.pfn[i]), bits) if bits & PTE_PRESENT else None


def _ksm_flag(m: Machine, pfn: int) -> bool:
    return bool(m.stable_page_flags([pfn])[0] >> KPF.KSM & 1)


def test_two_scans_merge_the_later_page_into_the_earlier() -> None:
    """The first scan records checksums; the second merges, and the page scanned second
    (try_to_merge_two_pages()'s ``page``) becomes the KSM folio."""
    m = Machine(ARCH)
    p = m.spawn("main")
    p.mmap(BASE, 3)
    p.touch(BASE, 2, True, fill=0x41)
    p.touch(BASE + 2 * PAGE, 1, True, tags=[7])
    p.madvise(BASE, 3, "mergeable")
    before = [_pte(p, i) for i in range(3)]
    assert m.ksm_scan(1) == 1
    assert [_pte(p, i) for i in range(3)] == before
    m.ksm_scan(1)
    first, second = (_pte(p, i) for i in range(2))
    assert first is not None and second is not None and before[1] is not None
    assert first[0] == second[0] == before[1][0]
    assert _ksm_flag(m, first[0]) and m.kpagecount(first[0]) == 2 == m.page_count(first[0])
    assert not first[1] & PTE_WRITE and not second[1] & PTE_WRITE
    unique = _pte(p, 2)
    assert unique is not None and not _ksm_flag(m, unique[0])


def test_no_mergeable_mm_means_no_scan() -> None:
    """ksmd_should_run() is false with an empty mm list: full_scans stays."""
    m = Machine(ARCH)
    p = m.spawn("main")
    p.mmap(BASE, 1)
    assert m.ksm_scan(2) == 0


def test_write_to_a_ksm_page_copies_it() -> None:
    """wp_can_reuse_anon_folio(): a KSM folio is never reused, even mapped once."""
    m = Machine(ARCH)
    p = m.spawn("main")
    p.mmap(BASE, 2)
    p.touch(BASE, 2, True, fill=3)
    p.madvise(BASE, 2, "mergeable")
    m.ksm_scan(2)
    merged = _pte(p, 0)
    assert merged is not None
    p.munmap(BASE + PAGE, 1)
    assert m.kpagecount(merged[0]) == 1 and _ksm_flag(m, merged[0])
    p.touch(BASE, 1, True, tags=[9])
    after = _pte(p, 0)
    assert after is not None and after[0] != merged[0]


contents = st.sampled_from([0, 0x5A, 0xA5, None])


@settings(max_examples=60, deadline=None)
@given(
    first=st.lists(contents, min_size=1, max_size=8),
    forked=st.booleans(),
    child_writes=st.lists(st.tuples(st.integers(0, 7), contents), max_size=4),
    zero_pages=st.booleans(),
    steps=st.integers(1, 3),
)
def test_merging_never_changes_what_a_page_reads(
    first: list[int | None], forked: bool, child_writes: list[tuple[int, int | None]],
    zero_pages: bool, steps: int,
) -> None:
    """Whatever KSM merges, every mapped address reads what it read before; every KSM
    folio has one content of its own, no writable PTE and no reference beyond its
    mappings."""
    m = Machine(ARCH)
    p = m.spawn("main")
    n = len(first)
    p.mmap(BASE, n)
    for i, fill in enumerate(first):
        p.touch(BASE + i * PAGE, 1, True, tags=[0x5754_0000_0000_0000 + i], fill=fill)
    p.madvise(BASE, n, "mergeable")
    procs = [p]
    if forked:
        c = p.fork("c")
        procs.append(c)
        for page, fill in child_writes:
            if page < n:
                c.touch(BASE + page * PAGE, 1, True, tags=[0x5754_0001_0000_0000 + page],
                        fill=fill)

    def reads() -> list[tuple[int, int] | None]:
        out = []
        for proc in procs:
            for i in range(n):
                pte = _pte(proc, i)
                out.append(None if pte is None else m.mem.content(pte[0]))
        return out

    before = reads()
    for _ in range(steps):
        m.ksm_scan(2, use_zero_pages=zero_pages)
        assert reads() == before
    ksm_contents: dict[tuple[int, int] | None, int] = {}
    for proc in procs:
        for i in range(n):
            pte = _pte(proc, i)
            if pte is None or not m.mem.ksm[pte[0]]:
                continue
            pfn, bits = pte
            assert not bits & PTE_WRITE
            assert ksm_contents.setdefault(m.mem.content(pfn), pfn) == pfn
            assert m.page_count(pfn) == m.kpagecount(pfn)
