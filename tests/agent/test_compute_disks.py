"""The disk contract of every compute backend: disks given at launch and hot-plugged, checked
from inside the guest (/sys/block through exec) and in observe(), on the fake and on QEMU.

The QEMU case boots one guest for the whole story (boots are what the suite pays for under TCG);
tests/agent/test_qemu_disks.py follows the bytes across guests and the host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.agent.compute.base import ComputeBackend
from corral.agent.compute.qemu.driver import QemuBackend
from corral.agent.compute.qemu.hotplug import block_node_names
from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.model.rpc import DiskAttachment, ExecRequest, GuestRunState
from tests.agent.conftest import Harness, make_qcow2

READY_TIMEOUT_S = 90.0
HOTPLUG_SEEN_S = 10.0  # a hot-plugged disk shows in the guest in ~0.2 s under TCG
MIB = 1024 * 1024


@dataclass(frozen=True)
class GuestDisk:
    """A block device as the guest shows it in /sys/block."""

    size_bytes: int
    serial: str
    read_only: bool


async def guest_sh(backend: ComputeBackend, name: str, *command: str) -> str:
    result = await backend.exec(ExecRequest(name=name, command=list(command), timeout_s=30))
    assert result.exit_code == 0, f"{command} failed: {result.stderr}"
    return result.stdout


async def guest_disks(backend: ComputeBackend, name: str) -> dict[str, GuestDisk]:
    """The guest's virtio disks by kernel name (vda, ...), read from its /sys/block."""
    found = {}
    for dev in (await guest_sh(backend, name, "ls", "/sys/block")).split():
        if not dev.startswith("vd"):
            continue
        base = f"/sys/block/{dev}"
        sectors = await guest_sh(backend, name, "cat", f"{base}/size")
        serial = await guest_sh(backend, name, "cat", f"{base}/serial")
        read_only = await guest_sh(backend, name, "cat", f"{base}/ro")
        found[dev] = GuestDisk(int(sectors) * 512, serial.strip(), read_only.strip() == "1")
    return found


async def wait_for_guest_disks(
    backend: ComputeBackend, name: str, done: Callable[[dict[str, GuestDisk]], bool]
) -> dict[str, GuestDisk]:
    """Poll the guest's disks until `done` says so (or fail after HOTPLUG_SEEN_S)."""
    deadline = time.monotonic() + HOTPLUG_SEEN_S
    while True:
        disks = await guest_disks(backend, name)
        if done(disks):
            return disks
        assert time.monotonic() < deadline, f"the guest's disks stayed {disks}"
        await asyncio.sleep(0.1)


async def qemu_block_nodes(backend: ComputeBackend, name: str) -> set[str]:
    """QEMU's named block nodes (query-named-block-nodes) of a guest, or none for the fake."""
    if not isinstance(backend, QemuBackend):
        return set()
    return await block_node_names(backend._guests[name].monitor)


def disk(disk_id: str, path: Path, **overrides: object) -> DiskAttachment:
    fields: dict[str, object] = {"id": disk_id, "path": str(path), "serial": f"crl-{disk_id}"}
    fields.update(overrides)
    return DiskAttachment.model_validate(fields)


