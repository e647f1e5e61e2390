"""Snapshots, dirty bitmaps and full backups of disks that no QEMU has open, with qemu-img.

The agent uses this for stopped guests and detached volumes; a running guest's disks go
through QMP (corral.agent.compute.qemu.snapshots/backups). `OfflineDisks` is the seam: the real
one is `QemuImgDisks`; the fake compute backend brings a modelled one.

- Snapshots are qcow2 internal snapshots (`qemu-img snapshot -c/-a/-d`), taken disk by disk:
  a failure removes the tag again from the disks that got it (all or nothing). qemu-img would
  make a second snapshot with a name that exists, so an existing tag is refused first.
- Revert drops the disk's dirty bitmaps first: qcow2 refuses to go back while bitmaps are
  active, and they could not say which clusters the revert changed (the next backup is full).
  A memory snapshot reverts here as disk-only: the guest boots from the disks as they were.
- Backups of a stopped disk are full (`qemu-img convert`, backing chains flattened) into
  `<target>.partial`, renamed when complete. Afterwards the disk's bitmap is made (or reset),
  so the next backup of the running guest can be incremental on top of this point: the guest
  is stopped, so no write can fall between the copy and the reset. An inconsistent bitmap (QEMU
  was killed) is replaced by a fresh one.
- Every command without -U takes the image's lock: a disk some QEMU has open gives Conflict
  `volume_attached` instead of a damaged image.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.agent.compute.snapshot_rules import (
    BitmapState,
    choose_backup_kind,
    partial_path,
)
from corral.agent.storage import qemu_img
from corral.agent.storage.host import fsync_path, run_command
from corral.agent.storage.reverter import Reverter
from corral.errors import Conflict, HostError, NotFound
from corral.model.rpc import DiskAttachment
from corral.model.rpc_snapshots import BackupRequest, BackupResult
from corral.model.snapshot import BackupKind

log = logging.getLogger(__name__)

_ADVICE = "check the disk image and the filesystem it is on"


class OfflineDisks(Protocol):
    """Snapshots and backups of disks no guest has open (synchronous: run in a thread)."""

    def create_snapshot(self, disks: Sequence[DiskAttachment], tag: str) -> None:
        """Take `tag` on every disk (qcow2, writable), all or nothing."""
        ...

    def revert_snapshot(self, disks: Sequence[DiskAttachment], tag: str) -> bool:
        """Bring every disk back to `tag`; True when the snapshot held memory (not restored)."""
        ...

    def delete_snapshot(self, disks: Sequence[DiskAttachment], tag: str) -> None:
        """Drop `tag` from every disk that has it."""
        ...

    def snapshot_tags(self, disks: Sequence[DiskAttachment]) -> dict[str, list[str]]:
        """Disk id -> tags of its snapshots (a raw disk has none)."""
        ...

    def backup(self, req: BackupRequest) -> BackupResult:
        """A full backup of `req.disk` to `req.target_path`."""
        ...

    def abort_backup(self, req: BackupRequest) -> None:
        """Remove what a backup of `req` wrote (idempotent)."""
        ...


@dataclass(frozen=True)
class ImageState:
    """An image's internal snapshots (tag -> vmstate bytes, in order) and bitmaps."""

    snapshots: list[tuple[str, int]] = field(default_factory=list)
    bitmaps: dict[str, BitmapState] = field(default_factory=dict)

    def tags(self) -> list[str]:
        """Snapshot names in the order they were taken."""
        return [name for name, _ in self.snapshots]

    def vmstate_bytes(self, tag: str) -> int:
        """Memory state size of snapshot `tag` (0: disk-only or absent)."""
        return next((size for name, size in self.snapshots if name == tag), 0)


def parse_image_state(text: str) -> ImageState:
    """Snapshots and bitmaps from `qemu-img info --output=json` of a qcow2 image. A bitmap
    flagged `in-use` on an image nobody has open was never stored back: inconsistent."""
    data: dict[str, Any] = json.loads(text)
    snapshots = [
        (str(s["name"]), int(s.get("vm-state-size", 0)))
        for s in data.get("snapshots", [])
        if isinstance(s, dict) and "name" in s
    ]
    specific = data.get("format-specific", {}).get("data", {})
    bitmaps: dict[str, BitmapState] = {}
    for bitmap in specific.get("bitmaps", []) if isinstance(specific, dict) else []:
        if isinstance(bitmap, dict) and isinstance(bitmap.get("name"), str):
            flags = bitmap.get("flags", [])
            bitmaps[bitmap["name"]] = (
                BitmapState.INCONSISTENT if "in-use" in flags else BitmapState.OK
            )
    return ImageState(snapshots, bitmaps)


def _require_file(disk: DiskAttachment) -> Path:
    path = Path(disk.path)
    if not path.is_file():
        raise NotFound(
            f"the file {disk.path} of disk {disk.id!r} does not exist on this host",
            code="unknown_volume",
        )
    return path


def image_state(disk: DiskAttachment) -> ImageState:
    """What a disk's file holds (a raw disk: nothing). Read with -U: no lock is needed."""
    path = _require_file(disk)
    if disk.format != "qcow2":
        return ImageState()
    argv = [qemu_img.QEMU_IMG, "info", "--output=json", "-U", "-f", "qcow2", str(path)]
    what = f"reading disk {disk.id!r} ({path})"
    out = run_command(argv, what=what, advice=_ADVICE, timeout_s=60)
    try:
        return parse_image_state(out)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise HostError(f"{what} failed: qemu-img gave unreadable output: {err}") from err


def _run(disk: DiskAttachment, what: str, argv: list[str]) -> None:
    run_command(
        [qemu_img.QEMU_IMG, *argv],
        what=f"{what} on disk {disk.id!r} ({disk.path})",
        advice=_ADVICE,
        timeout_s=600,
    )


