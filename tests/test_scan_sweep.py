"""The PAGEMAP_SCAN ioctl swept over bad and edge-case arguments: kernel vs model.

Like tests/test_read_sweep.py for read(): one process is set up by both
executors (the same steps at the same addresses), then each probe is one
ioctl in the guest (the agent's PAGEMAP_SCAN, as root) and the same
pm_scan_arg on the model's open pagemap (:mod:`sim.pagemap_scan`).  For every
probe the return value (records or -errno), the walk_end the argument holds
afterwards (pre-set to a sentinel, so "not written back" shows) and, where
the probe gives the agent's buffer, every byte of it are compared.

What the sweep leaves out: ``vec`` pointers that pass access_ok() but are not
writable (the kernel fails the copy_to_user() of a flush with EFAULT; the
model takes any such pointer as writable, sim/pagemap_scan.py), and ranges
over the agent's own mappings (the model has only the scenario's).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from harness.agent.protocol import SCAN_VEC_FILL, ReadStage
from harness.compare import compare
from harness.differences import ScanRecord
from harness.guest_executor import run_guest
from harness.lockstep import lockstep
from harness.model_executor import run_model
from harness.process import NamedProcess
from harness.scan_step import MODEL_VEC_ADDR
from harness.scenario import load_scenario, parse_scenario
from harness.vm import VM
from sim import pagemap_scan
from sim.formats_scan import PAGE_REGION_BYTES, PmScanArg, build_page_regions
from sim.pagemap_scan import PM_SCAN_CATEGORIES, PageIs, PmScan
from sim.procfs import Reader, open_proc

pytestmark = pytest.mark.vm

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

#: walk_end before the call: the kernel zeroes it once the arguments pass, and
#: writes it back at the end; a failed validation leaves it.
SENTINEL = 0x5EED_0000
#: An address no architecture's access_ok() accepts.
KERNEL_ADDR = 1 << 63

SCAN_SCENARIO = {
    "name": "scan_sweep",
    "steps": [
        {"op": "mmap", "region": "a", "pages": 16, "kind": "anon", "share": "private",
         "prot": "rw"},
        {"op": "write", "region": "a", "pages": [0, 3]},
        {"op": "read", "region": "a", "pages": [3, 5]},
        {"op": "write", "region": "a", "pages": [8, 9]},
        {"op": "mmap", "region": "f", "pages": 4, "kind": "file", "share": "shared",
         "prot": "rw"},
        {"op": "read", "region": "f", "pages": [0, 2]},
    ],
}  # fmt: skip


@dataclass(frozen=True)
class Probe:
    """One ioctl: ``arg``; ``buffer``: vec is the agent's buffer of arg.vec_len records."""

    label: str
    arg: PmScanArg
    buffer: bool = True
    arg_null: bool = False


@dataclass(frozen=True)
class Seen:
    ret: int
    walk_end: int
    vec: bytes

    def describe(self) -> str:
        what = f"ret {self.ret}" if self.ret >= 0 else f"{errno.errorcode[-self.ret]}"
        return f"{what}, walk_end {self.walk_end:#x}, vec {self.vec.hex()[:96]}"


