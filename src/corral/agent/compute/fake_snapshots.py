"""Snapshots and backups as the fake compute backend models them, running or stopped.

The model keeps, per disk file, its snapshot tags (with or without memory) and its dirty
bitmaps (consistent or not) in one JSON file under the runtime dir, so they outlive a guest run
and a backend object, like qcow2 metadata does. It keeps the QEMU backend's promises: the same
rules (snapshot_rules), the same error codes, all or nothing, a revert drops the disks'
bitmaps, a killed guest leaves its bitmaps inconsistent, a stopped guest's backups are full.

Guest data is not modelled: a backup file is a sparse raw file of the disk's size (any pool
driver can restore it), and its reported size is modelled (a full point: the disk file's
allocation; an incremental one: a few clusters).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corral.agent.compute.snapshot_rules import (
    BitmapState,
    choose_backup_kind,
    partial_path,
)
from corral.errors import Conflict, NotFound
from corral.model.rpc import DiskAttachment
from corral.model.rpc_snapshots import BackupRequest, BackupResult, SnapshotRequest
from corral.model.snapshot import BackupKind

MODEL_FILE = "fake-disks.json"
POINTS_KEY = "#points"  # target path -> kind of the points written (disk paths are absolute)
QCOW2_METADATA_BYTES = 196_608
INCREMENTAL_DATA_BYTES = 4 * 65_536  # what a fake guest "writes" between two backups
_QCOW2_MAGIC = b"QFI\xfb"


def disk_size(path: Path) -> int:
    """The virtual size of a qcow2 image (its header) or the length of a raw one."""
    try:
        with path.open("rb") as image:
            header = image.read(32)
    except FileNotFoundError as err:
        raise NotFound(
            f"disk file {path} does not exist on this host", code="unknown_volume"
        ) from err
    if header[:4] == _QCOW2_MAGIC and len(header) == 32:
        return int.from_bytes(header[24:32], "big")
    return path.stat().st_size


class FakeDiskModel:
    """Per disk path: snapshot tags -> {"memory": bool}, bitmaps -> BitmapState; and the kind
    of each backup point written."""

    def __init__(self, runtime_dir: Path) -> None:
        self.file = runtime_dir / MODEL_FILE

    def __repr__(self) -> str:
        return f"FakeDiskModel(file={str(self.file)!r})"

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.file.read_text())
        except FileNotFoundError:
            return {}
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.file)

    @staticmethod
    def _disk(data: dict[str, Any], path: str) -> dict[str, Any]:
        record: dict[str, Any] = data.setdefault(path, {"snapshots": {}, "bitmaps": {}})
        return record

    # -- snapshots ------------------------------------------------------------------------------

    def take(self, disks: Sequence[DiskAttachment], tag: str, *, memory: bool) -> None:
        """Record `tag` on every disk (memory state on the first), or refuse a tag in use."""
        data = self._load()
        taken = [d.id for d in disks if tag in self._disk(data, d.path)["snapshots"]]
        if taken:
            raise Conflict(
                f"disk(s) {', '.join(repr(t) for t in taken)} already have a snapshot {tag!r}; "
                "delete it first or choose another name",
                code="snapshot_exists",
            )
        for index, disk in enumerate(disks):
            self._disk(data, disk.path)["snapshots"][tag] = {"memory": memory and index == 0}
        self._save(data)

    def revert(self, disks: Sequence[DiskAttachment], tag: str, *, running: bool) -> bool:
        """Go back to `tag` (dropping bitmaps); True when it held memory. Running, only a
        memory snapshot can be reverted (Conflict `invalid_state` otherwise)."""
        data = self._load()
        missing = [d.id for d in disks if tag not in self._disk(data, d.path)["snapshots"]]
        if missing:
            raise NotFound(
                f"disk(s) {', '.join(repr(m) for m in missing)} have no snapshot {tag!r}",
                code="unknown_snapshot",
            )
        memory = any(self._disk(data, d.path)["snapshots"][tag]["memory"] for d in disks)
        if running and not memory:
            raise Conflict(
                f"snapshot {tag!r} holds no memory state, so its disks cannot change under the "
                "running guest: stop the instance first, then revert",
                code="invalid_state",
            )
        for disk in disks:
            self._disk(data, disk.path)["bitmaps"] = {}
        self._save(data)
        return memory

    def delete(self, disks: Sequence[DiskAttachment], tag: str) -> None:
        """Forget `tag` wherever it is."""
        data = self._load()
        for disk in disks:
            self._disk(data, disk.path)["snapshots"].pop(tag, None)
        self._save(data)

    def tags(self, disks: Sequence[DiskAttachment]) -> dict[str, list[str]]:
        """Disk id -> tags."""
        data = self._load()
        return {d.id: list(data.get(d.path, {}).get("snapshots", {})) for d in disks}

    # -- bitmaps and backups --------------------------------------------------------------------

    def mark_inconsistent(self, paths: Sequence[str]) -> None:
        """What kill -9 of QEMU does to the bitmaps of its disks."""
        data = self._load()
        for path in paths:
            bitmaps = self._disk(data, path)["bitmaps"]
            for name in bitmaps:
                bitmaps[name] = BitmapState.INCONSISTENT.value
        self._save(data)

    def backup(self, req: BackupRequest, *, running: bool) -> BackupResult:
        """Write the (modelled) point and make or reset the disk's bitmap."""
        started = time.monotonic()
        size = disk_size(Path(req.disk.path))
        target = Path(req.target_path)
        data = self._load()
        points: dict[str, str] = data.setdefault(POINTS_KEY, {})
        if target.exists():  # a retried call whose answer was lost
            kind = BackupKind(points.get(req.target_path, BackupKind.FULL.value))
            return _result(req, kind, "", size, started, QCOW2_METADATA_BYTES)
        bitmaps = self._disk(data, req.disk.path)["bitmaps"]
        state = BitmapState(bitmaps.get(req.bitmap, BitmapState.MISSING.value))
        parent_exists = req.parent_path is not None and os.path.isfile(req.parent_path)
        kind, reason = choose_backup_kind(
            req, parent_exists=parent_exists, bitmap=state, running=running
        )
        partial = partial_path(req.target_path)
        partial.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as handle:
            handle.truncate(size)
        os.rename(partial, target)
        points[req.target_path] = kind.value
        if req.disk.format == "qcow2":
            bitmaps[req.bitmap] = BitmapState.OK.value
        self._save(data)
        if kind is BackupKind.FULL:
            written = os.stat(req.disk.path).st_blocks * 512 + QCOW2_METADATA_BYTES
        else:
            written = INCREMENTAL_DATA_BYTES + QCOW2_METADATA_BYTES
        return _result(req, kind, reason, size, started, written)

    def abort(self, req: BackupRequest) -> None:
        """Remove the point's files; a completed point takes the bitmap with it."""
        partial_path(req.target_path).unlink(missing_ok=True)
        target = Path(req.target_path)
        if target.exists():
            target.unlink()
            data = self._load()
            data.setdefault(POINTS_KEY, {}).pop(req.target_path, None)
            self._disk(data, req.disk.path)["bitmaps"].pop(req.bitmap, None)
            self._save(data)


