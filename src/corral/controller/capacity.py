"""Capacity checks at the API's door: pure functions of a spec, a host, and what is allocated.

CPUs may be over-committed across instances (vCPUs are threads), but one instance may not
have more vCPUs than the host has CPUs. Memory is not over-committed: the instances whose
spec says power=running must fit in the host's memory together.
"""

from __future__ import annotations

from corral.errors import Conflict
from corral.model.instance import InstanceSpec, PowerState
from corral.model.rpc import HostFacts
from corral.store.instances import Allocation

INSUFFICIENT_CAPACITY = "insufficient_capacity"


def check_capacity(spec: InstanceSpec, host: HostFacts | None, others: Allocation) -> None:
    """Raise Conflict(insufficient_capacity) naming the field when `spec` does not fit on `host`.

    `others` is what the other instances with power=running take. Without host facts (the
    agent has not reported yet) nothing is checked here; the agent refuses what cannot start.
    """
    if host is None:
        return
    if spec.cpus > host.cpus:
        raise Conflict(
            f"{spec.cpus} vCPUs do not fit on host {host.name!r}, which has {host.cpus} CPUs; "
            f"ask for at most {host.cpus}",
            code=INSUFFICIENT_CAPACITY,
            field="spec.cpus",
        )
    if spec.memory_mib > host.memory_mib:
        raise Conflict(
            f"{spec.memory_mib} MiB of memory do not fit on host {host.name!r}, which has "
            f"{host.memory_mib} MiB; ask for less",
            code=INSUFFICIENT_CAPACITY,
            field="spec.memory_mib",
        )
    if spec.power != PowerState.RUNNING:
        return
    free = host.memory_mib - others.memory_mib
    if spec.memory_mib > free:
        raise Conflict(
            f"{spec.memory_mib} MiB of memory do not fit on host {host.name!r}: running "
            f"instances already take {others.memory_mib} of its {host.memory_mib} MiB "
            f"({max(free, 0)} MiB free); stop or shrink another instance, or ask for less",
            code=INSUFFICIENT_CAPACITY,
            field="spec.memory_mib",
        )
