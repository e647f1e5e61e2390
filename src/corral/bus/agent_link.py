"""The agent as the controller sees it: one Protocol, whatever carries the calls.

The embedded shape passes calls in-process (LocalAgentLink); the multi-host shape will carry the
same messages over NATS. The agent implements this structurally; nobody imports the other side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from corral.model.rpc import (
    AgentEvent,
    DiskAttachment,
    ExecRequest,
    ExecResult,
    GuestObservation,
    HostFacts,
    ImageArtifact,
    LaunchRequest,
    PoolConfig,
    PoolFacts,
    VolumeFacts,
    VolumeRequest,
)
from corral.model.rpc_snapshots import BackupRequest, BackupResult, SnapshotRequest, SnapshotResult

ProgressFn = Callable[[float, str], None]
AgentEventHandler = Callable[[AgentEvent], None]


class AgentAPI(Protocol):
    """Everything the control plane asks of a host. Every call is idempotent where it can be."""

    async def host_facts(self) -> HostFacts:
        """Capacity, accelerator and why."""
        ...

    async def launch(self, req: LaunchRequest) -> GuestObservation:
        """Start a guest; on failure raise LaunchError and leave nothing behind."""
        ...

    async def observe(self, name: str) -> GuestObservation:
        """What the guest is doing now (ABSENT if there is no process)."""
        ...

    async def observe_all(self) -> list[GuestObservation]:
        """Every guest this host knows of (from its saved runtimes)."""
        ...

    async def wait_ready(self, name: str, timeout_s: float) -> float:
        """Wait until the guest agent answers guest-ping; return seconds waited."""
        ...

    async def shutdown(self, name: str, timeout_s: float) -> None:
        """ACPI power-off, wait up to `timeout_s`, then quit. No-op if absent."""
        ...

    async def kill(self, name: str) -> None:
        """Stop the guest at once. No-op if absent."""
        ...

    async def forget(self, name: str) -> None:
        """Remove the guest's runtime files; the guest must not be running."""
        ...

    async def exec(self, req: ExecRequest) -> ExecResult:
        """Run a command in the guest through its guest agent."""
        ...

    async def open_console(self, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to the guest's serial console."""
        ...

    async def console_log(self, name: str, max_bytes: int) -> bytes:
        """The last `max_bytes` the guest printed on its serial console."""
        ...

    async def build_image(self, recipe: str, name: str, progress: ProgressFn) -> ImageArtifact:
        """Build an image from a recipe on this host."""
        ...

    async def delete_image(self, name: str) -> None:
        """Remove an image's files. No-op if absent."""
        ...

    def recipes(self) -> list[str]:
        """Names of the image recipes this host can build."""
        ...

    # -- storage ------------------------------------------------------------------------------
    async def ensure_pool(self, config: PoolConfig) -> PoolFacts:
        """Make the pool exist and be usable (mount a btrfs loop after a reboot, ...)."""
        ...

    async def pool_facts(self, pool: str) -> PoolFacts:
        """Capacity and usage of a pool; NotFound if it was never ensured."""
        ...

    async def delete_pool(self, pool: str) -> None:
        """Remove an empty pool and what the agent made for it. No-op if absent."""
        ...

    async def create_volume(self, req: VolumeRequest) -> VolumeFacts:
        """Make a volume; all or nothing (no half-written file is left on failure)."""
        ...

    async def volume_facts(self, pool: str, name: str) -> VolumeFacts:
        """A volume's size, allocation and backing; NotFound if absent."""
        ...

    async def resize_volume(self, pool: str, name: str, size_bytes: int) -> VolumeFacts:
        """Grow a volume that is not attached to a running guest; shrinking is refused."""
        ...

    async def delete_volume(self, pool: str, name: str) -> None:
        """Remove a volume (refused while a clone depends on it). No-op if absent."""
        ...

    async def attach_disk(self, instance: str, disk: DiskAttachment) -> None:
        """Hot-plug a disk into a running guest (idempotent for an attached id)."""
        ...

    async def detach_disk(self, instance: str, disk_id: str) -> None:
        """Hot-unplug a disk from a running guest and wait until QEMU let go of it."""
        ...

    async def resize_disk(self, instance: str, disk_id: str, size_bytes: int) -> None:
        """Grow an attached disk while the guest runs; the guest sees the new size."""
        ...

    def subscribe(self, handler: AgentEventHandler) -> None:
        """Call `handler` for every AgentEvent (from QMP events and process exits)."""
        ...

    async def close(self) -> None:
        """Let go of monitors and sockets; running guests keep running."""
        ...

    # -- snapshots and backups ----------------------------------------------------------------
    async def snapshot_create(self, req: SnapshotRequest) -> SnapshotResult:
        """Take snapshot `req.tag` on all of `req.disks` at once (through QMP when the guest
        runs, quiesced by the guest agent when asked and possible; with qemu-img when stopped).
        All or nothing: on failure no disk keeps the tag."""
        ...

    async def snapshot_revert(self, req: SnapshotRequest) -> None:
        """Go back to `req.tag`: a memory snapshot is loaded into the running guest (it goes on
        from that moment, no reboot); a disk-only one needs the guest stopped."""
        ...

    async def snapshot_delete(self, req: SnapshotRequest) -> None:
        """Drop `req.tag` from every disk (running or stopped). No-op where it is absent."""
        ...

    async def snapshot_tags(self, req: SnapshotRequest) -> dict[str, list[str]]:
        """Snapshot tags present on each disk (disk id -> tags): for recovery after a crash."""
        ...

    async def backup(self, req: BackupRequest, progress: ProgressFn) -> BackupResult:
        """Write a full or incremental backup of one disk to `req.target_path`."""
        ...

    async def abort_backup(self, req: BackupRequest) -> None:
        """Cancel a backup that may still run (e.g. after a crash) and remove its target file;
        the dirty bitmap keeps every change, so the next incremental stays correct."""
        ...
