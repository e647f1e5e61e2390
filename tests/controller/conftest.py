"""A controller on a real store and the fake compute backend, without HTTP in between."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from corral.agent import Agent, build_agent
from corral.agent.compute.fake import FakeComputeBackend
from corral.bus.local import EventBus, HostAgent
from corral.controller import Controller, ControllerSettings
from corral.model.event import Event
from corral.model.instance import Instance, InstanceCreate, InstanceSpec
from corral.model.operation import Operation
from corral.model.rpc import ExecRequest, ImageArtifact
from corral.model.storage import Pool, Volume, VolumeCreate, VolumeSpec
from corral.paths import runtime_dir_for
from corral.store import Database, open_database, sqlite_url
from corral.store import images as image_store
from corral.store import instances as instance_store
from corral.store import operations as operation_store
from corral.store import pools as pool_store
from corral.store import volumes as volume_store
from corral.store.events import EventLog

T = TypeVar("T")


@dataclass
class Harness:
    """One embedded control plane: store, bus, fake agent, controller."""

    data_dir: Path
    settings: ControllerSettings
    db: Database
    events: EventLog
    bus: EventBus
    agent: HostAgent
    controller: Controller
    seen: list[Event] = field(default_factory=list)

    @property
    def fake(self) -> FakeComputeBackend:
        """The fake compute backend behind the agent (to simulate crashes, slow boots)."""
        agent = getattr(self.agent, "inner", self.agent)  # see tests/controller/gates.py
        assert isinstance(agent, Agent)
        backend = agent.compute
        assert isinstance(backend, FakeComputeBackend)
        return backend

    @property
    def runtime_dir(self) -> Path:
        """Where the fake keeps its guests' files."""
        return runtime_dir_for(self.data_dir)

    def instance(self, name: str) -> Instance:
        """The stored instance."""
        with self.db.transaction() as session:
            return instance_store.get_instance(session, name).instance

    def exists(self, name: str) -> bool:
        """True while the instance has a record."""
        with self.db.transaction() as session:
            return instance_store.find_instance(session, name) is not None

    def operation(self, op_id: str) -> Operation:
        """The stored operation."""
        with self.db.transaction() as session:
            return operation_store.get_operation(session, op_id)

    async def wait_op(self, op: Operation, timeout_s: float = 5.0) -> Operation:
        """Wait until `op` is done; return it."""
        return await wait_until(lambda: done if (done := self.operation(op.id)).done else None,
                                timeout_s, f"operation {op.kind} {op.target}")  # fmt: skip

    async def build_tiny(self) -> None:
        """Build the fake `tiny` image."""
        op = await self.wait_op(self.controller.images.start_build("tiny", None))
        assert op.state == "succeeded", op

    async def create(self, name: str, **spec: Any) -> Operation:
        """Create an instance and wait for its operation."""
        body = InstanceCreate(name=name, spec=InstanceSpec(image="tiny", **spec))
        return await self.wait_op(self.controller.instances.create(body))

    def event_types(self, name: str) -> list[str]:
        """Types of the events published about object `name`, in order."""
        return [e.type for e in self.seen if e.name == name]

    # -- storage -------------------------------------------------------------------------------
    def pool(self, name: str) -> Pool:
        """The stored pool."""
        with self.db.transaction() as session:
            return pool_store.get_pool(session, name)

    def volume(self, name: str) -> Volume:
        """The stored volume."""
        with self.db.transaction() as session:
            return volume_store.get_volume(session, name).volume

    def volume_exists(self, name: str) -> bool:
        """True while the volume has a record."""
        with self.db.transaction() as session:
            return volume_store.find_volume(session, name) is not None

    async def wait_pool_ready(self, name: str = "default") -> Pool:
        """Wait until the pool is ready."""
        return await wait_until(
            lambda: pool if (pool := self.pool(name)).status.state == "ready" else None,
            5,
            f"pool {name} ready",
        )

    async def create_volume(self, name: str, **spec: Any) -> Operation:
        """Create a volume (blank, 64 MiB in the default pool unless told) and wait."""
        values = {"size_bytes": 64 * 1024**2} | spec
        body = VolumeCreate(name=name, spec=VolumeSpec.model_validate(values))
        return await self.wait_op(self.controller.volumes.create(body))

    def add_disk_image(self, name: str, virtual_bytes: int, *, cloud_init: bool = False) -> Path:
        """A ready `disk` image: the fake kernel plus a real (empty) qcow2 root disk."""
        with self.db.transaction() as session:
            tiny = image_store.get_image(session, "tiny")
        disk = self.data_dir / "images" / name / "disk.qcow2"
        disk.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(virtual_bytes)], check=True
        )
        artifact = ImageArtifact(
            name=name,
            kind="disk",
            kernel=tiny.kernel or "",
            initrd=tiny.initrd,
            cmdline="root=/dev/vda1",
            size_bytes=disk.stat().st_size,
            digest="sha256:test",
            recipe={"name": name},
            build_seconds=0.0,
            disk=str(disk),
            disk_virtual_size_bytes=virtual_bytes,
            cloud_init=cloud_init,
        )
        with self.db.transaction() as session:
            image_store.start_image_build(session, name, name)
            image_store.mark_image_ready(session, artifact)
        return disk

    async def guest_text(self, instance: str, *command: str) -> str:
        """What `command` prints in the (fake) guest."""
        result = await self.agent.exec(ExecRequest(name=instance, command=list(command)))
        assert result.exit_code == 0, result
        return result.stdout


async def wait_until(probe: Callable[[], T | None], timeout_s: float, what: str = "condition") -> T:
    """Poll `probe` until it returns something; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} not reached within {timeout_s}s")


async def start_harness(
    data_dir: Path, wrap: Callable[[HostAgent], HostAgent] | None = None, **settings: Any
) -> Harness:
    """Open the store, build the fake agent (wrapped by `wrap`, e.g. to make one of its calls
    hang like a crash would), start a controller."""
    db = open_database(sqlite_url(data_dir / "corral.db"))
    events = EventLog(db)
    seen: list[Event] = []

    def record(type_: str, kind: str, name: str, data: dict[str, Any]) -> Event:
        event = events.append(type_, kind, name, data)
        seen.append(event)
        return event

    bus = EventBus(record)
    agent = build_agent(
        "fake",
        host_name="test-host",
        runtime_dir=runtime_dir_for(data_dir),
        images_dir=data_dir / "images",
        cache_dir=data_dir / "cache",
    )
    if wrap is not None:
        agent = wrap(agent)
    defaults: dict[str, Any] = {"resync_s": 0.2, "backups_dir": data_dir / "backups"}
    config = ControllerSettings(host_name="test-host", **(defaults | settings))
    controller = Controller(db, bus, agent, config)
    await controller.start()
    return Harness(data_dir, config, db, events, bus, agent, controller, seen)


async def stop_harness(harness: Harness) -> None:
    """Stop the control plane only (guests 'keep running' in the fake's files)."""
    await harness.controller.stop()
    await harness.agent.close()
    harness.db.close()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """A started controller with the `tiny` image built."""
    started = await start_harness(tmp_path / "data")
    await started.build_tiny()
    try:
        yield started
    finally:
        await stop_harness(started)
        shutil.rmtree(started.runtime_dir, ignore_errors=True)
