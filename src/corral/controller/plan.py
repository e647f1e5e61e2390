"""plan_instance: what to do to make a guest match its spec. Pure: no I/O, no clock.

The reconciler feeds it the desired state (spec + generation + deleting/restart flags), the
last status it wrote, and what the agent sees now; it returns the steps to run, in order.
Every rule here is one row of the table test in tests/controller/test_plan.py.

Two promises shape the rules:
- never stop a guest unless the spec says so (stopped, deleting, restart): a failure of the
  control plane or a status that disagrees with reality is met by adopting, not by killing;
- a guest that exits when nobody asked is handled by `spec.on_crash` (stop or restart).

Disks: a guest is launched with every disk of its spec; while it runs, the disks the spec
lists and the guest lacks are hot-plugged, and volume disks it has that the spec dropped are
unplugged (plan_disks). A stopped instance's disks are only recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.controller.disks import disk_id, is_volume_disk
from corral.model.instance import (
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    OnCrash,
    PowerState,
)
from corral.model.rpc import GuestObservation, GuestRunState

READY_TIMEOUT_REASON = "GuestAgentTimeout"
DISKS_CONDITION = "DisksAttached"
DISK_FAILED_REASON = "HotplugFailed"
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StopPolicy:
    """How to stop a guest: ACPI with a timeout (then the agent quits it), or kill at once."""

    force: bool = False
    timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S


@dataclass(frozen=True)
class Launch:
    """Start the guest from its image (state starting)."""


@dataclass(frozen=True)
class WaitReady:
    """Wait until the guest agent answers (state running, ready)."""


@dataclass(frozen=True)
class Adopt:
    """Take over a guest that runs without the status saying so (e.g. after a restart of us)."""


@dataclass(frozen=True)
class Shutdown:
    """ACPI power-off; the agent quits the guest if it is still up after `timeout_s`."""

    timeout_s: float


@dataclass(frozen=True)
class Kill:
    """End the guest process at once."""


@dataclass(frozen=True)
class Forget:
    """Remove the guest's runtime files on the host (only when it is not running)."""


@dataclass(frozen=True)
class MarkStopped:
    """Record that the guest is stopped."""


@dataclass(frozen=True)
class MarkDeleting:
    """Record that deletion has begun."""


@dataclass(frozen=True)
class RecordExit:
    """Record an exit nobody asked for; with `restart` False the spec becomes power=stopped."""

    reason: str
    restart: bool


@dataclass(frozen=True)
class RestartBackoff:
    """Wait before relaunching a guest that keeps exiting (grows with status.restarts)."""


@dataclass(frozen=True)
class AttachDisk:
    """Hot-plug the volume into the running guest."""

    volume: str


@dataclass(frozen=True)
class DetachDisk:
    """Hot-unplug a volume's disk (by its device id) from the running guest."""

    disk_id: str


@dataclass(frozen=True)
class DropSnapshots:
    """A deleted instance's snapshots go: their tags leave the volumes that outlive it."""


@dataclass(frozen=True)
class ReleaseDisks:
    """A deleted instance lets go of its volumes: its own are deleted, others detached."""


@dataclass(frozen=True)
class DeleteRecord:
    """Remove the instance from the store: the last step of a delete."""


Step = (
    Launch
    | WaitReady
    | Adopt
    | Shutdown
    | Kill
    | Forget
    | MarkStopped
    | MarkDeleting
    | RecordExit
    | RestartBackoff
    | AttachDisk
    | DetachDisk
    | DropSnapshots
    | ReleaseDisks
    | DeleteRecord
)

_ALIVE = (GuestRunState.RUNNING, GuestRunState.PAUSED)
_UP_STATES = (InstanceState.STARTING, InstanceState.RUNNING)


def restart_delay_s(restarts: int, cap_s: float = 30.0) -> float:
    """Backoff before the n-th automatic relaunch: 0, 1, 2, 4, ... seconds, at most `cap_s`."""
    if restarts <= 1:
        return 0.0
    return float(min(cap_s, 2 ** (restarts - 2)))


