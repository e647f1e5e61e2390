"""The host as the control plane knows it: the agent's facts plus what instances take from it.

Today there is one host (the embedded agent), so every instance counts against it; with
several hosts the sums will be per `status.host`.
"""

from __future__ import annotations

import logging

from corral.bus.agent_link import AgentAPI
from corral.controller.recorder import Recorder
from corral.errors import NotFound
from corral.model.host import Host
from corral.model.rpc import HostFacts
from corral.store import hosts as host_store
from corral.store import instances as instance_store
from corral.store.hosts import HostRecord

log = logging.getLogger(__name__)


class HostMonitor:
    """Keeps the local host's facts fresh in the store and answers capacity questions."""

    def __init__(self, recorder: Recorder, agent: AgentAPI, host_name: str) -> None:
        self._recorder = recorder
        self._db = recorder.db
        self._agent = agent
        self.host_name = host_name
        self._facts: HostFacts | None = None

    def __repr__(self) -> str:
        return f"HostMonitor(host={self.host_name!r})"

    async def refresh(self) -> HostFacts | None:
        """Ask the agent for its facts; store them and publish host.updated when they changed."""
        try:
            facts = await self._agent.host_facts()
        except Exception as err:  # the agent's trouble must not stop the control plane
            log.warning("host %s did not report its facts: %s", self.host_name, err)
            return self._facts
        with self._db.transaction() as session:
            changed = host_store.upsert_host(session, facts)
        self._facts = facts
        if changed:
            host = self.describe(facts.name)
            self._recorder.publish("host.updated", "host", facts.name, host.model_dump(mode="json"))
        return facts

    def local_facts(self) -> HostFacts | None:
        """The local host's last known facts (None until the agent first reported)."""
        if self._facts is None:
            with self._db.transaction() as session:
                record = host_store.find_host(session, self.host_name)
            self._facts = record.facts if record else None
        return self._facts

    def describe_all(self) -> list[Host]:
        """Every host with its capacity and allocation."""
        with self._db.transaction() as session:
            records = host_store.list_hosts(session)
        return [self._host(record) for record in records]

    def describe(self, name: str) -> Host:
        """One host; NotFound if it never reported."""
        with self._db.transaction() as session:
            record = host_store.find_host(session, name)
        if record is None:
            raise NotFound(f"host {name!r} does not exist; `corral hosts` lists the hosts")
        return self._host(record)

    def _host(self, record: HostRecord) -> Host:
        with self._db.transaction() as session:
            allocated = instance_store.running_allocation(session)
            count = instance_store.count_instances(session)
        facts = record.facts
        return Host(
            name=facts.name,
            cpus=facts.cpus,
            memory_mib=facts.memory_mib,
            allocated_cpus=allocated.cpus,
            allocated_memory_mib=allocated.memory_mib,
            instances=count,
            accel=facts.accel,
            accel_reason=facts.accel_reason,
            qemu_version=facts.qemu_version,
            kernel=facts.kernel,
            state=record.state,
        )
