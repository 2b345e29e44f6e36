"""x86_64: a bzImage for ``qemu-system-x86_64 -machine pc``, console ttyS0."""

from images.arches import ImageArch

IMAGE = ImageArch(
    name="x86_64",
    kernel_arch="x86_64",
    cross_compile="",
    make_target="bzImage",
    image_path="arch/x86/boot/bzImage",
    base_fragments=(
        "kernel/configs/tiny-base.config",
        "kernel/configs/tiny.config",
        "arch/x86/configs/tiny.config",
    ),
    fragments=("common.config", "x86_64.config"),
    agent_cc="gcc",
    agent_cflags=("-static", "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"),
    elf_machine=62,  # EM_X86_64
    elf_big_endian=False,
)
