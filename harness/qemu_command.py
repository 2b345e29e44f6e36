"""The QEMU command line of one VM, from its profile, image and files.

Every channel is a path the harness owns: QEMU connects (as a client) to the
QMP and agent sockets the harness bound before starting it, and logs the
guest console to a file, so the printed command line is exactly what runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.arches import ArchProfile
from harness.image import BootImage
from harness.swapdisk import qemu_swap_args

__all__ = ["AGENT_PORT_NAME", "VMPaths", "qemu_command"]

#: The virtio-serial port name the agent looks for (harness/agent/agent.c).
AGENT_PORT_NAME = "agent"


@dataclass(frozen=True)
class VMPaths:
    """The files of one VM: a private directory and the guest-RAM file."""

    workdir: Path
    ram: Path

    @property
    def qmp_socket(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def agent_socket(self) -> Path:
        return self.workdir / "agent.sock"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"

    @property
    def swap_disk(self) -> Path:
        """The swap disk of a VM with swap (harness.swapdisk), removed with the work dir."""
        return self.workdir / "swap.img"


def qemu_command(
    profile: ArchProfile,
    image: BootImage,
    paths: VMPaths,
    *,
    extra_cmdline: tuple[str, ...] = (),
    swap: bool = False,
) -> list[str]:
    """The command line; ``swap``: attach ``paths.swap_disk`` (which must exist) as virtio-blk."""
    qemu = profile.qemu
    memory = f"{qemu.memory_mib}M"
    machine = ",".join((qemu.machine, *qemu.machine_options, "memory-backend=ram0"))
    return [
        qemu.binary,
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-accel", "tcg",
        "-machine", machine,
        "-cpu", qemu.cpu,
        "-smp", "1",
        "-m", memory,
        # Guest RAM in a host file: the page at guest-physical address
        # ram_base + off is at file offset off (harness.vm.GuestRAM).
        "-object",
        f"memory-backend-file,id=ram0,size={memory},mem-path={paths.ram},share=on",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initramfs),
        "-append", profile.command_line_for_kernel(extra_cmdline),
        "-chardev", f"file,id=console,path={paths.console_log}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,path={paths.qmp_socket}",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=agent,path={paths.agent_socket}",
        "-device", f"{qemu.virtio_serial_device},id=agentbus",
        "-device", f"virtserialport,bus=agentbus.0,chardev=agent,name={AGENT_PORT_NAME}",
        *(qemu_swap_args(paths.swap_disk) if swap else ()),
        *qemu.extra_args,
    ]  # fmt: skip