def _probes(a: int, a_end: int, f: int, f_end: int, page: int, task_size: int) -> list[Probe]:
    good = PmScanArg(start=a, end=a_end, walk_end=SENTINEL, vec=MODEL_VEC_ADDR, vec_len=8,
                     return_mask=PM_SCAN_CATEGORIES)
    p = int(PageIs.PRESENT)

    def probe(label: str, **fields: int) -> Probe:
        return Probe(label, replace(good, **fields))

    def raw(label: str, **fields: int) -> Probe:
        return Probe(label, replace(good, **fields), buffer=False)

    return [
        probe("good: region a, every category"),
        probe("good: a to f across the gap", end=f_end),
        probe("size 0", size=0),
        probe("size 88", size=88),
        probe("size 104", size=104),
        probe("size 2^32 + 96", size=(1 << 32) + 96),
        probe("flags bit 2", flags=4),
        probe("flags bit 63", flags=1 << 63),
        probe("category_mask bit 8", category_mask=1 << 8),
        probe("category_inverted bit 9", category_inverted=1 << 9),
        probe("category_anyof_mask bit 63", category_anyof_mask=1 << 63),
        probe("return_mask bit 8", return_mask=1 << 8),
        probe("size and flags both bad", size=1, flags=4),
        probe("start + 1", start=a + 1),
        probe("start + page/2", start=a + page // 2),
        probe("end + 1 (rounded up)", end=a + 2 * page + 1),
        probe("end - 1 (rounded up)", end=a_end - 1),
        probe("start == end", end=a),
        probe("reversed: end one page below start", end=a - page),
        probe("reversed and unaligned end", end=a - 3),
        probe("end at task_size", start=task_size - 4 * page, end=task_size),
        probe("end past task_size", start=task_size - 4 * page, end=task_size + page),
        probe("end ULONG_MAX", end=(1 << 64) - 1),
        probe("start 0, 16 pages (no VMA)", start=0, end=16 * page),
        raw("vec 0, vec_len 1", vec=0, vec_len=1),
        raw("vec 0, vec_len 0", vec=0, vec_len=0),
        raw("vec != 0, vec_len 0", vec=page, vec_len=0),
        raw("vec kernel address", vec=KERNEL_ADDR, vec_len=1),
        raw("vec ULONG_MAX - 4095", vec=(1 << 64) - 4096, vec_len=1),
        raw("vec_len 2^61: size_mul saturates", vec=page, vec_len=1 << 61),
        raw("vec_len 2^63, vec 0", vec=0, vec_len=1 << 63),
        raw("vec below task_size, records past it", vec=task_size - PAGE_REGION_BYTES,
            vec_len=2),
        probe("vec_len 1", vec_len=1),
        probe("vec_len 2, PRESENT", vec_len=2, category_mask=p),
        probe("max_pages 1", max_pages=1, category_mask=p),
        probe("max_pages 4, PRESENT", max_pages=4, category_mask=p),
        probe("max_pages 2^64 - 1", max_pages=(1 << 64) - 1),
        probe("return_mask 0: one record", return_mask=0),
        probe("WP_MATCHING", flags=int(PmScan.WP_MATCHING)),
        raw("WP_MATCHING without vec (the exclusive WP fast path)",
            flags=int(PmScan.WP_MATCHING), vec=0, vec_len=0),
        probe("CHECK_WPASYNC", flags=int(PmScan.CHECK_WPASYNC)),
        probe("CHECK_WPASYNC, both flags", flags=int(PmScan.CHECK_WPASYNC | PmScan.WP_MATCHING)),
        probe("CHECK_WPASYNC over no VMA", flags=int(PmScan.CHECK_WPASYNC), start=0,
              end=16 * page),
        probe("WPALLOWED asked", category_mask=int(PageIs.WPALLOWED)),
        probe("SWAPPED asked (no swap)", category_anyof_mask=int(PageIs.SWAPPED)),
        Probe("arg NULL", good, arg_null=True),
    ]  # fmt: skip


def test_scan_arguments_agree(vm: VM, guest: NamedProcess) -> None:
    arch = vm.profile.arch
    scenario = parse_scenario(SCAN_SCENARIO, "tests/test_scan_sweep.py")
    real, model = lockstep(scenario, vm, guest)
    a, f = real.layout["a"], real.layout["f"]
    page = arch.page_size
    probes = _probes(a.vaddr, a.vaddr + a.pages * page, f.vaddr, f.vaddr + f.pages * page,
                     page, arch.task_size)
    guest_path = f"/proc/{guest.pid}/pagemap"
    model_file = open_proc(model.machine, f"/proc/{model.procs['main'].pid}/pagemap",
                           Reader.root())
    failures = []
    errors = set()
    for probe in probes:
        got = guest.agent.pagemap_scan(guest_path, probe.arg, vec_buffer=probe.buffer,
                                       arg_null=probe.arg_null)
        assert got.stage is ReadStage.NONE, f"{probe.label}: {got}"
        kernel = Seen(got.ret, got.walk_end, got.vec)
        result = model_file.pagemap_scan(probe.arg, arg_readable=not probe.arg_null)
        vec = b""
        if probe.buffer:
            written = build_page_regions(arch, result.regions)
            vec = written + bytes([SCAN_VEC_FILL]) * (
                probe.arg.vec_len * PAGE_REGION_BYTES - len(written))
        want = Seen(result.ret, result.walk_end, vec)
        if kernel != want:
            failures.append(f"{probe.label}: kernel {kernel.describe()}; "
                            f"model {want.describe()}")
        if kernel.ret < 0:
            errors.add(-kernel.ret)
    if failures:
        pytest.fail(f"{len(failures)} of {len(probes)} probes differ:\n" + "\n".join(failures),
                    pytrace=False)
    # The sweep reached every validation error and the walk's own.
    assert errors == {errno.EINVAL, errno.EFAULT, errno.EPERM}


def test_a_planted_category_error_is_caught(vm: VM, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model forgets PAGE_IS_PFNZERO on the zero page: compare names the records.

    The same kernel observations agree with the true model (so the divergences
    are the plant's, nothing else), and the planted model is told apart at the
    scan of the read (zero-page) pages: the real record carries PFNZERO.
    """
    arch = vm.profile.arch
    scenario = load_scenario(SCENARIO_DIR / "scan_categories.json", arch)
    real = run_guest(scenario, vm)
    assert compare(run_model(scenario, arch), real, scenario, arch) == []
    honest = pagemap_scan.pagemap_page_category

    def planted(p: Any, bits: int, pfn: int) -> int:
        return honest(p, bits, pfn) & ~int(PageIs.PFNZERO)

    monkeypatch.setattr(pagemap_scan, "pagemap_page_category", planted)
    found = compare(run_model(scenario, arch), real, scenario, arch)
    assert found, "the planted error went unnoticed"
    assert {d.field for d in found} <= {"scan.ret", "scan.region"}
    zero_records = [d for d in found if d.field == "scan.region"
                    and isinstance(d.real, ScanRecord) and d.real.categories & PageIs.PFNZERO]
    assert zero_records and all(d.op == "pagemap_scan" for d in found)
    # Only the scans that can see the zero page differ (the pagemap reads of the check agree).
    assert min(d.step for d in found) == 11
