"""Internal snapshots of a running guest's qcow2 disks, through its QMP monitor.

- Disk-only: one QMP `transaction` of `blockdev-snapshot-internal-sync` on every snapshot disk's
  format node, so all disks are taken at the same instant or none is. With `quiesce`, the guest
  agent freezes the guest's filesystems around it (`guest-fsfreeze-freeze`, thawed in `finally`);
  a guest whose agent does not answer or cannot freeze gets a crash-consistent snapshot
  (`quiesced=False`), not an error. It costs the same for a 1 GiB and a 10 GiB disk: qcow2 only
  bumps cluster refcounts (milliseconds).
- With memory: a `snapshot-save` job (vmstate in the first snapshot disk, devices = all of them);
  QEMU pauses the guest while it writes RAM and resumes it. No freeze: the snapshot holds the
  guest's RAM, and a guest saved frozen would come back frozen.
- Revert of a memory snapshot: a `snapshot-load` job; the guest goes on from the snapshot's
  instant, no reboot. qcow2 cannot go back to a snapshot while dirty bitmaps are active (and a
  bitmap would not know which clusters the revert changed), so the disks' bitmaps are dropped
  first: the next backup of each disk is full. The guest agent session is reset (qemu-ga inside
  went back in time too).
- Delete: `blockdev-snapshot-delete-internal-sync` per disk that has the tag (frees the vmstate
  too). A tag that is absent is a no-op.

Jobs left concluded by a crashed agent are dismissed, and running ones awaited, before any
snapshot change ("settle"), so an answer never misses a snapshot a job is still writing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from corral.agent.compute.qemu.block_jobs import (
    JobInfo,
    NodeState,
    dismiss_job,
    node_states,
    query_jobs,
    wait_for_job,
)
from corral.agent.compute.qemu.blockdev import node_names
from corral.agent.compute.qemu.guest_agent import GuestAgent
from corral.agent.compute.qemu.hotplug import query_disks
from corral.agent.compute.qemu.qmp import GuestMonitor
from corral.agent.compute.snapshot_rules import check_tag, snapshot_disks
from corral.errors import Conflict, GuestAgentError, HostError, NotFound
from corral.model.rpc import DiskAttachment
from corral.model.rpc_snapshots import SnapshotRequest, SnapshotResult

log = logging.getLogger(__name__)

SNAPSHOT_JOB_PREFIX = "corral-snap-"
BACKUP_JOB_PREFIX = "corral-backup-"
_SNAPSHOT_JOB_TYPES = ("snapshot-save", "snapshot-load", "snapshot-delete")
# The guest agent may be absent (a guest without qemu-ga): ask briefly before freezing.
_AGENT_PROBE_S = 2.0
_FREEZE_TIMEOUT_S = 60.0
_THAW_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class _Target:
    """A snapshot disk and its format node in this QEMU."""

    disk: DiskAttachment
    node: str


async def _targets(
    monitor: GuestMonitor, guest: str, disks: Sequence[DiskAttachment], action: str
) -> list[_Target]:
    """The format nodes of `disks`, which must be attached to the guest now (same file)."""
    attached = {d.id: d for d in await query_disks(monitor)}
    missing = [disk.id for disk in disks if disk.id not in attached]
    if missing:
        raise Conflict(
            f"cannot {action} on guest {guest!r}: disk(s) {', '.join(repr(m) for m in missing)} "
            "are not attached to it; attach them, or leave them out of the request",
            code="disk_not_attached",
        )
    return [_Target(disk, node_names(disk.id)[0]) for disk in disks]


async def settle_snapshot_jobs(monitor: GuestMonitor) -> None:
    """Wait for snapshot jobs that are still running (from an earlier, maybe crashed, agent)
    and dismiss every concluded one; a failed one is logged."""
    for job in (await query_jobs(monitor)).values():
        if job.type not in _SNAPSHOT_JOB_TYPES:
            continue
        if not job.concluded:
            job = await wait_for_job(monitor, job.id)
        if job.error:
            log.warning("guest %s: earlier job %s failed: %s", monitor.name, job.id, job.error)
        await dismiss_job(monitor, job.id)


async def _run_job(monitor: GuestMonitor, command: str, arguments: dict[str, object]) -> JobInfo:
    """Start a snapshot job, wait until it concluded, dismiss it, return how it ended. A
    cancelled caller leaves the waiting running (QEMU finishes the job anyway; the next
    snapshot call would wait for it)."""
    job_id = str(arguments["job-id"])
    await monitor.execute(command, arguments)

    async def conclude() -> JobInfo:
        try:
            return await wait_for_job(monitor, job_id)
        finally:
            await dismiss_job(monitor, job_id)

    return await asyncio.shield(asyncio.ensure_future(conclude()))


# -- quiesce ---------------------------------------------------------------------------------


async def thaw_if_frozen(agent: GuestAgent, guest: str) -> None:
    """Thaw filesystems an interrupted snapshot left frozen (no-op without a guest agent)."""
    try:
        status = await agent.call("guest-fsfreeze-status", timeout_s=_AGENT_PROBE_S)
    except GuestAgentError:
        return
    if status == "frozen":
        log.warning("guest %s: filesystems were left frozen; thawing them", guest)
        await _thaw(agent, guest)


async def _freeze(agent: GuestAgent, guest: str) -> bool:
    """Freeze the guest's filesystems; False when the guest agent cannot (then the snapshot is
    crash-consistent)."""
    freezing = False
    try:
        await agent.call("guest-ping", timeout_s=_AGENT_PROBE_S)
        if await agent.call("guest-fsfreeze-status", timeout_s=_AGENT_PROBE_S) == "frozen":
            await _thaw(agent, guest)  # left frozen by an interrupted snapshot
        freezing = True
        count = await agent.call("guest-fsfreeze-freeze", timeout_s=_FREEZE_TIMEOUT_S)
    except GuestAgentError as err:
        if freezing and err.code == "guest_agent_timeout":
            # It may have frozen after all and answered late: never leave a guest frozen.
            await _thaw(agent, guest)
        log.info("guest %s: snapshot not quiesced: %s", guest, err.message)
        return False
    log.debug("guest %s: froze %s filesystem(s)", guest, count)
    return True


async def _thaw(agent: GuestAgent, guest: str) -> None:
    try:
        await agent.call("guest-fsfreeze-thaw", timeout_s=_THAW_TIMEOUT_S)
    except GuestAgentError as err:
        log.error(
            "guest %s: could not thaw its filesystems (%s); the next snapshot call retries",
            guest,
            err.message,
        )


# -- take / revert / delete / list ---------------------------------------------------------------


async def take_snapshot(
    monitor: GuestMonitor, agent: GuestAgent, guest: str, req: SnapshotRequest
) -> SnapshotResult:
    """Snapshot `req.tag` on the guest's disks, all or none (see the module docstring)."""
    check_tag(req.tag)
    targets = await _targets(
        monitor, guest, snapshot_disks(req.disks, memory=req.memory), "take a snapshot"
    )
    await settle_snapshot_jobs(monitor)
    states = await node_states(monitor)
    taken = [t.disk.id for t in targets if _state(states, t).snapshot(req.tag)]
    if taken:
        raise Conflict(
            f"guest {guest!r} already has a snapshot {req.tag!r} on disk(s) "
            f"{', '.join(repr(d) for d in taken)}; delete it first or choose another name",
            code="snapshot_exists",
        )
    started = time.monotonic()
    quiesced = False
    vmstate_bytes = 0
    if req.memory:
        await _save_with_memory(monitor, guest, req.tag, targets)
        found = _state(await node_states(monitor), targets[0]).snapshot(req.tag)
        vmstate_bytes = found.vmstate_bytes if found else 0
    else:
        if req.quiesce:
            quiesced = await _freeze(agent, guest)
        try:
            await _transaction(monitor, guest, req.tag, targets)
        finally:
            if quiesced:
                await asyncio.shield(_thaw(agent, guest))
    return SnapshotResult(
        tag=req.tag,
        memory=req.memory,
        quiesced=quiesced,
        running=True,
        duration_ms=(time.monotonic() - started) * 1000,
        vmstate_bytes=vmstate_bytes,
    )


