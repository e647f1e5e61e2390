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