def _result(
    req: BackupRequest, kind: BackupKind, reason: str, size: int, started: float, written: int
) -> BackupResult:
    return BackupResult(
        kind=kind.value,
        target_path=req.target_path,
        file_size_bytes=written,
        virtual_size_bytes=size,
        duration_ms=(time.monotonic() - started) * 1000,
        reason=reason,
    )


class FakeOfflineDisks:
    """OfflineDisks on the fake's model (what the agent uses for stopped fake guests)."""

    def __init__(self, runtime_dir: Path) -> None:
        self.model = FakeDiskModel(runtime_dir)

    def __repr__(self) -> str:
        return f"FakeOfflineDisks({self.model!r})"

    def create_snapshot(self, disks: Sequence[DiskAttachment], tag: str) -> None:
        """Record a disk-only snapshot."""
        for disk in disks:
            disk_size(Path(disk.path))  # a missing file fails as qemu-img would
        self.model.take(disks, tag, memory=False)

    def revert_snapshot(self, disks: Sequence[DiskAttachment], tag: str) -> bool:
        """Disk-only revert; True when the snapshot held memory."""
        return self.model.revert(disks, tag, running=False)

    def delete_snapshot(self, disks: Sequence[DiskAttachment], tag: str) -> None:
        """Forget the tag."""
        self.model.delete(disks, tag)

    def snapshot_tags(self, disks: Sequence[DiskAttachment]) -> dict[str, list[str]]:
        """Tags per disk."""
        return self.model.tags(disks)

    def backup(self, req: BackupRequest) -> BackupResult:
        """A full point."""
        return self.model.backup(req, running=False)

    def abort_backup(self, req: BackupRequest) -> None:
        """Remove its files."""
        self.model.abort(req)


def snapshot_result_fields(req: SnapshotRequest, memory_mib: int) -> dict[str, object]:
    """What a fake running snapshot reports: quiesced unless memory (the fake guest has an
    agent that can freeze), and a vmstate of a third of its RAM."""
    return {
        "tag": req.tag,
        "memory": req.memory,
        "quiesced": req.quiesce and not req.memory,
        "running": True,
        "duration_ms": 1.0,
        "vmstate_bytes": memory_mib * 1024 * 1024 // 3 if req.memory else 0,
    }
