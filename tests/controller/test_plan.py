"""plan_instance, one row per rule: (spec, status, what the agent sees) -> steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from corral.controller.disks import disk_id
from corral.controller.plan import (
    DISK_FAILED_REASON,
    DISKS_CONDITION,
    READY_TIMEOUT_REASON,
    Adopt,
    AttachDisk,
    DeleteRecord,
    DetachDisk,
    DropSnapshots,
    Forget,
    Kill,
    Launch,
    MarkDeleting,
    MarkStopped,
    RecordExit,
    ReleaseDisks,
    RestartBackoff,
    Shutdown,
    Step,
    StopPolicy,
    WaitReady,
    plan_disks,
    plan_instance,
    restart_delay_s,
)
from corral.model.instance import (
    Condition,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    OnCrash,
    PowerState,
)
from corral.model.rpc import GuestObservation, GuestRunState
from corral.model.storage import InstanceDisk

RUNNING = PowerState.RUNNING
STOPPED = PowerState.STOPPED
S = InstanceState
G = GuestRunState
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    """One rule of the table."""

    id: str
    power: PowerState
    state: InstanceState
    seen: GuestRunState
    expected: list[Step]
    pid: int | None = None
    seen_pid: int | None = None
    ready: bool = False
    on_crash: OnCrash = OnCrash.STOP
    deleting: bool = False
    restart: bool = False
    stop: StopPolicy = field(default_factory=StopPolicy)
    observed: int = 1
    generation: int = 1
    exit_reason: str | None = None
    ready_timed_out: bool = False
    disks: tuple[str, ...] = ()  # volumes in the spec
    seen_disks: tuple[str, ...] = ()  # disk ids the guest has
    hotplug_failed: bool = False


HALT = Shutdown(30.0)
# The end of every delete: forget the guest, drop its snapshots, let go of its disks, the row.
GONE: list[Step] = [Forget(), DropSnapshots(), ReleaseDisks(), DeleteRecord()]
BOOT: list[Step] = [Forget(), Launch(), WaitReady()]
A, B = disk_id("a"), disk_id("b")

ROWS = [
    # creating and starting
    Row("new instance boots", RUNNING, S.PENDING, G.ABSENT, BOOT, observed=0),
    Row("stopped instance started", RUNNING, S.STOPPED, G.ABSENT, BOOT, generation=2),
    Row("launched, waiting for the agent", RUNNING, S.STARTING, G.RUNNING, [WaitReady()],
        pid=7, seen_pid=7),
    Row("steady state: nothing to do", RUNNING, S.RUNNING, G.RUNNING, [], pid=7, seen_pid=7,
        ready=True),
    Row("paused guest counts as running", RUNNING, S.RUNNING, G.PAUSED, [], pid=7, seen_pid=7,
        ready=True),
    Row("agent timed out once: do not wait again", RUNNING, S.RUNNING, G.RUNNING, [], pid=7,
        seen_pid=7, ready_timed_out=True),
    Row("failed waits for a new generation", RUNNING, S.FAILED, G.ABSENT, []),
    Row("failed with a new generation retries", RUNNING, S.FAILED, G.ABSENT, BOOT, generation=2),
    Row("interrupted launch (no pid recorded) launches again", RUNNING, S.STARTING, G.ABSENT,
        BOOT),
    # adoption: never relaunch a guest that runs
    Row("adopt after a server restart (status lost the pid)", RUNNING, S.STARTING, G.RUNNING,
        [Adopt(), WaitReady()], seen_pid=9),
    Row("adopt a guest with another pid", RUNNING, S.RUNNING, G.RUNNING, [Adopt(), WaitReady()],
        pid=7, seen_pid=8, ready=True),
    Row("same pid, status says stopping: adopt", RUNNING, S.STOPPING, G.RUNNING, [Adopt()],
        pid=7, seen_pid=7, ready=True),
    # stopping
    Row("stop a running guest with ACPI", STOPPED, S.RUNNING, G.RUNNING, [HALT, MarkStopped()],
        pid=7, seen_pid=7, ready=True),
    Row("force stop kills", STOPPED, S.RUNNING, G.RUNNING, [Kill(), MarkStopped()], pid=7,
        seen_pid=7, stop=StopPolicy(force=True)),
    Row("stop honours the timeout asked for", STOPPED, S.RUNNING, G.RUNNING,
        [Shutdown(5.0), MarkStopped()], pid=7, seen_pid=7, stop=StopPolicy(timeout_s=5.0)),
    Row("powered off, QEMU lingering: kill", STOPPED, S.STOPPING, G.SHUTDOWN,
        [Kill(), MarkStopped()], pid=7),
    Row("already gone: just record it", STOPPED, S.STOPPING, G.ABSENT, [MarkStopped()], pid=7),
    Row("stopped and absent: nothing", STOPPED, S.STOPPED, G.ABSENT, []),
    Row("failed, then stopped by the user", STOPPED, S.FAILED, G.ABSENT, [MarkStopped()]),
    # exits nobody asked for
    Row("killed from outside, on_crash=stop", RUNNING, S.RUNNING, G.ABSENT,
        [RecordExit("killed", restart=False)], pid=7, ready=True, exit_reason="killed"),
    Row("powered off from inside, on_crash=stop", RUNNING, S.RUNNING, G.SHUTDOWN,
        [Kill(), RecordExit("guest-poweroff", restart=False)], pid=7, ready=True),
    Row("died while booting", RUNNING, S.STARTING, G.ABSENT, [RecordExit("exited", False)],
        pid=7),
    Row("killed from outside, on_crash=restart", RUNNING, S.RUNNING, G.ABSENT,
        [RecordExit("killed", True), RestartBackoff(), *BOOT], pid=7, ready=True,
        on_crash=OnCrash.RESTART, exit_reason="killed"),
    # restart
    Row("restart a running guest", RUNNING, S.RUNNING, G.RUNNING, [HALT, *BOOT], pid=7,
        seen_pid=7, ready=True, restart=True, generation=2),
    Row("restart after the shutdown already happened", RUNNING, S.STOPPING, G.ABSENT, BOOT,
        pid=7, restart=True, generation=2),
    # deleting
    Row("delete a running guest: shut down first", RUNNING, S.RUNNING, G.RUNNING,
        [MarkDeleting(), HALT, *GONE], pid=7, seen_pid=7, deleting=True),
    Row("delete a stopped instance", STOPPED, S.STOPPED, G.ABSENT,
        [MarkDeleting(), *GONE], deleting=True),
    Row("delete resumed after a server restart", RUNNING, S.DELETING, G.ABSENT,
        GONE, pid=7, deleting=True),
    Row("delete wins over a crash policy", RUNNING, S.RUNNING, G.ABSENT,
        [MarkDeleting(), *GONE], pid=7, deleting=True, on_crash=OnCrash.RESTART),
    # disks
    Row("a new instance boots with its disks (no hot-plug)", RUNNING, S.PENDING, G.ABSENT, BOOT,
        observed=0, disks=("a", "b")),
    Row("a disk added to a running guest is hot-plugged", RUNNING, S.RUNNING, G.RUNNING,
        [AttachDisk("b")], pid=7, seen_pid=7, ready=True, disks=("a", "b"), seen_disks=(A,),
        generation=2),
    Row("a disk dropped from a running guest is unplugged", RUNNING, S.RUNNING, G.RUNNING,
        [DetachDisk(B)], pid=7, seen_pid=7, ready=True, disks=("a",), seen_disks=(A, B),
        generation=2),
    Row("a swap unplugs first, then plugs", RUNNING, S.RUNNING, G.RUNNING,
        [DetachDisk(A), AttachDisk("b")], pid=7, seen_pid=7, ready=True, disks=("b",),
        seen_disks=(A,), generation=2),
    Row("disks that are not volumes (the seed) are left alone", RUNNING, S.RUNNING, G.RUNNING,
        [], pid=7, seen_pid=7, ready=True, disks=("a",), seen_disks=(A, "corral_seed")),
    Row("adopting a guest also plugs what it lacks", RUNNING, S.STARTING, G.RUNNING,
        [Adopt(), WaitReady(), AttachDisk("a")], seen_pid=9, disks=("a",)),
    Row("a failed hot-plug waits for a new generation", RUNNING, S.RUNNING, G.RUNNING, [],
        pid=7, seen_pid=7, ready=True, disks=("a",), hotplug_failed=True),
    Row("a new generation tries the hot-plug again", RUNNING, S.RUNNING, G.RUNNING,
        [AttachDisk("a")], pid=7, seen_pid=7, ready=True, disks=("a",), hotplug_failed=True,
        generation=2),
    Row("a stopped instance's disk change is only recorded", STOPPED, S.STOPPED, G.ABSENT, [],
        disks=("a",), generation=2),
]  # fmt: skip


def _status(row: Row) -> InstanceStatus:
    conditions = []
    if row.ready_timed_out:
        conditions.append(
            Condition(type="Ready", status=False, reason=READY_TIMEOUT_REASON, since=T0)
        )
    if row.hotplug_failed:
        conditions.append(
            Condition(type=DISKS_CONDITION, status=False, reason=DISK_FAILED_REASON, since=T0)
        )
    return InstanceStatus(
        state=row.state,
        pid=row.pid,
        ready=row.ready,
        observed_generation=row.observed,
        conditions=conditions,
    )


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_plan_instance(row: Row) -> None:
    disks = [InstanceDisk(volume=volume) for volume in row.disks]
    spec = InstanceSpec(image="tiny", power=row.power, on_crash=row.on_crash, disks=disks)
    seen = GuestObservation(
        name="vm1",
        state=row.seen,
        pid=row.seen_pid,
        exit_reason=row.exit_reason,
        disks=list(row.seen_disks),
    )
    steps = plan_instance(
        spec,
        _status(row),
        seen,
        generation=row.generation,
        deleting=row.deleting,
        restart_requested=row.restart,
        stop=row.stop,
    )
    assert steps == row.expected


def test_a_running_guest_is_never_halted_unless_the_spec_says_so() -> None:
    """Whatever the status claims, a live guest with power=running is adopted, not stopped."""
    spec = InstanceSpec(image="tiny")
    seen = GuestObservation(name="vm1", state=GuestRunState.RUNNING, pid=5)
    for state in InstanceState:
        for pid in (None, 5, 6):
            status = InstanceStatus(state=state, pid=pid, observed_generation=1)
            steps = plan_instance(spec, status, seen, generation=1)
            assert not any(isinstance(s, (Shutdown, Kill, Forget, Launch)) for s in steps)


@pytest.mark.parametrize(
    ("restarts", "delay"), [(0, 0.0), (1, 0.0), (2, 1.0), (3, 2.0), (4, 4.0), (20, 30.0)]
)
def test_restart_backoff_grows_and_is_capped(restarts: int, delay: float) -> None:
    assert restart_delay_s(restarts) == delay


def test_plan_disks_plugs_in_spec_order() -> None:
    spec = InstanceSpec(image="tiny", disks=[InstanceDisk(volume=v) for v in ("c", "a", "b")])
    assert plan_disks(spec, [disk_id("a")]) == [AttachDisk("c"), AttachDisk("b")]
