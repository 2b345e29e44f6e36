"""The kernel's own mm selftests and tools/mm/page-types, built static for a guest, cached.

Built from the pinned kernel source the images already unpack (never
modified), with that tree's own UAPI headers (``make headers_install`` out of
tree, into the staging dir), by the arch's agent compiler (Debian's cross
compilers), each program a static ELF checked like the agent.  The result is
also packed as a gzip'd newc cpio that puts every program under
``/selftests/``: the kernel unpacks concatenated cpio archives one after the
other (``unpack_to_rootfs()`` in init/initramfs.c), so a VM boots the
agent's initramfs followed by this one (:func:`combined_initramfs`).

The userland does not depend on the kernel's page size: ppc64 and ppc64-4k
use the same compiler and flags, so they get the same key and share one
build.  The cache layout (``selftests/<cc>/<key>/``) and its publication are
the images cache's (:mod:`images.cache`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from images.agent import check_elf
from images.arches import ImageArch, get_image_arch
from images.cache import COMPLETE_MARKER, Cache
from images.commands import note, run
from images.errors import CommandError, ImageError
from images.initramfs import list_cpio
from images.key import compiler_version
from images.project import find_project
from images.source import SourceChoice, ensure_pristine, resolve_source

__all__ = [
    "GUEST_DIR",
    "PROGRAMS",
    "BuiltSelftests",
    "Program",
    "build_selftests",
    "combined_initramfs",
    "newc_archive",
]

#: Bump when the recipe changes in a way the key does not see.
RECIPE_VERSION = 1

#: Where the programs are in the guest.
GUEST_DIR = "/selftests"

_MM = "tools/testing/selftests/mm"
_MM_HELPERS = (f"{_MM}/vm_util.c", f"{_MM}/thp_settings.c")
#: The selftests Makefile's LDLIBS (tools/testing/selftests/mm/Makefile).
_MM_LIBS = ("-lrt", "-lpthread", "-lm")
#: The selftests Makefile's CFLAGS less -I/-isystem (added per build).
_MM_CFLAGS = ("-Wall", "-O2", "-U_FORTIFY_SOURCE")

#: local_config.h as tools/testing/selftests/mm/check_config.sh writes it
#: when liburing is missing: Debian has no static liburing for the cross
#: targets, and cow.c then leaves out its io_uring cases (it says so).
_LOCAL_CONFIG_H = "// No liburing support found\n"


@dataclass(frozen=True)
class Program:
    """One guest program: its sources (paths in the kernel tree) and how it is linked."""

    name: str
    sources: tuple[str, ...]
    libs: tuple[str, ...] = _MM_LIBS
    #: Flags beyond the common ones (paths relative to the kernel tree as ``{tree}/...``).
    cflags: tuple[str, ...] = _MM_CFLAGS
    #: Why a flag the Makefile does not use is there.
    note: str = ""


def _mm(name: str, *extra: str, cflags: tuple[str, ...] = _MM_CFLAGS, note: str = "") -> Program:
    return Program(name, (f"{_MM}/{name}.c", *extra, *_MM_HELPERS), cflags=cflags, note=note)


#: Every program, in the order the runner runs them (fast ones first).
PROGRAMS: tuple[Program, ...] = (
    _mm("soft-dirty"),
    _mm(
        "pagemap_ioctl",
        cflags=(*_MM_CFLAGS, "-fmacro-prefix-map={tree}/tools/testing/selftests/mm/="),
        note="its file tests open __FILE__\".tmp0\" and the like: upstream's Makefile compiles "
        "it as pagemap_ioctl.c in its own directory, we compile an absolute path, which the "
        "guest lacks (\"Bail out! ... No such file or directory\"); the prefix map makes "
        "__FILE__ the bare name again, relative to the program's directory in the guest",
    ),
    _mm("mremap_test"),
    _mm("mlock2-tests"),
    _mm("madv_populate"),
    _mm("mkdirty"),
    _mm("ksm_functional_tests"),
    _mm("split_huge_page_test"),
    _mm("hugetlb-madvise"),
    _mm("uffd-unit-tests", f"{_MM}/uffd-common.c"),
    _mm("cow"),
    _mm(
        "khugepaged",
        cflags=(*_MM_CFLAGS, "-include", "{tree}/tools/testing/selftests/kselftest.h"),
        note="6.12's khugepaged.c uses KSFT_SKIP without including kselftest.h (upstream "
        "builds it only because its Makefile's other objects pull the header in first); "
        "-include supplies it",
    ),
    Program(
        "page-types",
        ("tools/mm/page-types.c", "tools/lib/api/fs/fs.c"),
        libs=("-pthread",),
        # tools/mm/Makefile: -I../lib/ (and libapi's own dir for debug-internal.h).
        cflags=("-Wall", "-O2", "-I{tree}/tools/lib", "-I{tree}/tools/lib/api"),
    ),
)


@dataclass(frozen=True)
class BuiltSelftests:
    """A published build: ``programs`` (name -> static ELF) and ``initramfs`` (gzip'd cpio)."""

    arch: str
    directory: Path
    initramfs: Path
    programs: dict[str, Path]
    source: str

    @classmethod
    def at(cls, arch: str, directory: Path, choice: SourceChoice) -> BuiltSelftests:
        return cls(
            arch=arch,
            directory=directory,
            initramfs=directory / "selftests.cpio.gz",
            programs={p.name: directory / "bin" / p.name for p in PROGRAMS},
            source=choice.describe(),
        )


def _key(arch: ImageArch, choice: SourceChoice, cache: Cache) -> str:
    cc = arch.agent.cc
    record = {
        "recipe": RECIPE_VERSION,
        "source": [choice.source.version, choice.source.sha256],
        "make_arch": arch.kernel.make_arch,
        "cc": cc,
        "cc_version": compiler_version(cache, cc),
        "elf_machine": arch.agent.elf_machine,
        "big_endian": arch.big_endian,
        "programs": [[p.name, p.sources, p.libs, p.cflags] for p in PROGRAMS],
        "local_config": _LOCAL_CONFIG_H,
    }
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _area(arch: ImageArch) -> str:
    return f"selftests/{arch.agent.cc}"


def _choice(cache: Cache, kernel_version: str | None) -> SourceChoice:
    patch_set = find_project().patch_set(kernel_version)
    series = patch_set.read_series()
    log = cache.root / "logs" / "source.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return resolve_source(cache, patch_set.base_file, () if series is None else series.patches, log)


def build_selftests(
    arch_name: str, *, cache: Cache | None = None, kernel_version: str | None = None
) -> BuiltSelftests:
    """The selftests of ``arch_name`` for the kernel series ``kernel_version``, built on a miss.

    Raises :class:`~images.errors.ImageError` (one line; the log named) when a
    program does not compile, :class:`~images.errors.AgentError` when one is
    not a static ELF of the arch, :class:`~images.errors.SourceError` when no
    kernel source qualifies.
    """
    arch = get_image_arch(arch_name)
    cache = cache or Cache.default()
    choice = _choice(cache, kernel_version)
    key = _key(arch, choice, cache)
    started = time.monotonic()

    def build(staging: Path) -> None:
        _Build(arch, choice, cache, staging).run()

    directory = cache.get_or_build(_area(arch), key, build)
    built = BuiltSelftests.at(arch.name, directory, choice)
    note(f"[{arch.name}] selftests {key}: {built.initramfs} "
         f"({built.initramfs.stat().st_size} bytes), {time.monotonic() - started:.0f}s")
    return built


class _Build:
    """One build into ``staging``: headers, programs, cpio, meta.json last."""

    def __init__(self, arch: ImageArch, choice: SourceChoice, cache: Cache, staging: Path) -> None:
        self.arch = arch
        self.choice = choice
        self.cache = cache
        self.staging = staging
        # Beside the cache's other logs: a failed build's staging dir is removed.
        self.log = cache.root / "logs" / f"{arch.name}-selftests.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text(f"selftests of {arch.name} from {choice.describe()}\n",
                            encoding="utf-8")

    def run(self) -> None:
        timings: dict[str, float] = {}
        started = time.monotonic()
        tree = ensure_pristine(self.cache, self.choice.source, self.log)
        headers = self._headers(tree)
        timings["headers"] = round(time.monotonic() - started, 1)
        bin_dir = self.staging / "bin"
        bin_dir.mkdir()
        config_dir = self.staging / "include"
        config_dir.mkdir()
        (config_dir / "local_config.h").write_text(_LOCAL_CONFIG_H, encoding="utf-8")
        for program in PROGRAMS:
            begun = time.monotonic()
            self._compile(program, tree, headers, config_dir, bin_dir / program.name)
            timings[program.name] = round(time.monotonic() - begun, 1)
        files = {f"{GUEST_DIR.lstrip('/')}/{p.name}": bin_dir / p.name for p in PROGRAMS}
        archive = newc_archive([GUEST_DIR.lstrip("/")], files)
        missing = set(files) - set(list_cpio(archive))
        if missing:
            raise ImageError(f"the selftests cpio lacks {sorted(missing)}")
        shutil.copy2(self.log, self.staging / "build.log")
        (self.staging / "selftests.cpio.gz").write_bytes(
            gzip.compress(archive, compresslevel=9, mtime=0)
        )
        shutil.rmtree(self.staging / "headers")
        meta = {
            "arch": self.arch.name,
            "source": self.choice.as_json(),
            "cc": self.arch.agent.cc,
            "programs": [p.name for p in PROGRAMS],
            "seconds": timings,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (self.staging / COMPLETE_MARKER).write_text(json.dumps(meta, indent=1) + "\n",
                                                    encoding="utf-8")

    def _headers(self, tree: Path) -> Path:
        """``make headers_install`` of the arch, out of tree; the include dir."""
        out = self.staging / "headers"
        run(
            ["nice", "-n", "10", "make", "-s", "-C", str(tree), f"O={out}",
             f"ARCH={self.arch.kernel.make_arch}", f"INSTALL_HDR_PATH={out}/usr",
             "headers_install"],
            self.log, progress=f"{self.arch.name}: selftests headers",
        )
        include = out / "usr" / "include"
        if not (include / "linux" / "userfaultfd.h").is_file():
            raise ImageError(f"headers_install left no {include}/linux/userfaultfd.h; "
                             f"see {self.log}")
        return include

    def _compile(
        self, program: Program, tree: Path, headers: Path, config_dir: Path, output: Path
    ) -> None:
        flags = [flag.replace("{tree}", str(tree)) for flag in program.cflags]
        argv = [
            "nice", "-n", "10", self.arch.agent.cc, "-static", *flags,
            # The Makefile's KHDR_INCLUDES and TOOLS_INCLUDES; local_config.h; ../kselftest.h.
            "-I", str(config_dir), "-I", str(tree / "tools/testing/selftests"),
            "-isystem", str(headers), "-I", str(tree / "tools/include"),
            "-o", str(output), *(str(tree / source) for source in program.sources),
            *program.libs,
        ]
        try:
            run(argv, self.log, progress=f"{self.arch.name}: {program.name}")
        except CommandError as exc:
            lines = exc.tail.splitlines()
            first = next((line for line in lines if "error" in line), lines[-1] if lines else "")
            raise ImageError(f"{program.name} did not build for {self.arch.name}: "
                             f"{first.strip()} (see {self.log})") from None
        check_elf(output, self.arch)


def newc_archive(directories: list[str], files: dict[str, Path]) -> bytes:
    """A newc ("070701") cpio archive: ``directories`` (mode 0755), then ``files`` (0755).

    Names are relative (``selftests/cow``), owner root, mtime 0, as the
    kernel's usr/gen_init_cpio writes them (its cpio_mkfile()); the trailer ends it.
    """
    out = bytearray()
    ino = 721

    def member(name: str, mode: int, data: bytes, nlink: int) -> None:
        nonlocal ino
        ino += 1
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        out.extend(b"070701" + b"".join(b"%08X" % value for value in fields) + raw)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for directory in directories:
        member(directory, 0o040755, b"", 2)
    for name, path in files.items():
        member(name, 0o100755, path.read_bytes(), 1)
    member("TRAILER!!!", 0, b"", 1)
    return bytes(out)


def combined_initramfs(base: Path, extra: Path, output: Path) -> Path:
    """``output`` = ``base`` followed by ``extra`` (two gzip'd cpio archives, one initrd).

    init/initramfs.c unpack_to_rootfs() takes the archives one after the
    other, each with its own compression; the second adds its files.
    """
    output.write_bytes(base.read_bytes() + extra.read_bytes())
    return output
