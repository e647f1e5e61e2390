"""The agent's storage calls: pools known by name (and across an agent restart or a host
reboot), names checked at the edge, one change at a time per pool, disks through compute."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from corral.agent import Agent, build_agent
from corral.errors import Conflict, InvalidInput, NotFound
from corral.model.rpc import DiskAttachment, LaunchRequest, PoolConfig, VolumeRequest
from tests.agent.storage.conftest import MiB, loops_under, mounts_under, simulate_reboot

AgentFactory = Callable[[], Agent]


@pytest.fixture
async def new_agent(scratch: Path) -> AsyncIterator[AgentFactory]:
    """Agents on one data dir (a second call is the same host after an agent restart)."""
    agents: list[Agent] = []

    def make() -> Agent:
        agent = build_agent(
            "fake",
            host_name="test-host",
            runtime_dir=scratch / "run",
            images_dir=scratch / "data" / "images",
            cache_dir=scratch / "cache",
            pools_dir=scratch / "data" / "pools",
        )
        agents.append(agent)
        return agent

    yield make
    last = agents[-1] if agents else make()
    for pool in list(last.pools):
        for volume in reversed(await last.list_volumes(pool)):
            await last.delete_volume(pool, volume.name)
        await last.delete_pool(pool)
    for agent in agents:
        await agent.close()


def dir_pool(name: str = "default") -> PoolConfig:
    return PoolConfig(name=name, driver="dir")


async def test_a_pool_is_made_used_and_removed_through_the_agent(
    new_agent: AgentFactory, scratch: Path
) -> None:
    agent = new_agent()
    facts = await agent.ensure_pool(dir_pool())
    assert (facts.name, facts.driver, facts.volumes) == ("default", "dir", 0)
    assert facts.path == str(scratch / "data" / "pools" / "default")
    assert (await agent.ensure_pool(dir_pool())).volumes == 0  # idempotent

    made = await agent.create_volume(
        VolumeRequest(pool="default", name="data-1", size_bytes=64 * MiB)
    )
    grown = await agent.resize_volume("default", "data-1", 128 * MiB)
    assert (made.virtual_size_bytes, grown.virtual_size_bytes) == (64 * MiB, 128 * MiB)
    assert (await agent.volume_facts("default", "data-1")).virtual_size_bytes == 128 * MiB
    assert (await agent.pool_facts("default")).volumes == 1
    with pytest.raises(Conflict) as not_empty:
        await agent.delete_pool("default")
    assert not_empty.value.code == "pool_not_empty"

    await agent.delete_volume("default", "data-1")
    await agent.delete_pool("default")
    await agent.delete_pool("default")  # unknown now: no-op
    assert list((scratch / "data" / "pools").iterdir()) == []
    with pytest.raises(NotFound) as gone:
        await agent.pool_facts("default")
    assert (gone.value.code, gone.value.field) == ("unknown_pool", "pool")


async def test_unknown_pools_are_not_found_for_every_call(new_agent: AgentFactory) -> None:
    agent = new_agent()
    calls = [
        agent.pool_facts("nope"),
        agent.create_volume(VolumeRequest(pool="nope", name="a", size_bytes=MiB)),
        agent.volume_facts("nope", "a"),
        agent.resize_volume("nope", "a", 2 * MiB),
        agent.delete_volume("nope", "a"),
    ]
    for call in calls:
        with pytest.raises(NotFound) as refused:
            await call
        assert refused.value.code == "unknown_pool"


@pytest.mark.parametrize("bad", ["../etc", "a/b", "x\x00", "..", "Default"])
async def test_bad_names_are_refused_at_the_agent(new_agent: AgentFactory, bad: str) -> None:
    agent = new_agent()
    await agent.ensure_pool(dir_pool())
    calls = [
        agent.ensure_pool(PoolConfig(name=bad, driver="dir")),
        agent.pool_facts(bad),
        agent.delete_pool(bad),
        agent.create_volume(VolumeRequest(pool="default", name=bad, size_bytes=MiB)),
        agent.create_volume(VolumeRequest(pool=bad, name="a", size_bytes=MiB)),
        agent.volume_facts("default", bad),
        agent.resize_volume("default", bad, 2 * MiB),
        agent.delete_volume("default", bad),
    ]
    for call in calls:
        with pytest.raises(InvalidInput) as refused:
            await call
        assert refused.value.code == "invalid_name"
    assert (await agent.pool_facts("default")).volumes == 0


async def test_a_restarted_agent_knows_its_pools(new_agent: AgentFactory) -> None:
    first = new_agent()
    await first.ensure_pool(dir_pool())
    await first.ensure_pool(PoolConfig(name="scratch", driver="fake", size_bytes=1024 * MiB))
    await first.create_volume(VolumeRequest(pool="default", name="a", size_bytes=MiB))
    await first.create_volume(VolumeRequest(pool="scratch", name="b", size_bytes=MiB))

    second = new_agent()

    assert sorted(second.pools) == ["default", "scratch"]
    assert (await second.volume_facts("default", "a")).virtual_size_bytes == MiB
    assert (await second.pool_facts("scratch")).capacity_bytes == 1024 * MiB


async def test_after_a_reboot_the_first_call_mounts_a_btrfs_pool_again(
    new_agent: AgentFactory, scratch: Path
) -> None:
    first = new_agent()
    await first.ensure_pool(PoolConfig(name="fast", driver="btrfs", size_bytes=256 * MiB))
    await first.create_volume(VolumeRequest(pool="fast", name="a", size_bytes=16 * MiB))
    pools_dir = scratch / "data" / "pools"
    simulate_reboot(pools_dir / "fast", pools_dir / "fast.btrfs")
    assert mounts_under(scratch) == []

    after_reboot = new_agent()
    facts = await after_reboot.volume_facts("fast", "a")

    assert facts.virtual_size_bytes == 16 * MiB
    assert mounts_under(scratch) == [str(pools_dir / "fast")]
    assert len(loops_under(scratch)) == 1


async def test_a_pool_name_cannot_change_its_driver_or_place(new_agent: AgentFactory) -> None:
    agent = new_agent()
    await agent.ensure_pool(dir_pool())
    with pytest.raises(Conflict) as refused:
        await agent.ensure_pool(PoolConfig(name="default", driver="fake"))
    assert refused.value.code == "pool_exists"
    with pytest.raises(InvalidInput) as unknown:
        await agent.ensure_pool(PoolConfig(name="other", driver="lvm"))
    assert unknown.value.code == "unknown_driver"


async def test_concurrent_changes_to_one_pool_all_land(new_agent: AgentFactory) -> None:
    agent = new_agent()
    await agent.ensure_pool(dir_pool())
    await agent.create_volume(VolumeRequest(pool="default", name="base", size_bytes=16 * MiB))

    await asyncio.gather(
        *(
            agent.create_volume(
                VolumeRequest(pool="default", name=f"clone-{i}", source_volume="base")
            )
            for i in range(6)
        ),
        agent.resize_volume("default", "base", 32 * MiB),
    )

    facts = await agent.pool_facts("default")
    assert facts.volumes == 7


async def test_disks_are_attached_resized_and_detached_through_compute(
    new_agent: AgentFactory, scratch: Path
) -> None:
    agent = new_agent()
    await agent.ensure_pool(dir_pool())
    volume = await agent.create_volume(
        VolumeRequest(pool="default", name="data-1", size_bytes=64 * MiB)
    )
    kernel = scratch / "vmlinux"
    kernel.write_bytes(b"\x7fELF fake")
    await agent.launch(
        LaunchRequest(name="vm1", uid=str(uuid.uuid4()), cpus=1, memory_mib=256, kernel=str(kernel))
    )
    disk = DiskAttachment(id="data-1", path=volume.path, format=volume.format, serial="data-1")

    await agent.attach_disk("vm1", disk)
    assert (await agent.observe("vm1")).disks == ["data-1"]
    await agent.resize_disk("vm1", "data-1", 128 * MiB)
    await agent.detach_disk("vm1", "data-1")
    assert (await agent.observe("vm1")).disks == []
    with pytest.raises(InvalidInput):
        await agent.attach_disk("../vm1", disk)
    await agent.kill("vm1")
    await agent.forget("vm1")
