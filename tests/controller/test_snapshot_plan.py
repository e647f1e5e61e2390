"""The pure snapshot rules, one row per rule: revert plans, disk checks, recovery."""

from __future__ import annotations

import pytest

from corral.controller.snapshot_plan import (
    MEMORY_NOT_LOADED,
    DiskFormat,
    RevertPlan,
    RevertStep,
    plan_revert,
    revert_problem,
    snapshot_complete,
    snapshot_disk_problem,
    snapshot_volumes,
)

R = RevertStep


@pytest.mark.parametrize(
    ("memory", "alive", "plan"),
    [
        (True, True, RevertPlan((R.LOAD_MEMORY,))),
        (True, False, RevertPlan((R.REVERT_DISKS,), MEMORY_NOT_LOADED)),
        (False, True, RevertPlan((R.SHUTDOWN, R.REVERT_DISKS, R.START))),
        (False, False, RevertPlan((R.REVERT_DISKS,))),
    ],
    ids=["memory-running", "memory-stopped", "disks-running", "disks-stopped"],
)
def test_plan_revert(memory: bool, alive: bool, plan: RevertPlan) -> None:
    assert plan_revert(memory=memory, guest_alive=alive) == plan


Q, RAW = "qcow2", "raw"


@pytest.mark.parametrize(
    ("disks", "volumes", "problem"),
    [
        ([DiskFormat("a", Q)], ["a"], None),
        ([DiskFormat("a", Q), DiskFormat("b", Q)], ["a", "b"], None),
        ([DiskFormat("a", Q), DiskFormat("r", RAW, read_only=True)], ["a"], None),
        ([DiskFormat("a", Q), DiskFormat("r", RAW)], ["a", "r"], "volume r is raw"),
        ([DiskFormat("r", RAW), DiskFormat("s", RAW)], ["r", "s"], "volumes r, s are raw"),
        ([], [], "no writable disk"),
        ([DiskFormat("a", Q, read_only=True)], [], "no writable disk"),
    ],
    ids=["one", "two", "raw-read-only", "one-raw", "two-raw", "none", "only-read-only"],
)
def test_which_disks_a_snapshot_takes_and_what_it_refuses(
    disks: list[DiskFormat], volumes: list[str], problem: str | None
) -> None:
    assert snapshot_volumes(disks) == volumes
    found = snapshot_disk_problem("vm", disks)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("taken_of", "now", "memory", "problem"),
    [
        (["a"], ["a"], False, None),
        (["a"], ["a"], True, None),
        (["a"], ["a", "b"], False, None),  # a disk added since stays as it is
        (["a"], ["a", "b"], True, "without volume(s) b"),  # the saved guest never had b
        (["a", "b"], ["a"], False, "covers volume(s) b"),
        (["a", "b"], ["b"], True, "covers volume(s) a"),
    ],
    ids=["same", "same-memory", "added", "added-memory", "removed", "removed-memory"],
)
def test_when_a_revert_is_possible(
    taken_of: list[str], now: list[str], memory: bool, problem: str | None
) -> None:
    found = revert_problem("vm", "s1", taken_of, now, memory=memory)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("tags", "disks", "complete"),
    [
        ({"d1": ["t"], "d2": ["x", "t"]}, ["d1", "d2"], True),
        ({"d1": ["t"], "d2": ["x"]}, ["d1", "d2"], False),
        ({"d1": ["t"]}, ["d1", "d2"], False),
        ({}, [], False),
    ],
    ids=["on-all", "on-some", "disk-unknown", "no-disks"],
)
def test_recovery_keeps_a_snapshot_only_when_every_disk_has_it(
    tags: dict[str, list[str]], disks: list[str], complete: bool
) -> None:
    assert snapshot_complete(tags, disks, "t") is complete
