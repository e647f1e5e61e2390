"""qemu-img, the tool that makes and inspects disk images: create, thin overlay, convert, resize,
info. Formats are always given (-f/-F), never probed, except for a source image's own format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.storage.host import run_command
from corral.errors import HostError

QEMU_IMG = "qemu-img"
_ADVICE = "check the disk image and the pool's filesystem"


@dataclass(frozen=True)
class ImageInfo:
    """What `qemu-img info` says about an image."""

    format: str
    virtual_size: int
    actual_size: int
    backing: str | None  # absolute path of the backing file, if any


def parse_info(text: str) -> ImageInfo:
    """Parse `qemu-img info --output=json`."""
    data: dict[str, Any] = json.loads(text)
    backing = data.get("full-backing-filename") or data.get("backing-filename")
    return ImageInfo(
        format=str(data["format"]),
        virtual_size=int(data["virtual-size"]),
        actual_size=int(data.get("actual-size", 0)),
        backing=str(backing) if backing else None,
    )


def info(path: Path, fmt: str | None, *, what: str, force_share: bool = True) -> ImageInfo:
    """Read an image's metadata. `force_share` (-U) reads images a running QEMU has open;
    without it the call fails with Conflict `volume_attached` when one does (a cheap probe)."""
    argv = [QEMU_IMG, "info", "--output=json"]
    if force_share:
        argv.append("-U")
    if fmt is not None:
        argv += ["-f", fmt]
    out = run_command([*argv, str(path)], what=what, advice=_ADVICE, timeout_s=60)
    try:
        return parse_info(out)
    except (ValueError, KeyError, TypeError) as err:
        raise HostError(f"{what} failed: qemu-img info gave unreadable output: {err}") from err


def create(
    path: Path,
    fmt: str,
    size_bytes: int,
    *,
    what: str,
    backing: Path | None = None,
    backing_format: str | None = None,
) -> None:
    """A new image; with `backing`, a qcow2 overlay that reads unwritten clusters from it.
    The backing path is written as given, so pass an absolute one."""
    argv = [QEMU_IMG, "create", "-q", "-f", fmt]
    if backing is not None:
        argv += ["-b", str(backing), "-F", backing_format or "qcow2"]
    run_command([*argv, str(path), str(size_bytes)], what=what, advice=_ADVICE, timeout_s=120)


def convert(
    source: Path,
    source_format: str,
    dest: Path,
    dest_format: str,
    *,
    what: str,
    snapshot_tag: str | None = None,
) -> None:
    """A full, independent copy of `source` (its backing chain flattened), sparse where zero.
    With `snapshot_tag`, of the qcow2 internal snapshot of that name: read with -U, since a
    running QEMU may hold the image's lock and an internal snapshot never changes."""
    argv = [QEMU_IMG, "convert"]
    if snapshot_tag is not None:
        argv += ["-U", "-l", f"snapshot.name={snapshot_tag}"]
    argv += ["-f", source_format, "-O", dest_format, str(source), str(dest)]
    run_command(argv, what=what, advice=_ADVICE)


def resize(path: Path, fmt: str, size_bytes: int, *, what: str) -> None:
    """Grow an image to `size_bytes` (qemu-img itself refuses to shrink without --shrink)."""
    argv = [QEMU_IMG, "resize", "-q", "-f", fmt, str(path), str(size_bytes)]
    run_command(argv, what=what, advice=_ADVICE, timeout_s=120)
