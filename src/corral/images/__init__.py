"""Guest images built from Debian's packages: recipes in, bootable kernel + initrd out.

The QEMU driver and the API server use `build_image` and `BuiltImage`; see docs/images.md.
"""

from corral.images.builder import (
    BuiltImage,
    ProgressFn,
    build_image,
    list_recipes,
    load_image,
)

__all__ = ["BuiltImage", "ProgressFn", "build_image", "list_recipes", "load_image"]
