"""reconcile(pool): make the pool exist on the host (ensure_pool), keep its facts fresh,
delete it when asked. Level-triggered like the instance reconciler.
"""

from __future__ import annotations

import logging

from corral.bus.agent_link import AgentAPI
from corral.controller.recorder import Recorder
from corral.controller.storage_plan import PoolAction, plan_pool
from corral.errors import Conflict, CorralError, NotFound, TemporaryError
from corral.model.operation import OperationError
from corral.model.rpc import PoolConfig, PoolFacts
from corral.model.storage import Pool, PoolState, PoolStatus
from corral.store import operations as operation_store
from corral.store import pools as pool_store
from corral.store import volumes as volume_store
from corral.store.operations import OperationRecord

log = logging.getLogger(__name__)

TARGET_KIND = "pool"


def status_from_facts(facts: PoolFacts, generation: int) -> PoolStatus:
    """A ready pool's status from what the agent reports."""
    return PoolStatus(
        state=PoolState.READY,
        observed_generation=generation,
        path=facts.path,
        capacity_bytes=facts.capacity_bytes,
        used_bytes=facts.used_bytes,
        allocated_bytes=facts.allocated_bytes,
        provisioned_bytes=facts.provisioned_bytes,
        volumes=facts.volumes,
    )


def pool_config(pool: Pool) -> PoolConfig:
    """What the agent needs to make `pool` exist."""
    spec = pool.spec
    return PoolConfig(
        name=pool.name, driver=spec.driver.value, path=spec.path, size_bytes=spec.size_bytes
    )


class PoolReconciler:
    """Drives one pool at a time (its work queue keeps it to one pass per pool)."""

    def __init__(self, recorder: Recorder, agent: AgentAPI) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self._ensured: set[str] = set()

    def __repr__(self) -> str:
        return f"PoolReconciler(ensured={sorted(self._ensured)})"

    async def reconcile(self, name: str) -> None:
        """One pass over pool `name` (the work queue's handler)."""
        with self._db.transaction() as session:
            pool = pool_store.find_pool(session, name)
            deleting = pool_store.is_deleting(session, name)
            operations = operation_store.running_operations(session, TARGET_KIND, name)
        if pool is None:
            return
        action = plan_pool(
            pool.status,
            generation=pool.generation,
            deleting=deleting,
            ensured_here=name in self._ensured,
        )
        if action == PoolAction.DELETE:
            await self._delete(pool, operations)
            return
        error: OperationError | None = None
        status = pool.status
        if action == PoolAction.ENSURE:
            status, error = await self._ensure(pool, operations)
        elif action == PoolAction.REFRESH:
            status = await self._refresh(pool)
        status.observed_generation = pool.generation
        self._recorder.write_pool_status(name, status, pool.status)
        for record in operations:
            op = record.operation
            if op.kind == "pool-delete":
                continue
            message = f"pool {name} is {status.state.value}"
            self._recorder.finish(op.id, error=error, message=error.message if error else message)

    def _progress(self, operations: list[OperationRecord], progress: float, message: str) -> None:
        self._recorder.progress([r.operation.id for r in operations], progress, message)

    async def _ensure(
        self, pool: Pool, operations: list[OperationRecord]
    ) -> tuple[PoolStatus, OperationError | None]:
        self._progress(operations, 0.2, f"making {pool.spec.driver.value} pool {pool.name}")
        try:
            facts = await self._agent.ensure_pool(pool_config(pool))
        except TemporaryError:
            raise
        except CorralError as err:
            message = f"pool {pool.name!r} could not be made: {err.message}"
            log.warning("%s", message)
            failed = pool.status.model_copy(update={"state": PoolState.FAILED, "message": message})
            return failed, OperationError(code=err.code, message=message)
        self._ensured.add(pool.name)
        return status_from_facts(facts, pool.generation), None

    async def _refresh(self, pool: Pool) -> PoolStatus:
        try:
            facts = await self._agent.pool_facts(pool.name)
        except NotFound:
            self._ensured.discard(pool.name)
            raise TemporaryError(
                f"pool {pool.name!r} is gone on the host; making it again"
            ) from None
        except TemporaryError:
            raise
        except CorralError as err:
            raise TemporaryError(f"could not read the facts of pool {pool.name!r}: {err}") from err
        return status_from_facts(facts, pool.generation)

    async def _delete(self, pool: Pool, operations: list[OperationRecord]) -> None:
        name = pool.name
        with self._db.transaction() as session:
            volumes = volume_store.volumes_in_pool(session, name)
        if volumes:
            # The API refuses this; a volume created at the same moment can still slip in.
            raise TemporaryError(f"pool {name!r} still has volumes: {', '.join(volumes[:5])}")
        self._progress(operations, 0.3, f"removing pool {name} from the host")
        try:
            await self._agent.delete_pool(name)
        except TemporaryError:
            raise
        except Conflict as err:
            # The host holds something Corral does not know of: say so, keep the pool.
            with self._db.transaction() as session:
                pool_store.unmark_pool_deleting(session, name)
            message = f"pool {name!r} was not deleted: {err.message}"
            error = OperationError(code=err.code, message=message)
            for record in operations:
                if record.operation.kind == "pool-delete":
                    self._recorder.finish(record.operation.id, error=error)
            log.warning("%s", message)
            return
        except CorralError as err:
            raise TemporaryError(f"pool {name!r} could not be removed: {err.message}") from err
        with self._db.transaction() as session:
            pool_store.delete_pool_record(session, name)
        self._ensured.discard(name)
        self._recorder.publish("pool.deleted", "pool", name, {"uid": pool.uid})
        for record in operations:
            op = record.operation
            if op.kind == "pool-delete":
                self._recorder.finish(op.id, message=f"pool {name} is deleted")
            else:
                error = OperationError(
                    code="invalid_state",
                    message=f"pool {name!r} was deleted before this {op.kind} finished",
                )
                self._recorder.finish(op.id, error=error)
        log.info("pool %s deleted", name)