async def _transaction(
    monitor: GuestMonitor, guest: str, tag: str, targets: Sequence[_Target]
) -> None:
    actions = [
        {"type": "blockdev-snapshot-internal-sync", "data": {"device": t.node, "name": tag}}
        for t in targets
    ]
    try:
        await monitor.execute("transaction", {"actions": actions}, timeout_s=60.0)
    except HostError as err:
        raise HostError(
            f"snapshot {tag!r} of guest {guest!r} failed, no disk was changed: {err.message}",
            code="snapshot_failed",
        ) from err


async def _save_with_memory(
    monitor: GuestMonitor, guest: str, tag: str, targets: Sequence[_Target]
) -> None:
    arguments: dict[str, object] = {
        "job-id": f"{SNAPSHOT_JOB_PREFIX}save-{tag}",
        "tag": tag,
        "vmstate": targets[0].node,
        "devices": [t.node for t in targets],
    }
    job = await _run_job(monitor, "snapshot-save", arguments)
    if job.error is not None:
        await _drop_tag(monitor, tag, targets)  # a failed save may have left some disks tagged
        raise HostError(
            f"memory snapshot {tag!r} of guest {guest!r} failed: {job.error}",
            code="snapshot_failed",
        )


async def revert_snapshot(
    monitor: GuestMonitor, agent: GuestAgent, guest: str, req: SnapshotRequest
) -> None:
    """Load memory snapshot `req.tag` into the running guest (see the module docstring)."""
    check_tag(req.tag)
    targets = await _targets(
        monitor, guest, snapshot_disks(req.disks, memory=False), "revert a snapshot"
    )
    await settle_snapshot_jobs(monitor)
    states = await node_states(monitor)
    missing = [t.disk.id for t in targets if not _state(states, t).snapshot(req.tag)]
    if missing:
        raise NotFound(
            f"guest {guest!r} has no snapshot {req.tag!r} on disk(s) "
            f"{', '.join(repr(m) for m in missing)} (attached after it was taken?)",
            code="unknown_snapshot",
        )
    holder = next((t for t in targets if _vmstate(states, t, req.tag) > 0), None)
    if holder is None:
        raise Conflict(
            f"snapshot {req.tag!r} of guest {guest!r} holds no memory state, so its disks "
            "cannot change under the running guest: stop the instance first, then revert",
            code="invalid_state",
        )
    backups = [
        j.id
        for j in (await query_jobs(monitor)).values()
        if j.id.startswith(BACKUP_JOB_PREFIX) and not j.concluded
    ]
    if backups:
        raise Conflict(
            f"guest {guest!r} has a backup running ({', '.join(backups)}); wait for it or "
            "abort it before reverting",
            code="backup_running",
        )
    was_running = await monitor.query_status() == "running"
    await _drop_bitmaps(monitor, states, targets)
    arguments: dict[str, object] = {
        "job-id": f"{SNAPSHOT_JOB_PREFIX}load-{req.tag}",
        "tag": req.tag,
        "vmstate": holder.node,
        "devices": [t.node for t in targets],
    }
    job = await _run_job(monitor, "snapshot-load", arguments)
    await agent.close()  # qemu-ga in the guest went back in time: sync afresh
    if was_running and await monitor.query_status() != "running":
        await monitor.execute("cont")
    if job.error is not None:
        raise HostError(
            f"reverting guest {guest!r} to snapshot {req.tag!r} failed: {job.error}. The "
            "guest may be in a broken state: revert again, or restart it",
            code="snapshot_revert_failed",
        )


