"""Patched kernels and initramfs images per architecture, built once and cached.

    from images import build_image, BuiltImage
    image = build_image("ppc64")   # builds only when the cache has no image for the inputs
    image.kernel, image.initramfs

Command line: ``python -m images build|path|setup --arch ARCH``.
"""

from images.builder import BuiltImage, build_image, find_image
from images.errors import ImageError

__all__ = ["BuiltImage", "ImageError", "build_image", "find_image"]
