"""Carrying out the planned steps through the agent, writing status after each one.

Each step leaves the status true to what happened so far, so a reconcile cut short (an
exception, a server stop) is picked up by the next one from what the store and agent say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from corral.bus.agent_link import AgentAPI
from corral.controller.disk_steps import DiskProblem, DiskSteps
from corral.controller.plan import (
    DISK_FAILED_REASON,
    DISKS_CONDITION,
    READY_TIMEOUT_REASON,
    Adopt,
    AttachDisk,
    DeleteRecord,
    DetachDisk,
    DropSnapshots,
    Forget,
    Kill,
    Launch,
    MarkDeleting,
    MarkStopped,
    RecordExit,
    ReleaseDisks,
    RestartBackoff,
    Shutdown,
    Step,
    WaitReady,
    restart_delay_s,
)
from corral.controller.recorder import Recorder, status_event_data
from corral.controller.run import ReconcileRun, StepFailed, set_condition
from corral.controller.settings import ControllerSettings
from corral.controller.snapshot_disks import drop_instance_snapshots
from corral.errors import (
    Conflict,
    CorralError,
    GuestAgentError,
    InvalidInput,
    LaunchError,
    PermanentError,
    TemporaryError,
)
from corral.model.image import ImageState
from corral.model.instance import InstanceState, PowerState
from corral.model.operation import OperationError
from corral.model.rpc import CloudInitSeed, GuestRunState, LaunchRequest
from corral.store import images as image_store
from corral.store import instances as instance_store
from corral.store.types import utcnow

log = logging.getLogger(__name__)

# A run shorter than this counts towards the crash-loop backoff of on_crash=restart.
_CRASH_LOOP_WINDOW_S = 600.0


class StepExecutor:
    """Runs one step of a plan for one instance."""

    def __init__(
        self,
        recorder: Recorder,
        agent: AgentAPI,
        settings: ControllerSettings,
        interruptible: Callable[[str, Awaitable[object]], Awaitable[object]],
        disks: DiskSteps,
    ) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self._settings = settings
        self._interruptible = interruptible
        self._disks = disks

    async def run(self, run: ReconcileRun, step: Step) -> None:
        """Execute `step`; StepFailed ends the plan, TemporaryError retries it later."""
        match step:
            case Launch():
                await self._launch(run)
            case WaitReady():
                await self._wait_ready(run)
            case Adopt():
                self._adopt(run)
            case Shutdown(timeout_s=timeout_s):
                await self._shutdown(run, timeout_s)
            case Kill():
                self._set_state(run, InstanceState.STOPPING)
                self._progress(run, 0.3, "stopping the guest at once")
                await self._agent.kill(run.name)
                run.guest_disks = None
            case Forget():
                await self._forget(run)
            case MarkStopped():
                self._mark_stopped(run)
            case MarkDeleting():
                self._set_state(run, InstanceState.DELETING)
                self._progress(run, 0.1, "deleting")
            case RecordExit(reason=reason, restart=restart):
                self._record_exit(run, reason, restart)
            case RestartBackoff():
                delay = restart_delay_s(run.status.restarts)
                if delay > 0:
                    log.info("restarting %s in %.0fs (crash-loop backoff)", run.name, delay)
                    await self._interruptible(run.name, asyncio.sleep(delay))
            case AttachDisk(volume=volume):
                self._progress(run, 0.5, f"attaching volume {volume}")
                await self._hotplug(run, self._disks.attach(run, volume))
            case DetachDisk(disk_id=device):
                self._progress(run, 0.5, f"detaching disk {device}")
                await self._hotplug(run, self._disks.detach(run, device))
            case DropSnapshots():
                self._progress(run, 0.6, "removing the snapshots")
                await drop_instance_snapshots(self._recorder, self._agent, run.instance)
            case ReleaseDisks():
                self._progress(run, 0.7, "releasing the volumes")
                await self._disks.release(run)
            case DeleteRecord():
                self._delete_record(run)

    # -- helpers -----------------------------------------------------------------------------
    def _write(self, run: ReconcileRun) -> None:
        before = run.instance.status
        self._recorder.write_status(run.name, run.status, before, run.generation)
        run.instance = run.instance.model_copy(update={"status": run.status.model_copy(deep=True)})

    def _set_state(self, run: ReconcileRun, state: InstanceState) -> None:
        if run.status.state != state:
            run.status.state = state
            self._write(run)

    def _progress(self, run: ReconcileRun, progress: float, message: str) -> None:
        self._recorder.progress(run.operation_ids, progress, message)

    def _fail(self, run: ReconcileRun, code: str, reason: str, message: str) -> StepFailed:
        now = utcnow()
        run.status.state = InstanceState.FAILED
        run.status.pid = None
        run.status.ready = False
        set_condition(run.status, "Failed", True, reason, message, now)
        set_condition(run.status, "Ready", False, reason, "", now)
        self._write(run)
        return StepFailed(code, message)

    # -- steps -------------------------------------------------------------------------------
    async def _hotplug(self, run: ReconcileRun, work: Awaitable[None]) -> None:
        try:
            await work
        except DiskProblem as err:
            now = utcnow()
            set_condition(run.status, DISKS_CONDITION, False, DISK_FAILED_REASON, err.message, now)
            self._write(run)
            raise StepFailed(err.code, err.message) from err
        disks = run.status.condition(DISKS_CONDITION)
        if disks is not None and not disks.status:
            set_condition(run.status, DISKS_CONDITION, True, "Attached", "", utcnow())
            self._write(run)

    async def _launch(self, run: ReconcileRun) -> None:
        request = self._launch_request(run)
        now = utcnow()
        status = run.status
        status.state = InstanceState.STARTING
        status.pid = None
        status.ready = False
        status.host = self._settings.host_name
        set_condition(status, "Ready", False, "Starting", "the guest is booting", now)
        if (failed := status.condition("Failed")) is not None and failed.status:
            set_condition(status, "Failed", False, "Relaunched", "", now)
        if (exited := status.condition("GuestExited")) is not None and exited.status:
            set_condition(status, "GuestExited", False, "Relaunched", exited.message, now)
        self._write(run)
        self._progress(run, 0.1, "launching the guest")
        try:
            observation = await self._agent.launch(request)
        except (PermanentError, InvalidInput) as err:
            # QEMU refused, or the agent's own checks did: retrying cannot help until the spec
            # changes. The agent promises to leave nothing behind; forget makes sure of files.
            with contextlib.suppress(CorralError):
                await self._agent.forget(run.name)
            message = err.message
            if isinstance(err, LaunchError) and err.stderr_tail:
                message = f"{message}\n{err.stderr_tail.rstrip()}"
            raise self._fail(run, "launch_failed", "LaunchFailed", message) from err
        except Conflict as err:
            raise TemporaryError(f"launch of {run.name!r} conflicted: {err.message}") from err
        status.pid = observation.pid
        status.started_at = observation.started_at or utcnow()
        status.accel = observation.accel
        launched = {disk.id for disk in request.disks}
        run.guest_disks = set(observation.disks) or launched
        if (disks := status.condition(DISKS_CONDITION)) is not None and not disks.status:
            set_condition(status, DISKS_CONDITION, True, "Launched", "", utcnow())
        self._write(run)
        self._progress(run, 0.5, "waiting for the guest agent")

    def _launch_request(self, run: ReconcileRun) -> LaunchRequest:
        spec = run.spec
        with self._db.transaction() as session:
            image = image_store.find_image(session, spec.image)
        if image is None:
            raise self._fail(
                run,
                "unknown_image",
                "ImageMissing",
                f"image {spec.image!r} does not exist; build it (`corral image build`) and "
                f"start {run.name!r} again",
            )
        if image.state != ImageState.READY or not image.kernel:
            raise self._fail(
                run,
                "image_not_ready",
                "ImageNotReady",
                f"image {spec.image!r} is {image.state.value}; wait for its build (or build it "
                f"again) and start {run.name!r} again",
            )
        try:
            disks = self._disks.launch_disks(run)
        except DiskProblem as err:
            raise self._fail(run, err.code, err.reason, err.message) from err
        seed = None
        if image.cloud_init:
            seed = CloudInitSeed(
                instance_id=run.instance.uid,
                hostname=run.name,
                ssh_keys=list(spec.ssh_keys),
                user_data=spec.user_data,
            )
        return LaunchRequest(
            name=run.name,
            uid=run.instance.uid,
            cpus=spec.cpus,
            memory_mib=spec.memory_mib,
            machine=spec.machine.value,
            kernel=image.kernel,
            initrd=image.initrd,
            cmdline=image.cmdline,
            disks=disks,
            cloud_init=seed,
        )

    async def _wait_ready(self, run: ReconcileRun) -> None:
        timeout = self._settings.ready_timeout_s
        try:
            await self._interruptible(run.name, self._agent.wait_ready(run.name, timeout))
        except GuestAgentError as err:
            seen = await self._agent.observe(run.name)
            if seen.state not in (GuestRunState.RUNNING, GuestRunState.PAUSED):
                # It died while booting: the next pass applies the on_crash policy.
                raise TemporaryError(f"guest {run.name!r} exited while booting", delay=0.0) from err
            now = utcnow()
            run.status.state = InstanceState.RUNNING
            run.status.ready = False
            set_condition(run.status, "Ready", False, READY_TIMEOUT_REASON, err.message, now)
            self._write(run)
            raise StepFailed(
                "guest_agent_error",
                f"the guest agent of {run.name!r} did not answer within {timeout:g}s "
                f"({err.message}); the guest keeps running: see `corral console {run.name} "
                "--log`",
            ) from err
        now = utcnow()
        status = run.status
        status.state = InstanceState.RUNNING
        status.ready = True
        status.ready_at = now
        if status.create_to_ready_ms is None:
            elapsed = now - run.instance.created_at
            status.create_to_ready_ms = round(elapsed.total_seconds() * 1000, 1)
        set_condition(status, "Ready", True, "GuestAgentAnswered", "", now)
        self._write(run)
        self._progress(run, 0.9, "the guest is ready")

    def _adopt(self, run: ReconcileRun) -> None:
        seen, status = run.observation, run.status
        same_run = status.pid is not None and status.pid == seen.pid
        status.pid = seen.pid
        status.started_at = seen.started_at or status.started_at
        status.accel = seen.accel or status.accel
        status.host = self._settings.host_name
        if same_run and status.ready:
            status.state = InstanceState.RUNNING
        else:
            status.ready = False
            status.state = InstanceState.STARTING
            set_condition(status, "Ready", False, "Adopted", "found running; checking", utcnow())
        self._write(run)
        log.info("adopted running guest %s (pid %s)", run.name, seen.pid)

    async def _shutdown(self, run: ReconcileRun, timeout_s: float) -> None:
        self._set_state(run, InstanceState.STOPPING)
        self._progress(run, 0.3, f"shutting down the guest (ACPI, up to {timeout_s:g}s)")
        await self._agent.shutdown(run.name, timeout_s)
        # The agent quits a guest that ignores ACPI; should one still be there, end it here
        # rather than leave a delete or stop hanging on a guest that will not go.
        seen = await self._agent.observe(run.name)
        if seen.state != GuestRunState.ABSENT:
            log.warning("guest %s still %s after shutdown; killing it", run.name, seen.state)
            self._progress(run, 0.5, "the guest did not power off; stopping it at once")
            await self._agent.kill(run.name)
        run.guest_disks = None

    async def _forget(self, run: ReconcileRun) -> None:
        try:
            await self._agent.forget(run.name)
        except Conflict as err:
            raise TemporaryError(f"guest {run.name!r} is still running: {err.message}") from err

    def _mark_stopped(self, run: ReconcileRun) -> None:
        status = run.status
        status.state = InstanceState.STOPPED
        status.pid = None
        status.ready = False
        set_condition(status, "Ready", False, "Stopped", "", utcnow())
        self._write(run)
        self._progress(run, 0.9, "the guest is stopped")

    def _record_exit(self, run: ReconcileRun, reason: str, restart: bool) -> None:
        now = utcnow()
        status = run.status
        was_ready = status.ready
        lived_s = (now - status.started_at).total_seconds() if status.started_at else 0.0
        status.restarts = status.restarts + 1 if lived_s < _CRASH_LOOP_WINDOW_S else 1
        status.state = InstanceState.STOPPED
        status.pid = None
        status.ready = False
        action = "restarting it" if restart else "marking it stopped (on_crash=stop)"
        message = f"the guest exited without being asked to ({reason}); {action}"
        set_condition(status, "GuestExited", True, reason, message, now)
        set_condition(status, "Ready", False, "GuestExited", "", now)
        if restart:
            self._write(run)
        else:
            spec = run.spec.model_copy(update={"power": PowerState.STOPPED})
            with self._db.transaction() as session:
                changed = instance_store.update_spec(
                    session, run.name, spec, expected_generation=run.generation
                )
                status.observed_generation = changed.generation
                instance_store.update_status(session, run.name, status)
            before = run.instance.status
            run.instance = changed.model_copy(update={"status": status.model_copy(deep=True)})
            if status.state != before.state:
                data = status_event_data(status, changed.generation)
                self._recorder.publish("instance.state", "instance", run.name, data)
        self._recorder.publish(
            "instance.exited",
            "instance",
            run.name,
            {"reason": reason, "on_crash": run.spec.on_crash.value, "restarts": status.restarts},
        )
        log.warning("guest %s exited without being asked to (%s); %s", run.name, reason, action)
        if not restart and not was_ready and run.operations:
            run.failure = StepFailed(
                "launch_failed",
                f"the guest of {run.name!r} exited before it became ready ({reason}); "
                f"see `corral console {run.name} --log`",
            )

    def _delete_record(self, run: ReconcileRun) -> None:
        with self._db.transaction() as session:
            instance_store.delete_instance(session, run.name)
        run.deleted = True
        self._recorder.publish("instance.deleted", "instance", run.name, {"uid": run.instance.uid})
        for record in run.operations:
            op = record.operation
            if op.kind == "delete":
                self._recorder.finish(op.id, message=f"instance {run.name} is deleted")
            else:
                self._recorder.finish(
                    op.id,
                    error=OperationError(
                        code="invalid_state",
                        message=f"instance {run.name!r} was deleted before this {op.kind} finished",
                    ),
                )
        # Snapshot work queued for it (followed by the snapshot runner, not by this pass).
        gone = OperationError(
            code="invalid_state",
            message=f"instance {run.name!r} was deleted before this operation finished",
        )
        self._recorder.finish_all("instance", run.name, gone, "")
        log.info("instance %s deleted", run.name)
