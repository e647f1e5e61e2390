"""What a backup or a deletion of restore points does, decided without I/O.

A volume's restore points form chains: a full point, then incrementals, each on top of the
one before (its qcow2 backing file). An incremental copies only what the volume's persistent
dirty bitmap says changed since the newest point, so it is safe only on top of that newest
point, and only while the bitmap still follows it. Every rule is a row of the table tests in
tests/controller/test_backup_plan.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.errors import Conflict, NotFound
from corral.model.snapshot import BackupKind, BackupPoint
from corral.store.backups import BackupChain

BACKUP = "backup"
BACKUP_DELETE = "backup-delete"
BACKUP_RESTORE = "backup-restore"
BACKUP_KINDS = (BACKUP, BACKUP_DELETE)  # done by the backup runner, in the volume's queue
BACKUP_IN_USE = "backup_in_use"


@dataclass(frozen=True)
class BackupPlan:
    """The backup to ask the agent for: full, or incremental on top of `parent`."""

    kind: BackupKind
    parent: BackupPoint | None = None
    reason: str = ""  # why it is full


def plan_backup(
    points: Sequence[BackupPoint],
    chain: BackupChain | None,
    *,
    volume_uid: str,
    full_requested: bool,
) -> BackupPlan:
    """Full or incremental, and on top of which point (`points`: the ready ones, oldest first)."""
    if not points:
        if chain is not None and chain.last_seq > 0:
            return BackupPlan(BackupKind.FULL, reason="no earlier restore point is left")
        return BackupPlan(BackupKind.FULL, reason="the first backup of the volume")
    if full_requested:
        return BackupPlan(BackupKind.FULL, reason="a full backup was asked for")
    if chain is None or chain.volume_uid != volume_uid:
        return BackupPlan(
            BackupKind.FULL,
            reason="the volume was made anew since its last backup (a new volume of that name)",
        )
    if chain.full_reason:
        return BackupPlan(BackupKind.FULL, reason=chain.full_reason)
    return BackupPlan(BackupKind.INCREMENTAL, parent=points[-1])


def descendants(points: Sequence[BackupPoint], point: str) -> list[str]:
    """Ids of the points that need `point` (its children, their children, ...), oldest first."""
    found: list[str] = []
    wanted = {point}
    for candidate in points:  # parents come before their children (oldest first)
        if candidate.parent in wanted:
            found.append(candidate.id)
            wanted.add(candidate.id)
    return found


def points_to_delete(points: Sequence[BackupPoint], point: str, *, chain: bool) -> list[str]:
    """The points a DELETE of `point` removes, newest first: only `point` when nothing needs
    it; with `chain`, `point` and every point that needs it. Conflict(backup_in_use) when
    others need it and `chain` is not set."""
    by_id = {p.id: p for p in points}
    if point not in by_id:
        raise NotFound(f"volume has no restore point {point!r}")
    needing = descendants(points, point)
    if needing and not chain:
        raise Conflict(
            f"restore point {point!r} is the base of {', '.join(needing)}; delete the newest "
            f"point first, or this point and everything on top of it with `?chain=true` "
            f"(`corral backup delete VOLUME {point} --chain`)",
            code=BACKUP_IN_USE,
        )
    return list(reversed([point, *needing]))


def newest_deleted_reason(points: Sequence[BackupPoint], deleted: Sequence[str]) -> str | None:
    """Why the next backup must be full after `deleted` went (None: the newest point stays,
    so the dirty bitmap still follows the chain's tip)."""
    if not points or points[-1].id not in deleted:
        return None
    return (
        f"restore point {points[-1].id}, the newest, was deleted; the dirty bitmap follows it, "
        "so the next backup starts a new chain"
    )
