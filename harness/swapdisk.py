"""The swap disk of a VM with swap: a host file, its header written here, as virtio-blk.

A VM whose :class:`~harness.vm.VMConfig` asks for swap gets one 64 MiB raw
disk (``swap.img`` in the VM's own temporary work directory, removed with
it), attached as a virtio-blk PCI device: the guest's ``/dev/vda``
(CONFIG_VIRTIO_BLK).  Its first page is the swap header of
:mod:`sim.formats_swap` in the guest's byte order and page size, the rest
zeroes (a sparse file), so the guest swaps on without mkswap.

Why a virtio-blk disk and not zram: slot allocation (scan_swap_map_slots())
is the same for both, but zram is SWP_SYNCHRONOUS_IO, whose swap-in of a
slot with one user skips the swap cache (do_swap_page()), while virtio-blk
writes back asynchronously: a folio MADV_PAGEOUT writes stays in the swap
cache, under writeback, when shrink_folio_list() looks again (``goto keep``),
and the harness waits for the writeback to end by state (no paged-out frame
reads KPF_WRITEBACK in /proc/kpageflags any more,
:func:`harness.guest_executor.wait_swap_writeback`; /proc/vmstat's
nr_writeback lags behind its per-CPU deltas).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from sim.formats import ByteLayout
from sim.formats_swap import SwapHeader, build_swap_header

__all__ = ["SWAP_DEVICE", "SWAP_DISK_BYTES", "qemu_swap_args", "write_swap_disk"]

#: Size of every VM's swap disk.
SWAP_DISK_BYTES: Final = 64 << 20
#: The disk in the guest: the only virtio-blk device, so the first one.
SWAP_DEVICE: Final = "/dev/vda"


def write_swap_disk(path: Path, arch: ByteLayout, size: int = SWAP_DISK_BYTES) -> SwapHeader:
    """Create ``path`` (must not exist): the swap header, then zeroes to ``size`` bytes.

    OSError as the file system raises it (FileExistsError if ``path`` exists).
    """
    header = SwapHeader.for_size(arch, size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, build_swap_header(arch, header))
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return header


def qemu_swap_args(path: Path) -> list[str]:
    """The QEMU arguments attaching ``path`` as a raw virtio-blk PCI disk."""
    return [
        "-drive", f"file={path},if=none,id=swapdisk,format=raw",
        "-device", "virtio-blk-pci,drive=swapdisk",
    ]  # fmt: skip
