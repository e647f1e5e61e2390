"""The pure backup rules, one row per rule: full or incremental, and what a delete removes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from corral.controller.backup_plan import (
    BackupPlan,
    descendants,
    newest_deleted_reason,
    plan_backup,
    points_to_delete,
)
from corral.errors import Conflict, NotFound
from corral.model.snapshot import BackupKind, BackupPoint
from corral.store.backups import BackupChain

FULL, INC = BackupKind.FULL, BackupKind.INCREMENTAL
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def point(id_: str, parent: str | None = None) -> BackupPoint:
    return BackupPoint(
        volume="data",
        id=id_,
        kind=INC if parent else FULL,
        parent=parent,
        path=f"/b/data/{id_}.qcow2",
        created_at=T0,
    )


P1, P2, P3 = point("b0001"), point("b0002", "b0001"), point("b0003", "b0002")
CHAIN = BackupChain("data", "uid-1", last_seq=3)


@pytest.mark.parametrize(
    ("points", "chain", "uid", "full", "plan"),
    [
        ([], None, "uid-1", False, BackupPlan(FULL, reason="the first backup of the volume")),
        ([], CHAIN, "uid-1", False, BackupPlan(FULL, reason="no earlier restore point is left")),
        ([P1, P2, P3], CHAIN, "uid-1", False, BackupPlan(INC, parent=P3)),
        ([P1], CHAIN, "uid-1", False, BackupPlan(INC, parent=P1)),
        ([P1, P2], CHAIN, "uid-1", True, BackupPlan(FULL, reason="a full backup was asked for")),
        ([P1, P2], CHAIN, "uid-2", False, BackupPlan(FULL, reason=(
            "the volume was made anew since its last backup (a new volume of that name)"))),
        ([P1, P2], BackupChain("data", "uid-1", 3, "b0003 was deleted"), "uid-1", False,
         BackupPlan(FULL, reason="b0003 was deleted")),
    ],
    ids=["first", "all-deleted", "incremental", "one-point", "asked-full", "new-volume",
         "tip-deleted"],
)  # fmt: skip
def test_plan_backup(
    points: list[BackupPoint], chain: BackupChain | None, uid: str, full: bool, plan: BackupPlan
) -> None:
    assert plan_backup(points, chain, volume_uid=uid, full_requested=full) == plan


P4, P5 = point("b0004"), point("b0005", "b0004")
ALL = [P1, P2, P3, P4, P5]


@pytest.mark.parametrize(
    ("target", "chain", "deleted"),
    [
        ("b0005", False, ["b0005"]),
        ("b0003", False, ["b0003"]),
        ("b0002", True, ["b0003", "b0002"]),
        ("b0001", True, ["b0003", "b0002", "b0001"]),
        ("b0004", True, ["b0005", "b0004"]),
        ("b0005", True, ["b0005"]),
    ],
)
def test_points_to_delete(target: str, chain: bool, deleted: list[str]) -> None:
    assert points_to_delete(ALL, target, chain=chain) == deleted


def test_a_point_others_need_is_refused_without_chain() -> None:
    with pytest.raises(Conflict) as refused:
        points_to_delete(ALL, "b0001", chain=False)
    assert refused.value.code == "backup_in_use"
    assert "b0002, b0003" in refused.value.message
    with pytest.raises(NotFound):
        points_to_delete(ALL, "b0009", chain=True)
    assert descendants(ALL, "b0004") == ["b0005"]


@pytest.mark.parametrize(
    ("deleted", "full"),
    [(["b0005"], True), (["b0003", "b0002"], False), (["b0005", "b0004"], True), ([], False)],
)
def test_the_next_backup_is_full_once_the_newest_point_is_gone(
    deleted: list[str], full: bool
) -> None:
    reason = newest_deleted_reason(ALL, deleted)
    assert (reason is not None) is full
    if reason:
        assert "b0005" in reason
