"""Reading kselftest output: TAP (recorded in the x86_64 guest), uffd-unit-tests, khugepaged."""

from __future__ import annotations

from pathlib import Path

from harness.selftests import RUNS, Run, results
from harness.selftests_tap import Outcome, parse_tap

DATA = Path(__file__).parent / "data" / "selftests"


def test_recorded_mkdirty() -> None:
    tap = parse_tap((DATA / "mkdirty-x86_64.txt").read_text())
    assert tap.plan == 6 and tap.missing() == 0
    assert [c.outcome for c in tap.cases] == [Outcome.PASS, Outcome.PASS, Outcome.SKIP,
                                              Outcome.SKIP, Outcome.PASS, Outcome.SKIP]
    # A skip line has no name: the case's own [INFO] line names it.
    assert tap.cases[5].name == "UFFDIO_COPY"
    assert tap.cases[5].reason == "__NR_userfaultfd failed"
    assert tap.totals == {"pass": 3, "fail": 0, "xfail": 0, "xpass": 0, "skip": 3, "error": 0}


def test_failure_reason_is_the_last_diagnostic() -> None:
    text = "TAP version 13\n1..3\n# [RUN] a\n# bad value 3\nnot ok 1 a\nok 2 b # XFAIL known\n"
    tap = parse_tap(text)
    assert tap.cases[0].outcome is Outcome.FAIL and tap.cases[0].reason == "bad value 3"
    assert tap.cases[1].outcome is Outcome.XFAIL and tap.cases[1].name == "b"
    assert tap.missing() == 1


def test_missing_cases_and_crash_are_errors() -> None:
    run = Run("x", ("x",), 1)
    cases = results(run, "TAP version 13\n1..4\nok 1 a\n", None, "signal 11")
    assert [c.outcome for c in cases] == [Outcome.PASS, Outcome.ERROR]
    assert cases[-1].reason == "signal 11"
    cases = results(run, "TAP version 13\n1..4\nok 1 a\n", 0, "exit 0")
    assert cases[-1].outcome is Outcome.ERROR and "3 planned" in cases[-1].name


def test_bail_out_is_a_failure() -> None:
    cases = results(Run("x", ("x",), 1), "1..2\nBail out! no THP\n# Totals: pass:0", 1, "exit 1")
    assert cases == [cases[0]] and cases[0].outcome is Outcome.FAIL
    assert cases[0].reason == "no THP"


def test_uffd_format() -> None:
    out = ("Testing register-ioctls on anon... done\n"
           "Testing zeropage on shmem... skipped [reason: feature missing]\n"
           "Testing wp-fork on anon... failed [reason: Detected stale uffd-wp bit]\n")
    cases = results(Run("u", ("u",), 1, "uffd"), out, 1, "exit 1")
    assert [c.outcome for c in cases] == [Outcome.PASS, Outcome.SKIP, Outcome.FAIL]
    assert cases[1].reason == "feature missing" and cases[0].name == "register-ioctls on anon"


def test_khugepaged_format() -> None:
    out = ("Save THP and khugepaged settings... \x1b[32mOK\x1b[0m\n"
           "Collapse fully populated PTE table.... \x1b[31mFail\x1b[0m\n"
           "Collapse with swapped out pages... \x1b[33mSkip\x1b[0m\n")
    cases = results(Run("k", ("k",), 1, "khugepaged"), out, 1, "exit 1")
    assert [c.outcome for c in cases] == [Outcome.PASS, Outcome.FAIL, Outcome.SKIP]
    assert cases[1].name == "Collapse fully populated PTE table"


def test_exit_status_only() -> None:
    run = Run("h", ("h",), 1, "exit")
    assert results(run, "", 0, "exit 0")[0].outcome is Outcome.PASS
    assert results(run, "", 4, "exit 4")[0].outcome is Outcome.SKIP
    failed = results(run, "line\nmadvise failed\n", 1, "exit 1")[0]
    assert failed.outcome is Outcome.FAIL and failed.reason == "madvise failed"


def test_every_run_names_a_built_program() -> None:
    from images.selftests import PROGRAMS

    assert {r.argv[0] for r in RUNS} <= {p.name for p in PROGRAMS}


def test_xfail_message_is_the_case() -> None:
    tap = parse_tap("1..1\nok 1 # XFAIL mremap - Source Address Misaligned\n")
    assert tap.cases[0].name == "mremap - Source Address Misaligned"
    assert tap.cases[0].outcome is Outcome.XFAIL


def test_tap_program_that_ran_no_case() -> None:
    text = "TAP version 13\n# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0\n"
    cases = results(Run("p", ("p",), 1), text, 0, "exit 0")
    assert cases[0].outcome is Outcome.SKIP and "before any case" in cases[0].reason


def test_repeated_result_lines_count_once() -> None:
    text = "1..2\nok 1 a\nok 1 a\nok 2 b\n"
    assert [c.name for c in parse_tap(text).cases] == ["a", "b"]


def test_page_types_flag_string() -> None:
    """An anonymous written page as page-types -r printed it in the x86_64 guest."""
    from harness.page_types_peer import page_types_flags, page_types_lines
    from sim.flags import KPF, PM

    kpf = sum(1 << b for b in (KPF.UPTODATE, KPF.LRU, KPF.MMAP, KPF.ANON, KPF.SWAPBACKED,
                               KPF.OWNER_2))
    pme = (1 << PM.PRESENT) | (1 << PM.MMAP_EXCLUSIVE) | (1 << PM.SOFT_DIRTY) | 0x15F3
    assert page_types_flags(kpf, pme) == "___U_l_____Ma_b___________________f_d_____1"
    # The zero page: no FILE, no exclusive bit; reserved.
    zero = (1 << KPF.ZERO_PAGE) | (1 << KPF.RESERVED)
    assert page_types_flags(zero, (1 << PM.PRESENT) | (1 << PM.SOFT_DIRTY)) == \
        "________________________z__r______f________"
    flags = "___U_l_____Ma_b___________________f_______1"
    out = f"voffset\toffset\tflags\n30c29\t15f3\t{flags}\n"
    assert page_types_lines(out) == [(0x30C29, 0x15F3, flags)]


def test_page_types_summary_replays() -> None:
    """page-types' two summaries of one kpageflags snapshot of the x86_64 guest (raw and
    well-known flags), replayed: the raw rows give the snapshot's multiset of flags words
    back (anon_exclusive is OWNER_2 on an anonymous page), and our summaries of that
    multiset must print both recorded summaries row for row."""
    from harness.page_types_peer import page_types_summary, summary_rows
    from sim.flags import KPF

    text = (DATA / "page-types-summary-x86_64.txt").read_text()
    raw_text, _, known_text = text.partition("$ page-types -F /tmp/pt-kpageflags\n")
    raw_rows, raw_total = page_types_summary(raw_text)
    known_rows, known_total = page_types_summary(known_text)
    assert raw_total == known_total == 262144 and len(raw_rows) == 21 and len(known_rows) == 15
    snapshot = []
    for row in raw_rows:
        word = row.flags
        if word >> 47 & 1:
            word ^= (1 << 47) | (1 << KPF.OWNER_2)
        snapshot += [word] * row.pages
    assert summary_rows(snapshot, 4096, raw=True) == (raw_rows, raw_total)
    assert summary_rows(snapshot, 4096, raw=False) == (known_rows, known_total)
    # A wrong long name shows: the reserved zero page's row names both bits.
    zero = next(r for r in raw_rows if r.short.count("_") == len(r.short) - 2 and "z" in r.short)
    assert zero.long == "zero_page,reserved"
