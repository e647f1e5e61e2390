"""The host daemon's brain-free core: it executes and observes, it decides nothing.

It implements the control plane's AgentAPI (corral.bus.agent_link) structurally, on top of one
compute backend, one image builder and one storage backend per pool.

Snapshots and backups of a running guest go through the compute backend (QMP); those of a
stopped guest or a detached volume through `offline` (qemu-img on the files; the fake compute
brings a modelled one). Which path is decided per call from the guest's observed state.

Pools the agent has ensured are remembered in `<pools_dir>/<name>.pool.json`, so a restarted
agent knows them; the first use of a pool in a process ensures it again (a btrfs loop is
mounted again after a reboot, unfinished volume files are removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from corral.agent.compute.base import AgentEventHandler, ComputeBackend
from corral.agent.compute.snapshot_rules import (
    check_backup_request,
    check_snapshot_request,
    snapshot_disks,
)
from corral.agent.image_builders import ImageBuilder, ProgressFn
from corral.agent.storage import StorageBackend, make_storage_backend
from corral.agent.storage.offline_snapshots import OfflineDisks, QemuImgDisks
from corral.errors import Conflict, HostError, ImageBuildError, NotFound
from corral.model.names import validate_name
from corral.model.rpc import (
    DiskAttachment,
    ExecRequest,
    ExecResult,
    GuestObservation,
    GuestRunState,
    HostFacts,
    ImageArtifact,
    LaunchRequest,
    PoolConfig,
    PoolFacts,
    VolumeFacts,
    VolumeRequest,
)
from corral.model.rpc_snapshots import BackupRequest, BackupResult, SnapshotRequest, SnapshotResult

log = logging.getLogger(__name__)
T = TypeVar("T")
POOL_CONFIG_SUFFIX = ".pool.json"


def _memory_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


class Agent:
    """One host's agent: guests through `compute`, images through `builder`, volumes through
    one storage backend per pool (kept in `pools`)."""

    def __init__(
        self,
        host_name: str,
        compute: ComputeBackend,
        builder: ImageBuilder,
        images_dir: Path,
        cache_dir: Path,
        pools_dir: Path | None = None,
        offline: OfflineDisks | None = None,
    ) -> None:
        self.host_name = host_name
        self.compute = compute
        self.builder = builder
        self.images_dir = images_dir
        self.cache_dir = cache_dir
        self.pools_dir = pools_dir if pools_dir is not None else images_dir.parent / "pools"
        images_dir.mkdir(parents=True, exist_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.pools_dir.mkdir(parents=True, exist_ok=True)
        self.pools: dict[str, StorageBackend] = {}
        self._pool_locks: dict[str, asyncio.Lock] = {}
        self._ensured: set[str] = set()  # pools ensured by this process (after a restart: none)
        self.offline: OfflineDisks = offline if offline is not None else QemuImgDisks()
        self._offline_locks: dict[str, asyncio.Lock] = {}
        self._load_pool_configs()

    def __repr__(self) -> str:
        return f"Agent(host={self.host_name!r}, compute={self.compute.name!r})"

    async def host_facts(self) -> HostFacts:
        """Capacity and accelerator of this host."""
        accel = self.compute.accel_info()
        return HostFacts(
            name=self.host_name,
            cpus=os.cpu_count() or 1,
            memory_mib=_memory_mib(),
            accel=accel.accel,
            accel_reason=accel.reason,
            qemu_version=self.compute.version(),
            kernel=os.uname().release,
        )

    async def launch(self, req: LaunchRequest) -> GuestObservation:
        """Start a guest."""
        return await self.compute.launch(req)

    async def observe(self, name: str) -> GuestObservation:
        """Observe one guest."""
        return await self.compute.observe(name)

    async def observe_all(self) -> list[GuestObservation]:
        """Observe every guest with runtime files."""
        return await self.compute.observe_all()

    async def wait_ready(self, name: str, timeout_s: float) -> float:
        """Wait for the guest agent."""
        return await self.compute.wait_ready(name, timeout_s)

    async def shutdown(self, name: str, timeout_s: float) -> None:
        """Clean power-off with a timeout."""
        await self.compute.shutdown(name, timeout_s)

    async def kill(self, name: str) -> None:
        """Hard stop."""
        await self.compute.kill(name)

    async def forget(self, name: str) -> None:
        """Drop runtime files."""
        await self.compute.forget(name)

    async def exec(self, req: ExecRequest) -> ExecResult:
        """Run a command in the guest."""
        return await self.compute.exec(req)

    async def open_console(self, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Serial console stream."""
        return await self.compute.open_console(name)

    async def console_log(self, name: str, max_bytes: int) -> bytes:
        """Recent console output."""
        return await self.compute.console_log(name, max_bytes)

    def recipes(self) -> list[str]:
        """Recipes this host can build."""
        return self.builder.recipes()

    async def build_image(self, recipe: str, name: str, progress: ProgressFn) -> ImageArtifact:
        """Build an image in a worker thread; progress is delivered on the event loop."""
        validate_name(name, "name")
        if recipe not in self.builder.recipes():
            known = ", ".join(self.builder.recipes())
            raise ImageBuildError(
                f"unknown recipe {recipe!r}; known recipes: {known}", code="unknown_recipe"
            )
        loop = asyncio.get_running_loop()

        def threadsafe_progress(fraction: float, message: str) -> None:
            loop.call_soon_threadsafe(progress, fraction, message)

        built = await asyncio.to_thread(
            self.builder.build,
            recipe,
            name,
            self.images_dir / name,
            self.cache_dir,
            threadsafe_progress,
        )
        return ImageArtifact(
            name=name,
            kind=built.kind,
            kernel=str(built.kernel),
            initrd=str(built.initrd) if built.initrd else None,
            cmdline=built.cmdline,
            size_bytes=built.size_bytes,
            digest=built.digest,
            recipe=built.recipe,
            build_seconds=built.build_seconds,
            disk=str(built.disk) if built.disk else None,
            disk_virtual_size_bytes=built.disk_virtual_size_bytes,
            cloud_init=built.cloud_init,
        )

    async def delete_image(self, name: str) -> None:
        """Remove an image's files (idempotent)."""
        validate_name(name, "name")
        await asyncio.to_thread(shutil.rmtree, self.images_dir / name, True)

    # -- storage ----------------------------------------------------------------------------------

    def _config_file(self, pool: str) -> Path:
        return self.pools_dir / f"{pool}{POOL_CONFIG_SUFFIX}"

    def _load_pool_configs(self) -> None:
        """Know the pools ensured before this process started (without touching them yet)."""
        for path in sorted(self.pools_dir.glob(f"*{POOL_CONFIG_SUFFIX}")):
            try:
                config = PoolConfig.model_validate_json(path.read_text())
                self.pools[config.name] = make_storage_backend(config, self.pools_dir)
            except Exception as err:  # one bad file must not stop the agent; say which
                log.error("ignoring pool config %s: %s", path, err)

    def _lock(self, pool: str) -> asyncio.Lock:
        return self._pool_locks.setdefault(pool, asyncio.Lock())

    def _known_pool(self, pool: str, field: str = "pool") -> StorageBackend:
        validate_name(pool, field)
        backend = self.pools.get(pool)
        if backend is None:
            raise NotFound(
                f"pool {pool!r} is not known on host {self.host_name!r}; ensure it first",
                code="unknown_pool",
                field=field,
            )
        return backend

    async def _locked(self, pool: str, call: Callable[[], T]) -> T:
        """Run `call` in a worker thread holding the pool's lock until the thread is done, even
        when the caller is cancelled (a thread cannot be stopped; the next change must wait)."""
        async with self._lock(pool):
            work = asyncio.ensure_future(asyncio.to_thread(call))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait({work})
                raise

    async def _ready_pool(self, pool: str, field: str = "pool") -> StorageBackend:
        """The pool's backend, ensured once per process (re-mounts after a reboot)."""
        backend = self._known_pool(pool, field)
        if pool not in self._ensured:
            await self._locked(pool, backend.ensure)
            self._ensured.add(pool)
        return backend

    async def _mutate(self, pool: str, call: Callable[[StorageBackend], T]) -> T:
        """Run a changing call on a ready pool, one at a time per pool, in a worker thread."""
        backend = await self._ready_pool(pool)
        return await self._locked(pool, lambda: call(backend))

    async def ensure_pool(self, config: PoolConfig) -> PoolFacts:
        """Make the pool exist and be usable; remember it for the next agent process."""
        validate_name(config.name, "name")
        backend = make_storage_backend(config, self.pools_dir)
        known = self.pools.get(config.name)
        if known is not None and _placement(known) != _placement(backend):
            raise Conflict(
                f"pool {config.name!r} already exists on host {self.host_name!r} as "
                f"{known.driver} at {known.path}; delete it before making it anew",
                code="pool_exists",
            )

        def ensure_and_remember() -> None:
            backend.ensure()
            self._save_pool_config(config)

        await self._locked(config.name, ensure_and_remember)
        self.pools[config.name] = backend
        self._ensured.add(config.name)
        return await asyncio.to_thread(backend.facts)

    def _save_pool_config(self, config: PoolConfig) -> None:
        path = self._config_file(config.name)
        tmp = path.with_name(path.name + ".partial")
        try:
            tmp.write_text(config.model_dump_json() + "\n")
            os.rename(tmp, path)
        except OSError as err:
            raise HostError(f"cannot remember pool {config.name!r} in {path}: {err}") from err

    async def pool_facts(self, pool: str) -> PoolFacts:
        """Capacity and usage of a pool."""
        backend = await self._ready_pool(pool)
        return await asyncio.to_thread(backend.facts)

    async def list_volumes(self, pool: str) -> list[VolumeFacts]:
        """Every volume in a pool (to find orphans after a crash; not in AgentAPI yet)."""
        backend = await self._ready_pool(pool)
        return await asyncio.to_thread(backend.list_volumes)

    async def delete_pool(self, pool: str) -> None:
        """Remove an empty pool and everything made for it; no-op if unknown."""
        validate_name(pool, "pool")
        backend = self.pools.get(pool)
        if backend is None:
            return

        def destroy_and_forget() -> None:
            backend.destroy()
            with contextlib.suppress(FileNotFoundError):
                self._config_file(pool).unlink()

        await self._locked(pool, destroy_and_forget)
        self.pools.pop(pool, None)
        self._ensured.discard(pool)

    async def create_volume(self, req: VolumeRequest) -> VolumeFacts:
        """Make a volume, all or nothing."""
        validate_name(req.name, "name")
        return await self._mutate(req.pool, lambda backend: backend.create_volume(req))

    async def volume_facts(self, pool: str, name: str) -> VolumeFacts:
        """A volume's size, allocation and backing."""
        validate_name(name, "name")
        backend = await self._ready_pool(pool)
        return await asyncio.to_thread(backend.volume_facts, name)

    async def resize_volume(self, pool: str, name: str, size_bytes: int) -> VolumeFacts:
        """Grow a volume no guest has open (online growth is resize_disk)."""
        validate_name(name, "name")
        return await self._mutate(pool, lambda backend: backend.resize_volume(name, size_bytes))

    async def delete_volume(self, pool: str, name: str) -> None:
        """Remove a volume; no-op if absent."""
        validate_name(name, "name")
        await self._mutate(pool, lambda backend: backend.delete_volume(name))

    async def attach_disk(self, instance: str, disk: DiskAttachment) -> None:
        """Hot-plug a disk into a running guest."""
        validate_name(instance, "instance")
        await self.compute.attach_disk(instance, disk)

    async def detach_disk(self, instance: str, disk_id: str) -> None:
        """Hot-unplug a disk from a running guest."""
        validate_name(instance, "instance")
        await self.compute.detach_disk(instance, disk_id)

    async def resize_disk(self, instance: str, disk_id: str, size_bytes: int) -> None:
        """Grow an attached disk while the guest runs."""
        validate_name(instance, "instance")
        await self.compute.resize_disk(instance, disk_id, size_bytes)

    # -- snapshots and backups ------------------------------------------------------------------

    async def _running(self, instance: str) -> GuestObservation | None:
        """The guest's observation when its process is alive (QMP can act), else None."""
        observation = await self.compute.observe(validate_name(instance, "instance"))
        return None if observation.state is GuestRunState.ABSENT else observation

    async def _offline(self, key: str, call: Callable[[], T]) -> T:
        """Run a qemu-img call in a worker thread, one at a time per instance or volume; a
        cancelled caller waits for the thread (it cannot be stopped) before giving up."""
        async with self._offline_locks.setdefault(key, asyncio.Lock()):
            work = asyncio.ensure_future(asyncio.to_thread(call))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait({work})
                raise

    async def snapshot_create(self, req: SnapshotRequest) -> SnapshotResult:
        """Snapshot through QMP when the guest runs, with qemu-img when it is stopped."""
        check_snapshot_request(req)
        if await self._running(req.instance) is not None:
            return await self.compute.snapshot_create(req)
        if req.memory:
            raise Conflict(
                f"instance {req.instance!r} is stopped: a memory snapshot needs it running. "
                "Start it, or take a disk-only snapshot",
                code="invalid_state",
            )
        disks = snapshot_disks(req.disks, memory=False)
        started = time.monotonic()
        await self._offline(req.instance, lambda: self.offline.create_snapshot(disks, req.tag))
        return SnapshotResult(
            tag=req.tag,
            memory=False,
            quiesced=False,
            running=False,
            duration_ms=(time.monotonic() - started) * 1000,
        )

    async def snapshot_revert(self, req: SnapshotRequest) -> None:
        """A memory snapshot loads into the running guest; a stopped guest's disks go back
        with qemu-img (a memory snapshot then reverts as disk-only: the guest boots from the
        disks as they were). A disk-only snapshot of a running guest is refused (409)."""
        check_snapshot_request(req)
        if await self._running(req.instance) is not None:
            await self.compute.snapshot_revert(req)
            return
        disks = snapshot_disks(req.disks, memory=False)
        had_memory = await self._offline(
            req.instance, lambda: self.offline.revert_snapshot(disks, req.tag)
        )
        if had_memory:
            log.info(
                "instance %s is stopped: reverted its disks to snapshot %s; its memory state "
                "was not loaded (it boots from the disks as they were)",
                req.instance,
                req.tag,
            )

    async def snapshot_delete(self, req: SnapshotRequest) -> None:
        """Drop the tag from attached disks through QMP and from the others with qemu-img."""
        check_snapshot_request(req)
        live, files = await self._split_disks(req)
        if live:
            await self.compute.snapshot_delete(req.model_copy(update={"disks": live}))
        if files:
            await self._offline(req.instance, lambda: self.offline.delete_snapshot(files, req.tag))

    async def snapshot_tags(self, req: SnapshotRequest) -> dict[str, list[str]]:
        """Tags on each disk (disk id -> tags), from QEMU for attached disks, else the files."""
        check_snapshot_request(req)
        live, files = await self._split_disks(req)
        tags: dict[str, list[str]] = {}
        if live:
            tags.update(await self.compute.snapshot_tags(req.model_copy(update={"disks": live})))
        if files:
            tags.update(
                await self._offline(req.instance, lambda: self.offline.snapshot_tags(files))
            )
        return {disk.id: tags[disk.id] for disk in req.disks}

    async def _split_disks(
        self, req: SnapshotRequest
    ) -> tuple[list[DiskAttachment], list[DiskAttachment]]:
        """(disks attached to the running guest, disks only on files)."""
        observation = await self._running(req.instance)
        attached = set(observation.disks) if observation is not None else set()
        return (
            [disk for disk in req.disks if disk.id in attached],
            [disk for disk in req.disks if disk.id not in attached],
        )

    async def _in_guest(self, req: BackupRequest) -> bool:
        """True when the disk is attached to the running guest `req.instance` (QMP backs it
        up); otherwise its file is backed up (qemu-img's lock refuses one a QEMU holds)."""
        if req.instance is None:
            return False
        observation = await self._running(req.instance)
        return observation is not None and req.disk.id in observation.disks

    async def backup(self, req: BackupRequest, progress: ProgressFn) -> BackupResult:
        """A job in the running guest's QEMU, else a full copy of the file with qemu-img."""
        check_backup_request(req)
        if await self._in_guest(req):
            return await self.compute.backup(req, progress)
        what = f"backing up disk {req.disk.id!r}"
        progress(0.0, what)
        result = await self._offline(
            req.instance or f"volume:{req.disk.path}", lambda: self.offline.backup(req)
        )
        progress(1.0, f"{what}: done")
        return result

    async def abort_backup(self, req: BackupRequest) -> None:
        """Cancel the backup's job if the guest runs with the disk; remove its files either
        way (a completed point takes the disk's bitmap with it: the next backup is full)."""
        check_backup_request(req)
        if await self._in_guest(req):
            await self.compute.abort_backup(req)
            return
        await self._offline(
            req.instance or f"volume:{req.disk.path}", lambda: self.offline.abort_backup(req)
        )

    def subscribe(self, handler: AgentEventHandler) -> None:
        """Guest events from the compute backend."""
        self.compute.subscribe(handler)

    async def close(self) -> None:
        """Let go; guests keep running."""
        await self.compute.close()


def _placement(backend: StorageBackend) -> tuple[str, Path]:
    """What makes two configs of one pool the same pool: its driver and directory."""
    return backend.driver, backend.path
