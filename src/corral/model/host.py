"""A host that runs guests: its capacity, what is allocated, and how it accelerates guests."""

from __future__ import annotations

from pydantic import BaseModel


class Host(BaseModel):
    """A compute host as the API shows it."""

    name: str
    cpus: int
    memory_mib: int
    allocated_cpus: int = 0
    allocated_memory_mib: int = 0
    instances: int = 0
    accel: str
    accel_reason: str
    qemu_version: str = ""
    kernel: str = ""
    state: str = "ready"
