"""Turn a root directory into a qcow2 root disk, without loop devices or mounts.

`mke2fs -d` populates a fresh ext4 straight from the directory (owners, modes, hard links,
device nodes and extended attributes such as file capabilities included); `qemu-img convert`
then writes it as qcow2, skipping the unused space, zstd-compressed when QEMU can do that.

The disk has no partition table: the filesystem is the whole disk, so growing a volume
only needs `resize2fs` (cloud-init's resizefs does it at every boot), never growpart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from corral.errors import ImageBuildError

COMPRESSED = ("-c", "-o", "compression_type=zstd")


def _run(argv: Sequence[str], package: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise ImageBuildError(f"{argv[0]} is not installed; apt-get install {package}")
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def make_ext4(source: Path, image: Path, size_bytes: int, label: str) -> None:
    """Write an ext4 filesystem of `size_bytes` holding `source`'s tree to the file `image`."""
    argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-d", str(source), str(image)]
    argv.append(f"{size_bytes // 1024}k")
    result = _run(argv, "e2fsprogs")
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise ImageBuildError(
            f"making the {size_bytes >> 20} MiB root filesystem failed: {detail}; if it says "
            "the filesystem is full, the recipe's disk_size_bytes is too small"
        )


def convert_to_qcow2(raw: Path, qcow2: Path) -> str:
    """Write raw image `raw` as qcow2 `qcow2`; return the compression used ("zstd" or "none").

    zstd clusters are about a third of the size, cost ~1 s here, and cost the guest nothing
    measurable at boot; a qemu-img without zstd support gets an uncompressed image instead.
    """
    base = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-W"]
    result = _run([*base, *COMPRESSED, str(raw), str(qcow2)], "qemu-utils")
    if result.returncode == 0:
        return "zstd"
    if "compression" not in result.stderr:
        raise ImageBuildError(f"qemu-img convert failed: {result.stderr.strip()}")
    qcow2.unlink(missing_ok=True)
    result = _run([*base, str(raw), str(qcow2)], "qemu-utils")
    if result.returncode != 0:
        raise ImageBuildError(f"qemu-img convert failed: {result.stderr.strip()}")
    return "none"


def virtual_size(image: Path) -> int:
    """The disk size a guest sees, from `qemu-img info`."""
    result = _run(["qemu-img", "info", "--output=json", str(image)], "qemu-utils")
    if result.returncode != 0:
        raise ImageBuildError(f"qemu-img info {image.name} failed: {result.stderr.strip()}")
    return int(json.loads(result.stdout)["virtual-size"])
