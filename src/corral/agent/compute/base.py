"""The compute driver seam: one Protocol every hypervisor/runtime backend implements.

A backend owns the guests' runtime files (sockets, pid, saved launch command) under its runtime
dir, and re-attaches to running guests after a restart of the process that hosts it. The fake
backend and the QEMU backend pass the same contract suite (tests/agent/test_compute_contract.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from corral.model.rpc import (
    AgentEvent,
    DiskAttachment,
    ExecRequest,
    ExecResult,
    GuestObservation,
    LaunchRequest,
)
from corral.model.rpc_snapshots import BackupRequest, BackupResult, SnapshotRequest, SnapshotResult

AgentEventHandler = Callable[[AgentEvent], None]
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class ComputeCapabilities:
    """What a backend can do, as data (the control plane reads it; nobody checks isinstance)."""

    kind: str  # "vm" or "container"
    live_migrate: bool = False
    console: bool = True
    guest_exec: bool = True
    snapshots: bool = False  # internal snapshots of a running guest's qcow2 disks
    snapshots_with_memory: bool = False  # ... including its RAM (revert without a reboot)
    incremental_backup: bool = False  # persistent dirty bitmaps on a running guest's disks


@dataclass(frozen=True)
class AccelInfo:
    """Which accelerator guests get on this host, and why."""

    accel: str  # "kvm" or "tcg"
    reason: str


class ComputeBackend(Protocol):
    """A family of guests on one host (QEMU VMs; later runc containers)."""

    name: str
    capabilities: ComputeCapabilities

    def accel_info(self) -> AccelInfo:
        """The accelerator this backend will use and the reason (said in host status)."""
        ...

    def version(self) -> str:
        """Version of the underlying runtime (e.g. QEMU's), for host status."""
        ...

    async def launch(self, req: LaunchRequest) -> GuestObservation:
        """Start a guest detached from this process. On failure raise LaunchError carrying the
        tail of the runtime's stderr, and leave no process, socket or file behind."""
        ...

    async def observe(self, name: str) -> GuestObservation:
        """The guest's state now; ABSENT when there is no process."""
        ...

    async def observe_all(self) -> list[GuestObservation]:
        """Every guest with saved runtime files (running or not)."""
        ...

    async def wait_ready(self, name: str, timeout_s: float) -> float:
        """Wait until the guest agent answers guest-ping; return the seconds waited.
        Raise GuestAgentError on timeout, LaunchError-free: the guest keeps running."""
        ...

    async def shutdown(self, name: str, timeout_s: float) -> None:
        """ACPI power-off, wait up to `timeout_s` for the guest to exit, then quit/kill."""
        ...

    async def kill(self, name: str) -> None:
        """End the guest process at once (idempotent)."""
        ...

    async def forget(self, name: str) -> None:
        """Remove the runtime files of a guest that is not running (idempotent)."""
        ...

    async def exec(self, req: ExecRequest) -> ExecResult:
        """Run a command inside the guest through its guest agent."""
        ...

    async def open_console(self, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the guest's serial console."""
        ...

    async def console_log(self, name: str, max_bytes: int) -> bytes:
        """The last `max_bytes` of what the guest printed on its console."""
        ...

    async def attach_disk(self, name: str, disk: DiskAttachment) -> None:
        """Hot-plug a disk (blockdev + virtio-blk device) into a running guest; idempotent."""
        ...

    async def detach_disk(self, name: str, disk_id: str) -> None:
        """Hot-unplug a disk, wait for the guest to release it, then drop the block node."""
        ...

    async def resize_disk(self, name: str, disk_id: str, size_bytes: int) -> None:
        """Grow an attached disk online (QMP block_resize); the guest sees the new size."""
        ...

    # Snapshots and backups of a RUNNING guest's disks (the agent handles stopped guests with
    # qemu-img on the files). See corral.model.rpc_snapshots for the messages.
    async def snapshot_create(self, req: SnapshotRequest) -> SnapshotResult:
        """Atomic internal snapshot of the guest's disks (+ memory with `req.memory`)."""
        ...

    async def snapshot_revert(self, req: SnapshotRequest) -> None:
        """Load a memory snapshot into the running guest."""
        ...

    async def snapshot_delete(self, req: SnapshotRequest) -> None:
        """Delete a snapshot from the running guest's disks."""
        ...

    async def snapshot_tags(self, req: SnapshotRequest) -> dict[str, list[str]]:
        """Snapshot tags on each of the running guest's `req.disks` (disk id -> tags)."""
        ...

    async def backup(self, req: BackupRequest, progress: ProgressFn) -> BackupResult:
        """Full or incremental (dirty bitmap) backup of one attached disk."""
        ...

    async def abort_backup(self, req: BackupRequest) -> None:
        """Cancel a running backup job of this guest, if any."""
        ...

    def subscribe(self, handler: AgentEventHandler) -> None:
        """Deliver guest events (QMP events, process exits) to `handler`."""
        ...

    async def close(self) -> None:
        """Disconnect monitors; running guests keep running."""
        ...
