"""The blocking facade: the async core's methods, run to completion on a private event loop.

No request logic lives here: every method hands a coroutine of `AsyncCorralClient` to one
`asyncio.Runner`, so retries, long-polls and the SSE reader exist exactly once. The runner keeps
one loop for the client's lifetime, which the pooled httpx connections need, and turns Ctrl-C
into a clean cancellation of the running call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Coroutine, Generator, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

from corral import paths
from corral.client.aio import DEFAULT_TIMEOUT_S, AsyncCorralClient, OperationCallback
from corral.client.settings import resolve_settings
from corral.model import Event, Host, Image, Instance, Machine, OnCrash, Operation, PowerState
from corral.model.instance import FromSnapshot, RootDisk
from corral.model.rpc import ExecResult
from corral.model.snapshot import BackupPoint, Snapshot
from corral.model.storage import (
    InstanceDisk,
    Pool,
    PoolDriver,
    Volume,
    VolumeFormat,
    VolumeSource,
)

T = TypeVar("T")


class CorralClient:
    """Blocking client for scripts and the CLI; see AsyncCorralClient for the semantics.

    Not for use inside a running event loop (use AsyncCorralClient there). Close it, or use it
    as a context manager, to release its loop and connections.
    """

    def __init__(
        self,
        url: str = paths.DEFAULT_URL,
        token: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        token_source: str | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        self._closed = False
        self.aio = AsyncCorralClient(
            url, token, transport=transport, timeout=timeout, token_source=token_source
        )

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        data_dir: Path | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Self:
        """Same precedence as AsyncCorralClient.from_env."""
        settings = resolve_settings(url, data_dir)
        return cls(
            settings.url, settings.token, transport=transport, token_source=settings.token_source
        )

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.aio.url

    def __repr__(self) -> str:
        return f"CorralClient(url={self.url!r}, token_from={self.aio.token_source!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and the private loop (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.run(self.aio.aclose())
        finally:
            self._runner.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of `self.aio` (or one using it) on this client's loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._runner.run(coro)
        coro.close()
        raise RuntimeError("CorralClient blocks; inside async code use AsyncCorralClient")

    def _iterate(self, agen: AsyncGenerator[T, None]) -> Generator[T, None, None]:
        async def step() -> T:
            return await anext(agen)

        try:
            while True:
                try:
                    yield self.run(step())
                except StopAsyncIteration:
                    return
        finally:
            self.run(agen.aclose())

    # One line per endpoint: the signatures are the documentation, the bodies delegate.

    def health(self) -> dict[str, Any]:
        """GET /healthz."""
        return self.run(self.aio.health())

    def list_instances(self) -> list[Instance]:
        """All instances."""
        return self.run(self.aio.list_instances())

    def get_instance(self, name: str) -> Instance:
        """One instance."""
        return self.run(self.aio.get_instance(name))

    def create_instance(
        self,
        name: str,
        *,
        image: str,
        cpus: int | None = None,
        memory_mib: int | None = None,
        power: PowerState | None = None,
        machine: Machine | None = None,
        on_crash: OnCrash | None = None,
        disks: Sequence[InstanceDisk | str] | None = None,
        root_disk: RootDisk | None = None,
        ssh_keys: Sequence[str] | None = None,
        user_data: str | None = None,
        from_snapshot: FromSnapshot | None = None,
    ) -> Operation:
        """Create an instance; returns the `create` operation."""
        return self.run(
            self.aio.create_instance(
                name,
                image=image,
                cpus=cpus,
                memory_mib=memory_mib,
                power=power,
                machine=machine,
                on_crash=on_crash,
                disks=disks,
                root_disk=root_disk,
                ssh_keys=ssh_keys,
                user_data=user_data,
                from_snapshot=from_snapshot,
            )
        )

    def update_instance(
        self,
        name: str,
        *,
        cpus: int | None = None,
        memory_mib: int | None = None,
        power: PowerState | None = None,
        machine: Machine | None = None,
        on_crash: OnCrash | None = None,
        disks: Sequence[InstanceDisk | str] | None = None,
        if_match: str | None = None,
    ) -> Operation:
        """Change some spec fields (optionally guarded by an ETag)."""
        return self.run(
            self.aio.update_instance(
                name,
                cpus=cpus,
                memory_mib=memory_mib,
                power=power,
                machine=machine,
                on_crash=on_crash,
                disks=disks,
                if_match=if_match,
            )
        )

    def delete_instance(self, name: str) -> Operation:
        """Delete an instance."""
        return self.run(self.aio.delete_instance(name))

    def start_instance(self, name: str) -> Operation:
        """Power an instance on."""
        return self.run(self.aio.start_instance(name))

    def stop_instance(
        self, name: str, *, force: bool = False, timeout_s: float | None = None
    ) -> Operation:
        """Shut an instance down (or power it off with `force`)."""
        return self.run(self.aio.stop_instance(name, force=force, timeout_s=timeout_s))

    def restart_instance(self, name: str) -> Operation:
        """Stop, then start again."""
        return self.run(self.aio.restart_instance(name))

    def exec_instance(
        self,
        name: str,
        command: Sequence[str],
        *,
        timeout_s: float = 60.0,
        input: str | None = None,
    ) -> ExecResult:
        """Run a command in the guest."""
        return self.run(self.aio.exec_instance(name, command, timeout_s=timeout_s, input=input))

    def console_log(self, name: str, *, max_bytes: int | None = None) -> bytes:
        """What the guest printed last on its serial console."""
        return self.run(self.aio.console_log(name, max_bytes=max_bytes))

    def list_images(self) -> list[Image]:
        """All images."""
        return self.run(self.aio.list_images())

    def get_image(self, name: str) -> Image:
        """One image."""
        return self.run(self.aio.get_image(name))

    def build_image(self, recipe: str, *, name: str | None = None) -> Operation:
        """Build an image from a recipe; returns the `image-build` operation."""
        return self.run(self.aio.build_image(recipe, name=name))

    def delete_image(self, name: str) -> None:
        """Delete an image."""
        self.run(self.aio.delete_image(name))

    def list_recipes(self) -> list[str]:
        """Recipe names."""
        return self.run(self.aio.list_recipes())

    def list_pools(self) -> list[Pool]:
        """All storage pools."""
        return self.run(self.aio.list_pools())

    def get_pool(self, name: str) -> Pool:
        """One pool."""
        return self.run(self.aio.get_pool(name))

    def create_pool(
        self,
        name: str,
        *,
        driver: PoolDriver | None = None,
        path: str | None = None,
        size_bytes: int | None = None,
    ) -> Operation:
        """Create a pool; returns the `pool-create` operation."""
        return self.run(self.aio.create_pool(name, driver=driver, path=path, size_bytes=size_bytes))

    def delete_pool(self, name: str) -> Operation:
        """Delete an empty pool."""
        return self.run(self.aio.delete_pool(name))

    def list_volumes(self, *, pool: str | None = None) -> list[Volume]:
        """All volumes, or those of one pool."""
        return self.run(self.aio.list_volumes(pool=pool))

    def get_volume(self, name: str) -> Volume:
        """One volume."""
        return self.run(self.aio.get_volume(name))

    def create_volume(
        self,
        name: str,
        *,
        size_bytes: int | None = None,
        pool: str | None = None,
        format: VolumeFormat | None = None,
        source: VolumeSource | None = None,
    ) -> Operation:
        """Create a volume; returns the `volume-create` operation."""
        return self.run(
            self.aio.create_volume(
                name, size_bytes=size_bytes, pool=pool, format=format, source=source
            )
        )

    def resize_volume(
        self, name: str, size_bytes: int, *, if_match: str | None = None
    ) -> Operation:
        """Grow a volume (optionally guarded by an ETag)."""
        return self.run(self.aio.resize_volume(name, size_bytes, if_match=if_match))

    def delete_volume(self, name: str) -> Operation:
        """Delete a volume that is neither attached nor cloned from."""
        return self.run(self.aio.delete_volume(name))

    def attach_volume(self, name: str, instance: str) -> Operation:
        """Attach a volume to an instance."""
        return self.run(self.aio.attach_volume(name, instance))

    def detach_volume(self, name: str) -> Operation:
        """Detach a volume from its instance."""
        return self.run(self.aio.detach_volume(name))

    def list_snapshots(self, instance: str) -> list[Snapshot]:
        """The instance's snapshots, oldest first."""
        return self.run(self.aio.list_snapshots(instance))

    def get_snapshot(self, instance: str, name: str) -> Snapshot:
        """One snapshot."""
        return self.run(self.aio.get_snapshot(instance, name))

    def create_snapshot(
        self,
        instance: str,
        name: str,
        *,
        memory: bool = False,
        quiesce: bool = True,
        description: str | None = None,
    ) -> Operation:
        """Take a snapshot; returns the `snapshot-create` operation."""
        return self.run(
            self.aio.create_snapshot(
                instance, name, memory=memory, quiesce=quiesce, description=description
            )
        )

    def revert_snapshot(self, instance: str, name: str) -> Operation:
        """Go back to a snapshot."""
        return self.run(self.aio.revert_snapshot(instance, name))

    def delete_snapshot(self, instance: str, name: str) -> Operation:
        """Delete a snapshot."""
        return self.run(self.aio.delete_snapshot(instance, name))

    def list_backups(self, volume: str) -> list[BackupPoint]:
        """The volume's restore points, oldest first."""
        return self.run(self.aio.list_backups(volume))

    def get_backup(self, volume: str, backup: str) -> BackupPoint:
        """One restore point."""
        return self.run(self.aio.get_backup(volume, backup))

    def create_backup(self, volume: str, *, full: bool = False) -> Operation:
        """Back a volume up; returns the `backup` operation."""
        return self.run(self.aio.create_backup(volume, full=full))

    def delete_backup(self, volume: str, backup: str, *, chain: bool = False) -> Operation:
        """Delete a restore point (or, with `chain`, it and everything on top of it)."""
        return self.run(self.aio.delete_backup(volume, backup, chain=chain))

    def restore_backup(
        self, volume: str, backup: str, *, to: str, pool: str | None = None
    ) -> Operation:
        """Make a new volume from a restore point."""
        return self.run(self.aio.restore_backup(volume, backup, to=to, pool=pool))

    def list_hosts(self) -> list[Host]:
        """All hosts."""
        return self.run(self.aio.list_hosts())

    def get_host(self, name: str) -> Host:
        """One host."""
        return self.run(self.aio.get_host(name))

    def list_operations(self) -> list[Operation]:
        """Recent operations, newest first."""
        return self.run(self.aio.list_operations())

    def get_operation(self, op_id: str, *, wait: int | None = None) -> Operation:
        """One operation (optionally long-polled)."""
        return self.run(self.aio.get_operation(op_id, wait=wait))

    def wait_operation(
        self,
        op_id: str,
        *,
        timeout: float = 120.0,
        on_update: OperationCallback | None = None,
        check: bool = True,
    ) -> Operation:
        """Wait for an operation to finish; raises its error when it failed and `check`."""
        return self.run(
            self.aio.wait_operation(op_id, timeout=timeout, on_update=on_update, check=check)
        )

    def events(
        self, *, since: int | None = None, reconnect: bool = True, max_retries: int = 8
    ) -> Generator[Event, None, None]:
        """Follow the event stream, resuming after drops; `close()` it when done."""
        return self._iterate(
            self.aio.events(since=since, reconnect=reconnect, max_retries=max_retries)
        )
