"""The Controller: one object that owns the reconcile machinery of a server process.

It starts the work queues (instances, pools, volumes: one key per object, so each object is
reconciled by one pass at a time; an instance's snapshot work and a volume's backups run in
the same turn of its queue, right after its reconcile), resyncs periodically (so a guest killed
behind Corral's back is noticed within one resync even if no event said so; the resync asks the
planners which objects need a pass, so 1,000 idle instances cost one batch read), turns agent
events into faster reconciles, keeps host and pool facts fresh, makes the default pool on
first start, settles the snapshot and backup work a previous process left half-done, and
offers the services the API uses. Stopping it stops only the control plane: guests keep
running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from corral.bus.local import EventBus, HostAgent
from corral.controller.backup_runner import BackupRunner
from corral.controller.backup_service import BackupService
from corral.controller.disk_steps import StorageHooks
from corral.controller.hosts import HostMonitor
from corral.controller.image_service import ImageService
from corral.controller.instance_service import InstanceService
from corral.controller.plan import needs_reconcile
from corral.controller.pool_reconciler import PoolReconciler
from corral.controller.pool_service import PoolService
from corral.controller.reconciler import TARGET_KIND, InstanceReconciler
from corral.controller.recorder import Recorder
from corral.controller.recovery import Recovery, RecoveryReport
from corral.controller.settings import ControllerSettings
from corral.controller.snapshot_runner import SnapshotRunner
from corral.controller.snapshot_service import SnapshotService
from corral.controller.storage_plan import pool_needs_reconcile, volume_needs_reconcile
from corral.controller.volume_reconciler import VolumeReconciler
from corral.controller.volume_service import VolumeService
from corral.controller.workqueue import WorkQueue
from corral.model.rpc import AgentEvent, GuestObservation, GuestRunState
from corral.store import backups as backup_store
from corral.store import instances as instance_store
from corral.store import operations as operation_store
from corral.store import pools as pool_store
from corral.store import volumes as volume_store
from corral.store.database import Database

log = logging.getLogger(__name__)


class Controller:
    """Reconcilers, resync, agent events, and the services on top of them."""

    def __init__(
        self, db: Database, bus: EventBus, agent: HostAgent, settings: ControllerSettings
    ) -> None:
        self.settings = settings
        self.db = db
        self.bus = bus
        self.agent = agent
        self.recorder = Recorder(db, bus)
        hooks = StorageHooks(enqueue_pool=self.enqueue_pool)
        self.reconciler = InstanceReconciler(self.recorder, agent, settings, hooks)
        self.snapshot_runner = SnapshotRunner(
            self.recorder, agent, settings, self.reconciler.reconcile
        )
        self.queue = WorkQueue(self._instance_pass, name="instances", workers=settings.workers)
        self.pool_reconciler = PoolReconciler(self.recorder, agent)
        self.pool_queue = WorkQueue(self.pool_reconciler.reconcile, name="pools", workers=4)
        self.volume_reconciler = VolumeReconciler(
            self.recorder,
            agent,
            enqueue_pool=self.enqueue_pool,
            enqueue_instance=self.enqueue,
        )
        self.backup_runner = BackupRunner(self.recorder, agent, settings.backups_dir)
        self.volume_queue = WorkQueue(self._volume_pass, name="volumes", workers=settings.workers)
        self.hosts = HostMonitor(self.recorder, agent, settings.host_name)
        self.instances = InstanceService(
            self.recorder,
            agent,
            self.hosts,
            self.enqueue,
            settings.shutdown_timeout_s,
            enqueue_volume=self.enqueue_volume,
        )
        self.images = ImageService(self.recorder, agent)
        self.pools = PoolService(self.recorder, self.enqueue_pool)
        self.volumes = VolumeService(self.recorder, self.instances, self.enqueue_volume)
        self.snapshots = SnapshotService(self.recorder, self.enqueue)
        self.backups = BackupService(self.recorder, settings.backups_dir, self.enqueue_volume)
        self.recovery = Recovery(self.recorder, agent)
        self.last_recovery = RecoveryReport()
        self._resync_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False

    def __repr__(self) -> str:
        return f"Controller(host={self.settings.host_name!r}, running={self._running})"

    async def start(self) -> None:
        """Start reconciling: adopt what runs, notice what stopped, finish what was asked."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        await self.hosts.refresh()
        self.images.recover()
        self.pools.ensure_default()
        # Before any queue runs: settle the snapshots and backups a previous process left.
        self.last_recovery = await self.recovery.run()
        self.agent.subscribe(self._on_agent_event)
        self.pool_queue.start()
        self.volume_queue.start()
        self.queue.start()
        self.enqueue_storage(refresh=True)
        with self.db.transaction() as session:
            # Restore points being deleted may belong to volumes that no longer exist.
            for volume in backup_store.volumes_with_deleting_points(session):
                self.volume_queue.add(volume)
        self.enqueue_all()
        await self._report_unknown_guests()
        self._resync_task = self._loop.create_task(self._resync_forever(), name="resync")

    async def stop(self) -> None:
        """Stop reconciling; guests are left exactly as they are."""
        self._running = False
        if self._resync_task is not None:
            self._resync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync_task
            self._resync_task = None
        await self.queue.stop()
        await self.volume_queue.stop()
        await self.pool_queue.stop()
        await self.images.stop()

    async def _instance_pass(self, name: str) -> None:
        """One turn of an instance's queue: its lifecycle, then its snapshot work."""
        await self.reconciler.reconcile(name)
        await self.snapshot_runner.run(name)

    async def _volume_pass(self, name: str) -> None:
        """One turn of a volume's queue: the volume itself, then its backup work."""
        await self.volume_reconciler.reconcile(name)
        await self.backup_runner.run(name)

    def enqueue(self, name: str, interrupt: bool = False) -> None:
        """Reconcile `name` soon; `interrupt` cuts short a wait of its current pass."""
        self.queue.add(name)
        if interrupt:
            self.reconciler.interrupt(name)

    def enqueue_pool(self, name: str) -> None:
        """Reconcile pool `name` soon."""
        self.pool_queue.add(name)

    def enqueue_volume(self, name: str) -> None:
        """Reconcile volume `name` soon."""
        self.volume_queue.add(name)

    def enqueue_storage(self, *, refresh: bool) -> int:
        """Enqueue the pools and volumes that need a pass (all of them with `refresh`, which
        re-reads their facts from the host); return how many objects were queued.

        Reading a pool's facts looks at every volume file in it (qemu-img info), so steady
        pools and volumes are refreshed only every `storage_refresh_s`; a volume that changes
        enqueues its pool at once.
        """
        with self.db.transaction() as session:
            pools = pool_store.list_pools(session)
            volumes = volume_store.list_volume_records(session)
            busy = operation_store.targets_with_running_operations(session, "volume")
            busy |= operation_store.targets_with_running_operations(session, "pool")
        queued = 0
        for pool in pools:
            if refresh or pool.name in busy or pool_needs_reconcile(pool.status, pool.generation):
                self.pool_queue.add(pool.name)
                queued += 1
        for record in volumes:
            volume = record.volume
            if (
                refresh
                or volume.name in busy
                or volume_needs_reconcile(
                    volume.spec,
                    volume.status,
                    generation=volume.generation,
                    deleting=record.deleting,
                )
            ):
                self.volume_queue.add(volume.name)
                queued += 1
        return queued

    def enqueue_all(self) -> int:
        """Enqueue every instance (the periodic resync); return how many."""
        with self.db.transaction() as session:
            names = instance_store.list_instance_names(session)
        for name in names:
            self.queue.add(name)
        return len(names)

    def _on_agent_event(self, event: AgentEvent) -> None:
        # Agents may call from their own threads; the queue lives on our loop.
        if not self._running or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._agent_event_on_loop, event)

    def _agent_event_on_loop(self, event: AgentEvent) -> None:
        if self._running:
            log.debug("agent event %s for %s", event.kind.value, event.name)
            self.queue.add(event.name)

    async def resync(self) -> int:
        """Enqueue every instance whose reconcile would do something; return how many.

        One observe_all() and one read of the store, then the same pure planner the
        reconciler uses decides: a guest killed behind Corral's back shows up as a plan
        with steps. If the agent cannot list its guests, every instance is enqueued.
        """
        try:
            seen = {o.name: o for o in await self.agent.observe_all()}
        except Exception as err:
            log.warning("could not list this host's guests (%s); reconciling everything", err)
            return self.enqueue_all()
        with self.db.transaction() as session:
            rows = instance_store.fetch_instance_columns(session)
            busy = operation_store.targets_with_running_operations(session, TARGET_KIND)
        queued = 0
        for index, columns in enumerate(rows):
            if index % 100 == 99:
                await asyncio.sleep(0)  # let API requests in between
            record = instance_store.record_from_columns(columns)
            instance = record.instance
            observation = seen.get(instance.name) or GuestObservation(
                name=instance.name, state=GuestRunState.ABSENT
            )
            if instance.name in busy or needs_reconcile(
                instance.spec,
                instance.status,
                observation,
                generation=instance.generation,
                deleting=instance.deleting,
                restart_requested=record.restart_requested,
            ):
                self.queue.add(instance.name)
                queued += 1
        return queued

    async def _resync_forever(self) -> None:
        last_host_refresh = last_storage_refresh = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.resync_s)
            try:
                await self.resync()
                now = time.monotonic()
                storage = now - last_storage_refresh >= self.settings.storage_refresh_s
                self.enqueue_storage(refresh=storage)
                if storage:
                    last_storage_refresh = now
                refresh = now - last_host_refresh >= self.settings.host_refresh_s
                if refresh:
                    last_host_refresh = time.monotonic()
                    await self.hosts.refresh()
                    with self.db.transaction() as session:
                        operation_store.trim_operations(session)
            except asyncio.CancelledError:
                raise
            except Exception:  # the resync must outlive any one bad pass
                log.exception("resync failed; trying again in %.1fs", self.settings.resync_s)

    async def _report_unknown_guests(self) -> None:
        """Guests the host runs that the store does not know are left alone, but said once."""
        try:
            seen = await self.agent.observe_all()
        except Exception as err:
            log.warning("could not list the guests of this host: %s", err)
            return
        with self.db.transaction() as session:
            known = set(instance_store.list_instance_names(session))
        for observation in seen:
            if observation.name not in known and observation.pid is not None:
                log.warning(
                    "guest %s (pid %s) runs on this host but has no instance record; "
                    "Corral leaves it alone",
                    observation.name,
                    observation.pid,
                )