def ready_timed_out(status: InstanceStatus) -> bool:
    """True when the guest agent of the current run already failed to answer in time."""
    ready = status.condition("Ready")
    return ready is not None and not ready.status and ready.reason == READY_TIMEOUT_REASON


def hotplug_failed(status: InstanceStatus, generation: int) -> bool:
    """True when hot-plugging failed for this generation: wait for a new one, do not loop."""
    disks = status.condition(DISKS_CONDITION)
    return (
        disks is not None
        and not disks.status
        and disks.reason == DISK_FAILED_REASON
        and status.observed_generation >= generation
    )


def plan_disks(spec: InstanceSpec, attached: list[str]) -> list[Step]:
    """Hot-plug steps for a running guest: unplug volume disks the spec dropped, then plug
    what it lacks, in spec order (so they appear in the guest in that order)."""
    wanted = [disk_id(disk.volume) for disk in spec.disks]
    steps: list[Step] = [
        DetachDisk(device) for device in attached if is_volume_disk(device) and device not in wanted
    ]
    have = set(attached)
    steps += [
        AttachDisk(d.volume)
        for d, device in zip(spec.disks, wanted, strict=True)
        if device not in have
    ]
    return steps


def plan_instance(
    spec: InstanceSpec,
    status: InstanceStatus,
    observation: GuestObservation,
    *,
    generation: int,
    deleting: bool = False,
    restart_requested: bool = False,
    stop: StopPolicy | None = None,
) -> list[Step]:
    """The steps that take the guest from `observation` to what `spec` asks for."""
    stop = stop or StopPolicy()
    alive = observation.state in _ALIVE
    # The guest powered off but QEMU has not exited yet: it must be ended before anything else.
    powered_off = observation.state == GuestRunState.SHUTDOWN
    halt: list[Step] = [Kill()] if stop.force else [Shutdown(stop.timeout_s)]
    end_powered_off: list[Step] = [Kill()] if powered_off else []

    if deleting:
        steps: list[Step] = [] if status.state == InstanceState.DELETING else [MarkDeleting()]
        steps += halt if alive else end_powered_off
        return [*steps, Forget(), DropSnapshots(), ReleaseDisks(), DeleteRecord()]

    if spec.power == PowerState.STOPPED:
        # The runtime files stay: the console log of a stopped guest is still worth reading.
        if alive:
            return [*halt, MarkStopped()]
        if powered_off or status.state != InstanceState.STOPPED or status.pid is not None:
            return [*end_powered_off, MarkStopped()]
        return []

    if restart_requested:
        return [*(halt if alive else end_powered_off), Forget(), Launch(), WaitReady()]

    if alive:
        hotplug = [] if hotplug_failed(status, generation) else plan_disks(spec, observation.disks)
        same_run = status.pid is not None and status.pid == observation.pid
        if not same_run:
            return [Adopt(), WaitReady(), *hotplug]
        steps = [] if status.state in _UP_STATES else [Adopt()]
        if not status.ready and not ready_timed_out(status):
            steps.append(WaitReady())
        return [*steps, *hotplug]

    was_up = status.pid is not None and status.state in _UP_STATES
    if was_up:
        reason = observation.exit_reason or ("guest-poweroff" if powered_off else "exited")
        if spec.on_crash == OnCrash.RESTART:
            return [
                *end_powered_off,
                RecordExit(reason, restart=True),
                RestartBackoff(),
                Forget(),
                Launch(),
                WaitReady(),
            ]
        return [*end_powered_off, RecordExit(reason, restart=False)]

    if status.state == InstanceState.FAILED and status.observed_generation >= generation:
        return end_powered_off  # a permanent failure waits for a new generation
    return [*end_powered_off, Forget(), Launch(), WaitReady()]


def needs_reconcile(
    spec: InstanceSpec,
    status: InstanceStatus,
    observation: GuestObservation,
    *,
    generation: int,
    deleting: bool = False,
    restart_requested: bool = False,
) -> bool:
    """True when a reconcile pass would do anything (the periodic resync's cheap filter)."""
    if deleting or restart_requested or status.observed_generation != generation:
        return True
    steps = plan_instance(spec, status, observation, generation=generation)
    return bool(steps)
