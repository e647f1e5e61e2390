"""Typed messages between the controller and the agent: the only things they share.

In the embedded shape these are passed in-process; with NATS they are serialised as JSON.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class GuestRunState(StrEnum):
    """What the agent sees of a guest process."""

    RUNNING = "running"  # process alive, vCPUs running
    PAUSED = "paused"  # process alive, vCPUs stopped (QMP STOP, migration, error)
    SHUTDOWN = "shutdown"  # process alive but the guest powered off (about to exit)
    ABSENT = "absent"  # no process (never started, exited, killed, or cleaned up)


class DiskAttachment(BaseModel):
    """A volume as a guest device. `id` names the QEMU device/node (stable per volume);
    `serial` is what the guest sees in /dev/disk/by-id/virtio-<serial>."""

    id: str
    path: str
    format: str = "qcow2"
    read_only: bool = False
    boot: bool = False
    serial: str


class CloudInitSeed(BaseModel):
    """What the agent writes into a NoCloud seed (a small `cidata` disk) for cloud-init images."""

    instance_id: str
    hostname: str
    ssh_keys: list[str] = Field(default_factory=list)
    user_data: str | None = None


class LaunchRequest(BaseModel):
    """Everything the agent needs to start a guest; the agent adds host paths and accel."""

    name: str
    uid: str
    cpus: int
    memory_mib: int
    machine: str = "pc"
    kernel: str
    initrd: str | None = None
    cmdline: str = ""
    disks: list[DiskAttachment] = Field(default_factory=list)
    cloud_init: CloudInitSeed | None = None


class GuestObservation(BaseModel):
    """The agent's view of one guest right now."""

    name: str
    state: GuestRunState
    pid: int | None = None
    started_at: datetime | None = None
    accel: str | None = None
    argv: list[str] = Field(default_factory=list)
    exit_reason: str | None = None  # for ABSENT after running: "guest-poweroff", "killed", ...
    qmp_status: str | None = None  # QEMU's own runstate ("running", "paused", "shutdown", ...)
    disks: list[str] = Field(default_factory=list)  # ids of the DiskAttachments attached now


class ExecRequest(BaseModel):
    """Run a command in the guest through its guest agent."""

    name: str
    command: list[str]
    timeout_s: float = 60.0
    input: str | None = None


class ExecResult(BaseModel):
    """Outcome of a command run in the guest."""

    exit_code: int
    stdout: str
    stderr: str
    duration_ms: float = 0.0


class HostFacts(BaseModel):
    """What the agent reports about its host."""

    name: str
    cpus: int
    memory_mib: int
    accel: str  # "kvm" or "tcg"
    accel_reason: str  # why: "kvm_intel loaded and /dev/kvm opens" / "only kvm_pvm is loaded ..."
    qemu_version: str = ""
    kernel: str = ""


class ImageArtifact(BaseModel):
    """A built image on the agent's host."""

    name: str
    kind: str
    kernel: str
    initrd: str | None
    cmdline: str
    size_bytes: int
    digest: str
    recipe: dict[str, Any]
    build_seconds: float
    disk: str | None = None
    disk_virtual_size_bytes: int = 0
    cloud_init: bool = False


class PoolConfig(BaseModel):
    """A pool as the agent must make it exist. `path` None: the agent picks one (see PoolSpec)."""

    name: str
    driver: str
    path: str | None = None
    size_bytes: int | None = None


class PoolFacts(BaseModel):
    """A pool as the agent sees it."""

    name: str
    driver: str
    path: str
    capacity_bytes: int
    used_bytes: int
    allocated_bytes: int
    provisioned_bytes: int
    volumes: int


class VolumeRequest(BaseModel):
    """Make a volume in a pool. Sources: blank (needs size), `source_path` (an image's qcow2
    disk, thin clone), or `source_volume` in the same pool (thin clone, or full copy when
    `full_copy`); with `source_snapshot_tag` (and `full_copy`), a full copy of the source
    volume as it was at that qcow2 internal snapshot. `size_bytes` None keeps the source's
    size; it may only grow it."""

    pool: str
    name: str
    size_bytes: int | None = None
    format: str = "qcow2"
    source_path: str | None = None
    source_volume: str | None = None
    source_snapshot_tag: str | None = None
    full_copy: bool = False


class VolumeFacts(BaseModel):
    """A volume as the agent sees it."""

    pool: str
    name: str
    path: str
    format: str
    virtual_size_bytes: int
    allocated_bytes: int
    backing: str | None = None


class AgentEventKind(StrEnum):
    """Things the agent tells the controller about without being asked."""

    STARTED = "started"
    STOPPED = "stopped"  # vCPUs paused
    RESUMED = "resumed"
    SHUTDOWN = "shutdown"  # guest powered off / QEMU is quitting
    RESET = "reset"
    EXITED = "exited"  # the QEMU process is gone
    GUEST_AGENT_UP = "guest-agent-up"


class AgentEvent(BaseModel):
    """A guest-level event from the agent (from QMP events or process exit)."""

    name: str
    kind: AgentEventKind
    detail: dict[str, Any] = Field(default_factory=dict)
    time: datetime
