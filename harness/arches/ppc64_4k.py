"""ppc64 big-endian, 4K pages: pseries with the QEMU-provided firmware (VOF)."""

from harness.arches import ArchProfile

PROFILE = ArchProfile(
    name="ppc64-4k",
    qemu_binary="qemu-system-ppc64",
    machine="pseries",
    # x-vof: QEMU's Virtual Open Firmware instead of SLOF (boots ~5 s faster).
    # The caps are the Spectre mitigations TCG cannot provide.
    machine_options=(
        "x-vof=on",
        "cap-cfpc=broken",
        "cap-sbbc=broken",
        "cap-ibs=broken",
        "cap-ccf-assist=off",
    ),
    # POWER9: the radix MMU, needed for THP under TCG.
    cpu="POWER9",
    console="hvc0",
    kernel_cmdline=("panic=-1", "oops=panic"),
    extra_args=(),
    virtio_serial_device="virtio-serial-pci",
    image_arch="ppc64-4k",
)
