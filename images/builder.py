"""Build (or find in the cache) the kernel image and initramfs of one architecture."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from images.agent import compile_agent
from images.arches import SERIES_FRAGMENT, ImageArch, get_image_arch
from images.cache import COMPLETE_MARKER, Cache
from images.commands import note, run
from images.errors import CommandError, ImageError
from images.initramfs import make_initramfs
from images.kconfig import Request, check_config, defined_symbols, parse_fragment
from images.key import BuildInputs, cache_key, compiler_version, kernel_key
from images.patching import PatchedTree
from images.project import PatchSet, Project, find_project
from images.source import SourceChoice, SourcePackage, ensure_pristine, resolve_source
from images.user_tree import has_kpagemap, tree_choice, tree_patch_set, tree_release

__all__ = ["BuiltImage", "build_image", "collect_inputs", "find_image"]

#: Environment variable overriding make's -j (default: the CPUs this process may use).
JOBS_ENV = "PAGEMAP_HARNESS_JOBS"

_INITRAMFS = "initramfs.cpio.gz"


@dataclass(frozen=True)
class BuiltImage:
    """A published image: everything QEMU needs, and how it was made."""

    arch: str
    kernel: Path
    initramfs: Path
    config: Path
    key: str
    build_log: Path
    #: Which kernel source build it is made from, and whether that is the pinned
    #: one (:meth:`images.source.SourceChoice.describe`): for every report.
    source: str

    @classmethod
    def at(cls, arch: ImageArch, directory: Path, choice: SourceChoice) -> BuiltImage:
        return cls(
            arch=arch.name,
            kernel=directory / Path(arch.kernel.image_path).name,
            initramfs=directory / _INITRAMFS,
            config=directory / "config",
            key=directory.name,
            build_log=directory / "build.log",
            source=choice.describe(),
        )


def collect_inputs(
    arch: ImageArch,
    project: Project,
    cache: Cache,
    agent_dir: Path | None = None,
    kernel_version: str | None = None,
    tree: Path | None = None,
) -> tuple[BuildInputs, SourceChoice, PatchSet]:
    """Read every input of a build (fast: slow facts are memoised by file stamps).

    Raises :class:`~images.errors.SourceError` when no kernel source build
    qualifies (see :func:`images.source.resolve_source`).
    """
    log = cache.root / "logs" / "source.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if tree is not None:
        patch_set = tree_patch_set(project, tree_release(tree), kernel_version)
        series = None if has_kpagemap(tree) else patch_set.read_series()
        choice = tree_choice(tree, patch_set)
    else:
        patch_set = project.patch_set(kernel_version)
        series = patch_set.read_series()
        patches = () if series is None else series.patches
        choice = resolve_source(cache, patch_set.base_file, patches, log)
    source = choice.source
    fragment_paths = list(arch.fragment_paths)
    if series is not None or tree is not None:
        # A tree that has /proc/kpagemap already gets the option too (it defines it).
        fragment_paths.append(SERIES_FRAGMENT)
    if patch_set.config_fragment is not None:
        fragment_paths.append(patch_set.config_fragment)
    inputs = BuildInputs(
        arch=arch,
        source_version=source.version,
        source_sha256=source.sha256,
        series_file=None if series is None else series.series_file,
        patches=() if series is None else series.patches,
        fragments=tuple((path.name, path.read_bytes()) for path in fragment_paths),
        agent_sources=project.read_agent_sources(agent_dir),
        compilers=tuple((cc, compiler_version(cache, cc)) for cc in arch.compilers),
    )
    return inputs, choice, patch_set


def find_image(
    arch_name: str,
    *,
    agent_dir: Path | None = None,
    cache: Cache | None = None,
    kernel_version: str | None = None,
    tree: Path | None = None,
) -> BuiltImage | None:
    """The published image for the current inputs, or None if it is not built."""
    arch = get_image_arch(arch_name)
    cache = cache or Cache.default()
    inputs, choice, _ = collect_inputs(
        arch, find_project(), cache, agent_dir, kernel_version, tree
    )
    found = cache.published(cache.image_area(arch.name), cache_key(inputs))
    return None if found is None else BuiltImage.at(arch, found, choice)


def build_image(
    arch_name: str,
    *,
    agent_dir: Path | None = None,
    cache: Cache | None = None,
    jobs: int | None = None,
    kernel_version: str | None = None,
    tree: Path | None = None,
) -> BuiltImage:
    """The image for the current inputs, built only when the cache has none.

    Two cache levels: the kernel (keyed by source, series, fragments,
    compilers) and the image (kernel key + agent source + initramfs layout),
    so an agent change rebuilds only the initramfs.  ``kernel_version``: a
    directory of linux-patch/ (default: images.project.DEFAULT_KERNEL_VERSION
    or $PAGEMAP_HARNESS_KERNEL_VERSION).  ``tree``: a kernel source tree to
    build instead of the pinned Debian source (images.user_tree).
    """
    arch = get_image_arch(arch_name)
    cache = cache or Cache.default()
    project = find_project()
    inputs, choice, patch_set = collect_inputs(
        arch, project, cache, agent_dir, kernel_version, tree
    )
    key = cache_key(inputs)
    area = cache.image_area(arch.name)
    if (found := cache.published(area, key)) is not None:
        return BuiltImage.at(arch, found, choice)
    started = time.monotonic()
    log = cache.root / "logs" / f"{arch.name}-image.log"

    def build(staging: Path) -> None:
        kkey = kernel_key(inputs)
        kernel_dir = cache.get_or_build(
            cache.kernel_area(arch.name),
            kkey,
            lambda kstaging: _KernelBuild(
                arch, inputs, choice, kkey, cache, jobs, patch_set
            ).run(kstaging),
        )
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"image {key} of {arch.name}: kernel {kkey}\n", encoding="utf-8")
        _assemble_image(arch, inputs, key, kernel_dir, project.agent_dir(agent_dir), log, staging)

    directory = cache.get_or_build(area, key, build)
    built = BuiltImage.at(arch, directory, choice)
    note(
        f"[{arch.name}] image {key}: {built.kernel} ({built.kernel.stat().st_size} bytes), "
        f"{built.initramfs} ({built.initramfs.stat().st_size} bytes), "
        f"{time.monotonic() - started:.0f}s"
    )
    return built


def _default_jobs() -> int:
    if env := os.environ.get(JOBS_ENV):
        try:
            return max(1, int(env))
        except ValueError:
            raise ImageError(f"{JOBS_ENV}={env!r} is not a number") from None
    return len(os.sched_getaffinity(0))


def _assemble_image(
    arch: ImageArch,
    inputs: BuildInputs,
    key: str,
    kernel_dir: Path,
    agent_dir: Path,
    log: Path,
    staging: Path,
) -> None:
    """Agent, initramfs and (linked) kernel files into ``staging``, meta.json last."""
    started = time.monotonic()
    agent = staging / "agent"
    compile_agent(arch, agent_dir, agent, log)
    make_initramfs(kernel_dir / "gen_init_cpio", {"agent": agent}, staging / _INITRAMFS, log)
    kernel_name = Path(arch.kernel.image_path).name
    for name in (kernel_name, "config"):
        # Published files never change: a hard link is a safe, free copy.
        try:
            os.link(kernel_dir / name, staging / name)
        except OSError:
            shutil.copy2(kernel_dir / name, staging / name)
    kernel_log = (kernel_dir / "build.log").read_text(encoding="utf-8", errors="replace")
    (staging / "build.log").write_text(
        kernel_log + log.read_text(encoding="utf-8", errors="replace"), encoding="utf-8"
    )
    meta = json.loads((kernel_dir / COMPLETE_MARKER).read_text(encoding="utf-8"))
    meta.update(
        key=key,
        kernel_key=kernel_dir.name,
        agent_sources=[name for name, _ in inputs.agent_sources],
        agent_dir=str(agent_dir),
        initramfs_bytes=(staging / _INITRAMFS).stat().st_size,
        initramfs_seconds=round(time.monotonic() - started, 1),
    )
    (staging / COMPLETE_MARKER).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


class _KernelBuild:
    """One kernel build, step by step, in the arch's tree; results into a staging dir."""

    def __init__(
        self,
        arch: ImageArch,
        inputs: BuildInputs,
        choice: SourceChoice,
        key: str,
        cache: Cache,
        jobs: int | None,
        patch_set: PatchSet,
    ) -> None:
        self.arch = arch
        self.inputs = inputs
        self.choice = choice
        self.source: SourcePackage = choice.source
        self.key = key
        self.cache = cache
        self.patch_dir = patch_set.directory
        self.jobs = jobs or _default_jobs()
        # One work tree per arch and kernel version (and per user tree): switching
        # between them rebuilds nothing.
        work = f"{arch.name}-{patch_set.version}"
        if choice.reason == "tree":
            work += "-tree-" + hashlib.sha256(str(choice.source.tarball).encode()).hexdigest()[:8]
        self.tree_dir = cache.tree_dir(work)
        self.build_dir = self.tree_dir / "build"
        # The log lives beside the tree while building, so a failure's log survives.
        self.log = self.tree_dir / "build.log"
        self.tree = PatchedTree(self.tree_dir, self.log)
        self.timings: dict[str, float] = {}

    def run(self, staging: Path) -> None:
        """Every step; the results go to ``staging``, meta.json last."""
        note(f"[{self.arch.name}] building kernel {self.key} in {self.tree_dir}")
        self.tree_dir.mkdir(parents=True, exist_ok=True)
        self.log.write_text(f"kernel {self.key} of {self.arch.name}\n", encoding="utf-8")
        self._step("source", self._prepare_tree)
        self._step("config", self._configure)
        self._step("make", self._make_kernel)
        self._collect(staging)

    def _step(self, name: str, action: Callable[[], None]) -> None:
        started = time.monotonic()
        action()
        self.timings[name] = round(time.monotonic() - started, 1)

    # -- source tree -----------------------------------------------------------

    def _prepare_tree(self) -> None:
        pristine = ensure_pristine(self.cache, self.source, self.log)
        state = self.tree.state()
        reason = None
        if state is None:
            reason = "no patched tree yet"
        elif state.source != self.source.ident:
            reason = f"source changed ({state.source} -> {self.source.ident})"
        elif state.in_progress:
            reason = "a previous patch step was interrupted"
        if reason is not None:
            note(f"[{self.arch.name}] new source tree and build dir: {reason}")
            self.tree.reset(pristine, self.source.ident, self.build_dir)
        try:
            changed = self.tree.sync(self.inputs.patches, self.patch_dir)
        except CommandError as exc:
            note(f"[{self.arch.name}] reverting a patch failed ({exc.command}); starting afresh")
            self.tree.reset(pristine, self.source.ident, self.build_dir)
            changed = self.tree.sync(self.inputs.patches, self.patch_dir)
        if changed:
            note(f"[{self.arch.name}] applied {', '.join(changed)}")

    # -- configuration ---------------------------------------------------------

    def _make(self, *targets: str, env: dict[str, str] | None = None, label: str) -> None:
        argv = ["make", "-C", str(self.tree.src), f"O={self.build_dir}"]
        argv.append(f"ARCH={self.arch.kernel.make_arch}")
        if self.arch.kernel.cross_compile:
            argv.append(f"CROSS_COMPILE={self.arch.kernel.cross_compile}")
        run([*argv, *targets], self.log, env=env, progress=f"{self.arch.name}: {label}")

    def _requests(self) -> list[Request]:
        """Our fragments' options; the series' ones only where the series defines them."""
        series_defines: set[str] = set()
        for _, data in self.inputs.patches:
            series_defines |= defined_symbols(data.decode("utf-8", errors="replace"))
        requests: list[Request] = []
        for name, data in self.inputs.fragments:
            parsed = list(parse_fragment(data.decode("utf-8"), name).values())
            if name == SERIES_FRAGMENT.name:
                for request in parsed:
                    if request.symbol not in series_defines:
                        note(f"[{self.arch.name}] not checking {request}: "
                             "the series defines no such symbol")
                parsed = [r for r in parsed if r.symbol in series_defines]
            requests.extend(parsed)
        # A later fragment's request for a symbol replaces an earlier one.
        return list({request.symbol: request for request in requests}.values())

    def _configure(self) -> None:
        self.build_dir.mkdir(parents=True, exist_ok=True)
        allconfig = self.build_dir / "allconfig.fragment"
        parts = []
        for name in self.arch.kernel.base_fragments:
            try:
                parts.append(f"# {name}\n{(self.tree.src / name).read_text(encoding='utf-8')}")
            except FileNotFoundError:
                raise ImageError(
                    f"the source tree has no {name}, a base config fragment of {self.arch.name} "
                    "(is it a kernel tree of a version the project knows?)"
                ) from None
        parts += [f"# {name}\n{data.decode('utf-8')}" for name, data in self.inputs.fragments]
        allconfig.write_text("\n".join(parts), encoding="utf-8")
        self._make("allnoconfig", env={"KCONFIG_ALLCONFIG": str(allconfig)}, label="config")
        check_config(self._requests(), self.build_dir / ".config")

    # -- kernel ------------------------------------------------------------------

    def _make_kernel(self) -> None:
        self._make(f"-j{self.jobs}", self.arch.kernel.make_target, label="make")
        for built in (self.build_dir / self.arch.kernel.image_path, self._gen_init_cpio):
            if not built.is_file():
                raise ImageError(f"make succeeded but {built} is missing; see {self.log}")

    @property
    def _gen_init_cpio(self) -> Path:
        # Built in every kernel build with BLK_DEV_INITRD (usr/Makefile).
        return self.build_dir / "usr" / "gen_init_cpio"

    def _release(self) -> str:
        """The release the kernel reports in uname -r (include/config/kernel.release)."""
        path = self.build_dir / "include" / "config" / "kernel.release"
        return path.read_text(encoding="utf-8").strip()

    def _collect(self, staging: Path) -> None:
        image = self.build_dir / self.arch.kernel.image_path
        shutil.copy2(image, staging / image.name)
        shutil.copy2(self.build_dir / ".config", staging / "config")
        shutil.copy2(self._gen_init_cpio, staging / "gen_init_cpio")
        shutil.copy2(self.log, staging / "build.log")
        meta = {
            "arch": self.arch.name,
            "kernel_key": self.key,
            "source": self.choice.as_json(),
            "kernel_release": self._release(),
            "patches": [name for name, _ in self.inputs.patches],
            "fragments": [*self.arch.kernel.base_fragments, *(n for n, _ in self.inputs.fragments)],
            "compilers": {cc: v.splitlines()[0] for cc, v in self.inputs.compilers},
            "kernel": image.name,
            "kernel_bytes": image.stat().st_size,
            "kernel_seconds": self.timings,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (staging / COMPLETE_MARKER).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
