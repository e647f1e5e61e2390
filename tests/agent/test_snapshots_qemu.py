"""Snapshots of real guests through the agent: the data story (disk-only, quiesced, reverted
while stopped) and the memory story (the guest goes on from the snapshot, no reboot).

Two boots of the tiny guest for the whole file (boots are what the suite pays for under TCG).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.agent import Agent, build_agent
from corral.agent.compute.qemu.driver import QemuBackend
from corral.errors import Conflict, InvalidInput
from corral.images.builder import BuiltImage
from corral.model.rpc import DiskAttachment, ExecRequest, GuestRunState, LaunchRequest
from corral.model.rpc_snapshots import SnapshotRequest
from tests.agent.conftest import kill_processes_under, make_qcow2
from tests.agent.test_compute_disks import wait_for_guest_disks

pytestmark = [
    pytest.mark.slow,
]

READY_TIMEOUT_S = 90.0
MIB = 1024 * 1024


@pytest.fixture
async def agent(short_dir: Path) -> AsyncIterator[Agent]:
    made = build_agent(
        "qemu",
        host_name="test-host",
        runtime_dir=short_dir / "run",
        images_dir=short_dir / "images",
        cache_dir=short_dir / "cache",
        pools_dir=short_dir / "pools",
    )
    yield made
    await made.close()
    assert kill_processes_under(short_dir) == [], "a test left a guest process behind"


def launch_request(image: BuiltImage, name: str, disks: list[DiskAttachment]) -> LaunchRequest:
    return LaunchRequest(
        name=name,
        uid=str(uuid.uuid4()),
        cpus=1,
        memory_mib=256,
        kernel=str(image.kernel),
        initrd=str(image.initrd),
        cmdline=image.cmdline,
        disks=disks,
    )


async def sh(agent: Agent, name: str, script: str) -> str:
    result = await agent.exec(ExecRequest(name=name, command=["sh", "-c", script], timeout_s=60))
    assert result.exit_code == 0, f"{script!r} failed in {name}: {result.stderr}"
    return result.stdout


async def boot(agent: Agent, image: BuiltImage, name: str, disks: list[DiskAttachment]) -> str:
    """Launch, wait for the guest agent, mount the data disk at /mnt/d; its /dev name."""
    await agent.launch(launch_request(image, name, disks))
    await agent.wait_ready(name, READY_TIMEOUT_S)
    compute = agent.compute
    assert isinstance(compute, QemuBackend)
    seen = await wait_for_guest_disks(
        compute, name, lambda found: any(d.serial == "crl-data" for d in found.values())
    )
    return "/dev/" + next(dev for dev, d in seen.items() if d.serial == "crl-data")


async def test_snapshots_bring_back_the_data_and_the_running_guest(
    agent: Agent, tiny_image: BuiltImage, short_dir: Path
) -> None:
    data = DiskAttachment(
        id="data", path=str(make_qcow2(short_dir / "data.qcow2", 256 * MIB)), serial="crl-data"
    )
    logs = DiskAttachment(
        id="logs", path=str(make_qcow2(short_dir / "logs.qcow2", 64 * MIB)), serial="crl-logs"
    )
    disks = [data, logs]

    def req(tag: str, **fields: object) -> SnapshotRequest:
        return SnapshotRequest.model_validate(
            {"instance": "snappy", "tag": tag, "disks": disks, **fields}
        )

    # -- the data story: disk-only, quiesced, reverted while stopped -----------------------------
    dev = await boot(agent, tiny_image, "snappy", disks)
    await sh(agent, "snappy", f"mke2fs -q {dev} && mkdir -p /mnt/d && mount {dev} /mnt/d")
    await sh(agent, "snappy", "echo 1 > /mnt/d/A && sync")
    taken = await agent.snapshot_create(req("s1"))
    assert (taken.running, taken.memory) == (True, False)
    assert taken.quiesced, "the tiny guest's qemu-ga can freeze its mounted filesystem"
    assert await sh(agent, "snappy", "echo 2 > /mnt/d/A && sync && cat /mnt/d/A") == "2\n"

    # A second snapshot, deleted again, leaves the first alone; s1 cannot be taken twice.
    await agent.snapshot_create(req("s2", quiesce=False))
    assert await agent.snapshot_tags(req("s2")) == {"data": ["s1", "s2"], "logs": ["s1", "s2"]}
    await agent.snapshot_delete(req("s2"))
    assert await agent.snapshot_tags(req("s1")) == {"data": ["s1"], "logs": ["s1"]}
    with pytest.raises(Conflict) as twice:
        await agent.snapshot_create(req("s1"))
    assert twice.value.code == "snapshot_exists"

    # All or nothing: a raw disk in the set is refused before any disk is touched.
    raw = DiskAttachment(
        id="scratch", path=str(short_dir / "scratch.raw"), format="raw", serial="crl-scratch"
    )
    with pytest.raises(InvalidInput) as raw_refused:
        await agent.snapshot_create(req("s3").model_copy(update={"disks": [*disks, raw]}))
    assert raw_refused.value.code == "snapshot_needs_qcow2"
    assert await agent.snapshot_tags(req("s1")) == {"data": ["s1"], "logs": ["s1"]}

    # A crash between freeze and thaw leaves the guest frozen: the recovery call thaws it.
    compute = agent.compute
    assert isinstance(compute, QemuBackend)
    guest_agent = compute._guests["snappy"].agent
    assert await guest_agent.call("guest-fsfreeze-freeze") == 1
    assert await agent.snapshot_tags(req("s1")) == {"data": ["s1"], "logs": ["s1"]}
    assert await guest_agent.call("guest-fsfreeze-status") == "thawed"

    # A disk-only snapshot cannot be loaded under a running guest.
    with pytest.raises(Conflict) as running:
        await agent.snapshot_revert(req("s1"))
    assert running.value.code == "invalid_state" and "stop the instance" in running.value.message

    await agent.shutdown("snappy", 30)
    assert (await agent.observe("snappy")).state is GuestRunState.ABSENT
    await agent.snapshot_revert(req("s1"))  # qemu-img snapshot -a on both files

    # -- the memory story: the guest goes on from the snapshot, no reboot ------------------------
    dev = await boot(agent, tiny_image, "snappy", disks)
    await sh(agent, "snappy", f"mkdir -p /mnt/d && mount {dev} /mnt/d")
    assert await sh(agent, "snappy", "cat /mnt/d/A") == "1\n", "the revert lost the old data"
    boot_id = await sh(agent, "snappy", "cat /proc/sys/kernel/random/boot_id")

    memory = await agent.snapshot_create(req("m1", memory=True))
    assert memory.memory and memory.vmstate_bytes > 0 and not memory.quiesced
    uptime_at_snapshot = float((await sh(agent, "snappy", "cat /proc/uptime")).split()[0])
    sleeper = await sh(agent, "snappy", "sleep 1000 >/dev/null 2>&1 </dev/null & echo $!")
    await sh(agent, "snappy", "echo later > /run/after-snapshot && echo 3 > /mnt/d/A && sync")

    await agent.snapshot_revert(req("m1"))
    observed = await agent.observe("snappy")
    assert (observed.state, observed.qmp_status) == (GuestRunState.RUNNING, "running")
    gone = await agent.exec(
        ExecRequest(name="snappy", command=["kill", "-0", sleeper.strip()], timeout_s=30)
    )
    assert gone.exit_code != 0, "a process started after the memory snapshot survived its revert"
    assert await sh(agent, "snappy", "ls /run/after-snapshot 2>/dev/null || echo absent") == (
        "absent\n"
    )
    assert await sh(agent, "snappy", "cat /mnt/d/A") == "1\n"
    assert await sh(agent, "snappy", "cat /proc/sys/kernel/random/boot_id") == boot_id
    uptime_now = float((await sh(agent, "snappy", "cat /proc/uptime")).split()[0])
    assert uptime_now >= uptime_at_snapshot - 1.0, "the guest rebooted instead of going on"

    assert await agent.snapshot_tags(req("m1")) == {"data": ["s1", "m1"], "logs": ["s1", "m1"]}
    await agent.snapshot_delete(req("m1"))
    await agent.snapshot_delete(req("m1"))  # absent: no-op
    assert await agent.snapshot_tags(req("s1")) == {"data": ["s1"], "logs": ["s1"]}
    await asyncio.wait_for(agent.kill("snappy"), 30)
