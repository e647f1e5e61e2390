"""Full and incremental backups of a running guest's disk, driven by a persistent dirty bitmap.

A restore point is a qcow2 file; an incremental one names the previous point as its backing
file, so `qemu-img convert` of any point flattens the chain into the disk as it was.

- Full: a new qcow2 file without backing; `blockdev-backup sync=full` copies the disk as it is
  at the job's start (copy-before-write). The disk's bitmap `req.bitmap` (persistent, so it is
  written into the qcow2 at QEMU exit) is made in the same `transaction` as the job starts, so
  no write falls between the point and the bitmap; an existing one is reset by the job itself.
- Incremental: `qemu-img create -b <parent>` (the file names its parent for restore), opened
  by QEMU with `backing: null` so that QEMU writes only the dirty clusters into it and reads
  nothing from the parent; `blockdev-backup sync=incremental`.
- Every job runs with `bitmap-mode=on-success`, `auto-finalize=false`, `auto-dismiss=false`.
  When the copy is done the job waits in "pending"; `job-finalize` is when QEMU resets the
  bitmap to the writes made during the job (a job cancelled or failed before that merges its
  bitmap back: no change is lost). Then the target node is deleted (QEMU flushes and closes
  the qcow2), `<target>.partial` is fsynced and renamed to the target, and only then is the
  concluded job dismissed: a file under the target's name is always a complete point, and a
  concluded job is the marker that a point was finalized but maybe not yet published.
- The job id and target node name derive from the disk's node and the target path, so an
  agent that restarted finds a backup its predecessor started: `backup()` with the same
  request adopts and finishes it, `abort_backup()` cancels it.
- Where the bitmap may have been reset for a point that is then thrown away (abort of a
  finalized job, or a `.partial` left with no job to say how far it got), the bitmap is dropped:
  the next backup is full rather than an incremental on a base that misses changes.
- A bitmap that is missing or inconsistent (QEMU was killed: it never stored it), a missing
  parent, or a raw disk make the backup full, with `reason` (see snapshot_rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from corral.agent.compute.base import ProgressFn
from corral.agent.compute.qemu.block_jobs import (
    JobInfo,
    cancel_job,
    dismiss_job,
    node_states,
    query_jobs,
    wait_for_job,
)
from corral.agent.compute.qemu.blockdev import AttachedDisk, named_nodes, node_names
from corral.agent.compute.qemu.hotplug import query_disks
from corral.agent.compute.qemu.qmp import GuestMonitor
from corral.agent.compute.qemu.snapshots import BACKUP_JOB_PREFIX
from corral.agent.compute.snapshot_rules import (
    BitmapState,
    check_backup_request,
    choose_backup_kind,
    partial_path,
)
from corral.agent.storage import qemu_img
from corral.agent.storage.host import fsync_path
from corral.agent.storage.offline_snapshots import backup_result
from corral.errors import Conflict, HostError
from corral.model.rpc_snapshots import BackupRequest, BackupResult
from corral.model.snapshot import BackupKind

log = logging.getLogger(__name__)

_PENDING = "pending"


@dataclass(frozen=True)
class BackupNames:
    """QEMU names of one backup: its job and its target node (short: node names < 32 bytes)."""

    node: str  # the disk's format node
    job_id: str
    target_node: str


_DIGEST_CHARS = 12


def backup_names(disk_id: str, target_path: str) -> BackupNames:
    """Names derived from the disk and the target path (stable across agent restarts)."""
    node = node_names(disk_id)[0]
    digest = hashlib.sha256(target_path.encode()).hexdigest()[:_DIGEST_CHARS]
    return BackupNames(node, f"{BACKUP_JOB_PREFIX}{node}-{digest}", f"corral-bk-{digest}")


def parse_backup_job(job_id: str) -> tuple[str, str] | None:
    """(disk node, target node) of a job named by backup_names; None for any other job."""
    if not job_id.startswith(BACKUP_JOB_PREFIX) or len(job_id) <= len(BACKUP_JOB_PREFIX) + 13:
        return None
    node, dash, digest = job_id[len(BACKUP_JOB_PREFIX) :].rpartition("-")
    if not dash or len(digest) != _DIGEST_CHARS:
        return None
    return node, f"corral-bk-{digest}"


def _kind_of_file(path: str) -> BackupKind:
    info = qemu_img.info(Path(path), "qcow2", what=f"reading backup {path}")
    return BackupKind.INCREMENTAL if info.backing else BackupKind.FULL


async def run_backup(
    monitor: GuestMonitor,
    guest: str,
    req: BackupRequest,
    progress: ProgressFn,
    *,
    speed_bps: int = 0,
) -> BackupResult:
    """Back up disk `req.disk` of the running guest to `req.target_path` (module docstring)."""
    check_backup_request(req)
    started = time.monotonic()
    names = backup_names(req.disk.id, req.target_path)
    disk = {d.id: d for d in await query_disks(monitor)}.get(req.disk.id)
    if disk is None:
        raise Conflict(
            f"disk {req.disk.id!r} is not attached to guest {guest!r}; back it up as a "
            "detached volume instead",
            code="disk_not_attached",
        )
    jobs = await query_jobs(monitor)
    own = jobs.get(names.job_id)
    if own is not None:
        log.info("guest %s: adopting backup job %s", guest, names.job_id)
        if not own.concluded:  # this agent's speed limit applies from now on
            with contextlib.suppress(HostError):
                await monitor.execute(
                    "block-job-set-speed", {"device": names.job_id, "speed": speed_bps}
                )
        partial = partial_path(req.target_path)
        written = str(partial) if partial.exists() else req.target_path
        kind = await asyncio.to_thread(_kind_of_file, written)
        reason = ""
        if kind is BackupKind.FULL and req.parent_path is not None:
            reason = "finished a full backup that an earlier agent process had started"
        job = Job(monitor, guest, req, names, kind, reason, bitmap_added=False)
        return await job.finish(progress, started)
    if os.path.exists(req.target_path):  # done by an earlier call whose answer was lost
        kind = await asyncio.to_thread(_kind_of_file, req.target_path)
        return await asyncio.to_thread(backup_result, req, kind, "", started)
    untrusted = await _clear_leftovers(monitor, guest, jobs, names, req)
    job = await _start(monitor, guest, req, names, disk, speed_bps, untrusted=untrusted)
    return await job.finish(progress, started)


async def _clear_leftovers(
    monitor: GuestMonitor,
    guest: str,
    jobs: dict[str, JobInfo],
    names: BackupNames,
    req: BackupRequest,
) -> bool:
    """Refuse while another backup of the disk runs; clear what crashed agents left (concluded
    jobs of this disk, target nodes, a `.partial` of this target). True when the bitmap may
    have been reset for a point that never got published (it must not be trusted)."""
    untrusted = False
    for job in jobs.values():
        parsed = parse_backup_job(job.id)
        if parsed is None or parsed[0] != names.node:
            continue
        if not job.concluded:
            raise Conflict(
                f"disk {req.disk.id!r} of guest {guest!r} is being backed up by job "
                f"{job.id!r}; wait for it, or abort that backup first",
                code="backup_running",
            )
        untrusted = untrusted or job.error is None
        await dismiss_job(monitor, job.id)
        await _delete_node(monitor, parsed[1])
    partial = partial_path(req.target_path)
    if partial.exists():
        untrusted = True
        partial.unlink()
    await _delete_node(monitor, names.target_node)
    return untrusted


async def _start(
    monitor: GuestMonitor,
    guest: str,
    req: BackupRequest,
    names: BackupNames,
    disk: AttachedDisk,
    speed_bps: int,
    *,
    untrusted: bool,
) -> Job:
    states = await node_states(monitor)
    state = states.get(names.node)
    bitmap = state.bitmaps.get(req.bitmap) if state is not None else None
    if bitmap is not None and bitmap.busy:
        raise Conflict(
            f"dirty bitmap {req.bitmap!r} of disk {req.disk.id!r} is in use by another job",
            code="backup_running",
        )
    status = (
        BitmapState.MISSING
        if bitmap is None
        else BitmapState.UNTRUSTED
        if untrusted
        else BitmapState.INCONSISTENT
        if bitmap.inconsistent
        else BitmapState.OK
    )
    parent_exists = req.parent_path is not None and os.path.isfile(req.parent_path)
    kind, reason = choose_backup_kind(req, parent_exists=parent_exists, bitmap=status, running=True)
    if reason:
        log.info("guest %s: disk %s: full backup: %s", guest, req.disk.id, reason)
    partial = partial_path(req.target_path)
    await asyncio.to_thread(_create_target, req, kind, partial, disk.size_bytes)
    use_bitmap = req.disk.format == "qcow2"
    actions: list[dict[str, object]] = []
    bitmap_added = False
    try:
        await monitor.execute(
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": names.target_node,
                "file": {"driver": "file", "filename": str(partial)},
                "backing": None,
            },
        )
        if use_bitmap and status is not BitmapState.OK:
            if status in (BitmapState.INCONSISTENT, BitmapState.UNTRUSTED):
                await monitor.execute(
                    "block-dirty-bitmap-remove", {"node": names.node, "name": req.bitmap}
                )
            add = {"node": names.node, "name": req.bitmap, "persistent": True}
            actions.append({"type": "block-dirty-bitmap-add", "data": add})
        backup: dict[str, object] = {
            "job-id": names.job_id,
            "device": names.node,
            "target": names.target_node,
            "sync": "incremental" if kind is BackupKind.INCREMENTAL else "full",
            "auto-finalize": False,
            "auto-dismiss": False,
        }
        if use_bitmap:
            backup.update({"bitmap": req.bitmap, "bitmap-mode": "on-success"})
        if speed_bps > 0:
            backup["speed"] = speed_bps
        actions.append({"type": "blockdev-backup", "data": backup})
        await monitor.execute("transaction", {"actions": actions})
        bitmap_added = len(actions) == 2
    except BaseException as err:
        try:
            await asyncio.shield(_delete_node(monitor, names.target_node))
        finally:
            _remove_files(req)
        if isinstance(err, HostError):
            raise HostError(
                f"backup of disk {req.disk.id!r} of guest {guest!r} could not start: {err.message}",
                code="backup_failed",
            ) from err
        raise
    return Job(monitor, guest, req, names, kind, reason, bitmap_added=bitmap_added)


def _create_target(req: BackupRequest, kind: BackupKind, partial: Path, size: int) -> None:
    partial.parent.mkdir(parents=True, exist_ok=True)
    parent = Path(req.parent_path) if kind is BackupKind.INCREMENTAL and req.parent_path else None
    qemu_img.create(
        partial,
        "qcow2",
        size,
        what=f"creating backup file {partial}",
        backing=parent,
        backing_format="qcow2" if parent else None,
    )


@dataclass
class Job:
    """A started (or adopted) backup job of one disk, until its file is published."""

    monitor: GuestMonitor
    guest: str
    req: BackupRequest
    names: BackupNames
    kind: BackupKind
    reason: str
    bitmap_added: bool  # made by this backup: dropped again if the backup fails

    async def finish(self, progress: ProgressFn, started: float) -> BackupResult:
        """Wait for the copy, finalize, publish the file (module docstring); a cancelled
        caller cancels the backup (its cleanup still runs to the end)."""
        work = asyncio.ensure_future(self._complete(progress))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            raise
        return await asyncio.to_thread(backup_result, self.req, self.kind, self.reason, started)

    async def _complete(self, progress: ProgressFn) -> None:
        what = f"backing up disk {self.req.disk.id!r} of guest {self.guest!r}"

        def report(job: JobInfo) -> None:
            if job.total > 0:
                progress(min(job.current / job.total, 1.0), f"{what}: {job.current} bytes")

        finalized = False
        try:
            job = await wait_for_job(self.monitor, self.names.job_id, (_PENDING,), report)
            if not job.concluded:
                await self.monitor.execute("job-finalize", {"id": self.names.job_id})
                job = await wait_for_job(self.monitor, self.names.job_id)
            if job.error is not None:
                raise HostError(f"{what} failed: {job.error}", code="backup_failed")
            finalized = True
            await _delete_node(self.monitor, self.names.target_node)  # flush and close
            await asyncio.to_thread(_publish, self.req)
            await dismiss_job(self.monitor, self.names.job_id)
        except HostError as err:
            await asyncio.shield(self._abandon(finalized))
            if err.code == "job_lost":  # abort_backup dismissed it
                raise HostError(f"{what} was aborted", code="backup_aborted") from err
            raise
        except BaseException:
            await asyncio.shield(self._abandon(finalized))
            raise
        progress(1.0, f"{what}: done")

    async def _abandon(self, finalized: bool) -> None:
        """Undo a backup that was not published: cancel the job (before finalize its bitmap
        merges back), drop the target node and files; drop the bitmap when this backup made
        it (it lacks history) or when it was finalized (it was reset for a point now gone)."""
        try:
            await cancel_job(self.monitor, self.names.job_id)
            await dismiss_job(self.monitor, self.names.job_id)
            await _delete_node(self.monitor, self.names.target_node)
            if self.bitmap_added or finalized:
                await _remove_bitmap(self.monitor, self.names.node, self.req.bitmap)
        except HostError as err:
            log.error(
                "guest %s: cleaning up backup %s failed: %s",
                self.guest,
                self.req.target_path,
                err.message,
            )
        finally:
            _remove_files(self.req)


def _publish(req: BackupRequest) -> None:
    """Make the closed `.partial` durable, then give it the target's name."""
    partial = partial_path(req.target_path)
    target = Path(req.target_path)
    if partial.exists():
        fsync_path(partial)
        os.rename(partial, target)
    elif not target.exists():
        raise HostError(
            f"the file of backup {req.target_path} vanished while QEMU wrote it",
            code="backup_failed",
        )
    fsync_path(target.parent)


