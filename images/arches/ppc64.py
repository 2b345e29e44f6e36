"""ppc64 big-endian, pseries, radix MMU, 64K pages: vmlinux for ``-kernel``, console hvc0."""

from images.arches import ImageArch

IMAGE = ImageArch(
    name="ppc64",
    kernel_arch="powerpc",
    cross_compile="powerpc64-linux-gnu-",
    make_target="vmlinux",
    image_path="vmlinux",
    base_fragments=("kernel/configs/tiny-base.config", "kernel/configs/tiny.config"),
    fragments=("common.config", "pseries-be.config", "page-64k.config"),
    agent_cc="powerpc64-linux-gnu-gcc",
    agent_cflags=("-static", "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"),
    elf_machine=21,  # EM_PPC64
    elf_big_endian=True,
)
