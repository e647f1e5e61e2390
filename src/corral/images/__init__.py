"""Guest images built from Debian's packages: recipes in, bootable kernel + initrd
(+ a qcow2 root disk) out, and the NoCloud seeds that cloud-init guests boot with.

The QEMU driver and the API server use `build_image` and `BuiltImage`, the agent
`write_nocloud_seed`; see docs/images.md.
"""

from corral.images.builder import (
    BuiltImage,
    ProgressFn,
    build_image,
    list_recipes,
    load_image,
)
from corral.images.seed import write_nocloud_seed

__all__ = [
    "BuiltImage",
    "ProgressFn",
    "build_image",
    "list_recipes",
    "load_image",
    "write_nocloud_seed",
]
