"""What the API asks of pools: create, list, show, delete; and the default pool.

A pool is made on the host by the pool reconciler (the `pool-create` operation follows it);
deleting one with volumes is refused, and the default pool is never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from corral.controller.recorder import Recorder
from corral.errors import Conflict
from corral.model.names import some_names
from corral.model.operation import Operation
from corral.model.storage import DEFAULT_POOL, Pool, PoolCreate, PoolDriver, PoolSpec
from corral.store import operations as operation_store
from corral.store import pools as pool_store
from corral.store import volumes as volume_store

log = logging.getLogger(__name__)

TARGET_KIND = "pool"


class PoolService:
    """Pools as the API sees them."""

    def __init__(self, recorder: Recorder, enqueue: Callable[[str], None]) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._enqueue = enqueue

    def __repr__(self) -> str:
        return "PoolService()"

    def ensure_default(self) -> None:
        """Create the `default` pool (driver dir, in the agent's pools dir) if there is none."""
        with self._db.transaction() as session:
            if pool_store.find_pool(session, DEFAULT_POOL) is not None:
                return
            pool = pool_store.create_pool(session, DEFAULT_POOL, PoolSpec(driver=PoolDriver.DIR))
        log.info("created the default pool")
        self._recorder.publish("pool.created", "pool", pool.name, {"uid": pool.uid})
        self._enqueue(pool.name)

    def create(self, body: PoolCreate) -> Operation:
        """Record a new pool and start a `pool-create` operation."""
        spec = body.spec
        with self._db.transaction() as session:
            if spec.path is not None and (other := pool_store.pool_with_path(session, spec.path)):
                raise Conflict(
                    f"pool {other!r} already uses {spec.path}; two pools cannot share a place",
                    code="already_exists",
                    field="spec.path",
                )
            pool = pool_store.create_pool(session, body.name, spec)
            op = operation_store.create_operation(
                session,
                "pool-create",
                TARGET_KIND,
                body.name,
                params={"generation": pool.generation},
                message="waiting for the controller",
            )
        self._recorder.publish(
            "pool.created",
            "pool",
            pool.name,
            {"uid": pool.uid, "spec": spec.model_dump(mode="json")},
        )
        self._recorder.operation_created(op)
        self._enqueue(body.name)
        return op

    def list(self) -> list[Pool]:
        """Every pool, by name."""
        with self._db.transaction() as session:
            return pool_store.list_pools(session)

    def get(self, name: str) -> Pool:
        """One pool; NotFound if it does not exist."""
        with self._db.transaction() as session:
            return pool_store.get_pool(session, name)

    def delete(self, name: str) -> Operation:
        """Delete an empty pool (not the default one); a second delete returns the first."""
        with self._db.transaction() as session:
            pool_store.get_pool(session, name)
            for existing in operation_store.running_operations(session, TARGET_KIND, name):
                if existing.operation.kind == "pool-delete":
                    return existing.operation
            if name == DEFAULT_POOL:
                raise Conflict(
                    "the default pool cannot be deleted; it is where volumes go by default",
                    code="invalid_state",
                )
            volumes = volume_store.volumes_in_pool(session, name)
            if volumes:
                shown = some_names(volumes)
                raise Conflict(
                    f"pool {name!r} has {len(volumes)} volume(s): {shown}; delete them first",
                    code="pool_not_empty",
                )
            pool_store.mark_pool_deleting(session, name)
            op = operation_store.create_operation(
                session, "pool-delete", TARGET_KIND, name, message="waiting for the controller"
            )
        self._recorder.operation_created(op)
        self._enqueue(name)
        return op
