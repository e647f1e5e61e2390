"""reconcile(name): load the spec, observe the guest, plan, run the steps, record the outcome.

Level-triggered: it looks at the whole situation every time, so a missed event, a crash of
the server half-way through a plan, or a guest killed behind Corral's back all end the same
way: the next pass sees the truth and plans from it. Failures of the control plane itself
(agent unreachable, store busy) never lead to stopping a guest: they only retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from corral.bus.agent_link import AgentAPI
from corral.controller.disk_steps import DiskSteps, StorageHooks
from corral.controller.plan import StopPolicy, plan_instance
from corral.controller.recorder import Recorder
from corral.controller.run import Interrupted, ReconcileRun, StepFailed
from corral.controller.settings import ControllerSettings
from corral.controller.snapshot_plan import SNAPSHOT_KINDS
from corral.controller.steps import StepExecutor
from corral.errors import CorralError, TemporaryError
from corral.model.instance import InstanceState
from corral.model.operation import OperationError
from corral.model.rpc import GuestObservation
from corral.store import instances as instance_store
from corral.store import operations as operation_store
from corral.store.operations import OperationRecord

log = logging.getLogger(__name__)

T = TypeVar("T")
TARGET_KIND = "instance"
_STOPPING_KINDS = ("stop", "restart", "delete")
# Failed-condition reasons -> the operation error code a client sees.
_FAILURE_CODES = {
    "LaunchFailed": "launch_failed",
    "ImageMissing": "unknown_image",
    "ImageNotReady": "image_not_ready",
    "VolumeMissing": "unknown_volume",
}


def lifecycle_operations(operations: list[OperationRecord]) -> list[OperationRecord]:
    """The operations this reconciler follows: not snapshot work, which has its own runner
    in the same queue (controller/snapshot_runner.py)."""
    return [record for record in operations if record.operation.kind not in SNAPSHOT_KINDS]


def stop_policy(operations: list[OperationRecord], default_timeout_s: float) -> StopPolicy:
    """How to stop the guest: from the newest stop/restart/delete operation that says so."""
    for record in reversed(operations):
        if record.operation.kind in _STOPPING_KINDS:
            params = record.params
            return StopPolicy(
                force=bool(params.get("force", False)),
                timeout_s=float(params.get("timeout_s") or default_timeout_s),
            )
    return StopPolicy(timeout_s=default_timeout_s)


class InstanceReconciler:
    """Drives one instance at a time (the work queue keeps it to one pass per instance)."""

    def __init__(
        self,
        recorder: Recorder,
        agent: AgentAPI,
        settings: ControllerSettings,
        hooks: StorageHooks,
    ) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self._settings = settings
        self._interrupts: dict[str, asyncio.Event] = {}
        self._disks = DiskSteps(recorder, agent, hooks)
        self._steps = StepExecutor(recorder, agent, settings, self._interruptible, self._disks)

    def __repr__(self) -> str:
        return f"InstanceReconciler(in_progress={sorted(self._interrupts)})"

    def interrupt(self, name: str) -> None:
        """Cut short a waiting step (ready wait, backoff) of `name`: its spec changed."""
        event = self._interrupts.get(name)
        if event is not None:
            event.set()

    async def _interruptible(self, name: str, awaitable: Awaitable[T]) -> T:
        interrupted = self._interrupts.get(name) or asyncio.Event()
        work = asyncio.ensure_future(awaitable)
        waiter = asyncio.ensure_future(interrupted.wait())
        try:
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if work.cancelled():
            raise Interrupted(name)
        return work.result()

    async def reconcile(self, name: str) -> None:
        """One pass over instance `name` (the work queue's handler)."""
        with self._db.transaction() as session:
            record = instance_store.find_instance(session, name)
            operations = lifecycle_operations(
                operation_store.running_operations(session, TARGET_KIND, name)
            )
        if record is None:
            return
        instance = record.instance
        observation = await self._observe(name)
        steps = plan_instance(
            instance.spec,
            instance.status,
            observation,
            generation=instance.generation,
            deleting=instance.deleting,
            restart_requested=record.restart_requested,
            stop=stop_policy(operations, self._settings.shutdown_timeout_s),
        )
        if steps:
            log.debug("plan for %s: %s", name, steps)
        run = ReconcileRun(instance, observation, operations)
        self._interrupts[name] = asyncio.Event()
        try:
            for step in steps:
                await self._steps.run(run, step)
        except StepFailed as failure:
            run.failure = failure
        except Interrupted:
            log.debug("reconcile of %s interrupted by a newer change", name)
            return
        except TemporaryError as err:
            self._recorder.progress(run.operation_ids, 0.0, f"retrying: {err.message}")
            raise
        except CorralError as err:
            self._recorder.progress(run.operation_ids, 0.0, f"retrying: {err.message}")
            raise TemporaryError(f"{name}: {err.message}") from err
        except Exception as err:  # a bug: the work queue logs it and retries with backoff
            self._recorder.progress(
                run.operation_ids, 0.0, f"retrying after an internal error ({type(err).__name__})"
            )
            raise
        finally:
            self._interrupts.pop(name, None)
        if not run.deleted:
            self._conclude(run)

    async def _observe(self, name: str) -> GuestObservation:
        try:
            return await self._agent.observe(name)
        except TemporaryError:
            raise
        except (CorralError, OSError) as err:
            raise TemporaryError(f"could not observe guest {name!r}: {err}") from err

    def _conclude(self, run: ReconcileRun) -> None:
        """Record that this generation was acted on and finish the operations waiting for it."""
        if run.status.observed_generation != run.generation:
            run.status.observed_generation = run.generation
            self._recorder.write_status(run.name, run.status, run.instance.status, run.generation)
        self._disks.record_attachments(run)
        with self._db.transaction() as session:
            waiting = lifecycle_operations(
                operation_store.running_operations(session, TARGET_KIND, run.name)
            )
        error = self._operation_error(run)
        state = run.status.state.value
        for record in waiting:
            op = record.operation
            wanted = int(record.params.get("generation", 0))
            if op.kind == "delete" or wanted > run.generation:
                continue
            message = f"instance {run.name} is {state}"
            if note := record.params.get("note"):
                message += f"; {note}"
            if wanted < run.generation:
                message += f" (a later change, generation {run.generation}, superseded this one)"
            self._recorder.finish(op.id, error=error, message=error.message if error else message)

    @staticmethod
    def _operation_error(run: ReconcileRun) -> OperationError | None:
        if run.failure is not None:
            return OperationError(code=run.failure.code, message=run.failure.message)
        if run.status.state == InstanceState.FAILED:
            failed = run.status.condition("Failed")
            reason = failed.reason if failed else ""
            message = failed.message if failed else f"instance {run.name} failed"
            return OperationError(code=_FAILURE_CODES.get(reason, "launch_failed"), message=message)
        return None
