"""Snapshot work of one instance, run in the instance's queue right after its lifecycle pass.

The queue keeps one pass per instance at a time, so a snapshot is never taken while the same
instance is being started, stopped or hot-plugged, and a revert that shuts the guest down and
boots it again cannot race the instance's reconciler: it calls that reconciler itself.

Work comes from the running snapshot operations of the instance (oldest first) and, level-
triggered, from snapshots flagged for deletion. A failure of the agent ends the operation with
the agent's code; a TemporaryError retries the pass later (taking a snapshot is all or nothing
on the agent's side, so a retry starts clean). A pass cut short by a server stop is finished or
rolled back at the next start (controller/recovery.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from corral.bus.agent_link import AgentAPI
from corral.controller.recorder import Recorder
from corral.controller.run import set_condition
from corral.controller.settings import ControllerSettings
from corral.controller.snapshot_disks import (
    disk_formats,
    snapshot_attachments,
    snapshot_event,
)
from corral.controller.snapshot_plan import (
    NEEDS_QCOW2,
    SNAPSHOT_CREATE,
    SNAPSHOT_DELETE,
    SNAPSHOT_KINDS,
    SNAPSHOT_REVERT,
    RevertStep,
    plan_revert,
    revert_problem,
    snapshot_disk_problem,
    snapshot_volumes,
)
from corral.errors import CorralError, TemporaryError
from corral.model.instance import Instance, InstanceState
from corral.model.operation import OperationError
from corral.model.rpc import GuestObservation, GuestRunState
from corral.model.rpc_snapshots import SnapshotRequest
from corral.model.snapshot import SnapshotState
from corral.store import instances as instance_store
from corral.store import operations as operation_store
from corral.store import snapshots as snapshot_store
from corral.store import volumes as volume_store
from corral.store.operations import OperationRecord
from corral.store.snapshots import SnapshotRecord
from corral.store.types import utcnow

log = logging.getLogger(__name__)

TARGET_KIND = "instance"
_ALIVE = (GuestRunState.RUNNING, GuestRunState.PAUSED)
REVERT_REASON = "SnapshotRevert"
Lifecycle = Callable[[str], Awaitable[None]]


class Refused(CorralError):
    """The snapshot work cannot be done (wrong state, disks, agent refusal): the operation
    fails with this code and message."""


class SnapshotRunner:
    """Takes, reverts to and deletes the snapshots of one instance at a time."""

    def __init__(
        self,
        recorder: Recorder,
        agent: AgentAPI,
        settings: ControllerSettings,
        lifecycle: Lifecycle,
    ) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self._settings = settings
        self._lifecycle = lifecycle

    def __repr__(self) -> str:
        return "SnapshotRunner()"

    async def run(self, instance: str) -> None:
        """Do the instance's pending snapshot work, oldest request first."""
        with self._db.transaction() as session:
            records = [
                record
                for record in operation_store.running_operations(session, TARGET_KIND, instance)
                if record.operation.kind in SNAPSHOT_KINDS
            ]
            deleting = [
                record.name
                for record in snapshot_store.list_snapshot_records(session, instance)
                if record.snapshot.state == SnapshotState.DELETING
            ]
        for record in records:
            await self._one(instance, record)
        followed = {
            r.params.get("snapshot") for r in records if r.operation.kind == SNAPSHOT_DELETE
        }
        for name in deleting:
            if name not in followed:  # flagged, but its operation is gone (or was failed)
                await self._delete(instance, name, [])

    async def _one(self, instance: str, record: OperationRecord) -> None:
        op = record.operation
        name = str(record.params.get("snapshot", ""))
        try:
            if op.kind == SNAPSHOT_CREATE:
                await self._create(instance, name, op.id)
            elif op.kind == SNAPSHOT_REVERT:
                await self._revert(instance, name, op.id)
            else:
                await self._delete(instance, name, [op.id])
        except Refused as err:
            log.info("%s of %s/%s: %s", op.kind, instance, name, err.message)
            self._recorder.finish(op.id, error=OperationError(code=err.code, message=err.message))

    # -- helpers -----------------------------------------------------------------------------
    def _read(self, instance: str, name: str) -> tuple[Instance | None, SnapshotRecord | None]:
        with self._db.transaction() as session:
            found = instance_store.find_instance(session, instance)
            snapshot = snapshot_store.find_snapshot(session, instance, name)
        return (found.instance if found else None), snapshot

    async def _observe(self, instance: str) -> GuestObservation:
        try:
            return await self._agent.observe(instance)
        except TemporaryError:
            raise
        except (CorralError, OSError) as err:
            raise TemporaryError(f"could not observe guest {instance!r}: {err}") from err

    def _progress(self, op_id: str, progress: float, message: str) -> None:
        self._recorder.progress([op_id], progress, message)

    # -- create ------------------------------------------------------------------------------
    async def _create(self, instance: str, name: str, op_id: str) -> None:
        target, record = self._read(instance, name)
        if record is None or record.snapshot.state != SnapshotState.PENDING:
            state = record.snapshot.state.value if record else "gone"
            raise Refused(f"snapshot {name!r} of {instance!r} is {state}", code="invalid_state")
        try:
            await self._take(instance, target, record, op_id)
        except Refused as err:
            with self._db.transaction() as session:
                snapshot_store.mark_snapshot_failed(session, instance, name, err.message)
                failed = snapshot_store.find_snapshot(session, instance, name)
            if failed is not None:
                snapshot_event(self._recorder, "snapshot.state", failed.snapshot)
            raise

    async def _take(
        self, instance: str, target: Instance | None, record: SnapshotRecord, op_id: str
    ) -> None:
        name, snapshot = record.name, record.snapshot
        if target is None or target.deleting:
            raise Refused(f"instance {instance!r} is being deleted", code="invalid_state")
        seen = await self._observe(instance)
        alive = seen.state in _ALIVE
        if snapshot.memory and not alive:
            raise Refused(
                f"the guest of {instance!r} is not running; a snapshot with memory needs a "
                "running guest (take a disk-only snapshot, or start it first)",
                code="invalid_state",
            )
        with self._db.transaction() as session:
            disks = disk_formats(session, target)
            problem = snapshot_disk_problem(instance, disks)
            if problem is not None:
                raise Refused(problem, code=NEEDS_QCOW2)
            volumes = snapshot_volumes(disks)
            attachments, missing = snapshot_attachments(session, target, volumes)
            parent = snapshot_store.current_snapshot(session, instance)
        if missing:
            raise Refused(
                f"volume(s) {', '.join(missing)} of {instance!r} do not exist (yet)",
                code="invalid_state",
            )
        absent = [a.serial for a in attachments if alive and a.id not in seen.disks]
        if absent:
            raise Refused(
                f"volume(s) {', '.join(absent)} are not attached to the running guest of "
                f"{instance!r} yet; try again when they are",
                code="invalid_state",
            )
        with self._db.transaction() as session:
            snapshot_store.begin_snapshot(session, instance, name, parent, volumes)
        what = "disks and memory" if snapshot.memory else "disks"
        how = "of the running guest" if alive else "of the stopped instance"
        self._progress(op_id, 0.2, f"taking snapshot {name} ({what} {how})")
        request = SnapshotRequest(
            instance=instance,
            tag=record.tag,
            disks=attachments,
            memory=snapshot.memory,
            quiesce=record.quiesce,
        )
        try:
            result = await self._agent.snapshot_create(request)
        except TemporaryError:
            raise
        except CorralError as err:
            raise Refused(
                f"snapshot {name!r} of {instance!r} could not be taken: {err.message}",
                code=err.code,
            ) from err
        with self._db.transaction() as session:
            ready = snapshot_store.mark_snapshot_ready(
                session,
                instance,
                name,
                quiesced=result.quiesced,
                duration_ms=result.duration_ms,
                vmstate_bytes=result.vmstate_bytes,
            )
        snapshot_event(self._recorder, "snapshot.state", ready)
        quiesced = ", quiesced" if result.quiesced else ""
        self._recorder.finish(
            op_id,
            message=f"snapshot {name} of {instance} taken ({what}{quiesced}, "
            f"{result.duration_ms:.0f} ms)",
            result={"snapshot": ready.model_dump(mode="json")},
        )
        log.info("snapshot %s of %s taken in %.0f ms", name, instance, result.duration_ms)

    # -- revert ------------------------------------------------------------------------------
    async def _revert(self, instance: str, name: str, op_id: str) -> None:
        target, record = self._read(instance, name)
        if target is None or target.deleting:
            raise Refused(f"instance {instance!r} is being deleted", code="invalid_state")
        if record is None or record.snapshot.state != SnapshotState.READY:
            state = record.snapshot.state.value if record else "gone"
            raise Refused(f"snapshot {name!r} of {instance!r} is {state}", code="invalid_state")
        snapshot = record.snapshot
        seen = await self._observe(instance)
        with self._db.transaction() as session:
            now = snapshot_volumes(disk_formats(session, target))
            attachments, missing = snapshot_attachments(session, target, snapshot.volumes)
        problem = revert_problem(instance, name, snapshot.volumes, now, memory=snapshot.memory)
        if problem is None and missing:
            problem = f"volume(s) {', '.join(missing)} of snapshot {name!r} do not exist any more"
        if problem is not None:
            raise Refused(problem, code="invalid_state")
        plan = plan_revert(memory=snapshot.memory, guest_alive=seen.state in _ALIVE)
        request = SnapshotRequest(instance=instance, tag=record.tag, disks=attachments)
        started = time.monotonic()
        try:
            for step in plan.steps:
                if step == RevertStep.SHUTDOWN:
                    self._progress(op_id, 0.2, f"shutting the guest down to revert to {name}")
                    await self._shutdown(instance)
                elif step == RevertStep.REVERT_DISKS:
                    self._progress(op_id, 0.5, f"putting the disks back to snapshot {name}")
                    await self._agent.snapshot_revert(request)
                elif step == RevertStep.LOAD_MEMORY:
                    self._progress(op_id, 0.4, f"loading snapshot {name} into the running guest")
                    await self._agent.snapshot_revert(request.model_copy(update={"memory": True}))
        except TemporaryError:
            raise
        except CorralError as err:
            raise Refused(
                f"revert of {instance!r} to snapshot {name!r} failed: {err.message}",
                code=err.code,
            ) from err
        with self._db.transaction() as session:
            snapshot_store.set_current(session, instance, name)
            current = snapshot_store.get_snapshot(session, instance, name).snapshot
        snapshot_event(self._recorder, "snapshot.reverted", current)
        seconds = time.monotonic() - started
        message = f"instance {instance} is back at snapshot {name} ({seconds:.1f} s)"
        error: OperationError | None = None
        if RevertStep.START in plan.steps:
            self._progress(op_id, 0.7, "booting the guest again")
            error, note = await self._start_again(instance)
            message = f"{message}; {note}"
        if plan.note:
            message = f"{message}; {plan.note}"
        self._recorder.finish(
            op_id,
            error=error,
            message=error.message if error else message,
            result={
                "snapshot": current.model_dump(mode="json"),
                "memory_restored": RevertStep.LOAD_MEMORY in plan.steps,
            },
        )
        log.info("instance %s reverted to snapshot %s", instance, name)

    async def _shutdown(self, instance: str) -> None:
        """Stop the guest for an offline revert, recording it so that nothing takes the exit
        for a crash: `stopping` first (a crash of the server from here on makes the next
        pass boot the guest again), then `stopped`."""
        with self._db.transaction() as session:
            record = instance_store.get_instance(session, instance)
        generation = record.instance.generation
        before = record.instance.status
        stopping = before.model_copy(deep=True)
        stopping.state = InstanceState.STOPPING
        self._recorder.write_status(instance, stopping, before, generation)
        await self._agent.shutdown(instance, self._settings.shutdown_timeout_s)
        seen = await self._agent.observe(instance)
        if seen.state != GuestRunState.ABSENT:
            log.warning("guest %s still %s after shutdown; killing it", instance, seen.state)
            await self._agent.kill(instance)
        stopped = stopping.model_copy(deep=True)
        stopped.state = InstanceState.STOPPED
        stopped.pid = None
        stopped.ready = False
        set_condition(
            stopped, "Ready", False, REVERT_REASON, "stopped to revert to a snapshot", utcnow()
        )
        self._recorder.write_status(instance, stopped, stopping, generation)

    async def _start_again(self, instance: str) -> tuple[OperationError | None, str]:
        """Boot the guest after an offline revert (the instance's reconcile does it)."""
        try:
            await self._lifecycle(instance)
        except CorralError as err:
            # The periodic resync tries again: the spec still says running.
            return None, f"the guest is being started again ({err.message})"
        except Exception as err:  # a bug must not make the queue redo the whole revert
            log.exception("booting %s again after a revert failed", instance)
            return None, f"the guest is being started again ({type(err).__name__})"
        with self._db.transaction() as session:
            found = instance_store.find_instance(session, instance)
        if found is None:
            return None, "the instance was deleted meanwhile"
        status = found.instance.status
        if status.state == InstanceState.RUNNING and status.ready:
            return None, "the guest runs again"
        if status.state == InstanceState.FAILED:
            failed = status.condition("Failed")
            detail = failed.message if failed else "it failed"
            return (
                OperationError(
                    code="launch_failed",
                    message=f"the disks of {instance!r} are back at the snapshot, but the guest "
                    f"did not start again: {detail}",
                ),
                "",
            )
        return None, f"the guest is {status.state.value}"

    # -- delete ------------------------------------------------------------------------------
    async def _delete(self, instance: str, name: str, op_ids: list[str]) -> None:
        target, record = self._read(instance, name)
        if record is None:
            for op_id in op_ids:
                self._recorder.finish(op_id, message=f"snapshot {name} is gone")
            return
        if target is None or target.deleting:
            return  # the instance's deletion drops every snapshot (DropSnapshots)
        with self._db.transaction() as session:
            records = volume_store.find_volumes(session, record.snapshot.volumes)
            # Tags go from the volumes this instance has, and from volumes nobody has now;
            # a volume attached elsewhere since is left alone (another guest has it open).
            usable = [
                v
                for v in record.snapshot.volumes
                if v in records
                and records[v].instance in (None, instance)
                and records[v].volume.status.attached_to in (None, instance)
            ]
            attachments, _missing = snapshot_attachments(session, target, usable)
        for op_id in op_ids:
            self._progress(op_id, 0.3, f"removing snapshot {name} from the disks")
        if attachments:
            request = SnapshotRequest(instance=instance, tag=record.tag, disks=attachments)
            try:
                await self._agent.snapshot_delete(request)
            except TemporaryError:
                raise
            except CorralError as err:
                message = f"snapshot {name!r} of {instance!r} could not be deleted: {err.message}"
                with self._db.transaction() as session:
                    snapshot_store.mark_snapshot_failed(session, instance, name, message)
                    failed = snapshot_store.get_snapshot(session, instance, name).snapshot
                snapshot_event(self._recorder, "snapshot.state", failed)
                for op_id in op_ids:
                    error = OperationError(code=err.code, message=message)
                    self._recorder.finish(op_id, error=error)
                return
        with self._db.transaction() as session:
            snapshot_store.remove_snapshot(session, instance, name)
        snapshot_event(self._recorder, "snapshot.deleted", record.snapshot)
        for op_id in op_ids:
            self._recorder.finish(op_id, message=f"snapshot {name} of {instance} is deleted")
        log.info("snapshot %s of %s deleted", name, instance)
