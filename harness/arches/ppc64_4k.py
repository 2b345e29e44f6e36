"""ppc64 big-endian, 4K pages: the same pseries machine as ``ppc64``, another kernel."""

from dataclasses import replace

from harness.arches.ppc64 import PROFILE as PPC64_64K

# Only the kernel differs (PPC_4K_PAGES): the machine, firmware and console are
# those of the 64K-page profile.
PROFILE = replace(PPC64_64K, name="ppc64-4k", image_arch="ppc64-4k")
