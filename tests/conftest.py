"""Options and fixtures of the tests that boot real kernels.

``--arch`` picks the architecture (x86_64, ppc64, ppc64-4k).  Each pytest
process (each pytest-xdist worker) boots one shared VM lazily and reuses it;
if a test leaves it dead (panic, QEMU gone) or deaf (its agent does not
answer a ping), the next test gets a new one.  A test that needs a guest of
its own uses ``fresh_vm``.  Tests that use the
shared VM do their work in a named process of their own (``guest``), which
is killed afterwards, so they do not see each other's mappings.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.agent.protocol import Op
from harness.arches import PROFILE_NAMES, ArchProfile, get_profile
from harness.compare import compare
from harness.errors import VMError
from harness.guest_executor import run_guest
from harness.image import BootImage, ImageUnavailable, find_image
from harness.khugepaged import HOLDER_PROC
from harness.model_executor import run_model
from harness.process import NamedProcess
from harness.report import ScenarioResult, render_text
from harness.scenario import Scenario, ScenarioNotApplicable
from harness.vm import VM, VMConfig, VMState
from images.project import DEFAULT_KERNEL_VERSION, KERNEL_VERSION_ENV
from sim.mm.facts import PINNED


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "booting test kernels in QEMU")
    group.addoption(
        "--arch",
        default="x86_64",
        choices=PROFILE_NAMES,
        help="architecture of the guests (default: x86_64)",
    )
    group.addoption("--kernel", type=Path, help="kernel image (default: images build)")
    group.addoption("--initramfs", type=Path, help="initramfs with the agent as /init")
    group.addoption(
        "--kernel-version", metavar="X.Y",
        help="kernel series to build and boot (a linux-patch/ directory; default 6.12)",
    )
    group.addoption(
        "--keep-vm-logs",
        type=Path,
        metavar="DIR",
        help="copy the console and QEMU logs of every failed VM under DIR",
    )


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> ArchProfile:
    return get_profile(pytestconfig.getoption("--arch"))


@pytest.fixture(scope="session")
def kernel_version(pytestconfig: pytest.Config) -> str | None:
    """The kernel series the image is built from (``6.12``, ``6.1``); None for ``--kernel``."""
    if pytestconfig.getoption("--kernel") is not None:
        return None
    asked: str = (pytestconfig.getoption("--kernel-version")
                  or os.environ.get(KERNEL_VERSION_ENV) or DEFAULT_KERNEL_VERSION)
    return asked


@pytest.fixture(scope="session")
def boot_image(pytestconfig: pytest.Config, profile: ArchProfile) -> BootImage:
    try:
        return find_image(
            profile,
            pytestconfig.getoption("--kernel"),
            pytestconfig.getoption("--initramfs"),
            kernel_version=pytestconfig.getoption("--kernel-version"),
        )
    except ImageUnavailable as e:
        pytest.fail(f"no boot image for {profile.name}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def vm_config(pytestconfig: pytest.Config, profile: ArchProfile, boot_image: BootImage) -> VMConfig:
    return VMConfig(profile, boot_image, keep_logs_dir=pytestconfig.getoption("--keep-vm-logs"))


#: How long the shared VM's agent may take to answer the ping before a test.
_HEALTH_PING_S = 10.0


def _answers(vm: VM) -> bool:
    """Running, and its agent answers a ping (a test may have left it hung)."""
    if vm.state is not VMState.RUNNING or vm.agent.stalled:
        return False
    try:
        vm.agent.request(Op.PING, timeout=_HEALTH_PING_S)
    except VMError:
        return False
    return vm.state is VMState.RUNNING and not vm.agent.stalled


class SharedVM:
    """The worker's VM: booted on first use, replaced if a test killed or hung it, and
    rebooted with or without swap when a test asks for the other (one VM at a time)."""

    def __init__(self, config: VMConfig) -> None:
        self._config = config
        self._vm: VM | None = None
        self._boots = itertools.count()

    def get(self, *, swap: bool = False) -> VM:
        """The running VM, with a swap device swapped on iff ``swap`` (VMConfig.swap)."""
        if self._vm is not None and (not _answers(self._vm) or self._vm.config.swap != swap):
            self._vm.shutdown()
            self._vm = None
        if self._vm is None:
            config = dataclasses.replace(self._config, swap=swap)
            self._vm = VM(config, name=f"{_worker()}.{next(self._boots)}").launch()
        return self._vm

    def close(self) -> None:
        if self._vm is not None:
            self._vm.shutdown()
            self._vm = None


@pytest.fixture(scope="session")
def shared_vm(vm_config: VMConfig) -> Iterator[SharedVM]:
    shared = SharedVM(vm_config)
    yield shared
    shared.close()


@pytest.fixture
def vm(shared_vm: SharedVM) -> VM:
    """The worker's running VM."""
    return shared_vm.get()


_guest_names = itertools.count()


@pytest.fixture
def guest(vm: VM) -> Iterator[NamedProcess]:
    """A fresh named process (forked from init), killed after the test."""
    name = f"t{next(_guest_names)}"
    pid = vm.agent.fork(name)
    yield NamedProcess(vm, name, pid)
    if vm.state is VMState.RUNNING:
        for proc in vm.agent.list_processes():
            if proc != HOLDER_PROC:  # killing it would wake khugepaged again
                vm.agent.kill(proc)


@pytest.fixture
def fresh_vm(vm_config: VMConfig) -> Iterator[Callable[..., VM]]:
    """Make VMs of the test's own (launched unless launch=False); all shut down after."""
    made: list[VM] = []
    counter = itertools.count()

    def make(*, launch: bool = True, extra_cmdline: tuple[str, ...] = ()) -> VM:
        config = VMConfig(
            vm_config.profile,
            vm_config.image,
            extra_cmdline=extra_cmdline,
            keep_logs_dir=vm_config.keep_logs_dir,
        )
        machine = VM(config, name=f"{_worker()}.f{next(counter)}")
        made.append(machine)
        return machine.launch() if launch else machine

    yield make
    for machine in made:
        machine.shutdown()


#: How often a determinism test runs each scenario in one VM (issue 12: 20 consecutive runs).
REPEATS = 20


@pytest.fixture
def agrees_repeatedly(vm: VM) -> Callable[[Scenario], None]:
    """A check that runs a scenario :data:`REPEATS` times in a row in ``vm`` (whose
    kernel state, e.g. ksmd's trees or the page cache, outlives each run) and fails
    with the first diverging run's report: nothing in the scenario may depend on timing.
    A scenario that does not apply to the arch is skipped, saying why."""

    def check(scenario: Scenario) -> None:
        arch = vm.profile.arch
        try:
            model = run_model(scenario, arch, facts=vm.facts or PINNED)
        except ScenarioNotApplicable as e:  # e.g. THP-sized counts on i386
            pytest.skip(str(e))
        for run in range(REPEATS):
            divergences = compare(model, run_guest(scenario, vm), scenario, arch)
            if divergences:
                report = render_text([ScenarioResult.from_divergences(scenario.name, arch.name,
                                                                      divergences)])
                pytest.fail(f"run {run + 1} of {REPEATS} diverges:\n{report}", pytrace=False)

    return check