def _snapshot(disk: DiskAttachment, flag: str, tag: str, what: str) -> None:
    # `qemu-img snapshot` has no -f: --image-opts names the format instead of probing it.
    image = f"driver=qcow2,file.filename={disk.path.replace(',', ',,')}"
    _run(disk, what, ["snapshot", "-q", "--image-opts", flag, tag, image])


def _bitmap(disk: DiskAttachment, action: str, name: str) -> None:
    what = f"{action.removeprefix('--')} of dirty bitmap {name!r}"
    _run(disk, what, ["bitmap", action, "-f", "qcow2", disk.path, name])


def _undo_snapshot(disk: DiskAttachment, tag: str) -> Callable[[], None]:
    return lambda: _snapshot(disk, "-d", tag, f"undoing snapshot {tag!r}")


class QemuImgDisks:
    """OfflineDisks with qemu-img on the disks' files."""

    def __repr__(self) -> str:
        return "QemuImgDisks()"

    def create_snapshot(self, disks: Sequence[DiskAttachment], tag: str) -> None:
        """qemu-img snapshot -c on each disk; a failure undoes the ones done."""
        taken = [d.id for d in disks if tag in image_state(d).tags()]
        if taken:
            raise Conflict(
                f"disk(s) {', '.join(repr(t) for t in taken)} already have a snapshot {tag!r}; "
                "delete it first or choose another name",
                code="snapshot_exists",
            )
        with Reverter() as reverter:
            for disk in disks:
                _snapshot(disk, "-c", tag, f"taking snapshot {tag!r}")
                reverter.add(f"snapshot {tag!r} of disk {disk.id!r}", _undo_snapshot(disk, tag))

    def revert_snapshot(self, disks: Sequence[DiskAttachment], tag: str) -> bool:
        """Check every disk has `tag`, then drop bitmaps and qemu-img snapshot -a, disk by disk."""
        states = {d.id: image_state(d) for d in disks}
        missing = [d.id for d in disks if tag not in states[d.id].tags()]
        if missing:
            raise NotFound(
                f"disk(s) {', '.join(repr(m) for m in missing)} have no snapshot {tag!r}",
                code="unknown_snapshot",
            )
        for disk in disks:
            for bitmap in states[disk.id].bitmaps:
                log.info("disk %s: dropping bitmap %s before a revert", disk.id, bitmap)
                _bitmap(disk, "--remove", bitmap)
            _snapshot(disk, "-a", tag, f"reverting to snapshot {tag!r}")
        return any(states[d.id].vmstate_bytes(tag) > 0 for d in disks)

    def delete_snapshot(self, disks: Sequence[DiskAttachment], tag: str) -> None:
        """qemu-img snapshot -d for each snapshot named `tag` (absent: nothing to do)."""
        for disk in disks:
            if disk.format != "qcow2" or not Path(disk.path).is_file():
                continue
            for _ in range(image_state(disk).tags().count(tag)):
                _snapshot(disk, "-d", tag, f"deleting snapshot {tag!r}")

    def snapshot_tags(self, disks: Sequence[DiskAttachment]) -> dict[str, list[str]]:
        """Tags per disk from qemu-img info."""
        return {disk.id: image_state(disk).tags() for disk in disks}

    def backup(self, req: BackupRequest) -> BackupResult:
        """Full copy with qemu-img convert, then the bitmap made or reset (module docstring)."""
        started = time.monotonic()
        disk = req.disk
        source = _require_file(disk)
        target = Path(req.target_path)
        if target.exists():  # done by an earlier call whose answer was lost
            return backup_result(req, BackupKind.FULL, "", started)
        state = image_state(disk)
        bitmap = state.bitmaps.get(req.bitmap, BitmapState.MISSING)
        parent_exists = req.parent_path is not None and os.path.isfile(req.parent_path)
        kind, reason = choose_backup_kind(
            req, parent_exists=parent_exists, bitmap=bitmap, running=False
        )
        partial = partial_path(req.target_path)
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            qemu_img.convert(
                source, disk.format, partial, "qcow2", what=f"backing up disk {disk.id!r}"
            )
            fsync_path(partial)
            os.rename(partial, target)
            fsync_path(target.parent)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if disk.format == "qcow2":
            if bitmap is BitmapState.INCONSISTENT:
                _bitmap(disk, "--remove", req.bitmap)
            _bitmap(disk, "--clear" if bitmap is BitmapState.OK else "--add", req.bitmap)
        return backup_result(req, kind, reason, started)

    def abort_backup(self, req: BackupRequest) -> None:
        """Remove the partial and target files. A completed point had reset the bitmap, so
        throwing it away drops the bitmap too (the next backup is full)."""
        partial_path(req.target_path).unlink(missing_ok=True)
        target = Path(req.target_path)
        if not target.exists():
            return
        target.unlink()
        disk = req.disk
        if (
            disk.format == "qcow2"
            and Path(disk.path).is_file()
            and req.bitmap in image_state(disk).bitmaps
        ):
            _bitmap(disk, "--remove", req.bitmap)


def backup_result(
    req: BackupRequest, kind: BackupKind, reason: str, started: float
) -> BackupResult:
    """The BackupResult of the complete file at `req.target_path`."""
    info = qemu_img.info(Path(req.target_path), "qcow2", what=f"reading backup {req.target_path}")
    return BackupResult(
        kind=kind.value,
        target_path=req.target_path,
        file_size_bytes=os.stat(req.target_path).st_size,
        virtual_size_bytes=info.virtual_size,
        duration_ms=(time.monotonic() - started) * 1000,
        reason=reason,
    )