async def _drop_bitmaps(
    monitor: GuestMonitor, states: dict[str, NodeState], targets: Sequence[_Target]
) -> None:
    for target in targets:
        for bitmap in _state(states, target).bitmaps.values():
            log.info(
                "guest %s: dropping dirty bitmap %s of disk %s before a revert (the next "
                "backup of it is full)",
                monitor.name,
                bitmap.name,
                target.disk.id,
            )
            await monitor.execute(
                "block-dirty-bitmap-remove", {"node": target.node, "name": bitmap.name}
            )


async def delete_snapshot(
    monitor: GuestMonitor, agent: GuestAgent, guest: str, req: SnapshotRequest
) -> None:
    """Drop `req.tag` from each of `req.disks` (all attached) that has it. With `quiesce`, also
    thaw filesystems that an interrupted snapshot left frozen (the rollback path)."""
    check_tag(req.tag)
    targets = await _targets(monitor, guest, req.disks, "delete a snapshot")
    await settle_snapshot_jobs(monitor)
    if req.quiesce:
        await thaw_if_frozen(agent, guest)
    await _drop_tag(monitor, req.tag, targets, strict=True)


async def _drop_tag(
    monitor: GuestMonitor, tag: str, targets: Sequence[_Target], *, strict: bool = False
) -> None:
    """Delete every snapshot named `tag` on the targets; `strict` raises, else logs."""
    states = await node_states(monitor)
    for target in targets:
        for _ in range(sum(1 for s in _state(states, target).snapshots if s.name == tag)):
            try:
                await monitor.execute(
                    "blockdev-snapshot-delete-internal-sync",
                    {"device": target.node, "name": tag},
                    timeout_s=60.0,
                )
            except HostError as err:
                if strict:
                    raise HostError(
                        f"cannot delete snapshot {tag!r} from disk {target.disk.id!r} of guest "
                        f"{monitor.name!r}: {err.message}",
                        code="snapshot_delete_failed",
                    ) from err
                log.error("guest %s: cannot undo snapshot %s: %s", monitor.name, tag, err)


async def snapshot_tags(
    monitor: GuestMonitor, agent: GuestAgent, guest: str, req: SnapshotRequest
) -> dict[str, list[str]]:
    """Disk id -> snapshot tags, for `req.disks` (all attached; raw ones have none). It waits
    for snapshot jobs still running and, with `quiesce`, thaws filesystems an interrupted
    snapshot left frozen: this is the call that recovery after a crash makes."""
    targets = await _targets(monitor, guest, req.disks, "list snapshots")
    await settle_snapshot_jobs(monitor)
    if req.quiesce:
        await thaw_if_frozen(agent, guest)
    states = await node_states(monitor)
    return {t.disk.id: [s.name for s in _state(states, t).snapshots] for t in targets}


def _state(states: dict[str, NodeState], target: _Target) -> NodeState:
    return states.get(target.node) or NodeState(target.node)


def _vmstate(states: dict[str, NodeState], target: _Target, tag: str) -> int:
    found = _state(states, target).snapshot(tag)
    return found.vmstate_bytes if found else 0
