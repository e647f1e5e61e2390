"""What snapshot work does, decided without I/O: which disks, how to revert, what recovery finds.

Every rule here is a row of the table tests in tests/controller/test_snapshot_plan.py.

Revert, by the kind of snapshot and whether the guest runs:
- memory snapshot, guest running: load it into the guest (QEMU snapshot-load); the guest goes
  on from the snapshot's instant without a reboot;
- memory snapshot, guest stopped: the disks go back to the snapshot, offline; the memory state
  can only be loaded into a running guest, so the instance stays stopped and the operation says
  so (start it and revert again to get the running guest back);
- disk-only snapshot, guest running: shut the guest down (ACPI, as `stop` does), put the disks
  back offline, boot it again;
- disk-only snapshot, guest stopped: put the disks back offline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

SNAPSHOT_CREATE = "snapshot-create"
SNAPSHOT_REVERT = "snapshot-revert"
SNAPSHOT_DELETE = "snapshot-delete"
SNAPSHOT_KINDS = (SNAPSHOT_CREATE, SNAPSHOT_REVERT, SNAPSHOT_DELETE)
NEEDS_QCOW2 = "snapshot_needs_qcow2"


class RevertStep(StrEnum):
    """One step of a revert."""

    SHUTDOWN = "shutdown"  # ACPI power-off (the agent quits a guest that ignores it)
    REVERT_DISKS = "revert-disks"  # every disk back to the snapshot, on the files
    LOAD_MEMORY = "load-memory"  # the running guest goes back to the snapshot, memory included
    START = "start"  # boot the guest again (the instance's own reconcile does it)


@dataclass(frozen=True)
class RevertPlan:
    """The steps of a revert, and what the user should know about the outcome."""

    steps: tuple[RevertStep, ...]
    note: str = ""


MEMORY_NOT_LOADED = (
    "the guest is not running, so only its disks went back to the snapshot; a memory state "
    "can only be loaded into a running guest: start the instance and revert again to get the "
    "running guest back"
)


def plan_revert(*, memory: bool, guest_alive: bool) -> RevertPlan:
    """How to go back to a snapshot (see the module docstring)."""
    if memory and guest_alive:
        return RevertPlan((RevertStep.LOAD_MEMORY,))
    if memory:
        return RevertPlan((RevertStep.REVERT_DISKS,), MEMORY_NOT_LOADED)
    if guest_alive:
        return RevertPlan((RevertStep.SHUTDOWN, RevertStep.REVERT_DISKS, RevertStep.START))
    return RevertPlan((RevertStep.REVERT_DISKS,))


@dataclass(frozen=True)
class DiskFormat:
    """A disk of an instance as snapshots see it: its volume, format, and whether it is
    attached read-only (read-only disks never change, so snapshots leave them out)."""

    volume: str
    format: str
    read_only: bool = False


def snapshot_volumes(disks: Sequence[DiskFormat]) -> list[str]:
    """The volumes a snapshot covers: the writable disks, in device order."""
    return [disk.volume for disk in disks if not disk.read_only]


def snapshot_disk_problem(instance: str, disks: Sequence[DiskFormat]) -> str | None:
    """Why the instance's disks cannot be snapshotted (None: they can). Internal snapshots
    live inside qcow2 files: every writable disk must be qcow2, and there must be one."""
    raw = [d.volume for d in disks if not d.read_only and d.format == "raw"]
    if raw:
        return (
            f"snapshots of instance {instance!r} need qcow2 disks, and "
            f"{'volumes' if len(raw) > 1 else 'volume'} {', '.join(raw)} "
            f"{'are' if len(raw) > 1 else 'is'} raw: detach them (or attach them read-only) to "
            "take snapshots, or copy their data to qcow2 volumes"
        )
    if not snapshot_volumes(disks):
        return (
            f"instance {instance!r} has no writable disk to snapshot: attach a qcow2 volume "
            "first (`corral volume attach VOLUME INSTANCE`)"
        )
    return None


def revert_problem(
    instance: str, snapshot: str, taken_of: Sequence[str], now: Sequence[str], *, memory: bool
) -> str | None:
    """Why the instance cannot go back to a snapshot taken of volumes `taken_of` while its
    writable disks are now `now` (None: it can). Every volume of the snapshot must still be
    a disk of the instance; a memory snapshot also needs no disk the saved guest never had."""
    gone = [volume for volume in taken_of if volume not in now]
    if gone:
        return (
            f"snapshot {snapshot!r} of instance {instance!r} covers volume(s) {', '.join(gone)}, "
            "which are no longer its writable disks; attach them again to revert"
        )
    added = [volume for volume in now if volume not in taken_of]
    if memory and added:
        return (
            f"snapshot {snapshot!r} holds the memory of a guest without volume(s) "
            f"{', '.join(added)}; detach them from instance {instance!r} to revert to it"
        )
    return None


def snapshot_complete(tags: Mapping[str, Sequence[str]], disk_ids: Sequence[str], tag: str) -> bool:
    """True when every disk in `disk_ids` has snapshot `tag` (what recovery checks after a
    crash: complete means keep it, anything less means roll it back)."""
    return bool(disk_ids) and all(tag in tags.get(disk, ()) for disk in disk_ids)