def _remove_files(req: BackupRequest) -> None:
    partial_path(req.target_path).unlink(missing_ok=True)
    Path(req.target_path).unlink(missing_ok=True)


async def _node_exists(monitor: GuestMonitor, node: str) -> bool:
    return node in named_nodes(await monitor.execute("query-named-block-nodes", {"flat": True}))


async def _delete_node(monitor: GuestMonitor, node: str) -> None:
    """blockdev-del `node` if it exists (gone meanwhile, e.g. by a concurrent abort: fine)."""
    if not await _node_exists(monitor, node):
        return
    try:
        await monitor.execute("blockdev-del", {"node-name": node})
    except HostError:
        if await _node_exists(monitor, node):
            raise


async def _remove_bitmap(monitor: GuestMonitor, node: str, bitmap: str) -> None:
    state = (await node_states(monitor)).get(node)
    if state is not None and bitmap in state.bitmaps:
        try:
            await monitor.execute("block-dirty-bitmap-remove", {"node": node, "name": bitmap})
        except HostError:
            state = (await node_states(monitor)).get(node)
            if state is not None and bitmap in state.bitmaps:
                raise


async def abort_backup(monitor: GuestMonitor, guest: str, req: BackupRequest) -> None:
    """Cancel the backup of `req` if its job is still there, drop its node and files.

    A job cancelled before it was finalized merges its bitmap back (the next incremental stays
    correct). When the job had been finalized, or there is no job but a file (its history is
    unknown), the bitmap may have been reset for this point: it is dropped with it, so the
    next backup is full.
    """
    check_backup_request(req)
    names = backup_names(req.disk.id, req.target_path)
    job = await cancel_job(monitor, names.job_id)
    if job is None:
        reset = partial_path(req.target_path).exists() or os.path.exists(req.target_path)
    else:
        reset = job.error is None
        await dismiss_job(monitor, names.job_id)
    await _delete_node(monitor, names.target_node)
    _remove_files(req)
    if reset:
        log.info(
            "guest %s: discarding backup %s; dropping bitmap %s of disk %s (the next backup "
            "of it is full)",
            guest,
            req.target_path,
            req.bitmap,
            req.disk.id,
        )
        await _remove_bitmap(monitor, names.node, req.bitmap)