async def test_disks_at_launch_and_hot_plugged_are_what_the_guest_sees(
    harness: Harness, backend: ComputeBackend, short_dir: Path
) -> None:
    root = make_qcow2(short_dir / "root.qcow2", 64 * MIB)
    data = make_qcow2(short_dir / "data.qcow2", 32 * MIB)
    extra = make_qcow2(short_dir / "extra.qcow2", 16 * MIB)
    # The boot disk comes first whatever the list order: it is vda.
    disks = [disk("data", data), disk("root", root, boot=True)]
    launched = await backend.launch(harness.request("web1", disks=disks))
    assert launched.disks == ["root", "data"]
    await backend.wait_ready("web1", READY_TIMEOUT_S)
    assert await guest_disks(backend, "web1") == {
        "vda": GuestDisk(64 * MIB, "crl-root", False),
        "vdb": GuestDisk(32 * MIB, "crl-data", False),
    }

    nodes_before = await qemu_block_nodes(backend, "web1")
    await backend.attach_disk("web1", disk("extra", extra, read_only=True))
    seen = await wait_for_guest_disks(backend, "web1", lambda d: "vdc" in d)
    assert seen["vdc"] == GuestDisk(16 * MIB, "crl-extra", True)
    await backend.attach_disk("web1", disk("extra", extra, read_only=True))  # idempotent
    with pytest.raises(Conflict):  # the id is taken by another file
        await backend.attach_disk("web1", disk("extra", data))
    assert (await backend.observe("web1")).disks == ["root", "data", "extra"]

    # The agent restarts: its successor finds the disks, hot-plugged ones included.
    await backend.close()
    successor = harness.new_backend()
    assert [o.disks for o in await successor.observe_all()] == [["root", "data", "extra"]]

    await successor.resize_disk("web1", "data", 64 * MIB)
    await wait_for_guest_disks(successor, "web1", lambda d: d["vdb"].size_bytes == 64 * MIB)
    await successor.resize_disk("web1", "data", 64 * MIB)  # already that size
    with pytest.raises(InvalidInput) as shrink:
        await successor.resize_disk("web1", "data", 32 * MIB)
    assert shrink.value.code == "shrink_refused"
    with pytest.raises(Conflict):
        await successor.resize_disk("web1", "extra", 32 * MIB)  # read-only
    with pytest.raises(NotFound):
        await successor.resize_disk("web1", "ghost", 32 * MIB)

    started = time.monotonic()
    await successor.detach_disk("web1", "extra")
    assert time.monotonic() - started < HOTPLUG_SEEN_S, "the guest took long to let go"
    seen = await wait_for_guest_disks(successor, "web1", lambda d: "vdc" not in d)
    assert sorted(seen) == ["vda", "vdb"]
    assert (await successor.observe("web1")).disks == ["root", "data"]
    await successor.detach_disk("web1", "extra")  # idempotent
    await successor.detach_disk("web1", "ghost")  # never attached: nothing to do
    assert await qemu_block_nodes(successor, "web1") == nodes_before

    # A file that is not there: a clean failure that leaves no block node behind.
    with pytest.raises(CorralError) as missing:
        await successor.attach_disk("web1", disk("lost", short_dir / "missing.qcow2"))
    assert "missing.qcow2" in missing.value.message
    assert (await successor.observe("web1")).disks == ["root", "data"]
    assert await qemu_block_nodes(successor, "web1") == nodes_before

    await successor.kill("web1")
    assert (await successor.observe("web1")).disks == []
    with pytest.raises(Conflict):
        await successor.attach_disk("web1", disk("extra", extra))
    await successor.detach_disk("web1", "data")  # the guest is gone: nothing to do
    with pytest.raises(InvalidInput):
        await successor.detach_disk("web1", "No/Such")


async def test_a_microvm_guest_refuses_hot_plug(
    harness: Harness, backend: ComputeBackend, short_dir: Path
) -> None:
    extra = make_qcow2(short_dir / "extra.qcow2", 16 * MIB)
    await backend.launch(harness.request("tiny1", machine="microvm"))
    with pytest.raises(Conflict) as refused:
        await backend.attach_disk("tiny1", disk("extra", extra))
    assert refused.value.code == "hotplug_unsupported"
    assert "microvm" in refused.value.message
    assert (await backend.observe("tiny1")).disks == []
    await backend.kill("tiny1")


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"id": "Disk_1"}, "disks[0].id"),
        ({"id": "qga0"}, "disks[0].id"),
        ({"serial": "s" * 21}, "disks[0].serial"),
        ({"serial": "has space"}, "disks[0].serial"),
        ({"format": "vmdk"}, "disks[0].format"),
        ({"path": "relative.qcow2"}, "disks[0].path"),
    ],
    ids=["id-rule", "reserved-id", "long-serial", "serial-space", "format", "relative-path"],
)
async def test_a_launch_with_an_invalid_disk_names_the_field_and_starts_nothing(
    harness: Harness,
    backend: ComputeBackend,
    short_dir: Path,
    bad: dict[str, object],
    field: str,
) -> None:
    image = make_qcow2(short_dir / "d.qcow2", MIB)
    with pytest.raises(InvalidInput) as caught:
        fields = {"id": "d1", "path": str(image), "serial": "crl-d1", **bad}
        bad_disk = DiskAttachment.model_validate(fields)
        await backend.launch(harness.request("web1", disks=[bad_disk]))
    assert caught.value.field == field
    assert harness.host_processes() == []
    assert (await backend.observe("web1")).state == GuestRunState.ABSENT


async def test_a_launch_with_a_missing_disk_file_leaves_nothing_behind(
    harness: Harness, backend: ComputeBackend, short_dir: Path
) -> None:
    lost = short_dir / "lost.qcow2"
    with pytest.raises(CorralError) as caught:
        await backend.launch(harness.request("web1", disks=[disk("d1", lost)]))
    assert "lost.qcow2" in getattr(caught.value, "stderr_tail", "") + caught.value.message
    assert harness.host_processes() == []
    assert not (harness.runtime_dir / "web1").exists()
