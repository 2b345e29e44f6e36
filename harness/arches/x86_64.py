"""x86_64 under TCG: PC machine, 8250 console, ACPI power-off (needs PCI)."""

from harness.arches import ArchProfile

PROFILE = ArchProfile(
    name="x86_64",
    qemu_binary="qemu-system-x86_64",
    machine="pc",
    machine_options=(),
    # qemu64, not max: max offers LA57 and the kernel would use 5-level tables.
    cpu="qemu64",
    console="ttyS0",
    # panic=-1 reboots at once and -no-reboot turns that into QEMU exiting;
    # oops=panic makes any oops a panic the harness sees.
    kernel_cmdline=("panic=-1", "oops=panic"),
    # pvpanic raises the GUEST_PANICKED QMP event when the kernel has the driver.
    extra_args=("-device", "pvpanic"),
    virtio_serial_device="virtio-serial-pci",
    image_arch="x86_64",
)
