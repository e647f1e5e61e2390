"""Snapshots of instances and backups of volumes: the client's calls for them.

Mixed into AsyncCorralClient (aio.py), whose one request path they use; kept in their own room
so that file stays about the client itself.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from corral.model import Operation
from corral.model.snapshot import BackupPoint, Snapshot

M = TypeVar("M", bound=BaseModel)


def _name(value: str) -> str:
    return quote(value, safe="")


class _RequestPath(Protocol):
    """What these calls need of the client they are mixed into."""

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response: ...

    def _parse(self, model: type[M], response: httpx.Response) -> M: ...

    async def _get(self, path: str, model: type[M], **kwargs: Any) -> M: ...

    async def _list(self, path: str, model: type[M]) -> list[M]: ...

    async def _operation(self, method: str, path: str, body: Any = None) -> Operation: ...


def _snapshots(instance: str) -> str:
    return f"/v1/instances/{_name(instance)}/snapshots"


def _backups(volume: str) -> str:
    return f"/v1/volumes/{_name(volume)}/backups"


class SnapshotCalls:
    """/v1/instances/{name}/snapshots and /v1/volumes/{name}/backups (docs/api.md)."""

    # -- snapshots ----------------------------------------------------------------------------

    async def list_snapshots(self: _RequestPath, instance: str) -> list[Snapshot]:
        """The instance's snapshots, oldest first (`parent` and `current` make the tree)."""
        return await self._list(_snapshots(instance), Snapshot)

    async def get_snapshot(self: _RequestPath, instance: str, name: str) -> Snapshot:
        """One snapshot."""
        return await self._get(f"{_snapshots(instance)}/{_name(name)}", Snapshot)

    async def create_snapshot(
        self: _RequestPath,
        instance: str,
        name: str,
        *,
        memory: bool = False,
        quiesce: bool = True,
        description: str | None = None,
    ) -> Operation:
        """Take a snapshot of the instance's disks (and its memory with `memory`); returns the
        `snapshot-create` operation. InvalidInput `snapshot_needs_qcow2` for raw disks."""
        body: dict[str, Any] = {"name": name, "memory": memory, "quiesce": quiesce}
        if description is not None:
            body["description"] = description
        return await self._operation("POST", _snapshots(instance), body)

    async def revert_snapshot(self: _RequestPath, instance: str, name: str) -> Operation:
        """Go back to a snapshot; returns the `snapshot-revert` operation."""
        path = f"{_snapshots(instance)}/{_name(name)}/actions/revert"
        return await self._operation("POST", path, {})

    async def delete_snapshot(self: _RequestPath, instance: str, name: str) -> Operation:
        """Delete a snapshot (its children keep their place); the `snapshot-delete` operation."""
        return await self._operation("DELETE", f"{_snapshots(instance)}/{_name(name)}")

    # -- backups ------------------------------------------------------------------------------

    async def list_backups(self: _RequestPath, volume: str) -> list[BackupPoint]:
        """The volume's restore points, oldest first."""
        return await self._list(_backups(volume), BackupPoint)

    async def get_backup(self: _RequestPath, volume: str, backup: str) -> BackupPoint:
        """One restore point."""
        return await self._get(f"{_backups(volume)}/{_name(backup)}", BackupPoint)

    async def create_backup(self: _RequestPath, volume: str, *, full: bool = False) -> Operation:
        """Back the volume up (incremental when possible unless `full`); the `backup`
        operation, whose progress follows the copy."""
        return await self._operation("POST", _backups(volume), {"full": full})

    async def delete_backup(
        self: _RequestPath, volume: str, backup: str, *, chain: bool = False
    ) -> Operation:
        """Delete a restore point nothing builds on, or with `chain` the point and everything
        on top of it; Conflict `backup_in_use` otherwise."""
        params = {"chain": "true"} if chain else None
        response = await self._request(
            "DELETE", f"{_backups(volume)}/{_name(backup)}", params=params
        )
        return self._parse(Operation, response)

    async def restore_backup(
        self: _RequestPath, volume: str, backup: str, *, to: str, pool: str | None = None
    ) -> Operation:
        """Make the new volume `to` (in `pool`, default: default) from a restore point; the
        `backup-restore` operation, done when the volume is ready."""
        body: dict[str, Any] = {"volume": to}
        if pool is not None:
            body["pool"] = pool
        path = f"{_backups(volume)}/{_name(backup)}/actions/restore"
        return await self._operation("POST", path, body)
